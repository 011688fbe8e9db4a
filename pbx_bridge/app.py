"""`serve`: wires the database, the PBX connections (or the built-in simulator), the call
pipeline and the HTTP server together, and shuts them down cleanly on SIGTERM / SIGINT."""

from __future__ import annotations

import asyncio
import gc
import logging
import signal

from aiohttp import web

from pbx_bridge.clients.service import CrmServices
from pbx_bridge.commands.context import database
from pbx_bridge.config import Settings
from pbx_bridge.db.engine import make_sessionmaker
from pbx_bridge.http.app import make_app
from pbx_bridge.log import event
from pbx_bridge.recording.install import install as install_recordings
from pbx_bridge.runtime import Runtime
from pbx_bridge.transcription.service import start_transcription

log = logging.getLogger("pbx_bridge.app")


async def serve(settings: Settings, stop: asyncio.Event | None = None) -> None:
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):  # pragma: no cover - not main thread
            pass
    async with database(settings) as engine:
        runtime = Runtime(settings=settings, engine=engine, sessions=make_sessionmaker(engine))
        crm = CrmServices(runtime)
        await crm.start()
        recordings = install_recordings(runtime)  # pipeline stage: RecordingHook(recordings)
        transcription = await start_transcription(runtime)
        app = make_app(runtime)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, settings.server.host, settings.server.port)
        await site.start()
        recordings.start()  # conversion worker + retention job
        # Start-up objects (settings, metadata, phone tables) live forever: keep them out of the
        # collector's full passes, which otherwise pause the loop for tens of ms (routing p99).
        gc.freeze()
        event(log, logging.INFO, "http.listening", host=settings.server.host,
              port=settings.server.port)
        try:
            await stop.wait()
        finally:
            event(log, logging.INFO, "shutdown")
            await recordings.stop()
            await runner.cleanup()
            await crm.stop()
            await transcription.stop()
