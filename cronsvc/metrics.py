"""Metrics, exposed at /metrics in the Prometheus text format (prometheus-client).

Each service has a registry of its own (tests run many in one process).
Every counter is declared here once, with its help and label names; call
sites name it and give label values. Those an operator alerts on read 0 from
the start rather than appearing with their first event; others appear with
their first. Labels stay low-cardinality: never a job id.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

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


@dataclass(frozen=True, slots=True, kw_only=True)
class CounterSpec:
    help: str
    labels: tuple[str, ...] = ()
    shown: tuple[tuple[str, ...], ...] | None = None
    """Label values shown at 0 from the start (`((),)` for a counter without
    labels); None: the counter appears with its first event."""


_AT_START = ((),)

COUNTERS: dict[str, CounterSpec] = {
    "cronsvc_executions_total": CounterSpec(
        help="Executions by outcome", labels=("status",), shown=tuple((s,) for s in _STATUSES)
    ),
    "cronsvc_webhook_attempts_total": CounterSpec(
        help="Webhook requests sent, retries included", shown=_AT_START
    ),
    "cronsvc_lease_total": CounterSpec(
        help="Tick lease attempts (skipped: the coordinator was down, the store's claim fenced)",
        labels=("result",),
        shown=(("won",), ("lost",), ("skipped",)),
    ),
    "cronsvc_leadership_changes_total": CounterSpec(
        help="Times this instance gained or lost leadership", shown=_AT_START
    ),
    "cronsvc_store_errors_total": CounterSpec(
        help="Store calls that failed", labels=("op",), shown=()
    ),
    "cronsvc_coordinator_errors_total": CounterSpec(
        help="Coordinator calls that failed", labels=("op",), shown=()
    ),
    "cronsvc_log_writes_dropped_total": CounterSpec(
        help="Execution results never written", labels=("reason",), shown=()
    ),
    "cronsvc_late_results_total": CounterSpec(
        help="Execution results not written: their run was already final (LOST, replaced)",
        labels=("stored_status",),
        shown=(("LOST",), ("FAILURE",)),
    ),
    "cronsvc_ticks_dropped_total": CounterSpec(
        help="Ticks not fired", labels=("reason",), shown=()
    ),
    "cronsvc_ticks_held_total": CounterSpec(
        help="Ticks handed back to the scheduler because the store did not take them",
        shown=_AT_START,
    ),
    "cronsvc_log_writes_delayed_total": CounterSpec(
        help="Execution results whose write failed and was retried", shown=_AT_START
    ),
    "cronsvc_api_rejected_total": CounterSpec(
        help="API requests refused by auth or a limit", labels=("reason",)
    ),
    "cronsvc_runs_replaced_total": CounterSpec(help="Running executions ended by a newer run"),
    "cronsvc_replaced_runs_aborted_total": CounterSpec(
        help="Webhook deliveries aborted because a newer run replaced them"
    ),
    "cronsvc_run_errors_total": CounterSpec(help="Runs that ended in an unexpected error"),
    "cronsvc_claims_duplicate_total": CounterSpec(help="Ticks already claimed elsewhere"),
    "cronsvc_claims_unresolved_total": CounterSpec(
        help="Unanswered claims too many to look up (a RUNNING record may remain)"
    ),
    "cronsvc_claims_taken_over_total": CounterSpec(
        help="Claimed ticks another instance adopted before this one sent them"
    ),
    "cronsvc_jobs_paused_by_target_total": CounterSpec(help="Jobs paused on a 410 Gone"),
    "cronsvc_ticks_adopted_total": CounterSpec(
        help="Ticks claimed by an instance that stopped before sending them"
    ),
    "cronsvc_ticks_orphaned_total": CounterSpec(
        help="Ticks whose lease an instance that left won, claimed by the leader"
    ),
    "cronsvc_alerts_total": CounterSpec(
        help="Alert deliveries by outcome (retried: each retry; dropped: never sent)",
        labels=("outcome",),
        shown=(("sent",), ("retried",), ("failed",), ("dropped",)),
    ),
    "cronsvc_ownership_moves_total": CounterSpec(
        help="Jobs that moved to this instance (in) or away (out) as the owners changed",
        labels=("direction",),
        shown=(("in",), ("out",)),
    ),
    "cronsvc_ticks_missed_unrecorded_total": CounterSpec(
        help="Missed ticks beyond max_missed_records (a lower bound when counting stopped)"
    ),
}
"""Every counter, by name (`_total` is part of each name, as /metrics shows
it). Call sites name one and give its labels; its help and label names are
here only."""


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._counters: dict[str, Counter] = {}
        self._children: dict[tuple[str, tuple[tuple[str, str], ...]], Counter] = {}
        """Counters by name and label values, as `inc` finds them: resolving
        labels anew each time cost several microseconds a fire."""
        for name, spec in COUNTERS.items():
            if spec.shown is not None:
                counter = self._counter(name, spec)
                for values in spec.shown:
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

    def inc(self, name: str, amount: int = 1, **labels: str) -> None:
        """Add `amount` to counter `name` of `COUNTERS`, with its labels."""
        key = (name, tuple(labels.items()))
        child = self._children.get(key)
        if child is None:
            child = self._child(name, labels)
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

    def _child(self, name: str, labels: dict[str, str]) -> Counter:
        spec = COUNTERS.get(name)
        if spec is None:
            raise KeyError(f"counter {name} is not declared in cronsvc.metrics.COUNTERS")
        if sorted(labels) != sorted(spec.labels):
            raise ValueError(
                f"counter {name} has the labels {list(spec.labels)}, not {sorted(labels)}"
            )
        counter = self._counter(name, spec)
        return counter.labels(**labels) if labels else counter

    def _counter(self, name: str, spec: CounterSpec) -> Counter:
        counter = self._counters.get(name)
        if counter is None:
            counter = Counter(name, spec.help, spec.labels, registry=self.registry)
            self._counters[name] = counter
        return counter
