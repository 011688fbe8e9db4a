"""Registers the web UI on the aiohttp application: ``setup(app)``."""

from __future__ import annotations

from pathlib import Path

import jinja2
from aiohttp import web

from pbx_bridge.http.errors import error_middleware
from pbx_bridge.i18n import load_catalogs
from pbx_bridge.web import pages
from pbx_bridge.web.login_throttle import LoginThrottle
from pbx_bridge.web.session_auth import session_middleware

HERE = Path(__file__).parent


def setup(app: web.Application) -> None:
    templates = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,  # every template is HTML
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    app[pages.WEB_UI] = pages.WebUi(templates=templates, catalogs=load_catalogs(),
                                    throttle=LoginThrottle())
    # Right after the error middleware (so its 403s get the JSON error shape) and before any
    # token middleware, which then finds request[PRINCIPAL] already set for a session.
    position = app.middlewares.index(error_middleware) + 1 if error_middleware in app.middlewares else 0
    app.middlewares.insert(position, session_middleware)
    app.middlewares.insert(position + 1, pages.forbidden_page_middleware)
    r = app.router
    r.add_get("/", pages.root)
    r.add_get("/ui", pages.root)
    r.add_get("/ui/", pages.root)
    r.add_get("/ui/login", pages.login_form)
    r.add_post("/ui/login", pages.login_submit)
    r.add_post("/ui/logout", pages.logout)
    r.add_get("/ui/live", pages.live_page)
    r.add_get("/ui/calls", pages.calls_page)
    r.add_get(r"/ui/calls/{id:[0-9]{1,18}}", pages.call_page)
    r.add_get("/ui/clients", pages.clients_page)
    r.add_get("/ui/clients/new", pages.client_page)
    r.add_get(r"/ui/clients/{id:[0-9]{1,18}}", pages.client_page)
    r.add_get("/ui/reports", pages.reports_page)
    r.add_get("/ui/reports/summary.csv", pages.reports_csv)
    r.add_route("GET", "/ui/settings", pages.settings_page)
    r.add_route("POST", "/ui/settings", pages.settings_page)
    r.add_static("/ui/static", HERE / "static", append_version=False)
