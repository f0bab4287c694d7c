"""`cronsvc apply FILE` and `cronsvc export`: jobs kept as code.

`apply` makes the service's jobs match a file (`cronsvc.jobfile`), keyed by
name: it creates what is missing, replaces what differs (a PUT carrying the
version it read, so an edit made meanwhile is reported as a conflict, never
overwritten), leaves equal jobs alone, and with `--prune --selector tag=NAME`
deletes the jobs of that tag the file no longer names. The plan is computed
first (`make_plan`, a pure function) and every job of the file is checked,
its schedule by the service, before anything is written.

Exit status: 0 done (with `--dry-run`: nothing would change), 1 a write
failed or was refused (a conflict among them) or the API could not be
reached, 2 a bad file, a name that is not unique, a usage error (with
`--dry-run`: something would change, as `diff` does).

Under `--dry-run`, each create and each update that changes when a job
fires also shows its next fires before and after, as the service's dry run
of that very write (`?dryRun=true`) compares them.

Secrets are never printed: the plan names the fields that change and shows
values only for the fields that cannot hold one (not the URL, headers, body
or secret).

`export` writes the service's jobs in the same format, without secrets or the
fields the service owns, so that `apply` of its output changes nothing.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final
from urllib.parse import quote

from cronsvc.client import ApiError, ApiUnreachable, Client
from cronsvc.commands import UsageError
from cronsvc.jobfile import (
    SPEC_FIELDS,
    JobFileError,
    differing,
    dump,
    exported,
    format_of,
    read_jobs,
)
from cronsvc.tables import when

SHOWN: Final = frozenset(SPEC_FIELDS) - {"webhookUrl", "headers", "body", "alerts"}
"""Fields whose values a plan shows; the others (webhook URL, headers, body,
alerts with their URL, secrets) may carry a credential and are only named."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Change:
    field: str
    before: Any = None
    after: Any = None
    """`before` and `after` are None for the fields not in `SHOWN`."""

    def to_json(self) -> dict[str, Any]:
        if self.field not in SHOWN:
            return {"field": self.field}
        return {"field": self.field, "from": self.before, "to": self.after}

    def text(self) -> str:
        if self.field not in SHOWN:
            return self.field
        return f"{self.field} ({_text(self.before)} → {_text(self.after)})"


@dataclass(frozen=True, slots=True, kw_only=True)
class Step:
    """One write of a plan: `create`, `update` or `delete`."""

    action: str
    name: str
    job_id: str | None = None
    changes: tuple[Change, ...] = ()
    document: Mapping[str, Any] = field(default_factory=dict, repr=False)
    """The body to send (create, update): it may carry a secret."""

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"action": self.action, "name": self.name, "id": self.job_id}
        if self.action == "update":
            data["changes"] = [c.to_json() for c in self.changes]
        return data

    def text(self) -> str:
        label = self.name if self.job_id is None else f"{self.name} ({self.job_id})"
        if self.changes:
            return f"{label}: " + ", ".join(c.text() for c in self.changes)
        return label


@dataclass(frozen=True, slots=True, kw_only=True)
class Plan:
    steps: tuple[Step, ...]
    unchanged: tuple[str, ...]

    def count(self, action: str) -> int:
        return sum(1 for step in self.steps if step.action == action)


class PlanError(UsageError):
    """A file and a service that cannot be matched up job by job."""


def make_plan(
    wanted: Sequence[Mapping[str, Any]],
    current: Sequence[Mapping[str, Any]],
    *,
    prune_tag: str | None = None,
) -> Plan:
    """What makes the service's jobs (`current`, as the API answers them)
    match the file's (`wanted`): creates, updates and, with `prune_tag`, the
    deletes of the jobs of that tag the file does not name; in file order,
    deletes last."""
    by_name: dict[str, list[Mapping[str, Any]]] = {}
    for job in current:
        by_name.setdefault(job["name"], []).append(job)
    steps: list[Step] = []
    unchanged: list[str] = []
    for doc in wanted:
        matches = by_name.get(doc["name"], [])
        if len(matches) > 1:
            ids = ", ".join(str(job["id"]) for job in matches)
            raise PlanError(f"{len(matches)} jobs on the service are named {doc['name']!r} ({ids})")
        if not matches:
            steps.append(Step(action="create", name=doc["name"], document=doc))
            continue
        step = _update(doc, matches[0])
        if step is None:
            unchanged.append(doc["name"])
        else:
            steps.append(step)
    if prune_tag is not None:
        named = {doc["name"] for doc in wanted}
        steps += [
            Step(action="delete", name=job["name"], job_id=job["id"])
            for job in current
            if prune_tag in job.get("tags", ()) and job["name"] not in named
        ]
    return Plan(steps=tuple(steps), unchanged=tuple(unchanged))


