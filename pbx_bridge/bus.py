"""In-process notifications: the call pipeline publishes, WebSocket/SSE clients and services subscribe.

Publishing never waits: each subscriber has a bounded queue and one that falls behind is dropped
(its `closed` flag set) so a slow browser can never slow the bridge.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

Message = dict[str, Any]


class Subscription:
    def __init__(self, bus: EventBus, maxsize: int, accept: Callable[[Message], bool] | None) -> None:
        self._bus = bus
        self.queue: asyncio.Queue[Message | None] = asyncio.Queue(maxsize)
        self.accept = accept
        self.closed = False
        self.dropped_for_slowness = False

    async def get(self) -> Message | None:
        """The next message, or None once the subscription is closed."""
        if self.closed and self.queue.empty():
            return None
        return await self.queue.get()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._bus._subscriptions.discard(self)
            try:
                self.queue.put_nowait(None)
            except asyncio.QueueFull:
                pass

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class EventBus:
    def __init__(self) -> None:
        self._subscriptions: set[Subscription] = set()
        self.published = 0

    def subscribe(
        self, accept: Callable[[Message], bool] | None = None, maxsize: int = 1000
    ) -> Subscription:
        sub = Subscription(self, maxsize, accept)
        self._subscriptions.add(sub)
        return sub

    @property
    def subscriber_count(self) -> int:
        return len(self._subscriptions)

    def publish(self, message: Message) -> None:
        self.published += 1
        for sub in list(self._subscriptions):
            if sub.accept is not None and not sub.accept(message):
                continue
            try:
                sub.queue.put_nowait(message)
            except asyncio.QueueFull:
                sub.dropped_for_slowness = True
                # Make room for the close marker: the reader learns it was cut off.
                while not sub.queue.empty():
                    sub.queue.get_nowait()
                sub.close()
