"""The recordings feature at run time: MixMonitor per call, conversion and retention jobs.

The call hook only schedules work here (hooks must be fast); each call's work runs in its own
background task chain, in the order the changes came, so StopMixMonitor never overtakes the
MixMonitor it stops. Conversions are durable rows worked by `recordings.worker`.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import sqlalchemy as sa

from crm_sync.phones import normalize
from pbx_bridge.ami.errors import ActionFailed, PbxUnavailable
from pbx_bridge.calls.record import CallRecord, Leg
from pbx_bridge.config import ConfigError, RecordingOverrideConfig, RecordingsConfig
from pbx_bridge.db.schema import calls
from pbx_bridge.log import event
from pbx_bridge.recording import bridges
from pbx_bridge.recording.bridges import BridgeFollower
from pbx_bridge.runtime import Runtime
from recordings import catalog, convert, mixmonitor
from recordings.catalog import RecordingRow
from recordings.finalize import FinalizeOptions, RetryPolicy
from recordings.mixmonitor import Perspective, Segment
from recordings.policy import Override, Policy, decide
from recordings.retention import RetentionReport, apply_retention
from recordings.schema import recordings
from recordings.storage import Locations
from recordings.timeline import CallTimeline
from recordings.worker import ConversionWorker

log = logging.getLogger("pbx_bridge.recording")

SERVICE_NAME = "recordings"
NOT_CONNECTED = "not recorded: the bridge was not connected"


@dataclass(frozen=True)
class TimelineLink:
    """What the client's timeline gets when a recording of a call is ready. `client_id` is the
    call's matched card, if any (the CRM may also have attached the call to several cards)."""

    client_id: int | None
    call_id: int
    url: str  # API path of the recording (GET, Range-capable)
    recording: dict[str, Any]


TimelineCallback = Callable[[TimelineLink], Awaitable[None]]


def ready_message(call_id: int, recording: dict[str, Any], extensions: list[str | None]) -> dict[str, Any]:
    """`recording.ready` in the live events' one shape (pbx_bridge.events.messages.make_message:
    type, at, extensions = the operators who may see it, then the payload)."""
    at = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    exts = sorted({e for e in extensions if e})
    return {"type": "recording.ready", "at": at, "extensions": exts, "call_id": call_id,
            "recording": recording}


def policy_from_config(rec: RecordingsConfig, region: str) -> Policy:
    def override(o: RecordingOverrideConfig) -> Override:
        return Override(o.record, None if o.retention_days < 0 else o.retention_days)

    # DIDs are matched the way the call record stores them (E.164 when the number parses).
    dids = {(normalize(k, region) or k): override(v) for k, v in rec.did_overrides.items()}
    ops = {k: override(v) for k, v in rec.operator_overrides.items()}
    return Policy(rec.policy, rec.retention_days, dids, ops)


def locations_from_config(rec: RecordingsConfig, data_dir: Path) -> Locations:
    return Locations(
        spool_dir=rec.spool_dir,
        local_spool_dir=Path(rec.local_spool_dir or rec.spool_dir or data_dir / "spool"),
        recordings_dir=Path(rec.recordings_dir) if rec.recordings_dir else data_dir / "recordings",
    )


def simulator_locations(rec: RecordingsConfig, data_dir: Path, simulator_spool: Path) -> Locations:
    """With the built-in simulated PBX: bare file names (it puts them in <its spool>/monitor/,
    as Asterisk does), read from there by the bridge on the same machine."""
    configured = locations_from_config(rec, data_dir)
    return Locations(spool_dir="", local_spool_dir=simulator_spool / "monitor",
                     recordings_dir=configured.recordings_dir)


