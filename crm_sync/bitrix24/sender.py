"""Outbox items to Bitrix24 requests: a delivery round's items in as few requests as the portal's
limit allows.

Each round the outbox hands over the next item of every call that has one (never two of one
call: each call's order holds). Their commands go into `batch` requests of up to 50 commands;
one batch costs one request of the 2 per second a portal allows, so a backlog drains at up to
100 commands a second instead of 2. A recording (a base64 upload) goes alone, outside any batch.

A `finish` whose call has no CALL_ID yet takes its `register` along in the same batch and uses
its result (`$result[<key>][CALL_ID]`). A register for a call that already has one (a call placed
from Bitrix24 with OnExternalCallStart: "do not register these again") sends nothing. The card is
shown only while it is news: `show` items, and `SHOW=1` on register, older than
`show_max_age` seconds (a backlog after an outage) are skipped.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from crm_sync.bitrix24 import commands as cmds
from crm_sync.bitrix24 import items as kinds
from crm_sync.bitrix24.api import CONNECTOR, MAX_BATCH, Bitrix24Client, Bitrix24Error
from crm_sync.bitrix24.directory import UserDirectory
from crm_sync.call_media import CallMedia, Missing, RecordingFile, Waiting
from crm_sync.connector_state import ConnectorStopped
from crm_sync.connector_store import external_ids, remember_external_id
from crm_sync.outbox import DeliveryError, NotYet, OutboxItem

log = logging.getLogger("crm_sync.bitrix24.sender")
# A command larger than this goes alone, not inside a batch (the batch's parameters have a
# maximum length: "The maximum length of parameters passed to the batch method has been exceeded").
MAX_BATCHED_BYTES = 16_000
MEDIA_POLL_SECONDS = 5.0

Outcome = BaseException | None


@dataclass
class Command:
    method: str
    params: dict[str, Any]
    key: str = ""


@dataclass
class Plan:
    """What one item sends: nothing (outcome set), or commands (a register + finish pair goes
    in one batch) and what to do with the answers."""

    item: OutboxItem
    commands: list[Command] = field(default_factory=list)
    direct: bool = False  # alone, outside batch (an upload)
    outcome: Outcome = None
    done: bool = False
    on_success: Callable[[dict[str, Any]], Awaitable[None]] | None = None


def _age(item: OutboxItem, now: datetime) -> float:
    return (now - item.created_at).total_seconds()


def _parse_time(value: Any) -> datetime | None:
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(str(value))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


class Bitrix24Sender:
    def __init__(self, client: Bitrix24Client, directory: UserDirectory, media: CallMedia | None, *,
                 show_max_age: float = 60.0,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.client = client
        self.directory = directory
        self.media = media
        self.show_max_age = show_max_age
        self.clock = clock
        self.batches = 0

    # --- planning -------------------------------------------------------------------------------

    def _users(self, extensions: list[str]) -> list[int]:
        """Mapped users only: an extension without a Bitrix24 user gets no card of its own."""
        out: list[int] = []
        for ext in extensions:
            user = self.directory.by_extension.get(ext)
            if user is not None and user not in out:
                out.append(user)
        return out

    def _register_command(self, payload: dict[str, Any], *, show: bool) -> Command:
        started = _parse_time(payload.get("started_at")) or self.clock()
        did = payload.get("did")
        line = cmds.line_number(did) if did else payload.get("line") or None
        return Command(cmds.REGISTER, cmds.register_params(
            user_id=self.directory.user_for(payload.get("extension")),
            number=str(payload.get("number") or ""),
            direction=str(payload.get("direction") or "inbound"),
            started_at=started, crm_create=bool(payload.get("crm_create")), show=show, line=line,
            external_call_id=kinds.external_call_id(payload["pbx"], payload["linkedid"])))

    def _remember(self, payload: dict[str, Any], key: str) -> Callable[[dict[str, Any]], Awaitable[None]]:
        async def store(results: dict[str, Any]) -> None:
            answer = results.get(key) or {}
            call_id = answer.get("CALL_ID") if isinstance(answer, dict) else None
            if not call_id:
                raise DeliveryError(f"Bitrix24 register answered no CALL_ID: {answer!r}"[:300])
            async with self.client.engine.begin() as conn:
                await remember_external_id(conn, CONNECTOR, payload["pbx"], payload["linkedid"],
                                           str(call_id), "register", self.clock())
        return store

    async def _plan(self, item: OutboxItem, external: str | None, now: datetime) -> Plan:
        plan = Plan(item)
        p = item.payload
        key = f"i{item.id}"
        if item.kind == kinds.KIND_REGISTER:
            if external is not None:
                plan.done = True  # registered already (placed from Bitrix24): reuse its CALL_ID
                return plan
            command = self._register_command(p, show=bool(p.get("show"))
                                             and _age(item, now) <= self.show_max_age)
            command.key = key
            plan.commands = [command]
            plan.on_success = self._remember(p, key)
        elif item.kind in (kinds.KIND_SHOW, kinds.KIND_HIDE):
            users = self._users([str(e) for e in p.get("extensions") or []])
            stale = item.kind == kinds.KIND_SHOW and _age(item, now) > self.show_max_age
            if external is None or not users or stale:
                plan.done = True
                return plan
            method = cmds.SHOW if item.kind == kinds.KIND_SHOW else cmds.HIDE
            plan.commands = [Command(method, cmds.users_params(external, users), key)]
        elif item.kind == kinds.KIND_FINISH:
            external = p.get("external_id") or external  # a call Bitrix24 registered itself
            user = int(p["user_id"]) if p.get("user_id") else \
                self.directory.user_for(p.get("operator") or p.get("extension"))
            if external is None and not p.get("number"):
                plan.done = True  # no client number, never registered: nothing to finish
                return plan
            if external is None:
                register = self._register_command(p, show=False)
                register.key = f"{key}r"
                plan.commands = [register, Command(cmds.FINISH, cmds.finish_params(
                    call_id=f"$result[{register.key}][CALL_ID]", user_id=user,
                    talk_seconds=p.get("talk_seconds"), status=p.get("status")), key)]
                plan.on_success = self._remember(p, register.key)
            else:
                params = cmds.finish_params(call_id=external, user_id=user,
                                            talk_seconds=p.get("talk_seconds"), status=p.get("status"))
                if p.get("status_code"):
                    params["STATUS_CODE"] = str(p["status_code"])
                plan.commands = [Command(cmds.FINISH, params, key)]
        elif item.kind in (kinds.KIND_RECORD, kinds.KIND_TRANSCRIPT):
            await self._plan_media(plan, external, now, key)
        else:
            plan.done = True
            plan.outcome = DeliveryError(f"the Bitrix24 connector does not send {item.kind!r} items "
                                         "(queued for another connector?)", retryable=False)
        return plan

    async def _plan_media(self, plan: Plan, external: str | None, now: datetime, key: str) -> None:
        item, p = plan.item, plan.item.payload
        plan.done = True
        if self.media is None:
            return
        call_id = int(p["call_id"])
        found = await (self.media.recording(call_id) if item.kind == kinds.KIND_RECORD
                       else self.media.transcript(call_id))
        if isinstance(found, Waiting):
            deadline = _parse_time(p.get("wait_until"))
            if deadline is not None and now < deadline:
                plan.outcome = NotYet(found.reason, MEDIA_POLL_SECONDS)
            else:
                log.warning("crm.bitrix24.attach_given_up", extra={"kv": {
                    "call_id": call_id, "kind": item.kind, "reason": found.reason}})
            return
        if isinstance(found, Missing):
            log.info("crm.bitrix24.nothing_to_attach", extra={"kv": {
                "call_id": call_id, "kind": item.kind, "reason": found.reason}})
            return
        if external is None:
            plan.outcome = DeliveryError("the call has no Bitrix24 CALL_ID (its finish was not "
                                         "delivered)", retryable=False)
            return
        if isinstance(found, RecordingFile):
            try:
                raw = await asyncio.to_thread(Path(found.path).read_bytes)
                content = base64.b64encode(raw).decode()
            except OSError as exc:
                plan.outcome = DeliveryError(f"recording file unreadable: {exc}", retryable=False)
                return
            plan.commands = [Command(cmds.ATTACH_RECORD, cmds.record_params(external, found.filename,
                                                                            content), key)]
            plan.direct = True
        else:
            messages = cmds.transcript_messages(found)
            if not messages:
                log.info("crm.bitrix24.nothing_to_attach", extra={"kv": {
                    "call_id": call_id, "kind": item.kind, "reason": "the transcript is empty"}})
                return
            plan.commands = [Command(cmds.ATTACH_TRANSCRIPTION, cmds.transcript_params(external, messages),
                                     key)]
            plan.direct = len(str(messages)) > MAX_BATCHED_BYTES
        plan.done = False

    # --- sending --------------------------------------------------------------------------------

    async def send_many(self, items: list[OutboxItem]) -> list[Outcome]:
        """The outbox's batch sender: one outcome per item."""
        self.client.state.check()
        if self.directory.loaded_at is None or self.directory.wants_refresh():
            await self.directory.refresh()
        async with self.client.engine.connect() as conn:
            known = await external_ids(conn, CONNECTOR, [
                (i.payload.get("pbx", ""), i.payload.get("linkedid", "")) for i in items])
        now = self.clock()
        plans = []
        for item in items:
            ref = (item.payload.get("pbx", ""), item.payload.get("linkedid", ""))
            try:
                plans.append(await self._plan(item, known.get(ref), now))
            except Exception as exc:  # a malformed payload must not stop the round
                plans.append(Plan(item, done=True, outcome=DeliveryError(
                    f"cannot build the request: {type(exc).__name__}: {exc}", retryable=False)))
        pending = [p for p in plans if not p.done]
        batched = [p for p in pending if not p.direct]
        groups: list[list[Plan]] = []
        for plan in batched:
            if not groups or sum(len(g.commands) for g in groups[-1]) + len(plan.commands) > MAX_BATCH:
                groups.append([])
            groups[-1].append(plan)
        halted: DeliveryError | None = None
        for group in groups:
            if halted is not None:
                for plan in group:
                    plan.outcome = halted
                continue
            halted = await self._send_batch(group)
        for plan in (p for p in pending if p.direct):
            if halted is not None:
                plan.outcome = halted
                continue
            halted = await self._send_direct(plan)
        return [p.outcome for p in plans]

    async def _send_batch(self, group: list[Plan]) -> DeliveryError | None:
        """Sends one batch; returns the error that must stop the round (the portal is
        unreachable or the connector stopped), else None."""
        commands = {c.key: (c.method, c.params) for plan in group for c in plan.commands}
        self.batches += 1
        try:
            results, errors = await self.client.batch(commands)
        except DeliveryError as exc:
            for plan in group:
                plan.outcome = exc
            return exc if (exc.unreachable or isinstance(exc, ConnectorStopped)) else None
        except Bitrix24Error as exc:  # the batch itself refused
            for plan in group:
                plan.outcome = exc.delivery_error()
            return None
        for plan in group:
            failed = next((errors[c.key] for c in plan.commands if c.key in errors), None)
            if failed is not None:
                plan.outcome = failed.delivery_error()
                continue
            missing = [c.key for c in plan.commands if c.key not in results]
            if missing:
                plan.outcome = DeliveryError(f"Bitrix24 batch answered nothing for {missing}")
                continue
            await self._succeeded(plan, results)
        return None

    async def _send_direct(self, plan: Plan) -> DeliveryError | None:
        (command,) = plan.commands
        try:
            result = await self.client.call(command.method, command.params)
        except DeliveryError as exc:
            plan.outcome = exc
            return exc if (exc.unreachable or isinstance(exc, ConnectorStopped)) else None
        except Bitrix24Error as exc:
            plan.outcome = exc.delivery_error()
            return None
        await self._succeeded(plan, {command.key: result})
        return None

    async def _succeeded(self, plan: Plan, results: dict[str, Any]) -> None:
        if plan.on_success is not None:
            try:
                await plan.on_success(results)
            except DeliveryError as exc:
                plan.outcome = exc
                return
        plan.outcome = None
