"""HTTP endpoints of the native connectors.

`POST /hooks/bitrix24`: Bitrix24's event handler (outside /api/: Bitrix24 sends no bearer
token; each event proves itself with `auth[application_token]`, compared with the one kept from
the application's installation). Bodies are PHP-style forms (`data[CALL_ID]=...`); JSON is
accepted too. Events:
- ONAPPINSTALL: the application's tokens; checked with a request to the configured portal, then
  kept (the first installation, or a reinstallation carrying the application token we know).
- ONEXTERNALCALLSTART: a user clicked a number in Bitrix24. The user (USER_ID) is mapped to an
  extension and the call is placed through click-to-call; its CALL_ID is reused for the call
  (never registered again). A call that cannot be placed is finished at once in Bitrix24 so the
  user's call card closes.

`POST /api/v1/crm/kommo/click-to-call` (bearer token, role crm): `{"user_id": <Kommo user>,
"phone": "..."}` from a Kommo widget: the user is mapped to an extension and the call placed.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from crm_sync import php_form
from crm_sync.bitrix24 import items as b24
from crm_sync.bitrix24.api import Bitrix24Error
from crm_sync.outbox import enqueue
from crm_sync.phones import ascii_digits
from pbx_bridge.click_to_call.service import ClickToCallError, ClickToCallService, NewRequest
from pbx_bridge.crm_connectors.service import HANDLER_PATH, SERVICE_NAME, ConnectorService
from pbx_bridge.http.app_keys import RUNTIME
from pbx_bridge.http.auth import require
from pbx_bridge.http.errors import ApiError
from pbx_bridge.http.params import field_int, field_str, json_object
from pbx_bridge.log import event

log = logging.getLogger("pbx_bridge.crm_connectors.http")
KOMMO_CLICK_TO_CALL = "/api/v1/crm/kommo/click-to-call"
# Bitrix24 events are small; anything bigger is not one.
MAX_EVENT_BYTES = 64 * 1024
C2C_KEY_PREFIX = "b24:"


def _service(request: web.Request, name: str) -> ConnectorService:
    service = request.app[RUNTIME].services.get(SERVICE_NAME)
    if not isinstance(service, ConnectorService) or service.name != name:
        raise ApiError(404, "not_found", f"the {name} connector is not enabled")
    return service


def _click_to_call(request: web.Request) -> ClickToCallService:
    service = request.app[RUNTIME].services.get("click_to_call")
    if not isinstance(service, ClickToCallService):
        raise ApiError(503, "unavailable", "click-to-call is not running")
    return service


async def _event_body(request: web.Request) -> dict[str, Any]:
    if (request.content_length or 0) > MAX_EVENT_BYTES:
        raise ApiError(413, "payload_too_large", "an event is at most 64 KiB")
    raw = await request.read()  # the application's body limit applies as well
    if len(raw) > MAX_EVENT_BYTES:
        raise ApiError(413, "payload_too_large", "an event is at most 64 KiB")
    try:
        text = raw.decode("utf-8")
        if request.content_type == "application/json":
            body = json.loads(text)
        else:
            body = php_form.decode(text)
    except (UnicodeDecodeError, ValueError):
        raise ApiError(400, "bad_request", "the body is neither a form nor JSON") from None
    if not isinstance(body, dict) or not isinstance(body.get("event"), str):
        raise ApiError(400, "bad_request", "no 'event' in the body")
    for part in ("data", "auth"):
        if not isinstance(body.get(part, {}), dict):
            raise ApiError(400, "bad_request", f"'{part}' must be a table")
    return body


async def bitrix24_event(request: web.Request) -> web.Response:
    service = _service(request, "bitrix24")
    body = await _event_body(request)
    name = body["event"].upper()
    auth: dict[str, Any] = body.get("auth") or {}
    assert service.bitrix24 is not None
    known = await service.bitrix24.application_token()
    given = str(auth.get("application_token") or "")
    genuine = bool(known) and hmac.compare_digest(given.encode(), (known or "").encode())
    if name == "ONAPPINSTALL" and (genuine or not known):
        try:
            await service.install(auth)
        except Bitrix24Error as exc:
            event(log, logging.WARNING, "crm.bitrix24.install_refused", error=str(exc))
            raise ApiError(403, "forbidden", str(exc)) from None
        event(log, logging.INFO, "crm.bitrix24.installed")
        return web.json_response({"result": True})
    if not genuine:
        event(log, logging.WARNING, "crm.bitrix24.event_refused", event_name=name,
              reason="application_token does not match")
        raise ApiError(403, "forbidden", "auth[application_token] does not match this application")
    if name == "ONEXTERNALCALLSTART":
        return await _external_call_start(request, service, body.get("data") or {})
    event(log, logging.INFO, "crm.bitrix24.event_ignored", event_name=name)
    return web.json_response({"result": True})


async def _external_call_start(request: web.Request, service: ConnectorService,
                               data: dict[str, Any]) -> web.Response:
    call_id = str(data.get("CALL_ID") or "").strip()
    number = str(data.get("PHONE_NUMBER_INTERNATIONAL") or data.get("PHONE_NUMBER") or "").strip()
    raw_user = str(data.get("USER_ID") or "")
    user_id = int(raw_user) if ascii_digits(raw_user) and len(raw_user) <= 18 else 0
    if not call_id or not number or user_id <= 0:
        raise ApiError(400, "bad_request", "ONEXTERNALCALLSTART needs data[CALL_ID], data[PHONE_NUMBER] "
                                           "and data[USER_ID]")
    directory = service.directory
    assert directory is not None
    extension = next((ext for ext, user in directory.by_extension.items() if user == user_id), None)
    if extension is None:
        await directory.refresh()
        extension = next((ext for ext, user in directory.by_extension.items() if user == user_id), None)
    if extension is None:
        await _finish_unplaced(service, call_id, user_id, "480")
        event(log, logging.WARNING, "crm.bitrix24.click_to_call_refused", user_id=user_id,
              reason="the user has no extension (UF_PHONE_INNER)")
        raise ApiError(422, "unknown_user", f"Bitrix24 user {user_id} has no internal number "
                                            "(UF_PHONE_INNER) the bridge knows")
    try:
        item, created = await _click_to_call(request).create(
            NewRequest(extension, number, None, C2C_KEY_PREFIX + call_id), None)
    except ClickToCallError as exc:
        await _finish_unplaced(service, call_id, user_id, "404" if exc.code == "invalid_number" else "503")
        event(log, logging.WARNING, "crm.bitrix24.click_to_call_failed", call=call_id, error=exc.message)
        raise ApiError(exc.status, exc.code, exc.message) from None
    event(log, logging.INFO, "crm.bitrix24.click_to_call", request=item.id, extension=extension,
          repeated=not created)
    return web.json_response({"result": True, "request": item.to_dict()})


async def _finish_unplaced(service: ConnectorService, external_id: str, user_id: int, code: str) -> None:
    """Bitrix24 registered the call before asking us: close it there (queued like any item)."""
    payload = {"pbx": "", "linkedid": "", "call_id": 0, "external_id": external_id,
               "user_id": user_id, "status_code": code, "talk_seconds": 0}
    key = "b24:ext:" + hashlib.sha256(external_id.encode()).hexdigest()[:32]
    async with service.runtime.engine.begin() as conn:
        await enqueue(conn, key, b24.KIND_FINISH, payload, datetime.now(UTC))
    service.wake.set()


async def kommo_click_to_call(request: web.Request) -> web.Response:
    who = require(request, "crm")
    _service(request, "kommo")
    data = await json_object(request)
    user_id = field_int(data, "user_id")
    phone = field_str(data, "phone", required=True, max_len=64) or ""
    users = request.app[RUNTIME].settings.crm.kommo.users
    extension = next((ext for ext, user in users.items() if user == user_id), None)
    if user_id is None or extension is None:
        raise ApiError(422, "unknown_user", f"Kommo user {user_id} has no extension in crm.kommo.users")
    key = data.get("idempotency_key") or request.headers.get("Idempotency-Key") or None
    try:
        item, created = await _click_to_call(request).create(
            NewRequest(extension, phone, None, str(key)[:128] if key else None), who.id)
    except ClickToCallError as exc:
        raise ApiError(exc.status, exc.code, exc.message) from None
    event(log, logging.INFO, "crm.kommo.click_to_call", request=item.id, extension=extension,
          kommo_user=user_id)
    return web.json_response(item.to_dict(), status=202 if created else 200)


def setup(app: web.Application) -> None:
    app.router.add_post(HANDLER_PATH, bitrix24_event)
    app.router.add_post(KOMMO_CLICK_TO_CALL, kommo_click_to_call)
