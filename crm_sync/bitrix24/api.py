"""The Bitrix24 REST client: one request at a time under the portal's limit, `batch` for many.

What the documentation says, and what this client does about it:

- **Two ways in.** An incoming webhook (`https://<portal>/rest/<user>/<code>/<method>`, no token)
  or a local application (`https://<portal>/rest/<method>` with `auth=<access token>`). The
  telephony methods `telephony.externalCall.register` / `finish`, `telephony.externalLine.*` and
  `event.bind` "work only in the context of an application": a webhook gets `WRONG_AUTH_TYPE`
  (HTTP 403). That is a configuration problem, not the item's: the connector stops (see
  connector_state) instead of burning the items as dead letters.
- **Errors** are `{"error": CODE, "error_description": text}`. Per the docs' list of system
  errors: `QUERY_LIMIT_EXCEEDED` (503) = over the request limit; `expired_token` (401) = refresh
  the access token; `OPERATION_TIME_LIMIT` (429) and 5xx = try later; `NO_AUTH_FOUND`,
  `INVALID_CREDENTIALS`, `invalid_token`, `insufficient_scope`, `ACCESS_DENIED`,
  `user_access_error`, `PORTAL_DELETED`, `OVERLOAD_LIMIT`, `WRONG_AUTH_TYPE` = credentials or
  rights (stop); anything else (`ERROR_CORE`, `INVALID_ARGUMENT`, ...) = this request is wrong.
- **Limit**: a leaky bucket per application (2 requests/s drain, 50 before blocking on most plans):
  see crm_sync.pacing. `batch` runs up to 50 commands for one request (`halt=0`: one failing
  command does not stop the others; `$result[key][FIELD]` passes one command's result to a later
  one); its answer is `{"result": {"result": {key: ...}, "result_error": {key: {error...}}}}`.
- **OAuth**: the access token lives 1 hour; `GET https://oauth.bitrix.info/oauth/token/?
  grant_type=refresh_token&client_id&client_secret&refresh_token` returns a new access token AND a
  new refresh token, the old pair becoming invalid at once: the pair is saved in the database
  before it is used. A refresh refused (`invalid_grant`: the refresh token expired after 180 days
  unused, was already used, or the app was removed) stops the connector: no loop.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import aiohttp
from sqlalchemy.ext.asyncio import AsyncEngine

from crm_sync import crm_request, php_form
from crm_sync.connector_state import ConnectorState, ConnectorStopped
from crm_sync.connector_store import StoredAuth, load_auth, save_auth
from crm_sync.outbox import DeliveryError
from crm_sync.pacing import LeakyBucketPacer

log = logging.getLogger("crm_sync.bitrix24")
CONNECTOR = "bitrix24"
MAX_BATCH = 50  # commands per batch (documented)

# Credentials or rights: retrying the same request cannot help, the configuration must change.
STOP_ERRORS = frozenset({
    "WRONG_AUTH_TYPE", "NO_AUTH_FOUND", "INVALID_CREDENTIALS", "invalid_token", "insufficient_scope",
    "ACCESS_DENIED", "user_access_error", "PORTAL_DELETED", "OVERLOAD_LIMIT", "INVALID_REQUEST",
})
RETRY_ERRORS = frozenset({"INTERNAL_SERVER_ERROR", "ERROR_UNEXPECTED_ANSWER", "OPERATION_TIME_LIMIT"})
LIMIT_ERROR = "QUERY_LIMIT_EXCEEDED"
EXPIRED_ERROR = "expired_token"

Mode = Literal["webhook", "application"]


@dataclass(frozen=True)
class Bitrix24Settings:
    portal_url: str = ""  # https://example.bitrix24.ru (application mode)
    webhook_url: str = ""  # https://example.bitrix24.ru/rest/1/<code>/ (webhook mode)
    client_id: str = ""
    client_secret: str = ""
    refresh_token: str = ""  # only seeds the database
    application_token: str = ""  # only seeds the database
    oauth_url: str = "https://oauth.bitrix.info/oauth/token/"
    requests_per_second: float = 2.0
    burst: int = 10
    timeout: float = 10.0
    connect_timeout: float = 3.0
    limit_retries: int = 3

    @property
    def mode(self) -> Mode:
        return "webhook" if self.webhook_url else "application"

    def method_url(self, method: str) -> str:
        if self.mode == "webhook":
            return self.webhook_url.rstrip("/") + "/" + method
        return self.portal_url.rstrip("/") + "/rest/" + method


class Bitrix24Error(Exception):
    """An error answer: the code and description as the portal gave them."""

    def __init__(self, code: str, description: str, status: int = 400) -> None:
        super().__init__(f"{code or '(no code)'}: {description}")
        self.code = code
        self.description = description
        self.status = status

    @property
    def stops(self) -> bool:
        return self.code in STOP_ERRORS

    @property
    def retryable(self) -> bool:
        return self.code in RETRY_ERRORS or self.code == LIMIT_ERROR or self.status >= 500

    def delivery_error(self) -> DeliveryError:
        return DeliveryError(f"Bitrix24 answered {self}", retryable=self.retryable)


def error_of(data: Any, status: int) -> Bitrix24Error | None:
    if isinstance(data, Mapping) and "error" in data:
        return Bitrix24Error(str(data.get("error") or ""), str(data.get("error_description") or ""),
                             status)
    if status >= 400:
        return Bitrix24Error("", f"HTTP {status} without an error body", status)
    return None


def _utcnow() -> datetime:
    return datetime.now(UTC)


class Bitrix24Client:
    """Shared by everything that talks to one portal (deliveries, user lists, lines, events)."""

    def __init__(self, settings: Bitrix24Settings, session: aiohttp.ClientSession, engine: AsyncEngine,
                 *, pacer: LeakyBucketPacer | None = None,
                 clock: Callable[[], datetime] = _utcnow) -> None:
        self.settings = settings
        self.session = session
        self.engine = engine
        self.pacer = pacer or LeakyBucketPacer(settings.requests_per_second, settings.burst)
        self.state = ConnectorState(CONNECTOR)
        self.clock = clock
        self._auth: StoredAuth | None = None
        self._auth_lock = asyncio.Lock()
        self._timeout = aiohttp.ClientTimeout(total=settings.timeout, connect=settings.connect_timeout)

    # --- credentials ---------------------------------------------------------------------------

    async def _load(self) -> StoredAuth:
        async with self.engine.connect() as conn:
            stored = await load_auth(conn, CONNECTOR)
        if stored is None:
            stored = StoredAuth(refresh_token=self.settings.refresh_token or None,
                                application_token=self.settings.application_token or None)
        return stored

    async def application_token(self) -> str | None:
        """The token Bitrix24's events must carry (from ONAPPINSTALL, else the configuration)."""
        stored = await self._load()
        return stored.application_token or self.settings.application_token or None

    async def _access_token(self) -> str:
        if self._auth is None:
            self._auth = await self._load()
        if self._auth.access_token:
            return self._auth.access_token
        if not self._auth.refresh_token:
            self.state.stop("no OAuth tokens yet: install the local application (the bridge keeps "
                            "the tokens Bitrix24 sends with ONAPPINSTALL) or set refresh_token")
            raise ConnectorStopped(f"bitrix24 connector stopped: {self.state.detail}")
        await self._refresh(None)
        assert self._auth is not None and self._auth.access_token
        return self._auth.access_token

    async def _refresh(self, failed_token: str | None) -> None:
        """A new access token (the one that failed is `failed_token`)."""
        async with self._auth_lock:
            stored = await self._load()
            if stored.access_token and stored.access_token != failed_token:
                self._auth = stored  # another process (or request) refreshed meanwhile
                return
            if not stored.refresh_token:
                self.state.stop("the access token expired and there is no refresh token")
                raise ConnectorStopped(f"bitrix24 connector stopped: {self.state.detail}")
            params = {"grant_type": "refresh_token", "client_id": self.settings.client_id,
                      "client_secret": self.settings.client_secret,
                      "refresh_token": stored.refresh_token}
            try:
                async with self.session.get(self.settings.oauth_url, params=params,
                                            timeout=self._timeout) as resp:
                    status, text = resp.status, await resp.text()
            except (aiohttp.ClientError, TimeoutError) as exc:
                self.state.down(f"token refresh failed: {type(exc).__name__}")
                raise DeliveryError(f"Bitrix24 OAuth server unreachable: {type(exc).__name__}: {exc}",
                                    unreachable=True) from None
            self.state.token_refreshes += 1
            try:
                data = json.loads(text)
            except ValueError:
                data = None
            if status >= 500 or data is None:
                self.state.down(f"token refresh answered HTTP {status}")
                raise DeliveryError(f"Bitrix24 OAuth server answered HTTP {status}")
            if status != 200 or "error" in data or not data.get("access_token"):
                error = error_of(data, status) or Bitrix24Error("", "no access_token in the answer")
                self.state.stop(f"refresh token refused ({error}): reinstall the application or "
                                "set a new refresh_token")
                log.error("crm.bitrix24.refresh_refused", extra={"kv": {"error": str(error)}})
                raise ConnectorStopped(f"bitrix24 connector stopped: {self.state.detail}")
            fresh = StoredAuth(
                access_token=str(data["access_token"]),
                refresh_token=str(data.get("refresh_token") or stored.refresh_token),
                expires_at=self.clock() + timedelta(seconds=int(data.get("expires_in") or 3600)),
                application_token=stored.application_token,
                member_id=str(data.get("member_id") or stored.member_id or "") or None,
            )
            # Saved before use: the old refresh token is void already.
            async with self.engine.begin() as conn:
                await save_auth(conn, CONNECTOR, fresh, self.clock())
            self._auth = fresh
            log.info("crm.bitrix24.token_refreshed")

    async def accept_install(self, auth: Mapping[str, Any]) -> None:
        """ONAPPINSTALL: the tokens the portal issued to our application. They are checked with
        a request to the configured portal (`user.current`) before they are kept."""
        access, refresh = str(auth.get("access_token") or ""), str(auth.get("refresh_token") or "")
        app_token = str(auth.get("application_token") or "")
        if not access or not refresh or not app_token:
            raise Bitrix24Error("INVALID_INSTALL", "access_token, refresh_token and "
                                "application_token are all required", 400)
        await self.pacer.acquire()
        status, data = await self._http(self.settings.method_url("user.current"), {"auth": access})
        error = error_of(data, status)
        if error is not None:
            raise Bitrix24Error("INVALID_INSTALL", f"the portal refused the installation's token "
                                f"({error})", 403)
        fresh = StoredAuth(access_token=access, refresh_token=refresh,
                           expires_at=self.clock() + timedelta(seconds=int(auth.get("expires_in") or 3600)),
                           application_token=app_token, member_id=str(auth.get("member_id") or "") or None)
        async with self._auth_lock:
            async with self.engine.begin() as conn:
                await save_auth(conn, CONNECTOR, fresh, self.clock())
            self._auth = fresh
        self.state.resume()

    # --- requests ------------------------------------------------------------------------------

    async def _http(self, url: str, body: Mapping[str, Any]) -> tuple[int, Any]:
        status, text = await crm_request.send(self.session, "POST", url, state=self.state, crm="Bitrix24",
                                              limits=self._timeout, json=body)
        try:
            return status, json.loads(text) if text.strip() else None
        except ValueError:
            self.state.down(f"HTTP {status} with a body that is not JSON")
            raise DeliveryError(f"Bitrix24 answered HTTP {status} with a body that is not JSON: "
                                f"{text[:80]!r}") from None

    async def request(self, method: str, params: Mapping[str, Any]) -> Any:
        """One method call; the whole answer (`result`, `total`, `next`, ...). Raises
        Bitrix24Error for the request's own errors, DeliveryError / ConnectorStopped otherwise."""
        self.state.check()
        url = self.settings.method_url(method)
        expired_once = False
        for _ in range(self.settings.limit_retries + 1):
            body = dict(params)
            token = None
            if self.settings.mode == "application":
                token = await self._access_token()
                body["auth"] = token
            await self.pacer.acquire()
            status, data = await self._http(url, body)
            error = error_of(data, status)
            if error is None:
                self.state.ok()
                return data
            if error.code == LIMIT_ERROR:
                self.state.limit_errors += 1
                self.pacer.limited()
                log.warning("crm.bitrix24.limited", extra={"kv": {"burst": self.pacer.burst}})
                continue
            if error.code == EXPIRED_ERROR and self.settings.mode == "application" and not expired_once:
                expired_once = True
                await self._refresh(token)
                continue
            if error.stops or error.code == EXPIRED_ERROR:
                self.state.stop(f"{method}: {error}")
                log.error("crm.bitrix24.stopped", extra={"kv": {"method": method, "error": str(error)}})
                raise ConnectorStopped(f"bitrix24 connector stopped: {self.state.detail}")
            if error.retryable:
                self.state.down(str(error))
                raise error.delivery_error()
            self.state.ok()  # the portal answered: only this request was wrong
            raise error
        raise DeliveryError(f"Bitrix24 still refused {method} for the request limit after "
                            f"{self.settings.limit_retries + 1} tries")

    async def call(self, method: str, params: Mapping[str, Any]) -> Any:
        return (await self.request(method, params) or {}).get("result")

    async def batch(self, commands: Mapping[str, tuple[str, Mapping[str, Any]]]
                    ) -> tuple[dict[str, Any], dict[str, Bitrix24Error]]:
        """Up to 50 commands in one request: their results and their errors, by key. An error
        that stops the connector (in any command) stops it, as for a single request."""
        if not commands:
            return {}, {}
        if len(commands) > MAX_BATCH:
            raise ValueError(f"a batch holds at most {MAX_BATCH} commands")
        cmd = {key: f"{method}?{php_form.encode(params)}" for key, (method, params) in commands.items()}
        data = await self.request("batch", {"halt": 0, "cmd": cmd})
        outer = (data or {}).get("result") or {}
        results = outer.get("result") or {}
        raw_errors = outer.get("result_error") or {}
        if isinstance(results, list):  # PHP: an empty map comes as []
            results = {}
        if isinstance(raw_errors, list):
            raw_errors = {}
        errors = {key: error_of(value, 400) or Bitrix24Error("", str(value))
                  for key, value in raw_errors.items()}
        for key, error in errors.items():
            if error.stops:
                self.state.stop(f"{commands[key][0]}: {error}")
                log.error("crm.bitrix24.stopped", extra={"kv": {"method": commands[key][0],
                                                                 "error": str(error)}})
                raise ConnectorStopped(f"bitrix24 connector stopped: {self.state.detail}")
        return dict(results), errors
