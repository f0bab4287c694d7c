"""Plain text for people: aligned tables, `key: value` lines, and instants
and durations as they read them. No third-party table library: a column is as
wide as its widest cell."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from cronsvc.instants import parse_rfc3339, rfc3339_seconds

GAP = "  "


def aligned(rows: Iterable[Sequence[str]], widths: list[int] | None = None) -> list[str]:
    """Rows as lines, each column padded to its widest cell. When `widths`
    is given it is updated in place and only ever grows, so rows printed in
    later batches (`logs --follow`) line up with the earlier ones."""
    rows = [list(row) for row in rows]
    widths = widths if widths is not None else []
    for row in rows:
        widths.extend([0] * (len(row) - len(widths)))
        for i, text in enumerate(row):
            widths[i] = max(widths[i], len(text))
    return [GAP.join(text.ljust(widths[i]) for i, text in enumerate(row)).rstrip() for row in rows]


def key_values(document: Mapping[str, Any]) -> list[str]:
    """`key: value` lines, the values lined up; nested values as compact JSON."""
    width = max((len(key) for key in document), default=0) + 1
    return [f"{key + ':':<{width}} {cell(value)}".rstrip() for key, value in document.items()]


def cell(value: Any) -> str:
    """One value as a table cell: `-` for nothing, yes/no, JSON for the rest."""
    if value is None or value == "":
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, str):
        return " ".join(value.split())  # a cell is one line
    if isinstance(value, int | float):
        return str(value)
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def parse_instant(text: str) -> datetime | None:
    try:
        return parse_rfc3339(text)
    except ValueError:
        return None


def when(instant: str | None) -> str:
    """An API instant (`2026-01-01T00:00:00.000Z`) to the second: people do
    not schedule by the millisecond."""
    moment = parse_instant(instant) if instant else None
    if moment is None:
        return instant or "-"
    return rfc3339_seconds(moment)


def ago(instant: str | None, now: datetime) -> str:
    """How long ago an instant was: `3s ago`, `5m ago`; `in 2s` if ahead."""
    moment = parse_instant(instant) if instant else None
    if moment is None:
        return instant or "-"
    seconds = (now - moment).total_seconds()
    text = _span(abs(seconds))
    return f"{text} ago" if seconds >= 0 else f"in {text}"


def duration(ms: int | float | None) -> str:
    """A run's duration: `85ms`, `1.2s`, `3m05s`."""
    if ms is None:
        return "-"
    if ms < 1000:
        return f"{ms:.0f}ms"
    if ms < 60_000:
        return f"{ms / 1000:.1f}s"
    return _span(ms / 1000)


def _span(seconds: float) -> str:
    whole = int(seconds)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    if whole < 86400:
        return f"{whole // 3600}h{whole % 3600 // 60:02d}m"
    return f"{whole // 86400}d{whole % 86400 // 3600:02d}h"


def dry_run_lines(answer: Mapping[str, Any]) -> list[str]:
    """A dry run's answer (`?dryRun=true`) for people: the fields that change
    (a secret only as changed), then the next fires before and after side by
    side, each UTC and local, `DST` where the zone's offset changed, and
    whether it moved, is new or is gone."""
    lines = ["changes:"]
    rows = [["  FIELD", "BEFORE", "AFTER"]]
    for change in answer.get("changes", []):
        if change.get("redacted"):
            rows.append([f"  {change['field']}", "(not shown)", "(changes)"])
        else:
            before = cell(change["before"]) if "before" in change else "(none)"
            rows.append([f"  {change['field']}", before, cell(change.get("after"))])
    lines += aligned(rows) if len(rows) > 1 else ["  (none)"]
    fires = answer.get("fires", {})
    moved_from = {m["after"]: m["before"] for m in fires.get("moved", [])}
    moved_to = {m["before"]: m["after"] for m in fires.get("moved", [])}
    marks_before = {**dict.fromkeys(fires.get("disappeared", []), "gone"), **moved_to}
    marks_after = {**dict.fromkeys(fires.get("appeared", []), "new"), **moved_from}
    before, after = fires.get("before", []), fires.get("after", [])
    lines.append("next fires:")
    rows = [["  BEFORE (UTC)", "LOCAL", "", "AFTER (UTC)", "LOCAL", ""]]
    for i in range(max(len(before), len(after))):
        rows.append(
            [
                *_fire_cells(before[i] if i < len(before) else None, marks_before, "  "),
                *_fire_cells(after[i] if i < len(after) else None, marks_after, ""),
            ]
        )
    lines += aligned(rows) if len(rows) > 1 else ["  (none)"]
    counts = {k: len(fires.get(k, [])) for k in ("moved", "appeared", "disappeared")}
    lines.append(
        f"{counts['moved']} moved, {counts['appeared']} new, {counts['disappeared']} gone "
        "(nothing written)"
    )
    return lines


def _fire_cells(fire: Mapping[str, Any] | None, marks: Mapping[str, str], indent: str) -> list[str]:
    """A fire's cells: UTC, local, and `new`, `gone` or `moved` (the marks
    of a moved fire are the instant it moved from or to)."""
    if fire is None:
        return [f"{indent}-", "", ""]
    mark = marks.get(fire["utc"], "")
    if mark not in ("", "new", "gone"):
        mark = "moved"
    local = fire["local"] + (" DST" if fire.get("dstChange") else "")
    return [f"{indent}{when(fire['utc'])}", local, mark]
