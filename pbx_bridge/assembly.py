"""The running bridge, built from the settings: the PBX connections (or the built-in simulator),
the one in-order queue, the call pipeline with its hooks, the feature services and the HTTP
server; started in dependency order and stopped in reverse.

    AMI reader(s) -> queue -> CallConsumer -> tracker -> store -> hooks (crm, recordings,
    click-to-call, notifier) -> EventBus -> live clients

`serve` (pbx_bridge.app) is just: build, start, wait for a signal, stop.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import logging
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncEngine

from pbx_bridge.ami.connection import PbxConnection
from pbx_bridge.ami.journal import Journal
from pbx_bridge.calls.backfill import Backfiller
from pbx_bridge.calls.changes import CallHook
from pbx_bridge.calls.consumer import CallConsumer, tracker_settings_for
from pbx_bridge.calls.queue import QueueItem
from pbx_bridge.calls.store import load_journal_checkpoints
from pbx_bridge.cel.source import CelSource
from pbx_bridge.click_to_call.service import SERVICE_KEY as CLICK_TO_CALL_KEY
from pbx_bridge.click_to_call.service import ClickToCallService
from pbx_bridge.clients.service import CrmServices
from pbx_bridge.config import Settings
from pbx_bridge.db.engine import make_sessionmaker
from pbx_bridge.events.notifier import Notifier
from pbx_bridge.log import event
from pbx_bridge.recording.hook import RecordingHook
from pbx_bridge.recording.install import install as install_recordings
from pbx_bridge.recording.service import RecordingService, simulator_locations
from pbx_bridge.runtime import Runtime
from pbx_bridge.server.app import make_app
from pbx_bridge.server.identities import known_extension
from pbx_bridge.server.runner import app_runner
from pbx_bridge.simulator.embedded import simulator_pbx_config, simulator_settings
from pbx_bridge.simulator.server import AmiSimulator, SimulatorSettings
from pbx_bridge.standby.leadership import Alone, Leadership
from pbx_bridge.transcription.service import TranscriptionService, start_transcription

log = logging.getLogger("pbx_bridge.assembly")

# Names under which the parts are published in runtime.services (metrics read queue_depth).
CONSUMER_SERVICE = "calls"
CLICK_TO_CALL_SERVICE = CLICK_TO_CALL_KEY
CEL_SERVICE = "cel"
LEADERSHIP_SERVICE = "leadership"
# A burst beyond this many queued items pauses reading from the PBX (TCP backpressure) instead
# of growing memory without bound; nothing is dropped (PbxConnection keeps the order).
QUEUE_SIZE = 50_000
# How long stop() lets the pipeline drain what is queued before giving up on it.
DRAIN_TIMEOUT = 10.0


def uses_simulator(settings: Settings) -> bool:
    """No [[pbx]] configured and [simulator] enabled: the demo PBX runs inside `serve`."""
    return not settings.pbx and settings.simulator.enabled


@dataclass
class Bridge:
    runtime: Runtime
    queue: asyncio.Queue[QueueItem]
    simulator_settings: SimulatorSettings | None
    crm: CrmServices
    recordings: RecordingService
    click_to_call: ClickToCallService
    consumer: CallConsumer | None = None
    simulator: AmiSimulator | None = None
    connections: list[PbxConnection] = field(default_factory=list)
    runner: web.AppRunner | None = None
    transcription: TranscriptionService | None = None
    backfillers: list[Backfiller] = field(default_factory=list)
    leadership: Alone | Leadership = field(default_factory=Alone)
    active: bool = False
    _consumer_task: asyncio.Task[None] | None = None
    _journals: dict[str, Journal] = field(default_factory=dict)
    _role_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    _stopping: bool = False
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    @property
    def http_port(self) -> int:
        """The port the HTTP server listens on (the configured one, or the one given for 0)."""
        assert self.runner is not None and self.runner.addresses, "start() first"
        port: int = self.runner.addresses[0][1]
        return port

    async def start(self) -> None:
        runtime = self.runtime
        settings = runtime.settings
        if self.simulator_settings is not None:
            self.simulator = AmiSimulator(self.simulator_settings)
            await self.simulator.start()
            if settings.simulator.calls_per_second > 0:
                self.simulator.start_generator(settings.simulator.calls_per_second)
            # The bridge talks to it like to any PBX, on the port it really listens on.
            settings.pbx = [simulator_pbx_config(settings.simulator, self.simulator.port)]
            event(log, logging.INFO, "simulator.embedded", port=self.simulator.port,
                  calls_per_second=settings.simulator.calls_per_second)
        # Transcription: listens for recording.ready, runs in-process workers when configured; a
        # configured model that cannot load stops start-up here with one line.
        self.transcription = await start_transcription(runtime)
        self.leadership = choose_leadership(settings, runtime.engine)
        runtime.services[LEADERSHIP_SERVICE] = self.leadership
        runtime.acting = self.leadership.acting
        if isinstance(self.leadership, Leadership):
            # Restarted after a crash, the lease may still be the dead process's: wait it out
            # once, so that this process acts from its first event rather than after a resync.
            standby = settings.standby
            await self.leadership.acquire(standby.lease_seconds + standby.renew_seconds)
        if self.leadership.acting():
            await self.activate()  # before the connections: they journal and queue from the start
        for config in settings.pbx:
            connection = PbxConnection(config, self.queue, journal=self._journals.get(config.name))
            connection.listening = self.active  # a standby stays logged in, and passes nothing on
            self.connections.append(connection)
            runtime.pbx[config.name] = connection
            await connection.start()
        self.runner = app_runner(make_app(runtime), access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, settings.server.host, settings.server.port)
        await site.start()
        # Start-up objects (settings, metadata, phone tables) live forever: keep them out of the
        # collector's full passes, which otherwise pause the loop for tens of ms (routing p99).
        gc.freeze()
        url = settings.server.public_url or f"http://{settings.server.host}:{self.http_port}/"
        event(log, logging.INFO, "http.listening", host=settings.server.host, port=self.http_port)
        if not settings.pbx:
            event(log, logging.WARNING, "serve.no_pbx",
                  hint="no [[pbx]] configured and [simulator] enabled = false: no calls will arrive")
        if isinstance(self.leadership, Leadership):
            self.leadership.url = url
            self.leadership.start(self.activate, self.deactivate)
        else:
            event(log, logging.INFO, "standby.alone",
                  reason="SQLite: this bridge runs alone (hot standby needs PostgreSQL)")
        event(log, logging.INFO, "serve.ready", url=f"http://{settings.server.host}:{self.http_port}/",
              pbx=",".join(p.name for p in settings.pbx) or "-", role=self.leadership.role)

    async def activate(self) -> None:
        """Become the bridge that acts: the call pipeline and its hooks, the CEL backfill, the
        workers; the PBX connections journal and queue what they read (from a CoreShowChannels
        snapshot when they are already logged in). Alone: at start; with standbys: when this
        process takes the lease (pbx_bridge.standby.leadership)."""
        async with self._role_lock:
            if self.active or self._stopping:
                return
            runtime = self.runtime
            settings = runtime.settings
            await self.crm.start()
            assert self.crm.hook is not None, "CrmServices.start() sets the hook"
            hooks: list[CallHook] = [
                self.crm.hook,
                RecordingHook(self.recordings),
                self.click_to_call,
                Notifier(runtime.bus, settings.crm.did_sources, settings.phone.default_region),
                *self.crm.late_hooks,
            ]
            self._journals = await open_journals(settings, runtime.engine)
            self.consumer = CallConsumer(
                self.queue, runtime.engine,
                tracker_settings_for(settings.pbx, settings.phone),
                hooks,
                event_listeners=[self.click_to_call.on_event, self.recordings.bridges.on_event],
                journals=self._journals,
                keep_raw_days=settings.events.keep_raw_days,
                cel_live_grace=settings.cel.live_grace_seconds,
                fence=None if isinstance(self.leadership, Alone) else self.leadership.fence,
                on_fenced=self._fenced,
            )
            runtime.services[CONSUMER_SERVICE] = self.consumer
            self._consumer_task = asyncio.create_task(self.consumer.run(), name="call-pipeline")
            self.backfillers = start_backfill(settings, runtime.engine, self.queue, self.consumer)
            runtime.services[CEL_SERVICE] = self.backfillers
            self.recordings.start()  # conversion worker + retention job
            self.click_to_call.forget()
            for connection in self.connections:
                connection.listen(self._journals.get(connection.pbx_name))
                self._background(connection.resync())
            self.active = True

    async def deactivate(self) -> None:
        """Stand by: act no more. The connections stay logged in and pass nothing on; what
        the pipeline had not saved is left to the active bridge (its snapshot and CEL backfill
        see to those calls)."""
        async with self._role_lock:
            if not self.active:
                return
            self.active = False
            for connection in self.connections:
                connection.deafen()
            for backfiller in self.backfillers:
                await backfiller.stop()
            self.backfillers = []
            self.runtime.services[CEL_SERVICE] = []
            if self._consumer_task is not None:
                self._consumer_task.cancel()
                await asyncio.gather(self._consumer_task, return_exceptions=True)
                self._consumer_task = None
            while not self.queue.empty():
                self.queue.get_nowait()
                self.queue.task_done()
            await self.recordings.stop()
            await self.crm.stop()
            self._journals = {}

    def _fenced(self) -> None:
        """The pipeline found another bridge active: stand down now."""
        if isinstance(self.leadership, Leadership):
            self._background(self.leadership.lost())

    def _background(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def stop(self) -> None:
        """Reverse order: stop accepting requests, close the PBX connections, let the pipeline
        drain what was queued, then hand the lease back and stop the workers."""
        event(log, logging.INFO, "shutdown")
        self._stopping = True
        if self.runner is not None:
            await self.runner.cleanup()
        for connection in reversed(self.connections):
            await connection.stop()
        if self.simulator is not None:
            await self.simulator.stop()
        for backfiller in self.backfillers:
            await backfiller.stop()
        if self.active and self.consumer is not None and self._consumer_task is not None:
            await self.consumer.stop()
            try:
                await asyncio.wait_for(asyncio.shield(self._consumer_task), DRAIN_TIMEOUT)
            except TimeoutError:
                event(log, logging.WARNING, "calls.drain_timeout", pending=self.queue.qsize())
                self._consumer_task.cancel()
                await asyncio.gather(self._consumer_task, return_exceptions=True)
        if isinstance(self.leadership, Leadership):
            await self.leadership.stop()  # after the drain: a standby takes over at once
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.recordings.stop()
        if self.transcription is not None:
            await self.transcription.stop()
        await self.click_to_call.close()
        await self.crm.stop()


def choose_leadership(settings: Settings, engine: AsyncEngine) -> Alone | Leadership:
    """PostgreSQL: one active bridge among those sharing it, by lease. SQLite: alone."""
    if engine.dialect.name == "postgresql":
        return Leadership(engine, settings.standby)
    return Alone()


def start_backfill(settings: Settings, engine: AsyncEngine, queue: asyncio.Queue[QueueItem],
                   consumer: CallConsumer) -> list[Backfiller]:
    """A CEL backfill per PBX that has a CEL source; they sweep at once (start), after every
    reconnect's resync, and periodically. Without one, today's behaviour, said once."""
    backfillers = []
    for pbx in settings.pbx:
        if not pbx.cel_url:
            event(log, logging.INFO, "cel.not_configured", pbx=pbx.name,
                  hint="calls that begin and end while the bridge is not listening stay unknown; "
                       "set [[pbx]] cel_url to fill them from Asterisk's CEL")
            continue
        source = CelSource(pbx.name, pbx.cel_url, pbx.cel_table, pbx.cel_timezone,
                           query_timeout=settings.cel.query_timeout)
        backfiller = Backfiller(pbx.name, source, engine, queue.put, settings.cel)
        backfillers.append(backfiller)
        backfiller.start()
    by_pbx = {b.pbx: b for b in backfillers}

    def after_resync(pbx: str) -> None:
        found = by_pbx.get(pbx)
        if found is not None:
            found.trigger("reconnect")

    consumer.resync_listeners.append(after_resync)
    return backfillers


async def open_journals(settings: Settings, engine: AsyncEngine) -> dict[str, Journal]:
    """One journal per configured PBX, numbered on from the saved checkpoints (read before any
    connection starts, so a new event can never get a number already applied)."""
    if not settings.events.journal:
        return {}
    async with engine.connect() as conn:
        saved = await load_journal_checkpoints(conn)
    root = (Path(settings.events.journal_dir) if settings.events.journal_dir
            else settings.data_path / "journal")
    return {p.name: Journal(root, p.name, floor=saved.get(p.name, 0),
                            segment_bytes=settings.events.journal_segment_mb * 2**20)
            for p in settings.pbx}


def assemble(settings: Settings, engine: AsyncEngine) -> Bridge:
    """Build the parts (nothing started yet). The runtime gets a copy of the settings: with the
    embedded simulator its [[pbx]] list becomes the simulator's at start."""
    settings = dataclasses.replace(settings, pbx=list(settings.pbx))
    runtime = Runtime(settings=settings, engine=engine, sessions=make_sessionmaker(engine))
    sim_settings: SimulatorSettings | None = None
    locations = None
    if uses_simulator(settings):
        sim_settings = simulator_settings(settings.simulator, settings.data_path)
        assert sim_settings.spool_dir is not None
        locations = simulator_locations(settings.recordings, settings.data_path,
                                        sim_settings.spool_dir)
    recordings = install_recordings(runtime, locations)
    click_to_call = ClickToCallService(settings, engine, runtime.bus, runtime.pbx,
                                       acting=lambda: runtime.acting(),
                                       known_extension=known_extension(engine))
    runtime.services[CLICK_TO_CALL_SERVICE] = click_to_call
    return Bridge(runtime=runtime, queue=asyncio.Queue(QUEUE_SIZE), simulator_settings=sim_settings,
                  crm=CrmServices(runtime), recordings=recordings, click_to_call=click_to_call)
