"""Counters and gauges, exposed at /metrics in the Prometheus text format.

Labels stay low-cardinality: never a job id.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable


class Metrics:
    def __init__(self) -> None:
        self._counters: Counter[tuple[str, tuple[tuple[str, str], ...]]] = Counter()
        self._help: dict[str, str] = {}
        self._gauges: dict[str, tuple[str, Callable[[], float]]] = {}

    def inc(self, name: str, amount: int = 1, help: str = "", **labels: str) -> None:
        self._counters[(name, tuple(sorted(labels.items())))] += amount
        if help:
            self._help.setdefault(name, help)

    def get(self, name: str, **labels: str) -> int:
        return self._counters[(name, tuple(sorted(labels.items())))]

    def gauge(self, name: str, help: str, read: Callable[[], float]) -> None:
        self._gauges[name] = (help, read)

    def render(self) -> str:
        lines: list[str] = []
        by_name: dict[str, list[tuple[tuple[tuple[str, str], ...], int]]] = {}
        for (name, labels), value in sorted(self._counters.items()):
            by_name.setdefault(name, []).append((labels, value))
        for name, rows in by_name.items():
            lines.append(f"# HELP {name} {self._help.get(name, name)}")
            lines.append(f"# TYPE {name} counter")
            for labels, value in rows:
                label_text = ",".join(f'{k}="{v}"' for k, v in labels)
                lines.append(f"{name}{{{label_text}}} {value}" if label_text else f"{name} {value}")
        for name, (help_text, read) in sorted(self._gauges.items()):
            lines.append(f"# HELP {name} {help_text}")
            lines.append(f"# TYPE {name} gauge")
            lines.append(f"{name} {read()}")
        return "\n".join(lines) + "\n"
