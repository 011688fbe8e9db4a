"""The Kommo (amoCRM) API v4 client.

What the documentation says, and what this client does about it:

- **Where**: every request goes to the account's own address (`https://<subdomain>.kommo.com`, or
  `.amocrm.ru`), over HTTPS, with `Authorization: Bearer <access token>`.
- **Tokens**: an integration's keys (client_id, client_secret, redirect_uri) and either a one-time
  authorization code (valid 20 minutes; exchanged once at `POST /oauth2/access_token` with
  `grant_type=authorization_code`) or a refresh token. The access token lives 24 hours;
  `grant_type=refresh_token` returns a new access token AND a new refresh token (the old one is
  void from then on): the pair is saved in the database before use. A private integration may use
  a long-lived token instead (1 day to 5 years, no refresh).
- **401** = the access token is expired or revoked: refresh once and repeat. A refresh refused
  (the refresh token is gone: 3 months unused, already used, or the integration was removed)
  stops the connector with that reason: no loop. A long-lived token refused stops it too.
- **Limit**: at most 7 requests per second per account, then 429 (repeated abuse: 403 and the
  address blocked): crm_sync.pacing.WindowPacer keeps under it; a 429 anyway pauses a second.
- **Errors** are problem+json: `{"title", "type", "status", "detail"}`, and for rejected
  fields 400 with `"validation-errors": [{"request_id", "errors": [{"code", "path", "detail"}]}]`.
  A search that finds nothing answers 204 without a body.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
from sqlalchemy.ext.asyncio import AsyncEngine

from crm_sync import crm_request
from crm_sync.connector_state import ConnectorState, ConnectorStopped
from crm_sync.connector_store import StoredAuth, load_auth, save_auth
from crm_sync.outbox import DeliveryError
from crm_sync.pacing import WindowPacer

log = logging.getLogger("crm_sync.kommo")
CONNECTOR = "kommo"


@dataclass(frozen=True)
class KommoSettings:
    base_url: str = ""  # https://<subdomain>.kommo.com
    client_id: str = ""
    client_secret: str = ""
    redirect_uri: str = ""
    authorization_code: str = ""  # seeds the database once
    refresh_token: str = ""  # seeds the database
    long_lived_token: str = ""
    requests_per_second: int = 7
    timeout: float = 10.0
    connect_timeout: float = 3.0
    limit_retries: int = 3

    def url(self, path: str) -> str:
        return self.base_url.rstrip("/") + path


class KommoError(Exception):
    """The account refused this request (its own fault: not retried)."""

    def __init__(self, status: int, data: Any) -> None:
        detail = ""
        if isinstance(data, Mapping):
            detail = str(data.get("detail") or data.get("title") or "")
            problems = data.get("validation-errors")
            if problems:
                detail += " " + json.dumps(problems, ensure_ascii=False)[:400]
        super().__init__(f"HTTP {status}: {detail.strip() or 'no details'}")
        self.status = status
        self.data = data


def _utcnow() -> datetime:
    return datetime.now(UTC)


class KommoClient:
    def __init__(self, settings: KommoSettings, session: aiohttp.ClientSession, engine: AsyncEngine, *,
                 pacer: WindowPacer | None = None, clock: Callable[[], datetime] = _utcnow) -> None:
        self.settings = settings
        self.session = session
        self.engine = engine
        self.pacer = pacer or WindowPacer(settings.requests_per_second, 1.0)
        self.state = ConnectorState(CONNECTOR)
        self.clock = clock
        self._auth: StoredAuth | None = None
        self._lock = asyncio.Lock()
        self._timeout = aiohttp.ClientTimeout(total=settings.timeout, connect=settings.connect_timeout)

    def _stop(self, detail: str) -> ConnectorStopped:
        self.state.stop(detail)
        log.error("crm.kommo.stopped", extra={"kv": {"reason": detail}})
        return ConnectorStopped(f"kommo connector stopped: {detail}")

    async def _load(self) -> StoredAuth | None:
        async with self.engine.connect() as conn:
            return await load_auth(conn, CONNECTOR)

    async def _token(self) -> str:
        if self.settings.long_lived_token:
            return self.settings.long_lived_token
        if self._auth is None:
            self._auth = await self._load()
        if self._auth is not None and self._auth.access_token:
            return self._auth.access_token
        await self._obtain(None)
        assert self._auth is not None and self._auth.access_token
        return self._auth.access_token

    async def _obtain(self, failed_token: str | None) -> None:
        """A new access token: by the stored refresh token, else the configured refresh token or
        authorization code (used once)."""
        async with self._lock:
            stored = await self._load()
            if stored is not None and stored.access_token and stored.access_token != failed_token:
                self._auth = stored
                return
            body: dict[str, Any] = {"client_id": self.settings.client_id,
                                    "client_secret": self.settings.client_secret,
                                    "redirect_uri": self.settings.redirect_uri}
            if stored is not None and stored.refresh_token:
                body.update(grant_type="refresh_token", refresh_token=stored.refresh_token)
            elif self.settings.refresh_token:
                body.update(grant_type="refresh_token", refresh_token=self.settings.refresh_token)
            elif self.settings.authorization_code:
                body.update(grant_type="authorization_code", code=self.settings.authorization_code)
            else:
                raise self._stop("no tokens: set authorization_code (from the integration's keys, "
                                 "valid 20 minutes), refresh_token or long_lived_token")
            try:
                async with self.session.post(self.settings.url("/oauth2/access_token"), json=body,
                                             timeout=self._timeout) as resp:
                    status, text = resp.status, await resp.text()
            except (aiohttp.ClientError, TimeoutError) as exc:
                self.state.down(f"token refresh failed: {type(exc).__name__}")
                raise DeliveryError(f"Kommo unreachable: {type(exc).__name__}: {exc}",
                                    unreachable=True) from None
            self.state.token_refreshes += 1
            try:
                data = json.loads(text) if text.strip() else None
            except ValueError:
                data = None
            if status >= 500:
                self.state.down(f"token refresh answered HTTP {status}")
                raise DeliveryError(f"Kommo token endpoint answered HTTP {status}")
            if status != 200 or not isinstance(data, Mapping) or not data.get("access_token"):
                hint = ""
                if isinstance(data, Mapping):
                    hint = str(data.get("hint") or data.get("detail") or data.get("title") or "")
                raise self._stop(f"{body['grant_type'].replace('_', ' ')} refused (HTTP {status}"
                                 f"{': ' + hint if hint else ''}): authorize the integration again "
                                 "and set a new authorization_code")
            lifetime = timedelta(seconds=int(data.get("expires_in") or 86400))
            fresh = StoredAuth(access_token=str(data["access_token"]),
                               refresh_token=str(data.get("refresh_token") or "") or None,
                               expires_at=self.clock() + lifetime)
            async with self.engine.begin() as conn:  # saved before use: the old pair is void
                await save_auth(conn, CONNECTOR, fresh, self.clock())
            self._auth = fresh
            log.info("crm.kommo.token_refreshed")

    async def request(self, method: str, path: str, *, params: Mapping[str, Any] | None = None,
                      body: Any = None) -> tuple[int, Any]:
        """(status, JSON or None for 204). Raises KommoError for the request's own fault,
        DeliveryError / ConnectorStopped otherwise."""
        self.state.check()
        refreshed = False
        for _ in range(self.settings.limit_retries + 1):
            token = await self._token()
            await self.pacer.acquire()
            status, text = await crm_request.send(
                self.session, method, self.settings.url(path), state=self.state, crm="Kommo",
                limits=self._timeout, params=params, json=body, headers={"Authorization": f"Bearer {token}"})
            try:
                data = json.loads(text) if text.strip() else None
            except ValueError:
                if status < 500:
                    self.state.down(f"HTTP {status} with a body that is not JSON")
                raise DeliveryError(f"Kommo answered HTTP {status} with a body that is not JSON: "
                                    f"{text[:80]!r}") from None
            if status == 429:
                self.state.limit_errors += 1
                self.pacer.limited()
                log.warning("crm.kommo.limited")
                continue
            if status == 401:
                if self.settings.long_lived_token:
                    raise self._stop("the long-lived token was refused (HTTP 401): generate a new one")
                if refreshed:
                    raise self._stop("a fresh access token was refused too (HTTP 401)")
                refreshed = True
                await self._obtain(token)
                continue
            if status in (402, 403):
                raise self._stop(f"the account refused access (HTTP {status}: "
                                 f"{(data or {}).get('detail') if isinstance(data, Mapping) else ''})")
            if status >= 500:
                self.state.down(f"HTTP {status}")
                raise DeliveryError(f"Kommo answered HTTP {status}")
            self.state.ok()
            if status >= 400:
                raise KommoError(status, data)
            return status, data
        raise DeliveryError(f"Kommo still answered 429 after {self.settings.limit_retries + 1} tries")
