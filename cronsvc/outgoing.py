"""One webhook delivery as the run path holds it (`Outgoing`): made ahead of
its send, its first request written at the send, then its result awaited or
the delivery abandoned. What the dispatcher keeps between those steps (the
request made ahead, the first request in flight and its concurrency slot)
stays inside it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cronsvc.dispatch import DeliveryResult, Dispatcher, FirstSend
    from cronsvc.webhook_request import Prepared, WebhookRequest


class Outgoing:
    """A delivery of `request` through a dispatcher (`Dispatcher.outgoing`).

    `send_first` puts its first request on the wire now, if a slot is free
    (so a burst's requests all go out before any of their tasks runs);
    then either `result` (all attempts, the first one's answer read) or
    `abandon` (its run was replaced meanwhile), once."""

    __slots__ = ("_dispatcher", "_first", "_prepared", "request")

    def __init__(
        self, dispatcher: Dispatcher, request: WebhookRequest, prepared: Prepared | None
    ) -> None:
        self._dispatcher = dispatcher
        self.request = request
        self._prepared = prepared
        self._first: FirstSend | None = None

    def send_first(self) -> None:
        """Write the first request now where a slot is free (else `result`
        sends it as usual)."""
        prepared, self._prepared = self._prepared, None
        self._first = self._dispatcher.send_first(self.request, prepared)

    def abandon(self) -> None:
        """Give the delivery up: a first request sent is not read, its slot freed."""
        first, self._first = self._first, None
        if first is not None:
            self._dispatcher.abandon(first)

    async def result(self) -> DeliveryResult:
        """The delivery's result, all attempts (see `Dispatcher.deliver`)."""
        first, self._first = self._first, None
        return await self._dispatcher.deliver(self.request, first)
