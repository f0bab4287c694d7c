"""The client commands of `cronsvc`: `jobs`, `logs`, `next` and `cluster`,
each one or a few calls to the HTTP API (`cronsvc.client`); `apply` and
`export` are registered here and live in `cronsvc.apply`.

People get aligned tables; `--json` prints the API's answer as one JSON
document (one record per line under `logs --follow`, which never ends).
Exit status: 0 done, 1 the API refused or could not be reached (one line on
stderr, `cronsvc: ...`), 2 a usage error.

The API options (`--url`, `--token`, `--json`, `--timeout`) go before the
command or after it. After `jobs create` and `jobs update`, `--url` is the
job's webhook URL, as the API's `webhookUrl`; give the API URL before the
command there (`cronsvc --url http://host:8080 jobs create ... --url HOOK`) or
in `CRONSVC_URL`.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from cronsvc.client import ApiError, Client
from cronsvc.instants import rfc3339_seconds
from cronsvc.tables import ago, aligned, cell, dry_run_lines, duration, key_values, when

DEFAULT_URL = "http://127.0.0.1:8080"
DEFAULT_TIMEOUT_S = 10.0
CLIENT_OPTIONS = ("url", "token", "json", "timeout")
_FOLLOW_PAGE = 500
_FOLLOW_MAX_PAGES = 10
_DURATION = re.compile(r"^(\d+)([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}

Handler = Callable[[Client, argparse.Namespace], int]
if TYPE_CHECKING:  # subscriptable only to type checkers
    Subparsers = argparse._SubParsersAction[argparse.ArgumentParser]


class UsageError(Exception):
    """A command line that cannot be carried out as given (exit status 2)."""


# -- parser -------------------------------------------------------------------


def add_client_options(parser: argparse.ArgumentParser, *, webhook_url: bool = False) -> None:
    """The API options. Their defaults are suppressed so that the same option
    given before the command is not reset by the command's parser; `run`
    fills in the defaults."""
    group = parser.add_argument_group("API options")
    if not webhook_url:
        group.add_argument(
            "--url",
            default=argparse.SUPPRESS,
            help=f"the API's base URL (default: $CRONSVC_URL, else {DEFAULT_URL})",
        )
    group.add_argument(
        "--token", default=argparse.SUPPRESS, help="bearer token (default: $CRONSVC_TOKEN)"
    )
    group.add_argument(
        "--json",
        action="store_true",
        default=argparse.SUPPRESS,
        help="print the API's JSON answer as is, for scripts",
    )
    group.add_argument(
        "--timeout",
        type=_positive(float),
        default=argparse.SUPPRESS,
        metavar="SECONDS",
        help=f"wait this long to connect and for each answer (default {DEFAULT_TIMEOUT_S:g})",
    )


def add_commands(commands: Subparsers) -> None:
    """Add `jobs`, `logs`, `next`, `cluster`, `apply` and `export` to the
    `cronsvc` parser."""
    jobs = commands.add_parser(
        "jobs", help="list, show, create, change, pause, run and delete jobs"
    )
    actions = jobs.add_subparsers(dest="action", required=True, metavar="ACTION")

    listing = _command(actions, "list", _jobs_list, "list jobs, newest first")
    listing.add_argument("--tag", help="only jobs with this tag")
    state = listing.add_mutually_exclusive_group()
    state.add_argument(
        "--active", dest="active", action="store_const", const=True, help="only active jobs"
    )
    state.add_argument(
        "--paused", dest="active", action="store_const", const=False, help="only paused jobs"
    )
    listing.add_argument(
        "--limit", type=_positive(int), help="show at most N jobs (the page size with --all)"
    )
    listing.add_argument("--all", action="store_true", help="every job, page after page")

    _command(actions, "get", _jobs_get, "show one job").add_argument("id")

    create = _command(actions, "create", _jobs_create, "create a job", webhook_url=True)
    _job_options(create)
    _dry_run_option(create, "created")
    update = _command(
        actions,
        "update",
        _jobs_update,
        "change the given fields of a job (headers merge; --tag replaces the tags)",
        webhook_url=True,
    )
    update.add_argument("id")
    _job_options(update)
    _dry_run_option(update, "changed")

    delete = _command(actions, "delete", _jobs_delete, "delete a job (its logs stay)")
    delete.add_argument("id")
    delete.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")

    for name, text in (
        ("pause", "stop firing a job"),
        ("resume", "fire a paused job again, from now on"),
        ("trigger", "run a job now, paused or not"),
    ):
        _command(actions, name, _jobs_action, text).add_argument("id")

    logs = _command(commands, "logs", _logs, "execution logs, oldest first")
    logs.add_argument("--job", metavar="ID", help="only this job's runs")
    logs.add_argument("--status", help="only runs with this status (SUCCESS, FAILURE, ...)")
    logs.add_argument(
        "--since",
        metavar="TIME",
        help="ticks from TIME on: an RFC 3339 instant or a span back from now (30m, 2h, 1d)",
    )
    logs.add_argument("--limit", type=_positive(int), default=20, help="show the N newest (20)")
    logs.add_argument(
        "--follow", "-f", action="store_true", help="keep printing runs as they finish"
    )
    logs.add_argument(
        "--interval",
        type=_positive(float),
        default=2.0,
        metavar="SECONDS",
        help="with --follow, ask for new runs this often (2)",
    )
    logs.add_argument("--max-polls", type=_positive(int), help=argparse.SUPPRESS)

    upcoming = _command(commands, "next", _next, "the next fire instants of a cron expression")
    upcoming.add_argument("expression", metavar="EXPR", help="a cron expression")
    upcoming.add_argument("--tz", default="UTC", help="IANA time zone to evaluate it in (UTC)")
    upcoming.add_argument("-n", "--count", type=_positive(int), default=5, help="how many (5)")
    upcoming.add_argument("--after", metavar="TIME", help="start after this RFC 3339 instant")

    _command(commands, "cluster", _cluster, "the live instances and the leader")
    _add_jobs_as_code(commands)


def _add_jobs_as_code(commands: Subparsers) -> None:
    apply = _command(
        commands, "apply", _apply, "make the service's jobs match a file (TOML or JSON)"
    )
    apply.add_argument("file", metavar="FILE", help="a .toml or .json file of jobs")
    apply.add_argument(
        "--prune",
        action="store_true",
        help="delete the jobs of --selector that the file does not name",
    )
    apply.add_argument(
        "--dry-run",
        action="store_true",
        help="print the plan, write nothing; exit 2 if anything would change, else 0",
    )
    export = _command(commands, "export", _export, "write the service's jobs as a file apply reads")
    export.add_argument(
        "--format",
        choices=("toml", "json"),
        help="the file's format (default: -o's extension, else json with --json, else toml)",
    )
    export.add_argument("-o", "--output", metavar="FILE", help="write here, not to stdout")
    apply.add_argument(
        "--selector", metavar="tag=NAME", help="with --prune: the jobs pruning may delete"
    )
    export.add_argument("--selector", metavar="tag=NAME", help="only the jobs with this tag")


def _apply(client: Client, args: argparse.Namespace) -> int:
    from cronsvc.apply import run_apply  # brings in the API's models: only when used

    return run_apply(client, args)


def _export(client: Client, args: argparse.Namespace) -> int:
    from cronsvc.apply import run_export

    return run_export(client, args)


def _command(
    parent: Subparsers, name: str, handler: Handler, text: str, *, webhook_url: bool = False
) -> argparse.ArgumentParser:
    parser = parent.add_parser(name, help=text, description=text)
    parser.set_defaults(handler=handler)
    add_client_options(parser, webhook_url=webhook_url)
    return parser


def _job_options(parser: argparse.ArgumentParser) -> None:
    fields = parser.add_argument_group("job fields")
    fields.add_argument("--name", help="a unique name")
    fields.add_argument("--schedule", metavar="EXPR", help="cron expression")
    fields.add_argument(
        "--url",
        dest="webhook_url",
        metavar="URL",
        help="the webhook URL (here the API's URL goes before `jobs`, or in $CRONSVC_URL)",
    )
    fields.add_argument("--tz", metavar="ZONE", help="IANA time zone of the schedule")
    fields.add_argument("--method", help="HTTP method of the webhook call")
    fields.add_argument(
        "--header",
        action="append",
        type=_header,
        metavar="NAME:VALUE",
        help="a header of the webhook call (repeat for more)",
    )
    body = fields.add_mutually_exclusive_group()
    body.add_argument("--body", metavar="TEXT|@FILE", help="the webhook body, as text")
    body.add_argument(
        "--json-body", metavar="FILE|-", help="the webhook body, as JSON from a file or stdin"
    )
    fields.add_argument("--tag", action="append", metavar="TAG", help="a tag (repeat for more)")
    state = fields.add_mutually_exclusive_group()
    state.add_argument(
        "--paused", dest="active", action="store_const", const=False, help="do not fire it"
    )
    state.add_argument(
        "--active", dest="active", action="store_const", const=True, help="fire it (default)"
    )
    fields.add_argument(
        "--from-file",
        metavar="FILE|-",
        help="the job as a JSON document (from a file or stdin); other options override it",
    )


def _dry_run_option(parser: argparse.ArgumentParser, done: str) -> None:
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help=f"show the fields that would change and the next fires before and after; "
        f"nothing is {done} (exit 0 if the service would take it)",
    )


def _positive(kind: Callable[[str], Any]) -> Callable[[str], Any]:
    def convert(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or value <= 0:
            raise argparse.ArgumentTypeError(f"must be a positive number, not {text!r}")
        return value

    return convert


def _header(text: str) -> tuple[str, str]:
    name, colon, value = text.partition(":")
    if not colon or not name.strip():
        raise argparse.ArgumentTypeError(f"must be NAME:VALUE, not {text!r}")
    return name.strip(), value.strip()


# -- running ------------------------------------------------------------------


def run(args: argparse.Namespace) -> int:
    """Run the parsed client command; the exit status."""
    token = getattr(args, "token", None) or os.environ.get("CRONSVC_TOKEN") or None
    url = getattr(args, "url", None) or os.environ.get("CRONSVC_URL") or DEFAULT_URL
    try:
        client = Client(url, token=token, timeout=getattr(args, "timeout", DEFAULT_TIMEOUT_S))
    except ValueError as exc:
        return _fail(str(exc), 2)
    handler: Handler = args.handler
    try:
        return handler(client, args)
    except ApiError as exc:
        message = str(exc)
        if exc.status == 401 and token is None:
            message += " (give a token with --token or CRONSVC_TOKEN)"
        return _fail(message, 1)
    except UsageError as exc:
        return _fail(str(exc), 2)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        _silence_stdout()  # the reader went away (`| head`): stop quietly
        return 0


def _fail(message: str, status: int) -> int:
    print(f"cronsvc: {message}", file=sys.stderr)
    return status


def _silence_stdout() -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def _wants_json(args: argparse.Namespace) -> bool:
    return bool(getattr(args, "json", False))


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, ensure_ascii=False))


def _print_lines(lines: Iterable[str]) -> None:
    for line in lines:
        print(line)


def _job_path(job_id: str, action: str = "") -> str:
    return f"/api/cron/{quote(job_id, safe='')}{action}"


# -- jobs -----------------------------------------------------------------------

JOB_COLUMNS = ("ID", "NAME", "SCHEDULE", "TZ", "ACTIVE", "NEXT RUN", "LAST STATUS")


def _job_row(job: dict[str, Any]) -> list[str]:
    return [
        cell(job.get("id")),
        cell(job.get("name")),
        cell(job.get("cronExpression")),
        cell(job.get("timezone")),
        cell(job.get("isActive")),
        when(job.get("nextRunAt")),
        cell(job.get("lastStatus")),
    ]


def _jobs_list(client: Client, args: argparse.Namespace) -> int:
    query = {"tag": args.tag, "isActive": args.active}
    more = False
    if args.all:
        jobs = [
            job
            for page in client.pages("/api/cron", {**query, "limit": args.limit or 500})
            for job in page
        ]
    else:
        answer = client.request("GET", "/api/cron", query={**query, "limit": args.limit})
        jobs, more = answer.data, answer.next_url is not None
    if _wants_json(args):
        _print_json(jobs)
        return 0
    _print_lines(aligned([JOB_COLUMNS, *(_job_row(job) for job in jobs)]))
    if more:
        print("(more jobs: --all lists every one)", file=sys.stderr)
    return 0


def _jobs_get(client: Client, args: argparse.Namespace) -> int:
    job = client.get(_job_path(args.id))
    if _wants_json(args):
        _print_json(job)
    else:
        _print_lines(key_values(job))
    return 0


def _jobs_create(client: Client, args: argparse.Namespace) -> int:
    document = _job_document(args)
    if args.dry_run:
        answer = client.request("POST", "/api/cron", query={"dryRun": True}, body=document)
        return _dry_run_report(args, answer.data, "create")
    job = client.post("/api/cron", document)
    return _report(args, job, f"created job {_label(job)}, next run {when(job.get('nextRunAt'))}")


def _jobs_update(client: Client, args: argparse.Namespace) -> int:
    patch = _job_document(args)
    if not patch:
        raise UsageError("nothing to change: give a job field (see cronsvc jobs update --help)")
    if args.dry_run:
        path = _job_path(args.id)
        answer = client.request("PATCH", path, query={"dryRun": True}, body=patch)
        return _dry_run_report(args, answer.data, "update")
    job = client.patch(_job_path(args.id), patch)
    return _report(args, job, f"updated job {_label(job)}")


def _dry_run_report(args: argparse.Namespace, answer: Any, what: str) -> int:
    if _wants_json(args):
        _print_json(answer)
        return 0
    job = answer.get("job", {})
    label = _label(job) if "id" in job else repr(job.get("name"))
    print(f"dry run: {what} job {label}")
    _print_lines(dry_run_lines(answer))
    return 0


def _jobs_delete(client: Client, args: argparse.Namespace) -> int:
    if not args.yes:
        if not sys.stdin.isatty():
            raise UsageError("not deleting without --yes: standard input is not a terminal")
        job = client.get(_job_path(args.id))
        print(f"Delete job {_label(job)}? [y/N] ", end="", file=sys.stderr, flush=True)
        if sys.stdin.readline().strip().lower() not in ("y", "yes"):
            return _fail("not deleted", 1)
    job = client.delete(_job_path(args.id))
    return _report(args, job, f"deleted job {_label(job)}")


def _jobs_action(client: Client, args: argparse.Namespace) -> int:
    answer = client.post(_job_path(args.id, f"/{args.action}"))
    if args.action == "trigger":
        execution = answer
        text = (
            f"triggered job {execution.get('cronJobId')} ({execution.get('jobName')}): "
            f"execution {execution.get('executionId')}, {execution.get('status')}"
        )
    elif args.action == "resume":
        text = f"resumed job {_label(answer)}, next run {when(answer.get('nextRunAt'))}"
    else:
        text = f"paused job {_label(answer)}"
    return _report(args, answer, text)


def _report(args: argparse.Namespace, answer: Any, text: str) -> int:
    if _wants_json(args):
        _print_json(answer)
    else:
        print(text)
    return 0


def _label(job: dict[str, Any]) -> str:
    return f"{job.get('id')} ({job.get('name')})"


def _job_document(args: argparse.Namespace) -> dict[str, Any]:
    """The job fields given on the command line, over `--from-file`'s."""
    document: dict[str, Any] = {}
    if args.from_file is not None:
        document = _read_json(args.from_file)
        if not isinstance(document, dict):
            raise UsageError(f"--from-file {args.from_file}: must hold a JSON object")
    for option, field in (
        ("name", "name"),
        ("schedule", "cronExpression"),
        ("webhook_url", "webhookUrl"),
        ("tz", "timezone"),
        ("method", "httpMethod"),
        ("tag", "tags"),
        ("active", "isActive"),
    ):
        value = getattr(args, option)
        if value is not None:
            document[field] = value
    if args.header:
        headers = document.get("headers")
        document["headers"] = {
            **(headers if isinstance(headers, dict) else {}),
            **dict(args.header),
        }
    if args.body is not None:
        document["body"] = _read_text(args.body[1:]) if args.body.startswith("@") else args.body
    if args.json_body is not None:
        if args.json_body == "-" and args.from_file == "-":
            raise UsageError("--json-body and --from-file cannot both read stdin")
        document["body"] = _read_json(args.json_body)
    return document


