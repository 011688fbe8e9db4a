"""A Bitrix24 portal as its documentation describes it, for the tests and the benchmark: real
HTTP (aiohttp), the methods the connector uses, and nothing that the documentation does not allow.

- Every method checks its fields as documented and answers errors in Bitrix24's shape
  `{"error": CODE, "error_description": text}` (ERROR_CORE / INVALID_ARGUMENT 400,
  WRONG_AUTH_TYPE 403 for telephony methods called with a webhook, ERROR_METHOD_NOT_FOUND 404).
- Auth: application calls carry `auth=<token>` (NO_AUTH_FOUND, invalid_token, expired_token 401);
  webhooks `/rest/<user>/<code>/` (INVALID_CREDENTIALS 401). `GET /oauth/token/` refreshes:
  single-use refresh tokens (invalid_grant once used or revoked), new access token each time.
- Limit: a leaky bucket (`limit` before blocking, drained by `rate` per second); over it,
  503 QUERY_LIMIT_EXCEEDED (the refused request is not counted). `batch` counts once.
- Calls: register returns a CALL_ID (the same one for the same fields within 30 minutes, unless
  finished); finish needs a registered call; attachRecord / attachTranscription need a finished one.
- Events: `external_call_start()` registers a call the way Bitrix24 does for a click in the CRM
  and posts ONEXTERNALCALLSTART (PHP form, with auth[application_token]) to the bound handler;
  `install()` posts ONAPPINSTALL with fresh tokens.

`log` keeps every request; `telephony()` lists the call commands that succeeded, in the
order the portal ran them (batch commands one by one), with their parameters as received.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import secrets
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import aiohttp
from aiohttp import web

from crm_sync import php_form

APP_ONLY = {"telephony.externalcall.register", "telephony.externalcall.finish",
            "telephony.externalline.add", "telephony.externalline.get", "event.bind"}
STATUS_CODES = {"200", "304", "603", "603-S", "403", "404", "486", "484", "503", "480", "402", "423",
                "OTHER"}
EVENTS = {"ONEXTERNALCALLSTART", "ONEXTERNALCALLBACKSTART"}
PAGE = 50


class PortalError(Exception):
    def __init__(self, status: int, code: str, description: str) -> None:
        super().__init__(description)
        self.status, self.code, self.description = status, code, description

    def body(self) -> dict[str, str]:
        return {"error": self.code, "error_description": self.description}


def core(description: str) -> PortalError:
    return PortalError(400, "ERROR_CORE", description)


@dataclass
class Logged:
    kind: str  # api | batch | oauth
    method: str
    params: dict[str, Any]
    status: int
    error: str | None = None


@dataclass
class Call:
    call_id: str
    fields: dict[str, Any]
    registered_at: float
    user_id: int
    finished: bool = False
    record: bytes | None = None
    record_name: str | None = None
    transcript: list[dict[str, Any]] | None = None
    shown_to: list[int] = field(default_factory=list)


def _int(value: Any) -> int | None:
    """PHP's view of an integer parameter: an int, or a string of digits."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and re.fullmatch(r"-?\d+", value.strip()):
        return int(value)
    return None


