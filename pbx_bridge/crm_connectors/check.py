"""`pbx-bridge crm check`: try the configured connector's credentials and user mapping, and say
what is missing. Each finding is a line: `ok`, `missing` (something to fix) or `note`."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import aiohttp
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from crm_sync.bitrix24 import commands as b24_commands
from crm_sync.bitrix24.api import Bitrix24Client, Bitrix24Error
from crm_sync.bitrix24.directory import UserDirectory
from crm_sync.kommo.api import KommoClient, KommoError
from crm_sync.outbox import DeliveryError
from pbx_bridge.config import Settings
from pbx_bridge.crm_connectors.service import (
    active_connector,
    bitrix24_settings,
    did_lines,
    handler_url,
    kommo_settings,
)
from pbx_bridge.db.schema import calls
from pbx_bridge.masking import mask_url

# Extensions seen on calls this recently are the ones the CRM must know.
RECENT = timedelta(days=30)


@dataclass
class Report:
    lines: list[tuple[str, str]] = field(default_factory=list)

    def ok(self, text: str) -> None:
        self.lines.append(("ok", text))

    def missing(self, text: str) -> None:
        self.lines.append(("missing", text))

    def note(self, text: str) -> None:
        self.lines.append(("note", text))

    @property
    def complete(self) -> bool:
        return not any(kind == "missing" for kind, _ in self.lines)


async def known_extensions(settings: Settings, engine: AsyncEngine) -> list[str]:
    """The operators' extensions: configured for click-to-call, the simulator's, and those that
    answered or were rung in the last 30 days."""
    found = set(settings.click_to_call.extensions)
    if not settings.pbx and settings.simulator.enabled:
        found.update(settings.simulator.operators)
    since = datetime.now(UTC) - RECENT
    async with engine.connect() as conn:
        rows = (await conn.execute(sa.select(calls.c.operator, calls.c.operators_rung)
                                   .where(calls.c.started_at >= since))).all()
    for operator, rung in rows:
        if operator:
            found.add(str(operator))
        found.update(str(r) for r in rung or [])
    return sorted(found, key=lambda e: (len(e), e))


async def check(settings: Settings, engine: AsyncEngine) -> Report:
    report = Report()
    name = active_connector(settings)
    if name is None:
        if settings.crm.external_enabled:
            report.note("the generic HTTP connector is enabled (crm.external_enabled); "
                        "no native connector to check")
        else:
            report.missing("no external CRM is enabled: set [crm.bitrix24] enabled = true or "
                           "[crm.kommo] enabled = true")
        return report
    extensions = await known_extensions(settings, engine)
    async with aiohttp.ClientSession() as session:
        if name == "bitrix24":
            await _bitrix24(settings, engine, session, extensions, report)
        else:
            await _kommo(settings, engine, session, extensions, report)
    return report


async def _bitrix24(settings: Settings, engine: AsyncEngine, session: aiohttp.ClientSession,
                    extensions: list[str], report: Report) -> None:
    b = settings.crm.bitrix24
    client = Bitrix24Client(bitrix24_settings(settings), session, engine)
    mode = client.settings.mode
    report.note(f"Bitrix24 {mode}: {'(webhook)' if b.webhook_url else mask_url(b.portal_url)}")
    directory = UserDirectory(client, b.default_user_id)
    try:
        await directory.refresh()
    except (DeliveryError, Bitrix24Error) as exc:
        report.missing(f"credentials refused or portal unreachable: {exc}")
        return
    report.ok(f"credentials work: user.get listed {len(directory.names)} active users")
    for ext in extensions:
        if ext in directory.by_extension:
            user = directory.by_extension[ext]
            report.ok(f"extension {ext} -> Bitrix24 user {user} {directory.names.get(user, '')}".rstrip())
        else:
            report.missing(f"extension {ext} has no Bitrix24 user: set the user's internal number "
                           f"(UF_PHONE_INNER) to {ext}; until then its calls go to user {b.default_user_id}")
    if b.default_user_id not in directory.names:
        report.missing(f"crm.bitrix24.default_user_id = {b.default_user_id} is not an active user")
    if mode == "webhook":
        report.missing("telephony.externalCall.register / finish, telephony.externalLine.* and event.bind "
                       "work only for an application (WRONG_AUTH_TYPE with a webhook): create a local "
                       "application (client_id, client_secret)")
        return
    try:
        lines = await client.call(b24_commands.LINE_GET, {}) or []
    except (DeliveryError, Bitrix24Error) as exc:
        report.missing(f"telephony scope: telephony.externalLine.get refused ({exc})")
        return
    have = {str(line.get("NUMBER")) for line in lines if isinstance(line, dict)}
    report.ok("telephony scope: telephony.externalLine.get answered")
    for number, line_name in did_lines(settings).items():
        if number in have:
            report.ok(f"line {number} ({line_name}) exists")
        else:
            report.note(f"line {number} ({line_name}) will be added when serve starts")
    url = handler_url(settings)
    if b.click_to_call and not url:
        report.missing("click-to-call from Bitrix24: set server.public_url (or crm.bitrix24.handler_url) "
                       "so OnExternalCallStart can be bound")
    elif b.click_to_call:
        report.ok(f"OnExternalCallStart is bound to {mask_url(url or '')} when serve starts")
    if not await client.application_token():
        report.missing("no application token yet: install the application (its ONAPPINSTALL reaches "
                       f"{url or '/hooks/bitrix24'}) or set crm.bitrix24.application_token")


async def _kommo(settings: Settings, engine: AsyncEngine, session: aiohttp.ClientSession,
                 extensions: list[str], report: Report) -> None:
    k = settings.crm.kommo
    client = KommoClient(kommo_settings(settings), session, engine)
    report.note(f"Kommo: {mask_url(k.base_url)}")
    try:
        _status, account = await client.request("GET", "/api/v4/account")
        _status, listed = await client.request("GET", "/api/v4/users")
    except (DeliveryError, KommoError) as exc:
        report.missing(f"credentials refused or account unreachable: {exc}")
        return
    report.ok(f"credentials work: account {account.get('name') or account.get('id')}")
    listed_users = (listed or {}).get("_embedded", {}).get("users", [])
    users = {int(u["id"]): str(u.get("name") or "") for u in listed_users}
    for ext in extensions:
        user = k.users.get(ext)
        if user is None:
            report.missing(f"extension {ext} has no Kommo user: add it to [crm.kommo.users]")
        elif user not in users:
            report.missing(f"crm.kommo.users: {ext} = {user} is not a user of this account")
        else:
            report.ok(f"extension {ext} -> Kommo user {user} {users[user]}".rstrip())
    for ext, user in k.users.items():
        if ext not in extensions and user not in users:
            report.missing(f"crm.kommo.users: {ext} = {user} is not a user of this account")
    if not settings.server.public_url:
        report.missing("server.public_url is empty: calls reach Kommo without a link to their recording")