def _read_text(path: str) -> str:
    try:
        if path == "-":
            return sys.stdin.read()
        with open(path, encoding="utf-8") as file:
            return file.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from None


def _read_json(path: str) -> Any:
    text = _read_text(path)
    try:
        return json.loads(text)
    except ValueError as exc:
        raise UsageError(f"{'stdin' if path == '-' else path} is not JSON: {exc}") from None


# -- logs -------------------------------------------------------------------------

LOG_COLUMNS = ("ID", "JOB", "TRIGGER", "SCHEDULED", "STATUS", "HTTP", "DURATION")


def _log_row(record: dict[str, Any]) -> list[str]:
    return [
        cell(record.get("id")),
        cell(record.get("jobName")),
        cell(record.get("trigger")),
        when(record.get("scheduledAt")),
        cell(record.get("status")),
        cell(record.get("responseStatus")),
        duration(record.get("durationMs")),
    ]


def _logs(client: Client, args: argparse.Namespace) -> int:
    query: dict[str, str | None] = {
        "cronJobId": args.job,
        "status": args.status,
        "since": _since(args.since),
    }
    if args.follow:
        return _follow(client, args, query)
    records = client.get("/api/execution-logs", {**query, "limit": args.limit})
    if _wants_json(args):
        _print_json(records)
    else:  # read like a log: the newest at the bottom
        _print_lines(aligned([LOG_COLUMNS, *(_log_row(r) for r in reversed(records))]))
    return 0


