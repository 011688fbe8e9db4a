"""The UI's pages: sign-in, and the shells whose data the browser fetches from the JSON API."""

from __future__ import annotations

import csv
import io
import logging
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any
from urllib.parse import quote, urlsplit
from zoneinfo import ZoneInfo

import jinja2
from aiohttp import web
from markupsafe import Markup

from crm_sync.spreadsheet import safe_cell
from pbx_bridge.http.errors import ApiError
from pbx_bridge.i18n import (
    LANGUAGES,
    LOCALES,
    Catalog,
    choose_language,
    format_duration,
    format_number,
    translator,
)
from pbx_bridge.log import event
from pbx_bridge.reports.http import report_sources
from pbx_bridge.reports.summary import DIRECTIONS, ReportDirection, SummaryReport, summary_report
from pbx_bridge.runtime import Runtime
from pbx_bridge.transcription.model_info import model_info
from pbx_bridge.web import report_charts
from pbx_bridge.web.login_throttle import LoginThrottle
from pbx_bridge.web.session_auth import (
    clear_session_cookie,
    session_from_request,
    set_session_cookie,
)
from pbx_bridge.web.users import SessionInfo, authenticate, end_session, set_language, start_session

log = logging.getLogger("pbx_bridge.web")

MANAGERS = ("admin", "manager")
EVERYONE = ("admin", "manager", "operator")
SECURITY_HEADERS = {
    # Only our own scripts, styles and media; the JSON in <script type="application/json"> is data.
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "media-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'self'; "
        "form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


@dataclass
class WebUi:
    templates: jinja2.Environment
    catalogs: dict[str, Catalog]
    throttle: LoginThrottle


WEB_UI: web.AppKey[WebUi] = web.AppKey("web_ui", WebUi)


def _runtime(request: web.Request) -> Runtime:
    from pbx_bridge.http.app_keys import RUNTIME  # local: pbx_bridge.server.app registers this module

    return request.app[RUNTIME]


def request_language(request: web.Request, info: SessionInfo | None) -> str:
    return choose_language(
        info.user.language if info else None,
        request.headers.get("Accept-Language"),
        _runtime(request).settings.web.default_language,
    )


def render(
    request: web.Request, template: str, info: SessionInfo | None, *, status: int = 200,
    page: str = "", title_key: str = "", data: dict[str, Any] | None = None, **extra: Any,
) -> web.Response:
    ui = request.app[WEB_UI]
    lang = request_language(request, info)
    catalog = ui.catalogs[lang]
    t = translator(catalog)
    user = None
    if info is not None:
        user = {"username": info.user.username, "role": info.user.role,
                "extension": info.user.extension, "language": info.user.language}
    # What the page's scripts need: language, strings, who is signed in, page data.
    context = {"lang": lang, "locale": LOCALES[lang], "strings": catalog, "user": user,
               "page": page, "data": data or {}}
    html = ui.templates.get_template(template).render(
        t=t, lang=lang, user=user, page=page, title=t(title_key) if title_key else "pbx-bridge",
        csrf_token=info.csrf_token if info else "", context=context, **extra,
    )
    return web.Response(text=html, content_type="text/html", status=status,
                        headers=SECURITY_HEADERS)


async def page_session(request: web.Request, roles: tuple[str, ...] = EVERYONE) -> SessionInfo:
    """The signed-in person allowed on this page; otherwise off to sign-in, or a 403 page."""
    info = await session_from_request(request)
    if info is None:
        raise web.HTTPFound("/ui/login?next=" + quote(request.path_qs, safe=""))
    if info.user.role not in roles:
        raise _Forbidden(info)
    return info


class _Forbidden(Exception):
    def __init__(self, info: SessionInfo) -> None:
        super().__init__("forbidden")
        self.info = info


@web.middleware
async def forbidden_page_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    try:
        response: web.StreamResponse = await handler(request)
        return response
    except _Forbidden as exc:
        return render(request, "forbidden.html", exc.info, status=403, title_key="forbidden.title")


def home_for(info: SessionInfo) -> str:
    return "/ui/live" if info.user.role == "operator" else "/ui/calls"


def safe_next(target: str | None) -> str | None:
    """Only a path on this site (no scheme, no host, no //evil.example)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return None
    parts = urlsplit(target)
    return target if not parts.scheme and not parts.netloc else None


# --- sign-in ----------------------------------------------------------------------------------


async def root(request: web.Request) -> web.StreamResponse:
    info = await session_from_request(request)
    raise web.HTTPFound(home_for(info) if info else "/ui/login")


async def login_form(request: web.Request) -> web.StreamResponse:
    info = await session_from_request(request)
    if info is not None:
        raise web.HTTPFound(safe_next(request.query.get("next")) or home_for(info))
    return render(request, "login.html", None, title_key="login.title",
                  next=safe_next(request.query.get("next")) or "", error="", username="")


async def login_submit(request: web.Request) -> web.StreamResponse:
    origin = request.headers.get("Origin")
    if origin is not None and urlsplit(origin).netloc.lower() != (request.host or "").lower():
        # Login CSRF: another site must not sign the browser in as someone else.
        raise ApiError(403, "csrf_failed", "cross-origin sign-in refused")
    form = await request.post()
    username = str(form.get("username", "")).strip()[:64]
    password = str(form.get("password", ""))
    next_url = safe_next(str(form.get("next", ""))) or ""
    ui = request.app[WEB_UI]
    runtime = _runtime(request)
    t = translator(ui.catalogs[request_language(request, None)])
    keys = (username, request.remote)
    if ui.throttle.blocked(*keys):
        event(log, logging.WARNING, "web.login.throttled", username=username, remote=request.remote)
        return render(request, "login.html", None, status=429, title_key="login.title",
                      next=next_url, error=t("login.throttled"), username=username)
    user = None
    if username and password:
        async with runtime.engine.begin() as conn:
            user = await authenticate(conn, username, password)
    if user is None:
        ui.throttle.failed(*keys)
        event(log, logging.INFO, "web.login.failed", username=username, remote=request.remote)
        return render(request, "login.html", None, status=401, title_key="login.title",
                      next=next_url, error=t("login.failed"), username=username)
    ui.throttle.succeeded(*keys)
    async with runtime.engine.begin() as conn:
        new = await start_session(conn, user, timedelta(hours=runtime.settings.web.session_hours))
    event(log, logging.INFO, "web.login", username=user.username, role=user.role)
    response = web.HTTPFound(next_url or ("/ui/live" if user.role == "operator" else "/ui/calls"))
    set_session_cookie(request, response, new)
    raise response


async def logout(request: web.Request) -> web.StreamResponse:
    # The session middleware has checked the CSRF token for this cookie-authenticated POST.
    info = await session_from_request(request)
    if info is not None:
        async with _runtime(request).engine.begin() as conn:
            await end_session(conn, info.id)
        event(log, logging.INFO, "web.logout", username=info.user.username)
    response = web.HTTPFound("/ui/login")
    clear_session_cookie(request, response)
    raise response


# --- pages whose data comes from the API in the browser --------------------------------------


async def live_page(request: web.Request) -> web.StreamResponse:
    info = await page_session(request)
    return render(request, "live.html", info, page="live", title_key="nav.live")


async def calls_page(request: web.Request) -> web.StreamResponse:
    info = await page_session(request)
    return render(request, "calls.html", info, page="calls", title_key="nav.calls")


async def call_page(request: web.Request) -> web.StreamResponse:
    info = await page_session(request)
    call_id = int(request.match_info["id"])
    return render(request, "call.html", info, page="calls", title_key="call.title",
                  data={"call_id": call_id, "transcription": model_info(_runtime(request).settings)})


async def clients_page(request: web.Request) -> web.StreamResponse:
    info = await page_session(request)
    return render(request, "clients.html", info, page="clients", title_key="nav.clients")


async def client_page(request: web.Request) -> web.StreamResponse:
    info = await page_session(request)
    raw_id = request.match_info.get("id")
    # A new card from the screen pop comes prefilled: the number, the caller-ID name, the ad channel.
    data: dict[str, Any] = {"client_id": int(raw_id) if raw_id else None,
                            "phone": request.query.get("phone", "")[:64],
                            "name": request.query.get("name", "")[:255],
                            "source": request.query.get("source", "")[:128]}
    return render(request, "client.html", info, page="clients", title_key="client.title", data=data)


async def settings_page(request: web.Request) -> web.StreamResponse:
    info = await page_session(request)
    if request.method == "POST":
        form = await request.post()
        choice = str(form.get("language", ""))
        language = choice if choice in LANGUAGES else None
        async with _runtime(request).engine.begin() as conn:
            await set_language(conn, info.user.id, language)
        raise web.HTTPFound("/ui/settings?saved=1")
    return render(request, "settings.html", info, page="settings", title_key="nav.settings",
                  saved=request.query.get("saved") == "1")


# --- reports: numbers and charts made on the server ------------------------------------------


MAX_REPORT_DAYS = 366
CSV_GROUPS = ("day", "operator", "source")


class ReportInputError(ValueError):
    """A report parameter that is wrong; the message is the UI catalog's key saying why."""


def _day(text: str | None, default: date) -> date:
    if not text:
        return default
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise ReportInputError("reports.error.date") from None


@dataclass
class ReportRange:
    first: date
    last: date
    direction: ReportDirection

    def query(self) -> str:
        return f"from={self.first.isoformat()}&to={self.last.isoformat()}&direction={self.direction}"


def _report_params(request: web.Request) -> ReportRange:
    tz = ZoneInfo(_runtime(request).settings.web.report_timezone)
    today = datetime.now(tz).date()
    last = _day(request.query.get("to"), today)
    first = _day(request.query.get("from"), last - timedelta(days=13))
    if last < first:
        raise ReportInputError("reports.error.range")
    if (last - first).days + 1 > MAX_REPORT_DAYS:
        raise ReportInputError("reports.error.too_long")
    direction = request.query.get("direction", "all")
    if direction not in DIRECTIONS:
        raise ReportInputError("reports.error.direction")
    return ReportRange(first, last, direction)


async def _report(runtime: Runtime, period: ReportRange) -> SummaryReport:
    """The reports service's report over the period's local days (web.report_timezone)."""
    timezone = runtime.settings.web.report_timezone
    tz = ZoneInfo(timezone)
    start = datetime.combine(period.first, time(), tz)
    end = datetime.combine(period.last + timedelta(days=1), time(), tz)
    async with runtime.engine.connect() as conn:
        return await summary_report(conn, start, end, timezone=timezone,
                                    sources=report_sources(runtime.settings),
                                    direction=period.direction)


async def reports_page(request: web.Request) -> web.StreamResponse:
    info = await page_session(request, MANAGERS)
    runtime = _runtime(request)
    lang = request_language(request, info)
    t = translator(request.app[WEB_UI].catalogs[lang])
    try:
        period = _report_params(request)
    except ReportInputError as exc:
        return render(request, "reports.html", info, status=422, page="reports",
                      title_key="nav.reports", error=t(str(exc)), report=None, charts={},
                      form=dict(request.query))
    report = await _report(runtime, period)
    days = report.days_filled(period.first, period.last)
    charts = report_charts.build(report, days, t, lang)
    # svg_charts escapes every text it writes, so its SVG goes into the page as markup.
    svg = {k: Markup(v) for k, v in charts.items()}  # noqa: S704
    form = {"from": period.first.isoformat(), "to": period.last.isoformat(),
            "direction": period.direction}
    return render(request, "reports.html", info, page="reports", title_key="nav.reports",
                  report=report, days=days, charts=svg, form=form, error="",
                  num=lambda v, d=0: format_number(v, lang, d), dur=format_duration,
                  day=lambda k: report_charts.day_label(k, lang, t),
                  operator_label=lambda k: report_charts.operator_label(k, t),
                  source_label=lambda k: report_charts.source_label(k, t),
                  query=period.query())


async def reports_csv(request: web.Request) -> web.StreamResponse:
    info = await page_session(request, MANAGERS)
    del info
    runtime = _runtime(request)
    group_by = request.query.get("group_by", "day")
    try:
        if group_by not in CSV_GROUPS:
            raise ApiError(422, "invalid_report", f"group_by must be one of {', '.join(CSV_GROUPS)}")
        period = _report_params(request)
    except ReportInputError as exc:
        english = translator(request.app[WEB_UI].catalogs["en"])
        raise ApiError(422, "invalid_report", english(str(exc))) from None
    report = await _report(runtime, period)
    rows = (report.days_filled(period.first, period.last) if group_by == "day"
            else report.rows(group_by))  # type: ignore[arg-type]
    blank = {"operator": "no operator", "source": "no DID"}.get(group_by, "")
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow([group_by, "calls", "inbound", "answered", "missed", "missed_rate",
                     "avg_wait_seconds", "avg_talk_seconds"])
    for b in [*rows, report.totals]:
        key = "total" if b is report.totals else (b.key or blank)
        writer.writerow([
            _csv_safe(key), b.calls, b.inbound, b.answered, b.missed,
            "" if b.missed_rate is None else f"{b.missed_rate:.4f}",
            "" if b.avg_wait is None else f"{b.avg_wait:.1f}",
            "" if b.avg_talk is None else f"{b.avg_talk:.1f}",
        ])
    name = f"pbx-bridge-{group_by}-{period.first.isoformat()}-{period.last.isoformat()}.csv"
    return web.Response(body=out.getvalue().encode("utf-8-sig"), content_type="text/csv",
                        charset="utf-8",
                        headers={"Content-Disposition": f'attachment; filename="{name}"'})


def _csv_safe(value: str) -> str:
    return safe_cell(value)  # the project's one rule (crm_sync.spreadsheet)

