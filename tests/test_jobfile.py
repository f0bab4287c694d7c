"""Job files (`cronsvc.jobfile`): what a file may say, how two jobs are
compared, and the TOML writer, round-tripped through `tomllib`."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest

from cronsvc.jobfile import (
    JobFileError,
    differing,
    dump,
    dump_toml,
    exported,
    parse_jobs,
    read_jobs,
)

HOOK = "https://example.org/hook"
BASE = {"name": "report", "cronExpression": "0 2 * * *", "webhookUrl": HOOK}
SECRET = "whsec_" + "A" * 32


def answered(**fields: Any) -> dict[str, Any]:
    """A job as the API answers it, with every default written out."""
    return {
        "id": "j1",
        **BASE,
        "timezone": "UTC",
        "httpMethod": "POST",
        "headers": {},
        "body": None,
        "timeoutSeconds": 10.0,
        "retry": {"maxAttempts": 1, "backoffSeconds": 1.0, "maxBackoffSeconds": 60.0},
        "concurrencyPolicy": "allow",
        "misfirePolicy": "fire_once",
        "misfireGraceSeconds": 60,
        "isActive": True,
        "tags": [],
        "hasSecret": False,
        "version": 1,
        **fields,
    }


# -- reading ------------------------------------------------------------------


def test_toml_and_json_files_say_the_same_jobs(tmp_path: Path) -> None:
    toml = tmp_path / "jobs.toml"
    toml.write_text(
        '[[jobs]]\nname = "report"\ncronExpression = "0 2 * * *"\n'
        f'webhookUrl = "{HOOK}"\ntags = ["team-a"]\n[jobs.headers]\nX-Key = "1"\n'
    )
    listed = tmp_path / "list.json"
    listed.write_text(json.dumps([{**BASE, "tags": ["team-a"], "headers": {"X-Key": "1"}}]))
    wrapped = tmp_path / "wrapped.json"
    wrapped.write_text(
        json.dumps({"jobs": [{**BASE, "tags": ["team-a"], "headers": {"X-Key": "1"}}]})
    )

    assert read_jobs(str(toml)) == read_jobs(str(listed)) == read_jobs(str(wrapped))


@pytest.mark.parametrize(
    ("text", "kind", "message"),
    [
        ("[[jobs]]\nname = ", "toml", "not valid TOML"),
        ("[", "json", "not valid JSON"),
        (
            json.dumps([{**BASE, "colour": "red"}]),
            "json",
            "jobs[0] (report): colour: unknown field",
        ),
        (json.dumps([{**BASE, "version": 3}]), "json", "version: is set by the service"),
        (json.dumps([{**BASE, "id": "x"}]), "json", "id: is set by the service"),
        (json.dumps([BASE, BASE]), "json", "the name 'report' is given to two jobs"),
        (json.dumps({"job": []}), "json", "unknown key 'job'"),
        (json.dumps([{**BASE, "cronExpression": ""}]), "json", "cronExpression:"),
        (json.dumps([{**BASE, "secret": "generate"}]), "json", "apply never prints secrets"),
        (json.dumps([{**BASE, "isActive": "yes"}]), "json", "isActive:"),
        (json.dumps(["report"]), "json", "must be a table"),
    ],
)
def test_a_bad_file_is_refused_with_what_is_wrong(text: str, kind: str, message: str) -> None:
    with pytest.raises(JobFileError, match="^jobs\\." + kind + ": .*" + _escaped(message)):
        parse_jobs(text, kind, source=f"jobs.{kind}")


def _escaped(text: str) -> str:
    return re.escape(text)


def test_only_toml_and_json_files_are_read(tmp_path: Path) -> None:
    with pytest.raises(JobFileError, match="YAML is not read"):
        read_jobs(str(tmp_path / "jobs.yaml"))


# -- comparing ----------------------------------------------------------------


def test_a_job_equals_its_answer_whatever_the_spelling_of_what_the_api_reads_alike() -> None:
    have = answered(headers={"Content-Type": "text/plain"}, tags=["a", "b"])
    wanted = {
        **BASE,
        "cronExpression": " 0 2 * * * ",
        "httpMethod": "post",
        "headers": {"content-type": "text/plain"},
        "tags": ["b", "a"],
        "retry": {"maxAttempts": 1},
    }
    assert differing(wanted, have) == []


def test_a_field_left_out_differs_from_a_value_other_than_its_default() -> None:
    have = answered(retry={"maxAttempts": 3, "backoffSeconds": 1.0, "maxBackoffSeconds": 60.0})
    assert differing(BASE, have) == [
        (
            "retry",
            {"maxAttempts": 3, "backoffSeconds": 1.0, "maxBackoffSeconds": 60.0},
            {"maxAttempts": 1, "backoffSeconds": 1.0, "maxBackoffSeconds": 60.0},
        )
    ]
    assert differing({**BASE, "isActive": False, "body": {"a": 1}}, answered()) == [
        ("body", None, {"a": 1}),
        ("isActive", True, False),
    ]


def test_a_timeout_left_out_is_the_services_to_choose() -> None:
    assert differing(BASE, answered(timeoutSeconds=30.0)) == []
    assert differing({**BASE, "timeoutSeconds": 10}, answered(timeoutSeconds=30.0)) == [
        ("timeoutSeconds", 30.0, 10.0)
    ]


# -- writing ------------------------------------------------------------------


def test_export_keeps_the_writable_fields_off_their_defaults_and_no_secret() -> None:
    job = answered(tags=["t"], hasSecret=True, isActive=False, secret=SECRET)
    assert exported(job) == {**BASE, "timeoutSeconds": 10.0, "isActive": False, "tags": ["t"]}


def test_export_keeps_an_alert_policy_without_its_secret_or_what_it_has_none_of() -> None:
    alerts = {
        "enabled": False,
        "url": None,
        "after": 1,
        "onRecovery": True,
        "format": "standard",
        "hasSecret": True,
    }
    assert exported(answered(alerts=alerts))["alerts"] == {
        "enabled": False,
        "after": 1,
        "onRecovery": True,
        "format": "standard",
    }
    assert "alerts" not in exported(answered(alerts=None))


ODD = 'quote " backslash \\ tab \t newline \n del \x7f bell \x07 é 🕑'


@pytest.mark.parametrize(
    "job",
    [
        BASE,
        {
            **BASE,
            "headers": {
                "X-Key": 'quote " backslash \\ tab \t é',
                "Content-Type": "application/json",
            },
            "retry": {"maxAttempts": 3, "backoffSeconds": 0.5, "maxBackoffSeconds": 60.0},
            "body": {"a": [1, 2.5, True, "x"], "nested": {"k": {}}, "odd key.here": ODD, "": []},
            "tags": ["a", "b"],
            "timeoutSeconds": 1e-05,
            "timezone": "Europe/Paris",
            "isActive": False,
        },
        {**BASE, "body": ODD},
        {**BASE, "body": [1, -2, 1e300, 9007199254740993]},
        {**BASE, "headers": {}, "body": {}},
        {**BASE, "alerts": {"url": HOOK, "after": 3, "format": "slack", "onRecovery": False}},
    ],
)
def test_toml_written_reads_back_the_same(job: dict[str, Any]) -> None:
    text = dump_toml([job, {**job, "name": "second"}])
    assert tomllib.loads(text) == {"jobs": [job, {**job, "name": "second"}]}
    assert parse_jobs(text, "toml", source="x.toml") == [job, {**job, "name": "second"}]


def test_toml_refuses_what_it_cannot_hold_rather_than_change_it() -> None:
    with pytest.raises(JobFileError, match=r"job 'report': body\.a\[1\]: TOML has no null"):
        dump_toml([{**BASE, "body": {"a": [1, None]}}])
    with pytest.raises(JobFileError, match="64-bit"):
        dump_toml([{**BASE, "body": 2**64}])
    assert json.loads(dump([{**BASE, "body": {"a": None}}], "json")) == {
        "jobs": [{**BASE, "body": {"a": None}}]
    }


def test_no_jobs_write_an_empty_file_that_reads_as_none() -> None:
    assert dump_toml([]) == ""
    assert parse_jobs("", "toml", source="x.toml") == []
