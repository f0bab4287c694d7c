"""Markdown tables for BENCHMARKS.md from the JSON results of bench.run and
bench.scale (written with `--json FILE`), so figures are copied by no hand.

    python -m bench.table single.json cluster.json saturate.json scale.json
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

_RUN = (
    "run",
    "fires/s (expected)",
    "missed",
    "dup",
    "p50 ms",
    "p90 ms",
    "p99 ms",
    "max ms",
    "burst first p50 / p99",
    "burst last p50 / p99",
    "service CPU s (µs/fire)",
    "peak RSS MiB",
)
_SATURATE = (
    "jobs",
    "created/s",
    "fires/s (expected)",
    "missed",
    "p50 ms",
    "p99 ms",
    "burst first p50 / p99",
    "burst last p50 / p99",
    "CPU % of a core (µs/fire)",
)
_SCALE = (
    "jobs (hot)",
    "serving s",
    "first hot fire s",
    "RSS MiB serving / peak",
    "fires/s (expected)",
    "missed (recorded MISSED)",
    "p50 / p99 ms",
    "µs/fire window (median s)",
    "create p50 / p99 ms",
    "get p50 / p99 ms",
    "list p50 / p99 ms",
)


def _row(cells: Iterable[Any]) -> str:
    return "| " + " | ".join("" if c is None else str(c) for c in cells) + " |"


def _head(columns: tuple[str, ...]) -> list[str]:
    return [_row(columns), _row("---" for _ in columns)]


def _pair(a: Any, b: Any) -> str:
    return f"{a} / {b}"


def _window(name: str, w: dict[str, Any]) -> list[Any]:
    cpu = w.get("cpu")
    service_rss = [
        p["peak_rss_mib"]
        for n, p in w.get("processes", {}).items()
        if n.startswith("cronsvc") and p is not None
    ]
    return [
        name,
        f"{w['fires_per_s']} ({w['expected_per_s']})",
        w["missed"],
        w["duplicates"],
        w["lag_ms_p50"],
        w["lag_ms_p90"],
        w["lag_ms_p99"],
        w["lag_ms_max"],
        _pair(w["burst_first_ms_p50"], w["burst_first_ms_p99"]),
        _pair(w["burst_last_ms_p50"], w["burst_last_ms_p99"]),
        cpu and f"{cpu['service_seconds']} ({cpu['service_us_per_fire']})",
        " + ".join(map(str, service_rss)) or None,
    ]


def run_table(result: dict[str, Any]) -> list[str]:
    label = f"cronsvc {result['mode']}, {result['jobs']} {result['shape']}"
    lines = [*_head(_RUN), _row(_window(label, result["cronsvc"]))]
    bare = result.get("bare_client")
    if bare:
        lines.append(_row(_window("bare aiohttp client, same schedule", bare)))
        flat = bare["flat_out"]
        lines.append(
            f"\nBare client flat out ({flat['concurrency']} in flight, {flat['seconds']} s): "
            f"{flat['requests_per_s']} requests/s."
        )
    return lines


def saturate_table(result: dict[str, Any]) -> list[str]:
    lines = _head(_SATURATE)
    for s in result["steps"]:
        cpu = s["cpu"]
        lines.append(
            _row(
                [
                    s["jobs"],
                    s["created_per_s"],
                    f"{s['fires_per_s']} ({s['expected_per_s']})",
                    s["missed"],
                    s["lag_ms_p50"],
                    s["lag_ms_p99"],
                    _pair(s["burst_first_ms_p50"], s["burst_first_ms_p99"]),
                    _pair(s["burst_last_ms_p50"], s["burst_last_ms_p99"]),
                    f"{cpu['service_percent_of_one_core']} ({cpu['service_us_per_fire']})",
                ]
            )
        )
    flat = result["bare_client_flat_out"]
    lines.append(
        f"\n{result['verdict']}. Highest in bound: {result['highest_jobs_in_bound']} jobs, "
        f"{result['sustained_fires_per_s']} fires/s; bare client flat out: "
        f"{flat['requests_per_s']} requests/s ({flat['concurrency']} in flight)."
    )
    return lines


def scale_table(result: dict[str, Any]) -> list[str]:
    lines = _head(_SCALE)
    for r in result["runs"]:
        w, api = r["window"], r["api_ms"]
        missed_recorded = w.get("service_metrics", {}).get(
            'cronsvc_executions_total{status="MISSED"}'
        )
        lines.append(
            _row(
                [
                    f"{r['jobs']} ({r['hot']} {r['hot_shape']}, {r['daily_times']} daily times)",
                    r["serving_s"],
                    r["first_hot_fire_s"],
                    _pair(r["rss_mib_serving"], r["peak_rss_mib"]),
                    f"{w['fires_per_s']} ({w['expected_per_s']})",
                    f"{w['missed']} ({missed_recorded})",
                    _pair(w["lag_ms_p50"], w["lag_ms_p99"]),
                    f"{w['cpu']['service_us_per_fire']} "
                    f"({w['cpu']['service_us_per_fire_median_second']})",
                    _pair(api["create"]["p50"], api["create"]["p99"]),
                    _pair(api["get"]["p50"], api["get"]["p99"]),
                    _pair(api["list"]["p50"], api["list"]["p99"]),
                ]
            )
        )
    return lines


def table(result: dict[str, Any]) -> list[str]:
    env = result["environment"]
    lines = [f"`{env['command']}` (load average at start {env['load_average_at_start'][0]})", ""]
    if "runs" in result:
        return lines + scale_table(result)
    if "steps" in result:
        return lines + saturate_table(result)
    return lines + run_table(result)


def main() -> int:
    for path in sys.argv[1:]:
        print("\n".join(table(json.loads(Path(path).read_text()))), end="\n\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
