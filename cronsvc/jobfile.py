"""Job files, for `cronsvc apply` and `cronsvc export`: reading them (TOML
`[[jobs]]` tables, or JSON: `{"jobs": [...]}` or a bare list), putting a job
in the one form two jobs are compared in, and writing jobs back out.

A file names jobs with the API's writable fields (`cronsvc.api.schemas.JobIn`),
so what a file may say is what the API would take; the fields the service owns
(`id`, `version`, timestamps, state) have no place in it. Comparison goes
through that same model with its defaults, so a field left out equals its
default, and spellings the service treats alike (a header name's case, the
method's case, the order of tags) never count as a difference.

TOML is written by a small writer of its own (`tomllib` only reads). TOML has
no null: a body holding one is refused rather than changed (JSON holds it).
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final

from cronsvc.api.schemas import GENERATE_SECRET, READ_ONLY_FIELDS, JobIn, validate
from cronsvc.errors import CronSvcError, ValidationFailed

SPEC_FIELDS: Final = (
    "name",
    "cronExpression",
    "timezone",
    "webhookUrl",
    "httpMethod",
    "headers",
    "body",
    "timeoutSeconds",
    "retry",
    "concurrencyPolicy",
    "misfirePolicy",
    "misfireGraceSeconds",
    "isActive",
    "tags",
    "alerts",
)
"""A job's writable fields, as the API answers them (`spec_to_wire`), in the
order files are written in."""
FILE_FIELDS: Final = frozenset({*SPEC_FIELDS, "secret"})
SERVICE_FIELDS: Final = READ_ONLY_FIELDS | {"version"}
FORMATS: Final = ("toml", "json")

_TABLES: Final = ("headers", "retry", "alerts")
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_INT64 = range(-(2**63), 2**63)


class JobFileError(CronSvcError, ValueError):
    """A job file that cannot be read or written as asked; the message names
    the file and the job."""


def format_of(path: str) -> str:
    """`toml` or `json`, from the file's extension."""
    suffix = Path(path).suffix.lower().lstrip(".")
    if suffix not in FORMATS:
        raise JobFileError(f"{path}: name a .toml or .json file (YAML is not read)")
    return suffix


