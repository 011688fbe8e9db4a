"""Bitrix24 users by extension, from `user.get` (active users, UF_PHONE_INNER = the internal
number; 50 users a page, `start` = 0, 50, 100...). Refreshed every few minutes by the service,
and at once (at most once a minute) when a call names an extension nobody has."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from crm_sync.bitrix24.api import Bitrix24Client

log = logging.getLogger("crm_sync.bitrix24.directory")
PAGE = 50
MISS_REFRESH_SECONDS = 60.0


class UserDirectory:
    def __init__(self, client: Bitrix24Client, default_user_id: int,
                 *, clock: Callable[[], float] = time.monotonic) -> None:
        self.client = client
        self.default_user_id = default_user_id
        self.by_extension: dict[str, int] = {}
        self.names: dict[int, str] = {}
        self.loaded_at: float | None = None
        self._clock = clock
        self._missed: set[str] = set()

    async def refresh(self) -> dict[str, int]:
        found: dict[str, int] = {}
        names: dict[int, str] = {}
        start = 0
        while True:
            answer = await self.client.request("user.get", {"FILTER": {"ACTIVE": True}, "start": start})
            users: list[dict[str, Any]] = (answer or {}).get("result") or []
            for user in users:
                inner = str(user.get("UF_PHONE_INNER") or "").strip()
                try:
                    user_id = int(user.get("ID"))  # type: ignore[arg-type]
                except (TypeError, ValueError):
                    continue
                names[user_id] = " ".join(str(user.get(k) or "") for k in ("NAME", "LAST_NAME")).strip()
                if inner:
                    found.setdefault(inner, user_id)
            nxt = (answer or {}).get("next")
            if not users or nxt is None:
                break
            start = int(nxt)
        self.by_extension, self.names, self.loaded_at = found, names, self._clock()
        self._missed.clear()
        log.info("crm.bitrix24.users", extra={"kv": {"with_extension": len(found), "users": len(names)}})
        return found

    def user_for(self, extension: str | None) -> int:
        """The user of an extension; the default user when there is none (logged once)."""
        if extension and extension in self.by_extension:
            return self.by_extension[extension]
        if extension and extension not in self._missed:
            self._missed.add(extension)
            log.warning("crm.bitrix24.no_user", extra={"kv": {
                "extension": extension, "using_user": self.default_user_id}})
        return self.default_user_id

    def wants_refresh(self) -> bool:
        """A call named an unknown extension and the list is over a minute old."""
        return bool(self._missed) and (self.loaded_at is None
                                       or self._clock() - self.loaded_at > MISS_REFRESH_SECONDS)
