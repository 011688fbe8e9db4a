"""The aiohttp application: health and OpenAPI here, each feature adds its routes."""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web

from pbx_bridge.auth.middleware import VERIFIER, auth_middleware
from pbx_bridge.auth.tokens import TokenVerifier
from pbx_bridge.calls import http as calls_http
from pbx_bridge.calls import schemas as calls_schemas
from pbx_bridge.click_to_call import http as click_to_call_http
from pbx_bridge.click_to_call import schemas as click_to_call_schemas
from pbx_bridge.click_to_call.service import SERVICE_KEY as CLICK_TO_CALL_KEY
from pbx_bridge.click_to_call.service import ClickToCallService
from pbx_bridge.clients import http as clients_http
from pbx_bridge.clients import routing_http
from pbx_bridge.clients import schemas as clients_schemas
from pbx_bridge.crm_connectors import http as crm_connectors_http
from pbx_bridge.crm_connectors import schemas as crm_connectors_schemas
from pbx_bridge.events import http as events_http
from pbx_bridge.events import schemas as events_schemas
from pbx_bridge.http.access_log import access_log_middleware
from pbx_bridge.http.app_keys import RUNTIME
from pbx_bridge.http.auth import CREDENTIAL_CHECKS as CREDENTIAL_CHECKS_KEY
from pbx_bridge.http.errors import error_middleware
from pbx_bridge.http.limits import body_timeout_middleware
from pbx_bridge.http.openapi import OPENAPI_DOC, Fragment, document, openapi_handler
from pbx_bridge.http.request_caps import CAPS, request_caps_middleware
from pbx_bridge.http.request_caps import index as caps_index
from pbx_bridge.ops import http as ops_http
from pbx_bridge.recording import http as recording_http
from pbx_bridge.recording import schemas as recording_schemas
from pbx_bridge.reports import http as reports_http
from pbx_bridge.reports import schemas as reports_schemas
from pbx_bridge.runtime import Runtime
from pbx_bridge.server.identities import CREDENTIAL_CHECKS, known_extension
from pbx_bridge.server.runner import server_header
from pbx_bridge.transcription import http as transcription_http
from pbx_bridge.transcription import openapi_doc as transcription_schemas
from pbx_bridge.web.routes import setup as setup_web_ui

__all__ = ["RUNTIME", "make_app"]

# Each feature: its routes' setup and its OpenAPI fragment.
FEATURES: list[tuple[Callable[[web.Application], None], Fragment | None]] = [
    (ops_http.setup, None),
    (click_to_call_http.setup, click_to_call_schemas.OPENAPI),
    (calls_http.setup, calls_schemas.OPENAPI),
    (events_http.setup, events_schemas.OPENAPI),
    (reports_http.setup, reports_schemas.OPENAPI),
    (clients_http.setup, clients_schemas.OPENAPI),
    (routing_http.setup, None),
    (crm_connectors_http.setup, crm_connectors_schemas.OPENAPI),
    (recording_http.setup, Fragment(paths=recording_schemas.OPENAPI_PATHS,
                                    schemas=recording_schemas.OPENAPI_SCHEMAS)),
    (transcription_http.setup, Fragment(paths=transcription_schemas.PATHS,
                                        schemas=transcription_schemas.SCHEMAS)),
]


async def healthz(_request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def make_app(runtime: Runtime) -> web.Application:
    # Outermost first: the access log times everything and sees final statuses (and feeds the
    # metrics), errors become JSON, then the token is checked.
    app = web.Application(client_max_size=1024 * 1024,
                          middlewares=[access_log_middleware, error_middleware,
                                       auth_middleware, body_timeout_middleware,
                                       request_caps_middleware])
    app[RUNTIME] = runtime
    app.on_response_prepare.append(server_header)
    app[VERIFIER] = TokenVerifier(runtime.engine, runtime.settings.api.token_cache_seconds)
    app[CREDENTIAL_CHECKS_KEY] = CREDENTIAL_CHECKS
    if CLICK_TO_CALL_KEY not in runtime.services:  # an app without the assembly (tests)
        runtime.services[CLICK_TO_CALL_KEY] = ClickToCallService(
            runtime.settings, runtime.engine, runtime.bus, runtime.pbx,
            known_extension=known_extension(runtime.engine))
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/api/v1/openapi.json", openapi_handler)
    fragments = []
    for setup, fragment in FEATURES:
        setup(app)
        if fragment is not None:
            fragments.append(fragment)
    app[OPENAPI_DOC] = document(fragments)
    app[CAPS] = caps_index(app[OPENAPI_DOC])
    setup_web_ui(app)
    return app
