"""Keeping a connector under its CRM's request limit, so it is never told to slow down.

Two limits are documented, and each CRM's pacer mirrors its own:

- `LeakyBucketPacer` (Bitrix24): the portal keeps a counter per application; each request adds 1,
  the counter drains by `rate` per second, and a request arriving with the counter at the limit is
  refused (`QUERY_LIMIT_EXCEEDED`). The pacer keeps its own estimate of that counter and waits
  until one more request fits under `burst`. The portal's real limit is not told to clients (50 on
  most plans, 250 on Enterprise; an on-premise portal sets its own), and other integrations may
  share it: when the portal refuses one anyway, `limited()` takes the counter it had reached as
  the real limit (minus one, for clock jitter), so the first refusal is also the last.
- `WindowPacer` (Kommo): at most `count` requests in any `window` seconds (7 per second), then
  HTTP 429. It waits until the oldest of the last `count` requests is a window old, plus a
  margin: requests sent a window apart can arrive closer (network and scheduling jitter).

Both are shared by everything a connector sends (deliveries, look-ups, user lists), so the
limit holds whatever runs at once.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Callable


class LeakyBucketPacer:
    def __init__(self, rate: float, burst: int, *, clock: Callable[[], float] = time.monotonic) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be positive and burst at least 1")
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._level = 0.0
        self._at = clock()
        self._lock = asyncio.Lock()
        self.limited_count = 0

    def _drain(self) -> None:
        now = self._clock()
        self._level = max(0.0, self._level - (now - self._at) * self.rate)
        self._at = now

    @property
    def level(self) -> float:
        self._drain()
        return self._level

    async def acquire(self) -> None:
        """Wait until one more request keeps the counter within `burst`, then count it."""
        async with self._lock:
            while True:
                self._drain()
                if self._level + 1 <= self.burst:
                    self._level += 1
                    return
                await asyncio.sleep((self._level + 1 - self.burst) / self.rate)

    def limited(self) -> None:
        """The CRM refused a request for the limit: its counter was full at our estimate."""
        self.limited_count += 1
        self._drain()
        reached = max(1, int(self._level))  # the refused request was counted by acquire()
        self.burst = max(1, min(self.burst, reached - 1))
        # The portal's counter is full: wait as if ours were too (plus the refused request).
        self._level = float(self.burst + 1)


class WindowPacer:
    MARGIN = 0.05  # seconds added to the window (jitter between our clock and the CRM's arrival)

    def __init__(self, count: int, window: float = 1.0, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if count < 1 or window <= 0:
            raise ValueError("count must be at least 1 and window positive")
        self.count = count
        self.window = window
        self._clock = clock
        self._sent: collections.deque[float] = collections.deque()
        self._lock = asyncio.Lock()
        self.limited_count = 0

    async def acquire(self) -> None:
        async with self._lock:
            while True:
                now = self._clock()
                span = self.window + self.MARGIN
                while self._sent and now - self._sent[0] >= span:
                    self._sent.popleft()
                if len(self._sent) < self.count:
                    self._sent.append(now)
                    return
                await asyncio.sleep(span - (now - self._sent[0]) + 0.001)

    def limited(self) -> None:
        """A 429 anyway (another client shares the account): a whole window's pause."""
        self.limited_count += 1
        now = self._clock()
        self._sent.clear()
        self._sent.extend([now] * self.count)