def signing_key(rec: RecordingsConfig, data_dir: Path) -> bytes:
    """The configured key, or a random one kept in the data dir (created once, mode 0600)."""
    if rec.signing_key:
        return rec.signing_key.encode()
    path = data_dir / "recording-links.key"
    try:
        key = bytes.fromhex(path.read_text().strip())
    except FileNotFoundError:
        pass
    except (ValueError, UnicodeDecodeError):
        key = b""
    else:
        if len(key) >= 16:
            return key
    if path.exists():
        raise ConfigError(f"{path}: not a signing key (hex, 16+ bytes); delete it to make a new one "
                          "(links already handed out stop working) or set recordings.signing_key")
    data_dir.mkdir(parents=True, exist_ok=True)
    key = secrets.token_bytes(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(key.hex())
    return key


def operator_channel(record: CallRecord, extension: str | None, *,
                     answered_only: bool = False) -> Leg | None:
    """The operator's channel to record: their latest answered leg still up; else their latest
    leg still up (an outbound call's caller leg may not be marked answered yet when the call's
    `answered` change comes); else their latest answered leg."""
    legs = [leg for leg in record.legs if leg.role == "operator"]
    if answered_only:
        legs = [leg for leg in legs if leg.answered_at is not None]
    if extension is not None:
        legs = [leg for leg in legs if leg.extension == extension]
    live = [leg for leg in legs if leg.hungup_at is None]
    answered_live = [leg for leg in live if leg.answered_at is not None]
    if answered_live:
        return max(answered_live, key=lambda leg: leg.answered_at or 0.0)
    if live:
        return max(live, key=lambda leg: leg.created_at)
    answered = [leg for leg in legs if leg.answered_at is not None]
    return max(answered, key=lambda leg: leg.answered_at or 0.0) if answered else None


def customer_channel(record: CallRecord) -> Leg | None:
    """The customer's channel while it is up (answered first)."""
    up = [leg for leg in record.legs if leg.role == "customer" and leg.hungup_at is None]
    up.sort(key=lambda leg: (leg.answered_at is None, leg.created_at))
    return up[0] if up else None


def _header(response: Any, name: str) -> str | None:
    """A header of an AMI response: a mapping, or an object with a `headers` mapping
    (pbx_bridge.ami.connection.ActionResponse)."""
    headers = response if isinstance(response, Mapping) else getattr(response, "headers", None)
    if isinstance(headers, Mapping):
        for key, value in headers.items():
            if str(key).lower() == name.lower():
                return str(value)
    return None


class RecordingService:
    def __init__(self, runtime: Runtime, *, now: Callable[[], float] = time.time,
                 locations: Locations | None = None) -> None:
        """`locations` overrides the configured directories (the embedded simulator's spool:
        see `simulator_locations`)."""
        self.runtime = runtime
        rec = runtime.settings.recordings
        self.config = rec
        self.policy = policy_from_config(rec, runtime.settings.phone.default_region)
        self.locations = locations or locations_from_config(rec, runtime.settings.data_path)
        self.signing_key = signing_key(rec, runtime.settings.data_path)
        self._now = now
        self.ffmpeg = convert.find_tool("ffmpeg", rec.ffmpeg_path)
        self.worker = ConversionWorker(
            runtime.engine,
            FinalizeOptions(
                self.locations,
                RetryPolicy(rec.retry_attempts, rec.retry_delay_seconds, rec.retry_max_delay_seconds),
                rec.compress, self.ffmpeg,
            ),
            on_finished=self._finished,
            clock=lambda: datetime.fromtimestamp(self._now(), UTC),
        )
        self._chains: dict[int, asyncio.Task[None]] = {}
        # Calls being recorded by this process -> operator channels recorded or tried.
        self._active: dict[int, set[str]] = {}
        # Calls whose recording was in progress when this process started (None until loaded):
        # with _active, what spares the database a look-up for every call that is not recorded.
        self._from_before: set[int] | None = None
        self._stereo_by_pbx: dict[str, bool] = {}
        # Calls recorded on the customer's channel (it hears every operator who takes the call).
        self._on_customer: set[int] = set()
        # Who was bridged with whom and when MixMonitor wrote: an event listener of the pipeline
        # (assembly registers `bridges.on_event`), read when a recorded call ends.
        self.bridges = BridgeFollower()
        self._timeline: list[TimelineCallback] = []
        self._jobs: list[asyncio.Task[None]] = []

    # --- what the hook calls (never blocks) -------------------------------------------------

    def call_answered(self, record: CallRecord, extension: str | None) -> None:
        self._schedule(record, lambda: self._start(record, extension, on="answer"))

    def call_transferred(self, record: CallRecord, extension: str | None) -> None:
        self._schedule(record, lambda: self._start(record, extension, on="transfer"))

    def call_updated(self, record: CallRecord) -> None:
        """A call being recorded gained an answered operator channel not yet recorded (a transfer
        in a call without a customer channel, e.g. an internal call): record it as the next
        segment. Cheap: no I/O here."""
        recorded = self._active.get(record.id) if record.id is not None else None
        if recorded is None or record.id in self._on_customer:
            return  # the customer's channel has the whole call
        for leg in record.legs:
            if (leg.role == "operator" and leg.answered_at is not None and leg.hungup_at is None
                    and leg.channel not in recorded):
                recorded.add(leg.channel)  # tried once: a refusal is not retried on every update
                self._schedule(record, functools.partial(self._start, record, leg.extension, on="operator"))
                return

    def call_ended(self, record: CallRecord) -> None:
        self._schedule(record, lambda: self._end(record))

    def call_backfilled(self, record: CallRecord) -> None:
        """A call rebuilt from CEL once it was over (the bridge was not listening)."""
        self._schedule(record, lambda: self._backfilled(record))

    def add_timeline_listener(self, callback: TimelineCallback) -> None:
        """`callback(TimelineLink)` runs whenever a recording is ready (playable): the CRM links it
        on the client's timeline. A failing callback is logged and does not stop anything."""
        self._timeline.append(callback)

    async def drain(self) -> None:
        """Wait for every scheduled call task (tests, shutdown)."""
        while self._chains:
            await asyncio.wait(list(self._chains.values()))

    def _schedule(self, record: CallRecord, work: Callable[[], Awaitable[None]]) -> None:
        if record.id is None:
            event(log, logging.WARNING, "recording.no_call_id", pbx=record.pbx, linkedid=record.linkedid)
            return
        call_id = record.id
        previous = self._chains.get(call_id)

        async def run() -> None:
            if previous is not None:
                await asyncio.wait([previous])
            try:
                await work()
            except Exception:
                log.exception("recording.task_failed", extra={"kv": {"call_id": call_id}})

        task = asyncio.get_running_loop().create_task(run())
        self._chains[call_id] = task

        def forget(done: asyncio.Task[None]) -> None:
            if self._chains.get(call_id) is done:
                del self._chains[call_id]

        task.add_done_callback(forget)

    # --- MixMonitor ---------------------------------------------------------------------------

    async def _stereo(self, pbx_name: str) -> bool:
        """Whether this PBX's MixMonitor has option D: configured version, else CoreSettings."""
        if pbx_name in self._stereo_by_pbx:
            return self._stereo_by_pbx[pbx_name]
        connection = self.runtime.pbx.get(pbx_name)
        # The connection's own PbxConfig first (the embedded simulator's is not in settings).
        candidates = [getattr(getattr(connection, "config", None), "asterisk_version", None)]
        candidates += [p.asterisk_version for p in self.runtime.settings.pbx if p.name == pbx_name]
        version = next((v for v in candidates if isinstance(v, str) and v), None)
        if version is None:
            if connection is None:
                return False
            try:
                response = await connection.send_action({"Action": "CoreSettings"},
                                                        timeout=self.config.action_timeout)
                version = _header(response, "AsteriskVersion")
            except (PbxUnavailable, ActionFailed) as exc:
                event(log, logging.WARNING, "recording.version_unknown", pbx=pbx_name, error=str(exc))
                return False  # leg files work on every version; ask again next time
        stereo = mixmonitor.supports_stereo(version or "")
        self._stereo_by_pbx[pbx_name] = stereo
        event(log, logging.INFO, "recording.asterisk_version", pbx=pbx_name, version=version,
              mode="stereo" if stereo else "legs")
        return stereo

    async def _start(self, record: CallRecord, extension: str | None, *,
                     on: Literal["answer", "transfer", "operator"]) -> None:
        """Start a segment. A call with a customer is recorded on the customer's channel from its
        answer to its end, whoever takes the call (one segment); only when that channel cannot
        be recorded (or there is none: internal calls) on operators' channels, one segment per
        operator who answers."""
        assert record.id is not None
        call_id = record.id
        if on == "answer" and not self._may_be_recording(call_id):
            decision = decide(self.policy, answered=True, direction=record.direction, did=record.did,
                              operator=extension or record.operator)
            if not decision.record:  # the common case under policy "none" or a narrow rule
                event(log, logging.DEBUG, "recording.not_recorded", call_id=call_id, rule=decision.rule)
                return
        async with self.runtime.engine.connect() as conn:
            existing = await catalog.get_by_call(conn, call_id)
        # A start that failed before any segment (PBX briefly away) may be tried again.
        if existing is not None and existing.state == "failed" and not existing.segments:
            existing = None
        if existing is not None and existing.state != "recording":
            return  # already finished (a late duplicate change)
        if existing is not None and any(s.perspective == "customer" for s in existing.segments):
            self._on_customer.add(call_id)
            return  # the customer's channel is recorded to the end, whoever takes the call
        operator = extension or record.operator
        if existing is None:
            decision = decide(self.policy, answered=True, direction=record.direction, did=record.did,
                              operator=operator)
            if not decision.record:
                event(log, logging.INFO, "recording.not_recorded", call_id=call_id, rule=decision.rule)
                return
            rule = decision.rule
        else:
            rule = existing.rule  # a transfer continues the call's recording
        candidates: list[tuple[Leg, Perspective]] = []
        customer = customer_channel(record) if on != "operator" else None
        if customer is not None:
            candidates.append((customer, "customer"))
        # After a transfer only a phone that answered: one still ringing may never be.
        leg = operator_channel(record, operator, answered_only=on != "answer")
        if leg is not None:
            candidates.append((leg, "operator"))
        if not candidates:
            if on != "answer":
                # No customer channel (internal call) and the new operator has not answered yet:
                # the update that brings their channel starts the segment (call_updated).
                event(log, logging.INFO, "recording.waiting_for_operator", call_id=call_id,
                      operator=operator)
                return
            await self._failed_to_start(record, rule, f"no answered channel for operator {operator}")
            return
        if not self.runtime.acting():
            # Another bridge took over: it records the call (its resync shows it answered).
            event(log, logging.WARNING, "recording.not_active", call_id=call_id)
            return
        connection = self.runtime.pbx.get(record.pbx)
        if connection is None:
            await self._failed_to_start(record, rule, f"no connection to PBX {record.pbx!r}")
            return
        recorded = self._active.setdefault(call_id, set())
        self.bridges.watch(record.pbx, record.linkedid)
        errors = []
        for leg, perspective in candidates:
            recorded.add(leg.channel)
            if existing is not None and any(s.channel == leg.channel for s in existing.segments):
                return  # this channel is already recorded (a duplicate change)
            index = 1 if existing is None else max(s.index for s in existing.segments) + 1
            segment = mixmonitor.plan_segment(
                record.linkedid, index, stereo=await self._stereo(record.pbx), channel=leg.channel,
                operator=operator if perspective == "customer" else (leg.extension or operator),
                started_at=self._now(), perspective=perspective)
            action = mixmonitor.mixmonitor_action(segment, self.locations.spool_dir)
            try:
                await connection.send_action(action, timeout=self.config.action_timeout)
            except (PbxUnavailable, ActionFailed) as exc:
                errors.append(f"MixMonitor on {leg.channel}: {exc}")
                continue
            if perspective == "customer":
                self._on_customer.add(call_id)
            async with self.runtime.engine.begin() as conn:
                await catalog.start_segment(conn, call_id=call_id, pbx=record.pbx,
                                            linkedid=record.linkedid, rule=rule, segment=segment,
                                            now=self._utcnow())
            event(log, logging.INFO, "recording.started", call_id=call_id, channel=leg.channel,
                  segment=index, mode=segment.mode, file=action["File"], side=perspective)
            return
        await self._failed_to_start(record, rule, "; ".join(errors))

    async def _backfilled(self, record: CallRecord) -> None:
        """No MixMonitor was sent for this call by this process. A recording begun before (the
        bridge died mid-call, or a standby took over) is finished as usual. Otherwise the spool
        may hold the call's own file (a bridge that died right after sending MixMonitor, or the
        dialplan's own MixMonitor with the Linkedid as name): it is converted. Otherwise an
        answered call the policy would record is marked as not recorded, and why."""
        assert record.id is not None
        async with self.runtime.engine.connect() as conn:
            existing = await catalog.get_by_call(conn, record.id)
        if existing is not None:
            if existing.state == "recording":
                now = self._utcnow()
                async with self.runtime.engine.begin() as conn:
                    await catalog.mark_processing(conn, record.id, now=now, first_attempt_at=now)
                self.worker.wake()
            return
        if record.status != "answered":
            return  # unanswered calls are never recorded
        decision = decide(self.policy, answered=True, direction=record.direction, did=record.did,
                          operator=record.operator)
        if not decision.record:
            return
        segments = self._spooled_segments(record)
        async with self.runtime.engine.begin() as conn:
            await catalog.record_afterwards(
                conn, call_id=record.id, pbx=record.pbx, linkedid=record.linkedid,
                rule=decision.rule, segments=segments, now=self._utcnow(),
                error=NOT_CONNECTED)
        if segments:
            event(log, logging.INFO, "recording.found_in_spool", call_id=record.id,
                  files=",".join(f for s in segments for f in s.files.values()))
            self.worker.wake()
        else:
            event(log, logging.INFO, "recording.not_recorded", call_id=record.id,
                  reason=NOT_CONNECTED)

    def _spooled_segments(self, record: CallRecord) -> list[mixmonitor.Segment]:
        """The call's first segment as MixMonitor would have named it, if its files are there:
        on the customer's channel when the call has one (as this bridge sends it), else on the
        operator's. Placed from the answer (nothing else is known of its times)."""
        customer = next((leg for leg in record.legs if leg.role == "customer"), None)
        leg = customer or operator_channel(record, record.operator)
        channel = leg.channel if leg is not None else ""
        perspective: Perspective = "customer" if customer is not None else "operator"
        started = record.answered_at or record.started_at
        for stereo in (True, False):
            segment = mixmonitor.plan_segment(record.linkedid, 1, stereo=stereo, channel=channel,
                                              operator=record.operator, started_at=started,
                                              perspective=perspective)
            wanted = [segment.files["stereo"]] if stereo else [segment.files["rx"], segment.files["tx"]]
            if all((self.locations.local_spool_dir / name).is_file() for name in wanted):
                return [segment]
        return []

    async def _failed_to_start(self, record: CallRecord, rule: str, error: str) -> None:
        assert record.id is not None
        event(log, logging.ERROR, "recording.start_failed", call_id=record.id, error=error)
        now = self._utcnow()
        async with self.runtime.engine.begin() as conn:
            existing = await catalog.get_by_call(conn, record.id)
            if existing is None:
                await conn.execute(recordings.insert().values(
                    call_id=record.id, pbx=record.pbx, linkedid=record.linkedid, state="failed",
                    rule=rule, segments=[], attempts=0, last_error=error, created_at=now, updated_at=now))
            else:  # earlier segments still recorded: keep them, note the gap
                await catalog.update(conn, existing.id, last_error=error, updated_at=now)

    async def _end(self, record: CallRecord) -> None:
        assert record.id is not None
        if not self._may_be_recording(record.id):
            return
        self._active.pop(record.id, None)
        self._on_customer.discard(record.id)
        async with self.runtime.engine.connect() as conn:
            row = await catalog.get_by_call(conn, record.id)
        if row is None or row.state != "recording":
            self.bridges.take(record.pbx, record.linkedid)
            return
        up = {leg.channel for leg in record.legs if leg.hungup_at is None}
        connection = self.runtime.pbx.get(record.pbx) if self.runtime.acting() else None
        for segment in row.segments:
            if segment.channel in up and connection is not None:
                try:
                    await connection.send_action(mixmonitor.stop_action(segment.channel),
                                                 timeout=self.config.action_timeout)
                except (PbxUnavailable, ActionFailed) as exc:
                    # The channel hanging up stops MixMonitor anyway.
                    event(log, logging.INFO, "recording.stop_failed", call_id=record.id,
                          channel=segment.channel, error=str(exc))
        segments, timeline = self._timing(record, row.segments)
        now = self._utcnow()
        async with self.runtime.engine.begin() as conn:
            await catalog.mark_processing(
                conn, record.id, now=now,
                first_attempt_at=now + timedelta(seconds=self.config.first_attempt_delay_seconds),
                segments=segments, timeline=timeline)
        self.worker.wake()

    def _timing(self, record: CallRecord, segments: list[Segment]
                ) -> tuple[list[Segment], CallTimeline | None]:
        """The segments with Asterisk's times and the call's timeline, from the events the bridge
        followed (as far as it saw them)."""
        history = self.bridges.take(record.pbx, record.linkedid)
        if history is None:
            return segments, None
        ended = record.ended_at if record.ended_at is not None else max(
            (c.at for c in history.changes), default=self._now())
        timed = [bridges.segment_times(history, s, s.files.values(), ended) for s in segments]
        answered = record.answered_at if record.answered_at is not None else min(
            (s.started_at for s in timed), default=ended)
        customer = next((s.channel for s in timed if s.perspective == "customer"), None) or next(
            (leg.channel for leg in record.legs if leg.role == "customer"), None)
        operators = [leg.channel for leg in record.legs if leg.role == "operator"]
        return timed, bridges.call_timeline(history, customer, answered, ended, operators)

    # --- after conversion ---------------------------------------------------------------------

    async def _finished(self, row: RecordingRow) -> None:
        if not row.playable:
            return  # state and log line already say what went wrong
        data = self.describe(row)
        async with self.runtime.engine.connect() as conn:
            call = (await conn.execute(
                sa.select(calls.c.client_id, calls.c.operator, calls.c.operators_rung)
                .where(calls.c.id == row.call_id))).first()
        extensions = [] if call is None else [call.operator, *(call.operators_rung or [])]
        self.runtime.bus.publish(ready_message(row.call_id, data, extensions))
        if not self._timeline:
            return
        client_id = None if call is None or call.client_id is None else int(call.client_id)
        link = TimelineLink(client_id, row.call_id, data["url"], data)
        for callback in self._timeline:
            try:
                await callback(link)
            except Exception:
                log.exception("recording.timeline_failed", extra={"kv": {"call_id": row.call_id}})

    @staticmethod
    def describe(row: RecordingRow) -> dict[str, Any]:
        return {**row.to_dict(), "url": f"/api/v1/calls/{row.call_id}/recording"}

    # --- background jobs -----------------------------------------------------------------------

    async def reconcile(self) -> int:
        """Recordings still `recording` whose call has ended (the bridge was down at the end):
        queue them for conversion. Returns how many."""
        now = self._utcnow()
        ended = sa.select(calls.c.id).where(calls.c.state == "ended")
        async with self.runtime.engine.begin() as conn:
            result = await conn.execute(
                recordings.update()
                .where(recordings.c.state == "recording", recordings.c.call_id.in_(ended))
                .values(state="processing", next_attempt_at=now, updated_at=now))
        count = int(result.rowcount or 0)
        if count:
            event(log, logging.INFO, "recording.reconciled", count=count)
            self.worker.wake()
        return count

    async def run_retention(self) -> RetentionReport:
        report = await apply_retention(
            self.runtime.engine, self.policy, recordings_dir=self.locations.recordings_dir,
            local_spool_dir=self.locations.local_spool_dir, now=self._utcnow(),
            held_call_ids=sa.select(calls.c.id).where(calls.c.legal_hold.is_(True)),
        )
        event(log, logging.INFO, "recording.retention_run", deleted=len(report.deleted),
              held=len(report.held), errors=len(report.errors))
        return report

    async def _retention_loop(self) -> None:
        while True:
            try:
                await self.reconcile()
                await self.run_retention()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("recording.retention_failed")
            await asyncio.sleep(self.config.retention_check_minutes * 60)

    def start(self) -> None:
        if self.config.compress != "none" and self.ffmpeg is None:
            event(log, logging.WARNING, "recording.compression_unavailable",
                  compress=self.config.compress, reason="ffmpeg not found; WAV only")
        loop = asyncio.get_running_loop()
        self._jobs = [loop.create_task(self.worker.run()), loop.create_task(self._retention_loop()),
                      loop.create_task(self._load_in_progress())]

    def _may_be_recording(self, call_id: int) -> bool:
        """False only when this call is surely not being recorded (nothing started for it by
        this process, nor before it started)."""
        return call_id in self._active or self._from_before is None or call_id in self._from_before

    async def _load_in_progress(self) -> None:
        try:
            async with self.runtime.engine.connect() as conn:
                rows = await conn.execute(sa.select(recordings.c.call_id)
                                          .where(recordings.c.state == "recording"))
                self._from_before = {int(r.call_id) for r in rows}
        except (OSError, sa.exc.SQLAlchemyError) as exc:  # stays None: every call is looked up
            event(log, logging.WARNING, "recording.load_in_progress_failed", error=str(exc)[:300])

    async def stop(self) -> None:
        for job in self._jobs:
            job.cancel()
        await asyncio.gather(*self._jobs, return_exceptions=True)
        self._jobs = []
        try:
            await asyncio.wait_for(self.drain(), 10)
        except TimeoutError:
            event(log, logging.WARNING, "recording.shutdown_pending", calls=len(self._chains))

    def _utcnow(self) -> datetime:
        return datetime.fromtimestamp(self._now(), UTC)