class Bitrix24Contract:
    def __init__(self, *, rate: float = 2.0, limit: int = 50, access_ttl: float = 3600.0,
                 users: list[dict[str, Any]] | None = None, client_id: str = "local.test.1",
                 client_secret: str = "s3cret-client", webhook_user: int = 1,
                 webhook_code: str = "whcode123") -> None:
        self.rate, self.limit = rate, limit
        self.access_ttl = access_ttl
        self.client_id, self.client_secret = client_id, client_secret
        self.webhook_user, self.webhook_code = webhook_user, webhook_code
        self.users = users if users is not None else [
            {"ID": "1", "NAME": "Admin", "LAST_NAME": "", "ACTIVE": True, "UF_PHONE_INNER": ""},
            {"ID": "11", "NAME": "Anna", "LAST_NAME": "Smirnova", "ACTIVE": True, "UF_PHONE_INNER": "101"},
            {"ID": "12", "NAME": "Boris", "LAST_NAME": "Petrov", "ACTIVE": True, "UF_PHONE_INNER": "102"},
            {"ID": "13", "NAME": "Vera", "LAST_NAME": "Orlova", "ACTIVE": True, "UF_PHONE_INNER": "103"},
        ]
        self.application_token = secrets.token_hex(16)
        self.access: dict[str, float] = {}  # token -> expires (monotonic)
        self.refresh: set[str] = set()
        self.calls: dict[str, Call] = {}
        self.lines: dict[str, dict[str, str]] = {}
        self.handlers: dict[str, str] = {}  # EVENT -> handler URL
        self.log: list[Logged] = []
        self.limit_errors = 0
        self.last_event_answer = ""
        self._level = 0.0
        self._at = time.monotonic()
        self.runner: web.AppRunner | None = None
        self.port: int | None = None
        self.app = web.Application(client_max_size=64 * 1024 * 1024)
        self.app.router.add_post("/rest/{user:\\d+}/{code}/{method}", self._webhook)
        self.app.router.add_post("/rest/{method}", self._application)
        self.app.router.add_get("/oauth/token/", self._oauth)

    # --- lifecycle ----------------------------------------------------------------------------

    async def start(self, port: int = 0) -> None:
        self.runner = web.AppRunner(self.app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", port)
        await site.start()
        self.port = self.runner.addresses[0][1]

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def oauth_url(self) -> str:
        return f"{self.url}/oauth/token/"

    @property
    def webhook_url(self) -> str:
        return f"{self.url}/rest/{self.webhook_user}/{self.webhook_code}/"

    def issue_tokens(self) -> dict[str, Any]:
        access, refresh = secrets.token_hex(16), secrets.token_hex(16)
        self.access[access] = time.monotonic() + self.access_ttl
        self.refresh.add(refresh)
        return {"access_token": access, "refresh_token": refresh, "expires_in": int(self.access_ttl),
                "member_id": "member-1", "client_endpoint": f"{self.url}/rest/",
                "scope": "telephony,crm,user",
                "status": "L", "domain": "oauth.bitrix.info", "server_endpoint": f"{self.url}/rest/"}

    def expire_access_tokens(self) -> None:
        for token in self.access:
            self.access[token] = 0.0

    def revoke_refresh_tokens(self) -> None:
        self.refresh.clear()

    # --- what happened --------------------------------------------------------------------------

    def telephony(self) -> list[tuple[str, dict[str, Any]]]:
        return [(e.method, e.params) for e in self.log
                if e.error is None and e.kind in ("api", "batch")
                and e.method.startswith(("telephony.externalcall.", "telephony.call."))]

    def requests(self) -> int:
        """HTTP requests that reached the REST API (batch = one)."""
        return sum(1 for e in self.log if e.kind == "api")

    # --- the limit ------------------------------------------------------------------------------

    def _take(self) -> bool:
        now = time.monotonic()
        self._level = max(0.0, self._level - (now - self._at) * self.rate)
        self._at = now
        if self._level >= self.limit:
            self.limit_errors += 1
            return False
        self._level += 1
        return True

    # --- HTTP -----------------------------------------------------------------------------------

    async def _params(self, request: web.Request) -> dict[str, Any]:
        params: dict[str, Any] = php_form.decode(request.query_string) if request.query_string else {}
        if request.can_read_body:
            text = await request.text()
            if request.content_type == "application/json":
                try:
                    body = json.loads(text) if text.strip() else {}
                except ValueError:
                    raise PortalError(400, "INVALID_REQUEST", "the body is not JSON") from None
                if not isinstance(body, dict):
                    raise PortalError(400, "INVALID_REQUEST", "the body must be an object")
                params.update(body)
            elif text:
                params.update(php_form.decode(text))
        return params

    def _reply(self, kind: str, method: str, params: dict[str, Any], result: Any = None,
               error: PortalError | None = None, extra: dict[str, Any] | None = None) -> web.Response:
        shown = {k: v for k, v in params.items() if k != "auth"}
        self.log.append(Logged(kind, method, shown, error.status if error else 200,
                               error.code if error else None))
        if error is not None:
            return web.json_response(error.body(), status=error.status)
        body = {"result": result, **(extra or {}),
                "time": {"start": time.time(), "finish": time.time(), "duration": 0.0}}
        return web.json_response(body)

    async def _webhook(self, request: web.Request) -> web.Response:
        method = request.match_info["method"].removesuffix(".json").lower()
        try:
            params = await self._params(request)
        except PortalError as exc:
            return self._reply("api", method, {}, error=exc)
        wrong_user = int(request.match_info["user"]) != self.webhook_user
        if wrong_user or request.match_info["code"] != self.webhook_code:
            return self._reply("api", method, params, error=PortalError(
                401, "INVALID_CREDENTIALS", "Invalid request credentials"))
        return await self._dispatch(method, params, "webhook", self.webhook_user)

    async def _application(self, request: web.Request) -> web.Response:
        method = request.match_info["method"].removesuffix(".json").lower()
        try:
            params = await self._params(request)
        except PortalError as exc:
            return self._reply("api", method, {}, error=exc)
        token = params.get("auth")
        if not token:
            return self._reply("api", method, params, error=PortalError(
                401, "NO_AUTH_FOUND", "Wrong authorization data"))
        expires = self.access.get(str(token))
        if expires is None:
            return self._reply("api", method, params, error=PortalError(
                401, "invalid_token", "The access token provided is invalid."))
        if expires <= time.monotonic():
            return self._reply("api", method, params, error=PortalError(
                401, "expired_token", "The access token provided has expired."))
        return await self._dispatch(method, params, "application", 1)

    async def _dispatch(self, method: str, params: dict[str, Any], mode: str, caller: int) -> web.Response:
        if not self._take():
            return self._reply("api", method, params, error=PortalError(
                503, "QUERY_LIMIT_EXCEEDED", "Too many requests"))
        if method == "batch":
            return self._batch(params, mode, caller)
        try:
            result, extra = self._run(method, params, mode, caller)
        except PortalError as exc:
            return self._reply("api", method, params, error=exc)
        return self._reply("api", method, params, result, extra=extra)

    def _batch(self, params: dict[str, Any], mode: str, caller: int) -> web.Response:
        cmd = params.get("cmd")
        if not isinstance(cmd, dict) or not cmd:
            return self._reply("api", "batch", params, error=core("cmd should be a non-empty array"))
        if len(cmd) > PAGE:
            return self._reply("api", "batch", params, error=PortalError(
                400, "ERROR_BATCH_LENGTH_EXCEEDED", "Max batch length exceeded"))
        halt = _int(params.get("halt")) == 1
        results: dict[str, Any] = {}
        errors: dict[str, Any] = {}
        for key, query in cmd.items():
            method, _, raw = str(query).partition("?")
            method = method.lower()
            sub = php_form.decode(raw)
            sub = self._substitute(sub, results)
            if method == "batch":
                error = PortalError(400, "ERROR_BATCH_METHOD_NOT_ALLOWED",
                                    "Method is not allowed for batch usage")
                errors[key] = error.body()
                self.log.append(Logged("batch", method, sub, error.status, error.code))
            else:
                try:
                    result, _extra = self._run(method, sub, mode, caller)
                except PortalError as exc:
                    errors[key] = exc.body()
                    self.log.append(Logged("batch", method, sub, exc.status, exc.code))
                else:
                    results[key] = result
                    self.log.append(Logged("batch", method, sub, 200))
            if halt and errors:
                break
        return self._reply("api", "batch", params, {
            "result": results, "result_error": errors, "result_total": [], "result_next": [],
            "result_time": {}})

    @staticmethod
    def _substitute(value: Any, results: dict[str, Any]) -> Any:
        """`$result[key][FIELD]` -> that command's result field (left as is when there is none)."""
        if isinstance(value, dict):
            return {k: Bitrix24Contract._substitute(v, results) for k, v in value.items()}
        if isinstance(value, list):
            return [Bitrix24Contract._substitute(v, results) for v in value]
        if isinstance(value, str):
            match = re.fullmatch(r"\$result\[([^\]]+)\]\[([^\]]+)\]", value)
            if match and isinstance(results.get(match.group(1)), dict):
                found = results[match.group(1)].get(match.group(2))
                return value if found is None else str(found)
        return value

    async def _oauth(self, request: web.Request) -> web.Response:
        q = dict(request.query)
        shown = {k: v for k, v in q.items() if k not in ("client_secret",)}
        def fail(status: int, code: str, text: str) -> web.Response:
            self.log.append(Logged("oauth", "refresh", shown, status, code))
            return web.json_response({"error": code, "error_description": text}, status=status)
        if q.get("grant_type") != "refresh_token":
            return fail(400, "invalid_request", "grant_type must be refresh_token")
        if q.get("client_id") != self.client_id or q.get("client_secret") != self.client_secret:
            return fail(401, "invalid_client", "Invalid client")
        token = q.get("refresh_token", "")
        if token not in self.refresh:
            return fail(400, "invalid_grant", "Invalid grant")
        self.refresh.discard(token)  # single use
        self.log.append(Logged("oauth", "refresh", shown, 200))
        return web.json_response(self.issue_tokens())

    # --- methods --------------------------------------------------------------------------------

    def _user(self, params: dict[str, Any]) -> int:
        if params.get("USER_ID") not in (None, ""):
            user = _int(params.get("USER_ID"))
            found = next((u for u in self.users if user is not None and int(u["ID"]) == user), None)
        elif params.get("USER_PHONE_INNER") not in (None, ""):
            inner = str(params.get("USER_PHONE_INNER"))
            found = next((u for u in self.users if u.get("UF_PHONE_INNER") == inner), None)
        else:
            raise core("USER_ID or USER_PHONE_INNER should be set")
        if found is None or not found.get("ACTIVE"):
            raise core("User is not found or is not active")
        return int(found["ID"])

    def _call(self, params: dict[str, Any]) -> Call:
        call_id = params.get("CALL_ID")
        if not isinstance(call_id, str) or not call_id:
            raise PortalError(400, "INVALID_ARGUMENT", "CALL_ID must be a string")
        found = self.calls.get(call_id)
        if found is None:
            raise core("Call is not found (call should be registered prior to finishing)")
        return found

    def _run(self, method: str, p: dict[str, Any], mode: str, caller: int) -> tuple[Any, dict[str, Any]]:
        if method in APP_ONLY and mode == "webhook":
            raise PortalError(403, "WRONG_AUTH_TYPE", "Current authorization type is denied for this method")
        handler = {
            "telephony.externalcall.register": self._register,
            "telephony.externalcall.finish": self._finish,
            "telephony.externalcall.show": self._show,
            "telephony.externalcall.hide": self._hide,
            "telephony.externalcall.attachrecord": self._attach_record,
            "telephony.call.attachtranscription": self._attach_transcription,
            "telephony.externalline.add": self._line_add,
            "telephony.externalline.get": self._line_get,
            "user.get": self._user_get,
            "user.current": lambda p: next(u for u in self.users if int(u["ID"]) == caller),
            "event.bind": self._bind,
        }.get(method)
        if handler is None:
            raise PortalError(404, "ERROR_METHOD_NOT_FOUND", "Method not found!")
        result = handler(p)
        if method == "user.get":
            return result
        return result, {}

    def _register(self, p: dict[str, Any]) -> dict[str, Any]:
        user = self._user(p)
        number = p.get("PHONE_NUMBER")
        if not isinstance(number, str) or not re.fullmatch(r"\+?\d{5,15}", number):
            raise core("Unsupported phone number format")
        call_type = _int(p.get("TYPE"))
        if call_type not in (1, 2, 3, 4, 5):
            raise core("Unknown TYPE")
        if p.get("CALL_START_DATE") not in (None, ""):
            try:
                start = datetime.fromisoformat(str(p["CALL_START_DATE"]))
            except ValueError:
                start = None
            if start is None or start.tzinfo is None:
                raise core("CALL_START_DATE should be in the ISO-8601 format")
        for flag in ("CRM_CREATE", "SHOW", "ADD_TO_CHAT"):
            if p.get(flag) not in (None, "") and _int(p.get(flag)) not in (0, 1):
                raise PortalError(400, "INVALID_ARGUMENT", f"{flag} must be 0 or 1")
        key = (number, call_type, user, p.get("LINE_NUMBER"), p.get("EXTERNAL_CALL_ID"))
        for call in self.calls.values():
            same = (call.fields.get("PHONE_NUMBER"), _int(call.fields.get("TYPE")), call.user_id,
                    call.fields.get("LINE_NUMBER"), call.fields.get("EXTERNAL_CALL_ID"))
            if same == key and not call.finished and time.monotonic() - call.registered_at < 1800:
                return {"CALL_ID": call.call_id, "CRM_CREATED_LEAD": None, "CRM_ENTITY_TYPE": None,
                        "CRM_ENTITY_ID": None, "CRM_CREATED_ENTITIES": []}
        call_id = f"externalCall.{secrets.token_hex(16)}.{int(time.time())}"
        self.calls[call_id] = Call(call_id, dict(p), time.monotonic(), user)
        if _int(p.get("SHOW")) != 0:
            self.calls[call_id].shown_to.append(user)
        return {"CALL_ID": call_id, "CRM_CREATED_LEAD": None, "CRM_ENTITY_TYPE": None, "CRM_ENTITY_ID": None,
                "CRM_CREATED_ENTITIES": []}

    def _finish(self, p: dict[str, Any]) -> dict[str, Any]:
        call = self._call(p)
        user = self._user(p)
        if call.finished:
            raise core("Call is not found (call should be registered prior to finishing)")
        duration = p.get("DURATION", 0)
        if _int(duration) is None or (_int(duration) or 0) < 0:
            raise PortalError(400, "INVALID_ARGUMENT", "DURATION must be a non-negative integer")
        code = str(p.get("STATUS_CODE") or ("200" if (_int(duration) or 0) > 0 else "304"))
        if code not in STATUS_CODES:
            raise PortalError(400, "INVALID_ARGUMENT", f"Unknown STATUS_CODE {code}")
        call.finished = True
        call.fields["FINISH"] = dict(p)
        if user in call.shown_to:
            call.shown_to.remove(user)
        return {"CALL_ID": call.call_id, "PORTAL_USER_ID": user, "CALL_DURATION": _int(duration),
                "CALL_FAILED_CODE": code, "CALL_STATUS": 1 if code == "200" else 0, "ID": len(self.calls)}

    def _users_of(self, p: dict[str, Any]) -> list[int]:
        raw = p.get("USER_ID")
        values = raw if isinstance(raw, list) else [raw]
        out = []
        for value in values:
            user = _int(value)
            if user is None:
                raise PortalError(400, "INVALID_ARGUMENT",
                                  "USER_ID must be an integer or an array of integers")
            out.append(user)
        return out

    def _show(self, p: dict[str, Any]) -> bool:
        if not isinstance(p.get("CALL_ID"), str):
            raise PortalError(400, "INVALID_ARGUMENT", "CALL_ID must be a string")
        users = self._users_of(p)
        call = self.calls.get(p["CALL_ID"])
        if call is None:
            return False
        call.shown_to += [u for u in users if u not in call.shown_to]
        return True

    def _hide(self, p: dict[str, Any]) -> bool:
        if not isinstance(p.get("CALL_ID"), str):
            raise PortalError(400, "INVALID_ARGUMENT", "CALL_ID must be a string")
        users = self._users_of(p)
        call = self.calls.get(p["CALL_ID"])
        if call is None:
            return False
        call.shown_to = [u for u in call.shown_to if u not in users]
        return True

    def _finished_call(self, p: dict[str, Any], missing: str, *, code: str) -> Call:
        call_id = p.get("CALL_ID")
        if not isinstance(call_id, str) or not call_id:
            raise core("CALL_ID should be set")
        call = self.calls.get(call_id)
        if call is None or not call.finished:
            raise PortalError(400, code, missing.format(call_id=call_id))
        return call

    def _attach_record(self, p: dict[str, Any]) -> dict[str, Any]:
        if not p.get("FILENAME") and not p.get("RECORD_URL"):
            raise PortalError(400, "", "Required parameters are not set. Request should contain either "
                                       "URL or FILENAME parameter")
        call = self._finished_call(p, "Call is not found in the statistic table. It looks like it is not "
                                      "finished yet.", code="")
        name = str(p.get("FILENAME") or "")
        if not name:
            raise core("File name is empty")
        if not name.lower().endswith((".wav", ".mp3")):
            raise core("Wrong file extension. Only wav and mp3 are allowed")
        content = p.get("FILE_CONTENT")
        if content in (None, ""):
            raise core("File content is empty.")
        try:
            data = base64.b64decode(str(content), validate=True)
        except (binascii.Error, ValueError):
            raise core("File content is not properly encoded. Base64 encoding is expected.") from None
        call.record, call.record_name = data, name
        return {"FILE_ID": 9000 + len(self.calls)}

    def _attach_transcription(self, p: dict[str, Any]) -> dict[str, Any]:
        call = self._finished_call(p, "Call {call_id} is not found. Is it finished?", code="ERROR_CORE")
        messages = p.get("MESSAGES")
        if not isinstance(messages, list):
            raise core("MESSAGES should be an array")
        for n, m in enumerate(messages):
            if not isinstance(m, dict) or m.get("SIDE") not in ("Client", "User"):
                raise core(f"MESSAGES[{n}][SIDE] should be either Client or User")
            start, stop = _int(m.get("START_TIME")), _int(m.get("STOP_TIME"))
            if start is None or start < 0:
                raise core(f"MESSAGES[{n}][START_TIME] should be greater or equal to zero")
            if stop is None or stop <= 0:
                raise core(f"MESSAGES[{n}][STOP_TIME] should be greater than zero")
            if not str(m.get("MESSAGE") or "").strip():
                raise core(f"MESSAGES[{n}][MESSAGE] is empty")
        call.transcript = messages
        return {"TRANSCRIPT_ID": len(self.calls)}

    def _line_add(self, p: dict[str, Any]) -> dict[str, Any]:
        number = str(p.get("NUMBER") or "")
        if not number:
            raise core("NUMBER should not be empty")
        if number in self.lines:
            raise core("Line already exists")
        self.lines[number] = {"NUMBER": number, "NAME": str(p.get("NAME") or ""),
                              "CRM_AUTO_CREATE": str(p.get("CRM_AUTO_CREATE") or "Y")}
        return {"ID": len(self.lines)}

    def _line_get(self, _p: dict[str, Any]) -> list[dict[str, str]]:
        return list(self.lines.values())

    def _user_get(self, p: dict[str, Any]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        start = _int(p.get("start", 0)) or 0
        flt = p.get("FILTER") or p.get("filter") or {}
        users = self.users
        if isinstance(flt, dict) and str(flt.get("ACTIVE", "")).lower() in ("true", "1", "y"):
            users = [u for u in users if u.get("ACTIVE")]
        page = users[start:start + PAGE]
        extra: dict[str, Any] = {"total": len(users)}
        if start + PAGE < len(users):
            extra["next"] = start + PAGE
        return page, extra

    def _bind(self, p: dict[str, Any]) -> bool:
        name = str(p.get("event") or "").upper()
        if name not in EVENTS:
            raise PortalError(400, "ERROR_EVENT_NOT_FOUND", "Event not found")
        handler = str(p.get("handler") or "")
        if not handler:
            raise PortalError(400, "ERROR_HANDLER_NOT_FOUND", "Handler not found")
        if self.handlers.get(name) == handler:
            raise PortalError(400, "ERROR_HANDLER_ALREADY_EXIST", "Handler already exists!")
        self.handlers[name] = handler
        return True

    # --- events sent to the bridge --------------------------------------------------------------

    async def external_call_start(self, user_id: int, phone: str, *, token: str | None = None,
                                  handler: str | None = None) -> tuple[str, int]:
        """A click on a number in Bitrix24: the call registered (as Bitrix24 does), the event
        posted to the bound handler. Returns (CALL_ID, the handler's HTTP status)."""
        url = handler or self.handlers.get("ONEXTERNALCALLSTART")
        assert url, "OnExternalCallStart is not bound"
        call_id = f"externalCall.{secrets.token_hex(16)}.{int(time.time())}"
        self.calls[call_id] = Call(call_id, {"PHONE_NUMBER": phone, "TYPE": "1", "USER_ID": str(user_id),
                                             "ORIGIN": "OnExternalCallStart"}, time.monotonic(), user_id)
        form = php_form.encode({
            "event": "ONEXTERNALCALLSTART", "event_handler_id": "7",
            "data": {"PHONE_NUMBER": phone, "PHONE_NUMBER_INTERNATIONAL": phone, "EXTENSION": "",
                     "USER_ID": str(user_id), "CALL_LIST_ID": "0", "LINE_NUMBER": "", "IS_MOBILE": "0",
                     "CALL_ID": call_id, "CRM_ENTITY_TYPE": "CONTACT", "CRM_ENTITY_ID": "797"},
            "ts": str(int(time.time())),
            "auth": {"domain": "127.0.0.1", "member_id": "member-1", "scope": "telephony",
                     "application_token": token if token is not None else self.application_token},
        })
        async with aiohttp.ClientSession() as http, http.post(
                url, data=form, headers={"Content-Type": "application/x-www-form-urlencoded"}) as resp:
            self.last_event_answer = await resp.text()
            return call_id, resp.status

    async def install(self, handler: str, *, token: str | None = None) -> int:
        """ONAPPINSTALL with fresh tokens; the handler's HTTP status."""
        tokens = self.issue_tokens()
        form = php_form.encode({
            "event": "ONAPPINSTALL", "data": {"VERSION": "1", "ACTIVE": "Y", "INSTALLED": "Y",
                                             "LANGUAGE_ID": "ru"},
            "ts": str(int(time.time())),
            "auth": {**tokens, "application_token": token if token is not None else self.application_token},
        })
        async with aiohttp.ClientSession() as http, http.post(
                handler, data=form, headers={"Content-Type": "application/x-www-form-urlencoded"}) as resp:
            return resp.status