def _update(doc: Mapping[str, Any], job: Mapping[str, Any]) -> Step | None:
    fields = differing(doc, job)
    secret = _secret_changes(doc, job)
    alerts = doc.get("alerts")
    held_alerts = job.get("alerts")
    alert_secret = isinstance(alerts, dict) and _secret_changes(
        alerts, held_alerts if isinstance(held_alerts, dict) else {}
    )
    if not fields and not secret and not alert_secret:
        return None
    changes = [
        Change(field=f, before=before, after=after) if f in SHOWN else Change(field=f)
        for f, before, after in fields
    ]
    body = {k: v for k, v in doc.items() if k != "secret"}
    if secret:  # set it where there is none, or remove it; a secret held is kept
        changes.append(Change(field="secret"))
        body["secret"] = doc["secret"]
    if isinstance(alerts, dict) and not alert_secret:  # the same for the alerts' own
        body["alerts"] = {k: v for k, v in alerts.items() if k != "secret"}
    elif alert_secret:
        changes.append(Change(field="alerts.secret"))
    body.setdefault("timeoutSeconds", job.get("timeoutSeconds"))
    body["version"] = job["version"]
    return Step(
        action="update", name=doc["name"], job_id=job["id"], changes=tuple(changes), document=body
    )


def _secret_changes(wanted: Mapping[str, Any], held: Mapping[str, Any]) -> bool:
    """Whether a file's `secret` changes what the service holds: it is never
    answered, so only one set where there is none, or a null where there is
    one, counts; a secret held is kept, whatever the file says."""
    return "secret" in wanted and (wanted["secret"] is None) == bool(held.get("hasSecret"))


# -- running --------------------------------------------------------------------


@dataclass(slots=True)
class Outcome:
    done: list[Step] = field(default_factory=list)
    failed: list[tuple[Step, str]] = field(default_factory=list)


def selector_tag(args: argparse.Namespace) -> str | None:
    text: str | None = args.selector
    if text is None:
        return None
    key, equals, value = text.partition("=")
    if key.strip() != "tag" or not equals or not value.strip():
        raise UsageError(f"--selector must be tag=NAME, not {text!r}")
    return value.strip()


def run_apply(client: Client, args: argparse.Namespace) -> int:
    tag = selector_tag(args)
    if args.prune and tag is None:
        raise UsageError(
            "refusing --prune without --selector tag=NAME: it would delete every job the "
            "file does not name"
        )
    if tag is not None and not args.prune:
        raise UsageError("--selector goes with --prune (it chooses the jobs pruning may delete)")
    try:
        wanted = read_jobs(args.file)
    except JobFileError as exc:
        raise UsageError(str(exc)) from None
    current = [job for page in client.pages("/api/cron", {"limit": 500}) for job in page]
    plan = make_plan(wanted, current, prune_tag=tag)
    _check_schedules(client, plan, args.file)
    if args.dry_run:
        _print_plan(args, plan, _fires_of(client, plan))
        return 2 if plan.steps else 0
    outcome = carry_out(client, plan)
    _print_outcome(args, plan, outcome)
    return 1 if outcome.failed else 0


def _check_schedules(client: Client, plan: Plan, source: str) -> None:
    """Ask the service to read every schedule about to be written, so that a
    bad one stops the whole file before any write."""
    faults = []
    for step in plan.steps:
        if step.action == "delete" or (
            step.action == "update"
            and not {c.field for c in step.changes} & {"cronExpression", "timezone"}
        ):
            continue
        document = step.document
        preview = {
            "cronExpression": document["cronExpression"],
            "timezone": document.get("timezone", "UTC"),
            "count": 1,
        }
        try:
            client.post("/api/schedule/preview", preview)
        except ApiUnreachable:
            raise
        except ApiError as exc:
            if exc.status != 400:
                raise
            faults.append(f"job {step.name!r}: {str(exc).partition(': ')[2]}")
    if faults:
        raise UsageError(f"{source}: " + "; ".join(faults) + " (nothing written)")


_SCHEDULE_FIELDS: Final = frozenset({"cronExpression", "timezone", "isActive"})


def _fires_of(client: Client, plan: Plan) -> dict[str, Any]:
    """For each create, and each update that changes when the job fires, by
    name: the `fires` of the write's dry run (`?dryRun=true`), or a string
    saying why the service would refuse it."""
    found: dict[str, Any] = {}
    for step in plan.steps:
        if step.action == "delete" or (
            step.action == "update" and not {c.field for c in step.changes} & _SCHEDULE_FIELDS
        ):
            continue
        method, path = "POST", "/api/cron"
        if step.job_id is not None:
            method, path = "PUT", f"/api/cron/{quote(step.job_id, safe='')}"
        try:
            answer = client.request(method, path, query={"dryRun": True}, body=dict(step.document))
        except ApiUnreachable:
            raise
        except ApiError as exc:
            found[step.name] = f"not shown: {exc}"
        else:
            found[step.name] = answer.data["fires"]
    return found


