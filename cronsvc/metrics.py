"""Metrics, exposed at /metrics in the Prometheus text format (prometheus-client).

Each service has a registry of its own (tests run many in one process). The
metrics an operator alerts on are declared here, so they read 0 from the
start rather than appearing with their first event; others are made on
first use. Labels stay low-cardinality: never a job id.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

CONTENT_TYPE = CONTENT_TYPE_LATEST

# Fire lag: sub-millisecond to a minute late (misfire grace); webhook
# durations: a fast receiver to the longest timeout.
LAG_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 120.0)

_STATUSES = ("SUCCESS", "FAILURE", "SKIPPED", "MISSED", "LOST")

# name: (help, label names, label values to show at 0 from the start)
_COUNTERS: dict[str, tuple[str, tuple[str, ...], Sequence[tuple[str, ...]]]] = {
    "cronsvc_executions_total": ("Executions by outcome", ("status",), [(s,) for s in _STATUSES]),
    "cronsvc_webhook_attempts_total": ("Webhook requests sent, retries included", (), [()]),
    "cronsvc_lease_total": (
        "Tick lease attempts (skipped: the coordinator was down, the store's claim fenced)",
        ("result",),
        [("won",), ("lost",), ("skipped",)],
    ),
    "cronsvc_leadership_changes_total": ("Times this instance gained or lost leadership", (), [()]),
    "cronsvc_store_errors_total": ("Store calls that failed", ("op",), []),
    "cronsvc_coordinator_errors_total": ("Coordinator calls that failed", ("op",), []),
    "cronsvc_log_writes_dropped_total": ("Execution results never written", ("reason",), []),
    "cronsvc_late_results_total": (
        "Execution results not written: their run was already final (LOST, replaced)",
        ("stored_status",),
        [("LOST",), ("FAILURE",)],
    ),
    "cronsvc_ticks_dropped_total": ("Ticks not fired", ("reason",), []),
    "cronsvc_ticks_held_total": (
        "Ticks handed back to the scheduler because the store did not take them",
        (),
        [()],
    ),
}


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._counters: dict[str, Counter] = {}
        self._children: dict[tuple[str, tuple[tuple[str, str], ...]], Counter] = {}
        """Counters by name and label values, as `inc` finds them: resolving
        labels anew each time cost several microseconds a fire."""
        self._histograms: dict[str, Histogram] = {}
        for name, (help_text, labels, shown) in _COUNTERS.items():
            counter = self._counter(name, help_text, labels)
            for values in shown:
                if values:
                    counter.labels(*values)
        self.fire_lag = Histogram(
            "cronsvc_fire_lag_seconds",
            "Scheduled tick to the first byte of its webhook request sent",
            buckets=LAG_BUCKETS,
            registry=self.registry,
        )
        self.webhook_duration = Histogram(
            "cronsvc_webhook_duration_seconds",
            "A tick's webhook call from its first attempt to its outcome, retries included",
            ("status",),
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )
        self.delayed_writes = Counter(
            "cronsvc_log_writes_delayed",
            "Execution results whose write failed and was retried",
            registry=self.registry,
        )

    def inc(self, name: str, amount: int = 1, help: str = "", **labels: str) -> None:
        """Add `amount` to counter `name` (its label names fixed by first use)."""
        key = (name, tuple(labels.items()))
        child = self._children.get(key)
        if child is None:
            counter = self._counter(name, help or name, tuple(sorted(labels)))
            child = counter.labels(**labels) if labels else counter
            self._children[key] = child
        child.inc(amount)

    def get(self, name: str, **labels: str) -> float:
        """A counter's current value (0 if it was never counted)."""
        value = self.registry.get_sample_value(name, labels)
        return 0.0 if value is None else value

    def gauge(self, name: str, help: str, read: Callable[[], float]) -> None:
        """A gauge read at each scrape."""
        Gauge(name, help, registry=self.registry).set_function(read)

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def _counter(self, name: str, help_text: str, labels: tuple[str, ...]) -> Counter:
        counter = self._counters.get(name)
        if counter is None:
            counter = Counter(name, help_text, labels, registry=self.registry)
            self._counters[name] = counter
        return counter
