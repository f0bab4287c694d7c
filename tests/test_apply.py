"""`cronsvc apply` and `cronsvc export` against a running service (the CLI in a
thread, the service on this test's event loop, as in tests/test_cli_client.py),
and the plan computed from a file and the service's jobs, as a pure function."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from cronsvc import commands
from cronsvc.apply import Change, make_plan
from cronsvc.cli import main
from cronsvc.client import Client as ApiClient
from cronsvc.client import Query
from cronsvc.commands import UsageError
from tests.fakes import Run
from tests.helpers_api import Client

YEARLY = "0 0 1 1 *"
HOOK = "https://example.org/hook"
TOKEN = "Bearer s3cret-token"
SECRET = "whsec_" + "QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFB"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("CRONSVC_URL", "CRONSVC_TOKEN", "http_proxy", "HTTP_PROXY"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(autouse=True)
def quiet_service() -> Iterator[None]:
    with capture_logs():
        yield


class Cli:
    def __init__(self, capsys: pytest.CaptureFixture[str], url: str) -> None:
        self._capsys, self.url = capsys, url

    async def __call__(self, *args: str) -> Run:
        self._capsys.readouterr()
        code = await asyncio.to_thread(_main, ["--url", self.url, *args])
        captured = self._capsys.readouterr()
        return Run(code, captured.out, captured.err)


def _main(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as exc:
        return int(exc.code or 0)


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], client: Client) -> Cli:
    return Cli(capsys, f"http://127.0.0.1:{client.server.port}")


def job(name: str, **fields: Any) -> dict[str, Any]:
    return {"name": name, "cronExpression": YEARLY, "webhookUrl": HOOK, **fields}


def write(path: Path, jobs: list[dict[str, Any]]) -> str:
    path.write_text(json.dumps({"jobs": jobs}))
    return str(path)


async def create(client: Client, document: dict[str, Any]) -> dict[str, Any]:
    response = await client.post("/api/cron", json=document)
    assert response.status == 201, await response.text()
    created: dict[str, Any] = await response.json()
    return created


async def jobs_by_name(client: Client) -> dict[str, dict[str, Any]]:
    response = await client.get("/api/cron", params={"limit": "500"})
    assert response.status == 200
    return {j["name"]: j for j in await response.json()}


def versions(jobs: dict[str, dict[str, Any]]) -> dict[str, int]:
    return {name: j["version"] for name, j in jobs.items()}


# -- against the service ------------------------------------------------------


async def test_apply_creates_what_is_missing_updates_what_differs_and_is_idempotent(
    cli: Cli, client: Client, tmp_path: Path
) -> None:
    await create(client, job("same", headers={"Content-Type": "text/plain"}))
    changed = await create(client, job("changed"))
    path = write(
        tmp_path / "jobs.json",
        [
            job("same", headers={"content-type": "text/plain"}, retry={"maxAttempts": 1}),
            job("changed", cronExpression="0 14 * * *", timezone="Europe/Paris"),
            job("new", tags=["team-a"]),
        ],
    )

    first = await cli("apply", path)

    assert first.code == 0, first
    assert first.lines == [
        f"updated changed ({changed['id']}): cronExpression "
        f'("{YEARLY}" → "0 14 * * *"), timezone ("UTC" → "Europe/Paris")',
        "created new",
        "1 created, 1 updated, 0 deleted, 1 unchanged, 0 failed",
    ]
    after = await jobs_by_name(client)
    assert versions(after) == {"same": 1, "changed": 2, "new": 1}
    assert after["changed"]["cronExpression"] == "0 14 * * *"
    assert after["new"]["tags"] == ["team-a"]

    again = await cli("apply", path)

    assert again.code == 0, again
    assert again.lines == ["0 created, 0 updated, 0 deleted, 3 unchanged, 0 failed"]
    assert await jobs_by_name(client) == after


async def test_dry_run_prints_the_plan_writes_nothing_and_exits_2_until_nothing_would_change(
    cli: Cli, client: Client, tmp_path: Path
) -> None:
    held = await create(client, job("held", headers={"Authorization": "Bearer old"}))
    secret_url = "https://example.org/hook?token=url-secret"
    path = write(
        tmp_path / "jobs.json",
        [
            job("held", headers={"Authorization": TOKEN}, webhookUrl=secret_url, body="b0dy"),
            job("new", secret=SECRET, headers={"Authorization": TOKEN}, webhookUrl=secret_url),
        ],
    )

    plan = await cli("apply", "--dry-run", path)
    as_json = await cli("apply", "--dry-run", "--json", path)

    assert plan.code == 2, plan
    # A create changes when a job fires: its next fires, all new, are shown under it.
    lines = plan.lines
    fires = lines.pop(2)
    assert fires.startswith("  fires: 0 moved, 10 new, 0 gone; next - → "), fires
    assert lines == [
        f"update held ({held['id']}): webhookUrl, headers, body",
        "create new",
        "plan: 1 to create, 1 to update, 0 to delete, 0 unchanged",
    ]
    assert as_json.code == 2
    answer = as_json.json()
    created_fires = answer["steps"][1].pop("fires")
    assert created_fires["before"] == [] and len(created_fires["appeared"]) == 10
    assert answer == {
        "dryRun": True,
        "steps": [
            {
                "action": "update",
                "name": "held",
                "id": held["id"],
                "changes": [{"field": "webhookUrl"}, {"field": "headers"}, {"field": "body"}],
            },
            {"action": "create", "name": "new", "id": None},
        ],
        "unchanged": 0,
    }
    for run in (plan, as_json):
        for secret in ("s3cret-token", "url-secret", SECRET, "b0dy", "Bearer old"):
            assert secret not in run.out + run.err
    assert versions(await jobs_by_name(client)) == {"held": 1}

    applied = await cli("apply", "--json", path)
    assert applied.code == 0, applied
    assert applied.json()["failed"] == []
    for secret in ("s3cret-token", "url-secret", SECRET):
        assert secret not in applied.out + applied.err
    assert (await jobs_by_name(client))["new"]["hasSecret"] is True

    settled = await cli("apply", "--dry-run", path)
    assert (settled.code, settled.lines) == (
        0,
        ["plan: 0 to create, 0 to update, 0 to delete, 2 unchanged"],
    )


async def test_dry_run_shows_the_fires_of_each_changed_schedule_through_the_services_dry_run(
    cli: Cli, client: Client, tmp_path: Path
) -> None:
    moved = await create(client, job("moved", cronExpression="0 2 * * *"))
    await create(client, job("paused", cronExpression="0 2 * * *"))
    await create(client, job("renamed headers", cronExpression="0 2 * * *"))
    path = write(
        tmp_path / "jobs.json",
        [
            job("moved", cronExpression="0 14 * * *"),
            job("paused", cronExpression="0 2 * * *", isActive=False),
            job("renamed headers", cronExpression="0 2 * * *", headers={"X-A": "b"}),
        ],
    )

    plan = await cli("apply", "--dry-run", path)

    assert plan.code == 2, plan
    assert plan.lines[0] == (
        f'update moved ({moved["id"]}): cronExpression ("0 2 * * *" → "0 14 * * *")'
    )
    assert plan.lines[1].startswith("  fires: 10 moved, 0 new, 0 gone; next "), plan.lines
    assert plan.lines[3].startswith("  fires: 0 moved, 0 new, 10 gone; next "), plan.lines
    assert plan.lines[3].endswith(" → -")
    # A change that leaves the schedule alone shows no fires.
    assert plan.lines[4].startswith("update renamed headers")
    assert plan.lines[5].startswith("plan: ")
    assert versions(await jobs_by_name(client)) == {
        "moved": 1,
        "paused": 1,
        "renamed headers": 1,
    }


async def test_an_edit_made_after_the_read_is_reported_as_a_conflict_not_overwritten(
    cli: Cli, client: Client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = await create(client, job("contested"))
    await create(client, job("other"))
    path = write(
        tmp_path / "jobs.json",
        [job("contested", cronExpression="0 3 * * *"), job("other", isActive=False)],
    )

    class EditedMeanwhile(ApiClient):
        """Someone changes the job right after apply has read the jobs."""

        def pages(self, path: str, query: Query | None = None) -> Iterator[list[Any]]:
            yield from super().pages(path, query)
            self.patch(f"/api/cron/{target['id']}", {"cronExpression": "0 4 * * *"})

    monkeypatch.setattr(commands, "Client", EditedMeanwhile)
    run = await cli("apply", path)

    assert run.code == 1, run
    assert run.lines == [
        "updated other (" + (await jobs_by_name(client))["other"]["id"] + "): "
        "isActive (true → false)",
        "0 created, 1 updated, 0 deleted, 0 unchanged, 1 failed",
    ]
    assert run.err == (
        f"cronsvc: conflict: contested ({target['id']}) was changed on the service after it "
        "was read; not overwritten (apply again to compare with the new version)\n"
    )
    contested = (await jobs_by_name(client))["contested"]
    assert (contested["cronExpression"], contested["version"]) == ("0 4 * * *", 2)


async def test_a_dry_run_the_service_refuses_is_shown_under_its_step(
    cli: Cli, client: Client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = await create(client, job("contested"))
    path = write(tmp_path / "jobs.json", [job("contested", cronExpression="0 3 * * *")])

    class EditedMeanwhile(ApiClient):
        """Someone changes the job right after apply has read the jobs."""

        def pages(self, path: str, query: Query | None = None) -> Iterator[list[Any]]:
            yield from super().pages(path, query)
            self.patch(f"/api/cron/{target['id']}", {"cronExpression": "0 4 * * *"})

    monkeypatch.setattr(commands, "Client", EditedMeanwhile)
    plan = await cli("apply", "--dry-run", path)

    assert plan.code == 2, plan
    assert plan.lines[1] == (
        f"  fires: not shown: 409 Conflict: version: job '{target['id']}' is at version 2, not 1"
    )
    contested = (await jobs_by_name(client))["contested"]
    assert (contested["cronExpression"], contested["version"]) == ("0 4 * * *", 2)


async def test_prune_deletes_only_the_selected_jobs_the_file_no_longer_names(
    cli: Cli, client: Client, tmp_path: Path
) -> None:
    await create(client, job("kept", tags=["team-a"]))
    gone = await create(client, job("gone", tags=["team-a", "x"]))
    await create(client, job("other-team", tags=["team-b"]))
    await create(client, job("untagged"))
    path = write(tmp_path / "jobs.json", [job("kept", tags=["team-a"])])

    refused = await cli("apply", "--prune", path)
    assert refused.code == 2
    assert refused.err.startswith("cronsvc: refusing --prune without --selector tag=NAME")
    assert (await cli("apply", "--selector", "tag=team-a", path)).code == 2
    assert (await cli("apply", "--prune", "--selector", "team-a", path)).code == 2
    assert set(await jobs_by_name(client)) == {"kept", "gone", "other-team", "untagged"}

    plan = await cli("apply", "--dry-run", "--prune", "--selector", "tag=team-a", path)
    assert plan.lines == [
        f"delete gone ({gone['id']})",
        "plan: 0 to create, 0 to update, 1 to delete, 1 unchanged",
    ]
    run = await cli("apply", "--prune", "--selector", "tag=team-a", path)

    assert run.code == 0, run
    assert run.lines == [
        f"deleted gone ({gone['id']})",
        "0 created, 0 updated, 1 deleted, 1 unchanged, 0 failed",
    ]
    assert set(await jobs_by_name(client)) == {"kept", "other-team", "untagged"}


ALL_KINDS = [
    job(
        "full",
        headers={"X-Api-Key": "k", "Content-Type": "application/json"},
        body={"report": "daily", "ids": [1, 2, 3], "nested": {"ok": True, "ratio": 0.5}},
        retry={"maxAttempts": 4, "backoffSeconds": 2, "maxBackoffSeconds": 30},
        timezone="America/New_York",
        tags=["team-a", "billing"],
        httpMethod="put",
        timeoutSeconds=20,
        concurrencyPolicy="forbid",
        misfireGraceSeconds=5,
        secret=SECRET,
        alerts={"url": HOOK + "/alerts", "after": 2, "format": "slack", "secret": SECRET},
    ),
    job(
        "paused", isActive=False, tags=["team-a"], body="plain text body", alerts={"enabled": False}
    ),
    job("plain", tags=["team-b"]),
]


@pytest.mark.parametrize("kind", ["toml", "json"])
async def test_export_then_apply_changes_nothing(
    cli: Cli, client: Client, tmp_path: Path, kind: str
) -> None:
    for document in ALL_KINDS:
        await create(client, document)
    before = await jobs_by_name(client)
    path = tmp_path / f"exported.{kind}"

    exported = await cli("export", "-o", str(path))

    assert exported.code == 0, exported
    assert exported.err == f"exported 3 jobs to {path}\n"
    assert "whsec_" not in path.read_text()
    assert '"id"' not in path.read_text() and "version" not in path.read_text()
    plan = await cli("apply", "--dry-run", str(path))
    assert (plan.code, plan.lines) == (
        0,
        ["plan: 0 to create, 0 to update, 0 to delete, 3 unchanged"],
    )
    run = await cli("apply", str(path))
    assert run.code == 0, run
    assert await jobs_by_name(client) == before
    assert before["full"]["hasSecret"] is True and before["full"]["alerts"]["hasSecret"] is True
    assert before["paused"]["alerts"]["enabled"] is False

    to_stdout = await cli("export", "--format", kind, "--selector", "tag=team-a")
    assert to_stdout.code == 0, to_stdout
    selected = tmp_path / f"selected.{kind}"
    selected.write_text(to_stdout.out)
    pruned = await cli("apply", "--prune", "--selector", "tag=team-a", str(selected))
    assert pruned.lines == ["0 created, 0 updated, 0 deleted, 2 unchanged, 0 failed"]
    assert await jobs_by_name(client) == before


async def test_export_refuses_a_null_toml_cannot_hold_and_json_keeps_it(
    cli: Cli, client: Client
) -> None:
    await create(client, job("nulls", body={"a": None}))

    refused = await cli("export", "--format", "toml")
    kept = await cli("export", "--json")

    assert refused.code == 2
    assert refused.err == (
        "cronsvc: job 'nulls': body.a: TOML has no null; export this job as JSON (--format json)\n"
    )
    assert kept.code == 0
    assert kept.json()["jobs"][0]["body"] == {"a": None}


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        (
            "unknown.json",
            json.dumps([job("a"), job("b", colour="red")]),
            "jobs[1] (b): colour: unknown field",
        ),
        ("broken.toml", '[[jobs]]\nname = "a"\ncronExpression = ', "not valid TOML"),
        ("twice.json", json.dumps([job("a"), job("a")]), "the name 'a' is given to two jobs"),
        (
            "schedule.json",
            json.dumps([job("a"), job("b", cronExpression="61 * * * *")]),
            "job 'b': cronExpression:",
        ),
        ("zone.json", json.dumps([job("a", timezone="Mars/Olympus")]), "job 'a': timezone:"),
    ],
)
async def test_a_bad_file_is_refused_before_anything_is_written(
    cli: Cli, client: Client, tmp_path: Path, name: str, text: str, message: str
) -> None:
    await create(client, job("existing", tags=["team-a"]))
    path = tmp_path / name
    path.write_text(text)

    run = await cli("apply", "--prune", "--selector", "tag=team-a", str(path))

    assert run.code == 2, run
    assert run.out == ""
    assert run.err.startswith(f"cronsvc: {path}: ") and run.err.count("\n") == 1, run.err
    assert message in run.err
    assert "Traceback" not in run.err
    assert versions(await jobs_by_name(client)) == {"existing": 1}


# -- the plan, as a pure function ---------------------------------------------


def answered(name: str, job_id: str, **fields: Any) -> dict[str, Any]:
    return {
        "id": job_id,
        "version": 7,
        "hasSecret": False,
        "timeoutSeconds": 10.0,
        **job(name),
        **fields,
    }


def test_plan_creates_updates_and_prunes_in_file_order_deletes_last() -> None:
    current = [
        answered("b", "jb", tags=["t"]),
        answered("gone", "jg", tags=["t"]),
        answered("untouched", "ju", tags=["other"]),
        answered("same", "js"),
    ]
    wanted = [job("a"), job("b", tags=["t"], httpMethod="GET"), job("same")]

    plan = make_plan(wanted, current, prune_tag="t")

    assert [(s.action, s.name, s.job_id) for s in plan.steps] == [
        ("create", "a", None),
        ("update", "b", "jb"),
        ("delete", "gone", "jg"),
    ]
    assert plan.unchanged == ("same",)
    update = plan.steps[1]
    assert update.changes == (Change(field="httpMethod", before="POST", after="GET"),)
    assert update.document == {
        **job("b", tags=["t"], httpMethod="GET"),
        "timeoutSeconds": 10.0,
        "version": 7,
    }
    assert make_plan(wanted, current).count("delete") == 0


def test_a_secret_in_the_file_is_set_where_there_is_none_and_a_held_one_kept() -> None:
    wanted = [job("a", secret=SECRET), job("b", secret=SECRET), job("c", secret=None), job("d")]
    current = [
        answered("a", "ja"),
        answered("b", "jb", hasSecret=True),
        answered("c", "jc", hasSecret=True),
        answered("d", "jd", hasSecret=True),
    ]

    plan = make_plan(wanted, current)

    assert [(s.name, s.changes) for s in plan.steps] == [
        ("a", (Change(field="secret"),)),
        ("c", (Change(field="secret"),)),
    ]
    assert plan.steps[0].document["secret"] == SECRET
    assert plan.steps[1].document["secret"] is None
    assert SECRET not in plan.steps[0].text() and SECRET not in repr(plan.steps[0])
    assert plan.unchanged == ("b", "d")


def test_an_alert_secret_in_the_file_is_set_where_there_is_none_and_a_held_one_kept() -> None:
    alerts = {"url": HOOK, "secret": SECRET}
    held = {"enabled": True, "url": HOOK, "after": 1, "onRecovery": True, "format": "standard"}
    wanted = [
        job("a", alerts=alerts),
        job("b", alerts=alerts),
        job("c", alerts={"url": HOOK, "secret": None}),
        job("d", alerts={"url": HOOK, "after": 5, "secret": SECRET}),
    ]
    current = [
        answered("a", "ja", alerts={**held, "hasSecret": False}),
        answered("b", "jb", alerts={**held, "hasSecret": True}),
        answered("c", "jc", alerts={**held, "hasSecret": True}),
        answered("d", "jd", alerts={**held, "hasSecret": True}),
    ]

    plan = make_plan(wanted, current)

    assert [(s.name, s.changes) for s in plan.steps] == [
        ("a", (Change(field="alerts.secret"),)),
        ("c", (Change(field="alerts.secret"),)),
        ("d", (Change(field="alerts"),)),
    ]
    a, c, d = (step.document["alerts"] for step in plan.steps)
    assert a["secret"] == SECRET and c["secret"] is None
    assert "secret" not in d, "a secret held is kept: the write leaves it out"
    assert all(SECRET not in step.text() + json.dumps(step.to_json()) for step in plan.steps)
    assert plan.unchanged == ("b",)


def test_the_values_of_fields_that_may_hold_a_credential_are_never_shown() -> None:
    current = [answered("a", "ja", headers={"Authorization": "old"}, body="old-body")]
    wanted = [job("a", headers={"Authorization": "new"}, body="new-body", webhookUrl=HOOK + "?k=v")]

    (step,) = make_plan(wanted, current).steps

    shown = step.text() + json.dumps(step.to_json())
    assert step.text() == "a (ja): webhookUrl, headers, body"
    for value in ("old", "new", "k=v"):
        assert value not in shown


def test_a_name_on_two_jobs_of_the_service_stops_the_plan_only_when_the_file_names_it() -> None:
    current = [answered("twin", "j1"), answered("twin", "j2", tags=["t"])]

    with pytest.raises(UsageError, match=r"2 jobs on the service are named 'twin' \(j1, j2\)"):
        make_plan([job("twin")], current)
    plan = make_plan([job("solo")], current, prune_tag="t")
    assert [(s.action, s.job_id) for s in plan.steps] == [("create", None), ("delete", "j2")]
