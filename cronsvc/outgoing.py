"""One webhook delivery as the run path holds it; what the dispatcher keeps between
its steps (the request made ahead, the first one in flight, its slot) stays inside.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cronsvc.dispatch import DeliveryResult, Dispatcher, FirstSend
    from cronsvc.webhook_request import Prepared, WebhookRequest


class Outgoing:
    """`send_first`, then once either `result` or `abandon` (its run was replaced)."""

    __slots__ = ("_dispatcher", "_first", "_prepared", "request")

    def __init__(
        self, dispatcher: Dispatcher, request: WebhookRequest, prepared: Prepared | None
    ) -> None:
        self._dispatcher = dispatcher
        self.request = request
        self._prepared = prepared
        self._first: FirstSend | None = None

    def send_first(self) -> None:
        """Where a slot is free; else `result` sends it as usual."""
        prepared, self._prepared = self._prepared, None
        self._first = self._dispatcher.send_first(self.request, prepared)

    def abandon(self) -> None:
        """A first request sent is not read, its slot freed."""
        first, self._first = self._first, None
        if first is not None:
            self._dispatcher.abandon(first)

    async def result(self) -> DeliveryResult:
        first, self._first = self._first, None
        return await self._dispatcher.deliver(self.request, first)