def _since(text: str | None) -> str | None:
    """`--since`: an instant, passed on as given, or a span back from now."""
    if text is None:
        return None
    match = _DURATION.match(text.strip())
    if match is None:
        return text
    span = timedelta(**{_UNITS[match[2]]: int(match[1])})
    return rfc3339_seconds(datetime.now(UTC) - span)


def _follow(client: Client, args: argparse.Namespace, query: dict[str, str | None]) -> int:
    """Print the newest `--limit` finished runs, then each run once as it
    finishes, oldest first, until Ctrl-C (exit 0).

    Each poll reads the newest page (500) and more pages while none of them
    reaches a run already known. A run is printed once it is no longer
    RUNNING (unless RUNNING is what was asked for), so its outcome shows.
    When the newest pages do not reach back to the previous poll's oldest
    run, anything older than that is taken as already seen: a deleted record
    must not bring an old one back as new.
    """
    wanted = (args.status or "").upper()
    widths: list[int] = []
    seen: set[str] = set()
    floor: str | None = None
    polls = 0
    try:
        while True:
            records, truncated = _newest(client, query, seen, first=polls == 0)
            done = [r for r in records if r.get("status") != "RUNNING" or wanted == "RUNNING"]
            fresh = [
                r
                for r in done
                if r.get("id") not in seen and (floor is None or r.get("scheduledAt", "") >= floor)
            ]
            if polls == 0:
                fresh = fresh[: args.limit]
            seen = {r.get("id", "") for r in done}
            floor = (
                min((r.get("scheduledAt", "") for r in records), default=None)
                if truncated
                else None
            )
            _print_follow(args, reversed(fresh), widths, header=polls == 0)
            polls += 1
            if args.max_polls is not None and polls >= args.max_polls:
                return 0
            time.sleep(args.interval)
    except KeyboardInterrupt:
        return 0


