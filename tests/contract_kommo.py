"""A Kommo (amoCRM) account as its API v4 documentation describes it, for the tests: real HTTP
(aiohttp), the endpoints the connector uses, nothing the documentation does not allow.

- `POST /oauth2/access_token`: authorization_code (single use) or refresh_token (single use:
  each refresh voids the old pair and issues a new one); 400 problem+json with a `hint` otherwise.
- Every API request needs `Authorization: Bearer <access token>`: 401 problem+json when missing,
  unknown or expired.
- At most 7 requests in any second per account, then 429.
- `GET /api/v4/contacts?query=`: contacts matching the query (phones on their digits); 204 and
  no body when none. `with=leads` embeds their leads.
- `POST /api/v4/calls` and `POST /api/v4/leads/unsorted/sip`: arrays; every documented field
  checked for presence and type, unknown fields refused: 400 with `validation-errors`.
  A call whose phone matches no contact is not added (`errors` in the answer).
- `GET /api/v4/users`, `GET /api/v4/account`.
"""

from __future__ import annotations

import collections
import json
import secrets
import time
from dataclasses import dataclass
from typing import Any

from aiohttp import web

CALL_FIELDS = {"direction": str, "uniq": str, "duration": int, "source": str, "link": str, "phone": str,
               "call_result": str, "call_status": int, "responsible_user_id": int, "created_by": int,
               "updated_by": int, "created_at": int, "updated_at": int, "request_id": str}
CALL_REQUIRED = ("direction", "duration", "source", "phone")
UNSORTED_FIELDS = {"source_uid": str, "source_name": str, "pipeline_id": int, "created_at": int,
                   "metadata": dict, "_embedded": dict, "request_id": str}
SIP_METADATA = {"is_call_event_needed": bool, "uniq": str, "duration": int, "service_code": str,
                "link": str, "phone": str, "called_at": int, "from": str}
SIP_METADATA_REQUIRED = ("uniq", "duration", "service_code", "phone", "called_at", "from")


def problem(status: int, title: str, detail: str, **extra: Any) -> web.Response:
    body = {"title": title, "type": f"https://httpstatus.es/{status}", "status": status, "detail": detail,
            **extra}
    return web.json_response(body, status=status, content_type="application/problem+json")


def _typed(value: Any, kind: type) -> bool:
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, kind)


def _digits(text: str) -> str:
    return "".join(ch for ch in text if ch.isdigit())


@dataclass
class Logged:
    method: str
    path: str
    body: Any
    status: int