def read_jobs(path: str) -> list[dict[str, Any]]:
    """The jobs of a file, each checked as the API would check it; any fault
    anywhere in the file raises `JobFileError` before anything is used."""
    kind = format_of(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise JobFileError(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from None
    return parse_jobs(text, kind, source=path)


def parse_jobs(text: str, kind: str, *, source: str) -> list[dict[str, Any]]:
    entries = _entries(_document(text, kind, source), source)
    jobs = [_checked(entry, f"{source}: jobs[{i}]") for i, entry in enumerate(entries)]
    seen: set[str] = set()
    for job in jobs:
        if job["name"] in seen:
            raise JobFileError(f"{source}: the name {job['name']!r} is given to two jobs")
        seen.add(job["name"])
    return jobs


def _document(text: str, kind: str, source: str) -> Any:
    try:
        return tomllib.loads(text) if kind == "toml" else json.loads(text)
    except (tomllib.TOMLDecodeError, ValueError) as exc:
        raise JobFileError(f"{source}: not valid {kind.upper()}: {exc}") from None


def _entries(document: Any, source: str) -> list[Any]:
    if isinstance(document, dict):
        unknown = sorted(set(document) - {"jobs"})
        if unknown:
            raise JobFileError(f"{source}: unknown key {unknown[0]!r} (jobs go in `jobs`)")
        document = document.get("jobs", [])
    if not isinstance(document, list):
        raise JobFileError(f"{source}: `jobs` must be a list of jobs")
    return document


def _checked(entry: Any, where: str) -> dict[str, Any]:
    if not isinstance(entry, dict):
        raise JobFileError(f"{where}: a job must be a table (an object)")
    name = entry.get("name")
    if isinstance(name, str):
        where = f"{where} ({name})"
    for key in entry:
        if key in SERVICE_FIELDS:
            raise JobFileError(f"{where}: {key}: is set by the service; leave it out")
        if key not in FILE_FIELDS:
            raise JobFileError(f"{where}: {key}: unknown field")
    if entry.get("secret") == GENERATE_SECRET:
        raise JobFileError(
            f'{where}: secret: "{GENERATE_SECRET}" is not taken from a file, since the '
            "secret it makes would be shown once and apply never prints secrets; "
            "write a whsec_ secret, or use `cronsvc jobs update --from-file`"
        )
    try:
        validate(JobIn, entry)
    except ValidationFailed as exc:
        raise JobFileError(f"{where}: {exc}") from None
    return dict(entry)


# -- comparing ------------------------------------------------------------------


def normal(job: Mapping[str, Any]) -> dict[str, Any]:
    """A job's writable fields as the API reads them, defaults filled in, in
    the one spelling compared: header names in lower case, tags sorted.
    Raises `ValidationFailed` for a job the API would refuse now."""
    model = validate(JobIn, {k: job[k] for k in SPEC_FIELDS if k in job})
    # Secrets are never answered, so never compared (see `cronsvc.apply`).
    wire: dict[str, Any] = model.model_dump(
        mode="json", by_alias=True, exclude={"secret": True, "version": True, "alerts": {"secret"}}
    )
    wire["cronExpression"] = wire["cronExpression"].strip()
    wire["headers"] = {name.lower(): value for name, value in sorted(wire["headers"].items())}
    wire["tags"] = sorted(wire["tags"])
    return wire


def differing(wanted: Mapping[str, Any], have: Mapping[str, Any]) -> list[tuple[str, Any, Any]]:
    """The fields of the job a file describes (`wanted`) that differ from the
    job as the service answers it (`have`): each with its value on the
    service and in the file, as compared. A `timeoutSeconds` the file leaves
    out is the service's to choose, so it is not compared."""
    want = normal(wanted)
    try:
        held = normal(have)
    except ValidationFailed:  # written before today's rules: compare as answered
        held = {k: have.get(k) for k in SPEC_FIELDS}
    return [
        (field, held[field], want[field])
        for field in SPEC_FIELDS
        if want[field] != held[field] and (field != "timeoutSeconds" or field in wanted)
    ]


# -- writing --------------------------------------------------------------------


def _defaults() -> dict[str, Any]:
    sample = JobIn.model_validate({"name": "x", "cronExpression": "x", "webhookUrl": "http://x/"})
    dumped: dict[str, Any] = sample.model_dump(mode="json", by_alias=True)
    return {k: v for k, v in dumped.items() if k not in ("name", "cronExpression", "webhookUrl")}


_DEFAULTS: Final = _defaults()


def exported(job: Mapping[str, Any]) -> dict[str, Any]:
    """A job as answered, as a file holds it: its writable fields, without
    its secrets and without the fields still at their default (`timeoutSeconds`,
    whose default is the service's, is always kept). Its alert policy keeps
    the fields it answers a value for, `hasSecret` aside."""
    fields = {
        field: job[field]
        for field in SPEC_FIELDS
        if field in job and (field not in _DEFAULTS or job[field] != _DEFAULTS[field])
    }
    alerts = fields.get("alerts")
    if isinstance(alerts, dict):
        fields["alerts"] = {
            k: v for k, v in alerts.items() if k != "hasSecret" and k != "secret" and v is not None
        }
    return fields


def dump(jobs: Sequence[Mapping[str, Any]], kind: str) -> str:
    if kind == "json":
        return json.dumps({"jobs": list(jobs)}, indent=2, ensure_ascii=False) + "\n"
    return dump_toml(jobs)


def dump_toml(jobs: Iterable[Mapping[str, Any]]) -> str:
    """Jobs as `[[jobs]]` tables: plain fields first, then `headers`,
    `retry` and `alerts` as sub-tables; a body as a value (inline tables for objects).
    Raises `JobFileError` for what TOML cannot hold (a null)."""
    lines: list[str] = []
    for job in jobs:
        where = f"job {job.get('name')!r}"
        lines += ["[[jobs]]" if not lines else "\n[[jobs]]"]
        tables = {k: v for k, v in job.items() if k in _TABLES and v}
        for key, value in job.items():
            if key not in tables and value is not None:
                lines.append(f"{_key(key)} = {_value(value, f'{where}: {key}')}")
        for key, table in tables.items():
            lines.append(f"[jobs.{key}]")
            lines += [f"{_key(k)} = {_value(v, f'{where}: {key}.{k}')}" for k, v in table.items()]
    return "\n".join(lines) + "\n" if lines else ""


def _key(key: str) -> str:
    return key if _BARE_KEY.fullmatch(key) else _string(key)


def _string(text: str) -> str:
    # JSON's escapes are all TOML escapes; TOML also wants DEL escaped.
    return json.dumps(text, ensure_ascii=False).replace("\x7f", "\\u007F")


def _value(value: Any, where: str) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        if value not in _INT64:
            raise JobFileError(f"{where}: {value} is past TOML's 64-bit integers (use JSON)")
        return str(value)
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, list):
        return "[" + ", ".join(_value(v, f"{where}[{i}]") for i, v in enumerate(value)) + "]"
    if isinstance(value, dict):
        if not value:
            return "{}"
        pairs = (f"{_key(k)} = {_value(v, f'{where}.{k}')}" for k, v in value.items())
        return "{ " + ", ".join(pairs) + " }"
    raise JobFileError(f"{where}: TOML has no null; export this job as JSON (--format json)")
