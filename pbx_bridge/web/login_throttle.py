"""Slows down password guessing without letting a guesser lock the real person out.

Failed sign-ins are counted three ways over a sliding window (10 minutes by default):

* per (account, address): the tight limit (10). One address guessing one account waits; the
  same account signing in from another address does not.
* per account, from any address: a much softer limit (100), so guessing spread over many
  addresses still stops, while one address alone can never reach it.
* per address, for any account: the same soft limit, against one address trying many accounts.

A successful sign-in clears its own (account, address) count only: the account-wide count is
what keeps a distributed guesser slow, so the owner's success must not reset it.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable


class LoginThrottle:
    def __init__(self, max_failures: int = 10, window_seconds: float = 600.0,
                 clock: Callable[[], float] = time.monotonic, wide_failures: int = 100) -> None:
        self.max_failures = max_failures  # per (account, address)
        self.wide_failures = wide_failures  # per account, and per address
        self.window = window_seconds
        self._clock = clock
        self._failures: dict[str, deque[float]] = {}

    @staticmethod
    def _keys(account: str, address: str | None) -> tuple[str, str, str]:
        account = account.lower()
        return f"pair:{account}\0{address}", f"user:{account}", f"ip:{address}"

    def _recent(self, key: str) -> deque[float]:
        now = self._clock()
        times = self._failures.setdefault(key, deque())
        while times and now - times[0] > self.window:
            times.popleft()
        return times

    def blocked(self, account: str, address: str | None) -> bool:
        pair, user, ip = self._keys(account, address)
        return (len(self._recent(pair)) >= self.max_failures
                or len(self._recent(user)) >= self.wide_failures
                or len(self._recent(ip)) >= self.wide_failures)

    def failed(self, account: str, address: str | None) -> None:
        for key in self._keys(account, address):
            self._recent(key).append(self._clock())
        if len(self._failures) > 10000:  # bound the memory a flood of names can take
            for key in [k for k, v in self._failures.items() if not v]:
                del self._failures[key]

    def succeeded(self, account: str, address: str | None) -> None:
        self._failures.pop(self._keys(account, address)[0], None)