class KommoContract:
    def __init__(self, *, per_second: int = 7, access_ttl: float = 86400.0,
                 client_id: str = "kommo-integration-1", client_secret: str = "kommo-secret",
                 redirect_uri: str = "https://bridge.example/kommo") -> None:
        self.per_second = per_second
        self.access_ttl = access_ttl
        self.client_id, self.client_secret, self.redirect_uri = client_id, client_secret, redirect_uri
        self.codes: set[str] = set()
        self.access: dict[str, float] = {}
        self.refresh: set[str] = set()
        self.users = [{"id": 5001, "name": "Anna", "email": "anna@example.com"},
                      {"id": 5002, "name": "Boris", "email": "boris@example.com"},
                      {"id": 5003, "name": "Vera", "email": "vera@example.com"}]
        self.contacts: list[dict[str, Any]] = []
        self.calls: list[dict[str, Any]] = []
        self.unsorted: list[dict[str, Any]] = []
        self.log: list[Logged] = []
        self.limited = 0
        self._recent: collections.deque[float] = collections.deque()
        self.runner: web.AppRunner | None = None
        self.port: int | None = None
        app = web.Application()
        app.router.add_post("/oauth2/access_token", self._token)
        app.router.add_get("/api/v4/contacts", self._contacts)
        app.router.add_post("/api/v4/calls", self._calls)
        app.router.add_post("/api/v4/leads/unsorted/sip", self._unsorted)
        app.router.add_get("/api/v4/users", self._users)
        app.router.add_get("/api/v4/account", self._account)
        self.app = app

    async def start(self, port: int = 0) -> None:
        self.runner = web.AppRunner(self.app, access_log=None)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", port).start()
        self.port = self.runner.addresses[0][1]

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def authorization_code(self) -> str:
        code = secrets.token_hex(12)
        self.codes.add(code)
        return code

    def add_contact(self, name: str, phone: str, *, leads: list[dict[str, Any]] | None = None,
                    responsible_user_id: int = 5001) -> dict[str, Any]:
        contact = {"id": 7000 + len(self.contacts), "name": name, "responsible_user_id": responsible_user_id,
                   "custom_fields_values": [{"field_code": "PHONE", "field_name": "Phone",
                                             "values": [{"value": phone, "enum_code": "WORK"}]}],
                   "_embedded": {"leads": leads or []}}
        self.contacts.append(contact)
        return contact

    def expire_access_tokens(self) -> None:
        for token in self.access:
            self.access[token] = 0.0

    def revoke_refresh_tokens(self) -> None:
        self.refresh.clear()

    def api_log(self) -> list[tuple[str, str, Any]]:
        """Requests the API accepted, in order (token requests excluded)."""
        return [(e.method, e.path, e.body) for e in self.log
                if e.status < 400 and not e.path.startswith("/oauth2")]

    # --- plumbing ---------------------------------------------------------------------------------

    def _issue(self) -> dict[str, Any]:
        access, refresh = secrets.token_hex(20), secrets.token_hex(20)
        self.access[access] = time.monotonic() + self.access_ttl
        self.refresh.add(refresh)
        return {"token_type": "Bearer", "expires_in": int(self.access_ttl), "access_token": access,
                "refresh_token": refresh, "server_time": int(time.time())}

    def _answer(self, request: web.Request, body: Any, response: web.Response) -> web.Response:
        path = request.path + (f"?{request.query_string}" if request.query_string else "")
        self.log.append(Logged(request.method, path, body, response.status))
        return response

    async def _guard(self, request: web.Request) -> web.Response | None:
        """Rate limit, then the bearer token."""
        now = time.monotonic()
        while self._recent and now - self._recent[0] >= 1.0:
            self._recent.popleft()
        if len(self._recent) >= self.per_second:
            self.limited += 1
            return problem(429, "Too Many Requests", "Limit of 7 requests per second exceeded")
        self._recent.append(now)
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        expires = self.access.get(token) if scheme == "Bearer" else None
        if expires is None:
            return problem(401, "Unauthorized", "Authorization required")
        if expires <= time.monotonic():
            return problem(401, "Unauthorized", "The access token has expired")
        return None

    async def _json(self, request: web.Request) -> Any:
        try:
            return json.loads(await request.text())
        except ValueError:
            return None

    # --- endpoints --------------------------------------------------------------------------------

    async def _token(self, request: web.Request) -> web.Response:
        body = await self._json(request)
        shown = ({k: v for k, v in body.items() if k != "client_secret"} if isinstance(body, dict)
                 else body)
        if not isinstance(body, dict):
            return self._answer(request, shown, problem(400, "Bad Request", "JSON expected"))
        if (body.get("client_id"), body.get("client_secret"), body.get("redirect_uri")) != (
                self.client_id, self.client_secret, self.redirect_uri):
            return self._answer(request, shown, problem(400, "Bad Request", "Client authentication failed",
                                                        hint="Client authentication failed"))
        grant = body.get("grant_type")
        if grant == "authorization_code" and body.get("code") in self.codes:
            self.codes.discard(body["code"])
        elif grant == "refresh_token" and body.get("refresh_token") in self.refresh:
            self.refresh.discard(body["refresh_token"])
        elif grant in ("authorization_code", "refresh_token"):
            hint = "Authorization code has been revoked" if grant == "authorization_code" else \
                "Token has been revoked"
            return self._answer(request, shown, problem(400, "Bad Request", "The provided grant is invalid",
                                                        hint=hint))
        else:
            return self._answer(request, shown, problem(400, "Bad Request", "Unsupported grant type"))
        return self._answer(request, shown, web.json_response(self._issue()))

    def _matching(self, query: str) -> list[dict[str, Any]]:
        wanted = _digits(query)
        found = []
        for contact in self.contacts:
            phones = [_digits(v["value"]) for f in contact["custom_fields_values"] for v in f["values"]]
            if (wanted and any(wanted in p for p in phones)) or query.lower() in contact["name"].lower():
                found.append(contact)
        return found

    async def _contacts(self, request: web.Request) -> web.Response:
        refused = await self._guard(request)
        if refused is not None:
            return self._answer(request, None, refused)
        query = request.query.get("query")
        if query is not None and not query.strip():
            return self._answer(request, None, problem(400, "Bad Request", "query must not be empty"))
        found = self._matching(query or "")
        if not found:
            return self._answer(request, None, web.Response(status=204))
        with_leads = "leads" in request.query.get("with", "").split(",")
        contacts = [{**{k: v for k, v in c.items() if k != "_embedded"},
                     "_embedded": {"leads": c["_embedded"]["leads"] if with_leads else []}} for c in found]
        return self._answer(request, None, web.json_response(
            {"_page": 1, "_links": {"self": {"href": str(request.url)}},
             "_embedded": {"contacts": contacts}}))

    @staticmethod
    def _validate(items: Any, fields: dict[str, type], required: tuple[str, ...]) -> list[dict[str, Any]]:
        problems: list[dict[str, Any]] = []
        if not isinstance(items, list) or not items:
            return [{"request_id": "0", "errors": [{"code": "NotSupportedChoice", "path": "",
                                                     "detail": "An array of objects is expected."}]}]
        for n, item in enumerate(items):
            errors = []
            if not isinstance(item, dict):
                errors.append({"code": "InvalidType", "path": "", "detail": "An object is expected."})
            else:
                for key in required:
                    if key not in item:
                        errors.append({"code": "NotBlank", "path": key,
                                       "detail": "This value should not be blank."})
                for key, value in item.items():
                    if key not in fields:
                        errors.append({"code": "NotSupportedChoice", "path": key,
                                       "detail": "This field is not supported."})
                    elif not _typed(value, fields[key]):
                        errors.append({"code": "InvalidType", "path": key,
                                       "detail": f"This value should be of type {fields[key].__name__}."})
            if errors:
                problems.append({"request_id": str(n), "errors": errors})
        return problems

    async def _calls(self, request: web.Request) -> web.Response:
        refused = await self._guard(request)
        body = await self._json(request)
        if refused is not None:
            return self._answer(request, body, refused)
        problems = self._validate(body, CALL_FIELDS, CALL_REQUIRED)
        for n, call in enumerate(body if isinstance(body, list) else []):
            if not isinstance(call, dict):
                continue
            errors = []
            if call.get("direction") not in ("inbound", "outbound"):
                errors.append({"code": "NotSupportedChoice", "path": "direction",
                               "detail": "The value you selected is not a valid choice."})
            if "call_status" in call and call["call_status"] not in range(1, 8):
                errors.append({"code": "NotSupportedChoice", "path": "call_status",
                               "detail": "The value you selected is not a valid choice."})
            for key in ("responsible_user_id", "created_by"):
                if key in call and call[key] not in [u["id"] for u in self.users]:
                    errors.append({"code": "NotSupportedChoice", "path": key, "detail": "User not found."})
            if errors:
                problems.append({"request_id": str(n), "errors": errors})
        if problems:
            return self._answer(request, body, problem(400, "Bad Request", "Request validation failed",
                                                       **{"validation-errors": problems}))
        added, errors = [], []
        for n, call in enumerate(body):
            contacts = [c for c in self.contacts if _digits(call["phone"])[-10:] in
                        [_digits(v["value"])[-10:] for f in c["custom_fields_values"] for v in f["values"]]]
            if not contacts:
                errors.append({"request_id": str(n), "status": 404, "title": "Entity not found"})
                continue
            self.calls.append(dict(call))
            added.append({"id": len(self.calls), "entity_id": contacts[0]["id"], "entity_type": "contacts",
                          "account_id": 1, "request_id": str(n)})
        return self._answer(request, body, web.json_response(
            {"_total_items": len(added), "errors": errors, "_embedded": {"calls": added}}))

    async def _unsorted(self, request: web.Request) -> web.Response:
        refused = await self._guard(request)
        body = await self._json(request)
        if refused is not None:
            return self._answer(request, body, refused)
        problems = self._validate(body, UNSORTED_FIELDS, ("source_uid", "source_name", "metadata"))
        for n, lead in enumerate(body if isinstance(body, list) else []):
            if not isinstance(lead, dict) or not isinstance(lead.get("metadata"), dict):
                continue
            errors = self._validate([lead["metadata"]], SIP_METADATA, SIP_METADATA_REQUIRED)
            for found in errors:
                for error in found["errors"]:
                    nested = {**error, "path": f"metadata.{error['path']}"}
                    problems.append({"request_id": str(n), "errors": [nested]})
            if any(u["source_uid"] == lead.get("source_uid") for u in self.unsorted):
                problems.append({"request_id": str(n), "errors": [{
                    "code": "Duplicate", "path": "source_uid",
                    "detail": "This incoming lead already exists."}]})
        if problems:
            return self._answer(request, body, problem(400, "Bad Request", "Request validation failed",
                                                       **{"validation-errors": problems}))
        created = []
        for n, lead in enumerate(body):
            uid = secrets.token_hex(10)
            self.unsorted.append({**lead, "uid": uid})
            created.append({"uid": uid, "account_id": 1, "request_id": str(n),
                            "_embedded": {"leads": [{"id": 9000 + len(self.unsorted)}],
                                          "contacts": [{"id": 8000 + len(self.unsorted)}]}})
        return self._answer(request, body, web.json_response(
            {"_total_items": len(created), "_embedded": {"unsorted": created}}))

    async def _users(self, request: web.Request) -> web.Response:
        refused = await self._guard(request)
        if refused is not None:
            return self._answer(request, None, refused)
        return self._answer(request, None, web.json_response(
            {"_total_items": len(self.users), "_page": 1, "_embedded": {"users": self.users}}))

    async def _account(self, request: web.Request) -> web.Response:
        refused = await self._guard(request)
        if refused is not None:
            return self._answer(request, None, refused)
        return self._answer(request, None, web.json_response({"id": 1, "name": "Test", "subdomain": "test"}))