def _newest(
    client: Client, query: dict[str, str | None], seen: set[str], *, first: bool
) -> tuple[list[dict[str, Any]], bool]:
    """The newest records, newest first, and whether older ones were left."""
    records: list[dict[str, Any]] = []
    url: str | None = client.url("/api/execution-logs", {**query, "limit": _FOLLOW_PAGE})
    for _ in range(1 if first else _FOLLOW_MAX_PAGES):
        if url is None:
            break
        answer = client.request("GET", url)
        records += answer.data
        url = answer.next_url
        if any(r.get("id") in seen for r in answer.data):
            break
    return records, url is not None


def _print_follow(
    args: argparse.Namespace,
    records: Iterable[dict[str, Any]],
    widths: list[int],
    *,
    header: bool,
) -> None:
    if _wants_json(args):
        for record in records:
            print(json.dumps(record, ensure_ascii=False))
    else:
        rows = [_log_row(r) for r in records]
        lines = aligned([LOG_COLUMNS, *rows], widths)
        _print_lines(lines if header else lines[1:])
    sys.stdout.flush()


# -- next, cluster ----------------------------------------------------------------


def _next(client: Client, args: argparse.Namespace) -> int:
    document: dict[str, Any] = {
        "cronExpression": args.expression,
        "timezone": args.tz,
        "count": args.count,
    }
    if args.after is not None:
        document["after"] = args.after
    preview = client.post("/api/schedule/preview", document)
    if _wants_json(args):
        _print_json(preview)
        return 0
    instants: Sequence[dict[str, str]] = preview.get("instants", [])
    if preview.get("timezone") == "UTC":
        rows = [["UTC"], *([when(i["utc"])] for i in instants)]
    else:
        zone = f"LOCAL ({preview.get('timezone')})"
        rows = [["UTC", zone], *([when(i["utc"]), i["local"]] for i in instants)]
    _print_lines(aligned(rows))
    return 0


