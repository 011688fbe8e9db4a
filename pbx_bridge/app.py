"""`serve`: build the bridge from the settings (pbx_bridge.assembly), start it, run until
SIGTERM / SIGINT, stop it in reverse order."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal

from pbx_bridge.assembly import Bridge, assemble
from pbx_bridge.config import Settings
from pbx_bridge.db.connect import database
from pbx_bridge.log import event

log = logging.getLogger("pbx_bridge.app")


async def serve(settings: Settings, stop: asyncio.Event | None = None,
                started: asyncio.Future[Bridge] | None = None) -> None:
    """Run until `stop` is set (by SIGTERM / SIGINT when running in the main thread).
    `started` (tests) gets the running bridge."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):  # not the main thread
            loop.add_signal_handler(sig, stop.set)
    async with database(settings) as engine:
        bridge = assemble(settings, engine)
        try:
            await bridge.start()  # ends with gc.freeze(): start-up objects live forever
            if started is not None and not started.done():
                started.set_result(bridge)
            await stop.wait()
        finally:
            await bridge.stop()
            event(log, logging.INFO, "stopped")
