"""What this instance knows of its dependencies, from a probe in the background.

Every `interval_s` the store and the coordinator are pinged, together, each
bounded by `timeout_s`, so that a stalled dependency costs the probe a
timeout, never a hang. A dependency is down once `down_after` probes in a row
have failed (one slow answer from a busy store is not an outage) and up again
at its first answer. Readiness and `/metrics` read this state: they answer at
once, whatever the dependencies are doing.

A caller that finds a dependency not answering says so (`report`): it is
down at once, and up again only when a probe begun after that report gets
an answer. So the tick path pays for a stalled Redis once, then skips it
(`is_up`) until the probe has heard from it.

A dependency that is up and answered the service's own calls since the last
round (`answers` counts them) is not pinged in this one: a busy instance
spends no round trip on probes. Its answers stopping is noticed a round
later than a ping would, unless a caller reports it first.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum

import structlog

from cronsvc.clock import Clock
from cronsvc.metrics import Metrics

log = structlog.get_logger(__name__)

PROBE_INTERVAL_S = 1.0
PROBE_TIMEOUT_S = 0.8
DOWN_AFTER = 2
UP_POLL_S = 0.2
"""While a dependency is down, how often work waiting on it looks again."""


class Dependency(StrEnum):
    STORE = "store"
    COORDINATOR = "coordinator"


@dataclass(frozen=True, slots=True, kw_only=True)
class Probed:
    """One dependency as last probed."""

    up: bool
    detail: str
    """"ok", or "unavailable: " and why (an error's kind, never its text:
    a driver's message can carry a URL with credentials)."""
    failures: int
    """Probes failed in a row."""


UNPROBED = Probed(up=True, detail="ok", failures=0)


def after_probe(previous: Probed, failure: str | None, *, down_after: int) -> Probed:
    """A dependency's state once a probe has answered (`failure` None) or
    failed (`failure` says how)."""
    if failure is None:
        return UNPROBED
    failures = previous.failures + 1
    return Probed(up=failures < down_after, detail=f"unavailable: {failure}", failures=failures)


class HealthMonitor:
    def __init__(
        self,
        *,
        probes: dict[Dependency, Callable[[], Awaitable[None]]],
        metrics: Metrics,
        answers: Mapping[Dependency, Callable[[], int]] | None = None,
        interval_s: float = PROBE_INTERVAL_S,
        timeout_s: float = PROBE_TIMEOUT_S,
        down_after: int = DOWN_AFTER,
    ) -> None:
        self._probes = probes
        self._answers = dict(answers or {})
        self._answered = {dependency: count() for dependency, count in self._answers.items()}
        """Each counter as the last round left it."""
        self._interval_s = interval_s
        self._timeout_s = timeout_s
        self._down_after = down_after
        self._state = dict.fromkeys(probes, UNPROBED)
        self._rounds = 0
        """Probe rounds begun."""
        self._reported: dict[Dependency, int] = {}
        """The rounds begun before a caller last reported each dependency
        down: their answers do not show it is back."""
        self._stopping = asyncio.Event()
        for dependency in probes:
            metrics.gauge(
                f"cronsvc_{dependency.value}_up",
                f"1 while the {dependency.value} answers this instance's probe or calls, else 0",
                functools.partial(self._up, dependency),
            )

    def state(self, dependency: Dependency) -> Probed:
        return self._state[dependency]

    def is_up(self, dependency: Dependency) -> bool:
        return self._state[dependency].up

    async def until_up(self, dependency: Dependency, clock: Clock) -> None:
        """Return once `dependency` is up (at once if it is)."""
        while not self.is_up(dependency):
            await clock.sleep(UP_POLL_S)

    def _up(self, dependency: Dependency) -> float:
        return float(self._state[dependency].up)

    def report(self, dependency: Dependency, failure: str) -> None:
        """A caller found `dependency` not answering (`failure` says how): it
        is down from now until a probe begun after this gets an answer."""
        self._reported[dependency] = self._rounds
        previous = self._state[dependency]
        failures = max(previous.failures, self._down_after)
        self._set(dependency, Probed(up=False, detail=f"unavailable: {failure}", failures=failures))

    async def probe(self) -> None:
        """Probe every dependency once, together; returns within `timeout_s`."""
        self._rounds += 1
        this_round = self._rounds
        pinged = [dependency for dependency in self._probes if not self._heard_from(dependency)]
        failures = await asyncio.gather(*(self._one(self._probes[d]) for d in pinged))
        for dependency in self._answers:  # a ping's own answer is no call of the service's
            self._answered[dependency] = self._answers[dependency]()
        for dependency, failure in zip(pinged, failures, strict=True):
            if failure is None and self._reported.get(dependency, 0) >= this_round:
                continue  # begun before a caller saw it fail: no proof it is back
            previous = self._state[dependency]
            self._set(dependency, after_probe(previous, failure, down_after=self._down_after))

    def _heard_from(self, dependency: Dependency) -> bool:
        """Up, and answered a call of the service's own since the last round."""
        count = self._answers.get(dependency)
        if count is None or not self._state[dependency].up:
            return False
        if count() == self._answered[dependency]:
            return False
        self._set(dependency, UNPROBED)
        return True

    def _set(self, dependency: Dependency, current: Probed) -> None:
        previous, self._state[dependency] = self._state[dependency], current
        if current.up != previous.up:
            event = "dependency_up" if current.up else "dependency_down"
            log.warning(event, dependency=dependency.value, detail=current.detail)

    async def _one(self, probe: Callable[[], Awaitable[None]]) -> str | None:
        try:
            async with asyncio.timeout(self._timeout_s):
                await probe()
        except TimeoutError:
            return f"no answer within {self._timeout_s:g} s"
        except Exception as exc:  # any failure to answer is what the probe measures
            return type(exc).__name__
        return None

    async def run(self) -> None:
        """Probe every `interval_s` until `stop()`."""
        while not self._stopping.is_set():
            await self.probe()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self._interval_s)

    def stop(self) -> None:
        self._stopping.set()