def jobs_owned_cell(instance: dict[str, Any]) -> str:
    """An instance's share: its count, "loading" while it loads its jobs first,
    "none" otherwise (it is stopping, loading past its wait, or an earlier version)."""
    owned = instance.get("jobsOwned")
    if owned is not None:
        return str(owned)
    return "loading" if instance.get("loading") else "none"


def _cluster(client: Client, args: argparse.Namespace) -> int:
    view = client.get("/api/cluster")
    if _wants_json(args):
        _print_json(view)
        return 0
    now = datetime.now(UTC)
    rows = [
        [
            cell(i.get("id")),
            cell(i.get("host")),
            cell(i.get("version")),
            when(i.get("startedAt")),
            ago(i.get("lastHeartbeat"), now),
            jobs_owned_cell(i),
            cell(i.get("ticksFiredLastMinute")),
            "yes" if i.get("isLeader") else "",
        ]
        for i in view.get("instances", [])
    ]
    header = (
        "ID",
        "HOST",
        "VERSION",
        "STARTED",
        "LAST HEARTBEAT",
        "JOBS OWNED",
        "FIRED LAST MIN",
        "LEADER",
    )
    _print_lines(aligned([header, *rows]))
    if view.get("leader") is None:
        print("(no leader at the moment)", file=sys.stderr)
    return 0
