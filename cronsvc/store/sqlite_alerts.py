"""The SQLite backend's alert states (`AlertStates`): one row per job in
`alert_states`, folded and written inside the caller's write transaction,
which SQLite makes the only writer: no other caller can change a row
between its read and its write."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from datetime import datetime

from cronsvc.alerts import NO_STATE, AlertChange, AlertState, AlertStep, apply_outcomes
from cronsvc.store.common import json_text, state_document, state_from_document

CREATE_ALERT_STATES = """CREATE TABLE alert_states (
        job_id TEXT PRIMARY KEY REFERENCES jobs (id) ON DELETE CASCADE,
        version INTEGER NOT NULL,
        state TEXT NOT NULL
    ) WITHOUT ROWID"""

_JOB_EXISTS = "SELECT 1 FROM jobs WHERE id = ?"
_GET_STATE = "SELECT version, state FROM alert_states WHERE job_id = ?"
_PUT_STATE = """INSERT INTO alert_states (job_id, version, state) VALUES (?1, ?2, ?3)
    ON CONFLICT (job_id) DO UPDATE SET version = ?2, state = ?3"""
_STATES_IN = """SELECT job_id, version, state FROM alert_states
    WHERE job_id IN (SELECT value FROM json_each(?))"""


def apply_in_transaction(
    db: sqlite3.Connection, steps: Sequence[AlertStep], now: datetime
) -> list[AlertChange]:
    """`AlertStates.apply_alert_outcomes`, inside a write transaction the caller holds."""
    changes: list[AlertChange] = []
    for step in steps:
        if db.execute(_JOB_EXISTS, (step.job_id,)).fetchone() is None:
            continue
        row = db.execute(_GET_STATE, (step.job_id,)).fetchone()
        state = NO_STATE if row is None else state_from_document(json.loads(row[1]), row[0])
        new, effected = apply_outcomes(state, step, now)
        if new is not state:
            db.execute(_PUT_STATE, (step.job_id, new.version, json_text(state_document(new))))
        changes.extend(effected)  # with no write: a lost write's alerts, told again
    return changes


def read_states(db: sqlite3.Connection, job_ids: list[str]) -> dict[str, AlertState]:
    return {
        job_id: state_from_document(json.loads(text), version)
        for job_id, version, text in db.execute(_STATES_IN, (json_text(job_ids),))
    }