def _fires_text(fires: Any) -> str:
    if isinstance(fires, str):
        return f"  fires: {fires}"
    before, after = fires["before"], fires["after"]
    first = (
        f"{when(before[0]['utc']) if before else '-'} → {when(after[0]['utc']) if after else '-'}"
    )
    counts = (len(fires["moved"]), len(fires["appeared"]), len(fires["disappeared"]))
    return "  fires: {} moved, {} new, {} gone; next {}".format(*counts, first)


def carry_out(client: Client, plan: Plan) -> Outcome:
    """Each step in turn; a refused write is recorded and the others still
    run (another apply finishes the job); no answer at all stops the run."""
    outcome = Outcome()
    for step in plan.steps:
        try:
            _write(client, step)
        except ApiUnreachable:
            raise
        except ApiError as exc:
            outcome.failed.append((step, _failure(step, exc)))
        else:
            outcome.done.append(step)
    return outcome


def _write(client: Client, step: Step) -> None:
    if step.action == "create":
        client.post("/api/cron", dict(step.document))
        return
    assert step.job_id is not None
    path = f"/api/cron/{quote(step.job_id, safe='')}"
    if step.action == "update":
        client.request("PUT", path, body=dict(step.document))
        return
    try:
        client.delete(path)
    except ApiError as exc:
        if exc.status != 404:  # already gone is what was wanted
            raise


def _failure(step: Step, exc: ApiError) -> str:
    if exc.status == 409 and step.action == "update":
        return (
            f"conflict: {step.name} ({step.job_id}) was changed on the service after it "
            "was read; not overwritten (apply again to compare with the new version)"
        )
    if exc.status == 404 and step.action == "update":
        return f"{step.name} ({step.job_id}) was deleted on the service after it was read"
    return f"{step.action} {step.name}: {exc}"


_PAST: Final = {"create": "created", "update": "updated", "delete": "deleted"}


def _print_plan(args: argparse.Namespace, plan: Plan, fires: Mapping[str, Any]) -> None:
    """The plan; under each step that changes when a job fires, its next
    fires before and after as the service's dry run of the write compares
    them (in JSON, that comparison as the API answers it)."""
    if getattr(args, "json", False):
        steps = [
            {**s.to_json(), **({"fires": fires[s.name]} if s.name in fires else {})}
            for s in plan.steps
        ]
        _print_json({"dryRun": True, "steps": steps, "unchanged": len(plan.unchanged)})
        return
    for step in plan.steps:
        print(f"{step.action} {step.text()}")
        if step.name in fires:
            print(_fires_text(fires[step.name]))
    counts = ", ".join(f"{plan.count(a)} to {a}" for a in _PAST)
    print(f"plan: {counts}, {len(plan.unchanged)} unchanged")


def _print_outcome(args: argparse.Namespace, plan: Plan, outcome: Outcome) -> None:
    if getattr(args, "json", False):
        _print_json(
            {
                "dryRun": False,
                "steps": [s.to_json() for s in outcome.done],
                "failed": [{**s.to_json(), "error": why} for s, why in outcome.failed],
                "unchanged": len(plan.unchanged),
            }
        )
    else:
        for step in outcome.done:
            print(f"{_PAST[step.action]} {step.text()}")
        done = ", ".join(
            f"{sum(1 for s in outcome.done if s.action == a)} {_PAST[a]}" for a in _PAST
        )
        print(f"{done}, {len(plan.unchanged)} unchanged, {len(outcome.failed)} failed")
    for _, why in outcome.failed:
        print(f"cronsvc: {why}", file=sys.stderr)


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, ensure_ascii=False))


def _text(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


# -- export -----------------------------------------------------------------------


def run_export(client: Client, args: argparse.Namespace) -> int:
    tag = selector_tag(args)
    kind = args.format or (
        format_of(args.output)
        if args.output
        else ("json" if getattr(args, "json", False) else "toml")
    )
    jobs = [job for page in client.pages("/api/cron", {"tag": tag, "limit": 500}) for job in page]
    entries = sorted((exported(job) for job in jobs), key=lambda job: str(job["name"]))
    _warn_repeated(entries)
    try:
        text = dump(entries, kind)
    except JobFileError as exc:
        raise UsageError(str(exc)) from None
    if args.output is None:
        sys.stdout.write(text)
        return 0
    try:
        Path(args.output).write_text(text, encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot write {args.output}: {exc.strerror or exc}") from None
    print(f"exported {len(entries)} jobs to {args.output}", file=sys.stderr)
    return 0


def _warn_repeated(entries: Iterable[Mapping[str, Any]]) -> None:
    seen: set[str] = set()
    for entry in entries:
        if entry["name"] in seen:
            print(
                f"cronsvc: warning: more than one job is named {entry['name']!r}; "
                "apply refuses a file that repeats a name",
                file=sys.stderr,
            )
        seen.add(entry["name"])
