"""How `serve` assembles the bridge: raw-event listeners of the call pipeline, readiness that
follows the PBX connections, `serve()` started and stopped in-process, the embedded simulator
only when no [[pbx]] is configured."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import aiohttp
from sqlalchemy.ext.asyncio import AsyncEngine

from pbx_bridge.ami.events import AmiEvent
from pbx_bridge.app import serve
from pbx_bridge.assembly import Bridge, uses_simulator
from pbx_bridge.auth.tokens import create_token
from pbx_bridge.calls.changes import CallChange
from pbx_bridge.calls.consumer import CallConsumer
from pbx_bridge.calls.queue import QueueItem
from pbx_bridge.config import PbxConfig, Settings
from tests.e2e_support import wait_until
from tests.test_consumer import lab_settings
from tests.tracker_support import load_items


class Journal:
    """Hook and listener at once: what the pipeline handed over, in order."""

    def __init__(self, fail_on: str = "") -> None:
        self.entries: list[str] = []
        self.fail_on = fail_on

    async def on_event(self, event: AmiEvent) -> None:
        if event.name == self.fail_on:
            raise RuntimeError("listener bug")
        self.entries.append(f"event:{event.name}")

    async def on_change(self, change: CallChange) -> None:
        self.entries.append(f"change:{change.kind}")


async def _run(consumer: CallConsumer, queue: asyncio.Queue[QueueItem]) -> None:
    task = asyncio.create_task(consumer.run())
    await asyncio.wait_for(queue.join(), 30)
    await consumer.stop()
    await asyncio.wait_for(task, 30)


async def test_listeners_see_every_event_in_order_before_the_changes_it_caused(
        engine: AsyncEngine, traces: Path) -> None:
    items = load_items(traces, "click_to_call")
    events = [i for i in items if isinstance(i, AmiEvent)]
    journal = Journal()
    queue: asyncio.Queue[QueueItem] = asyncio.Queue()
    consumer = CallConsumer(queue, engine, lab_settings, [journal], event_listeners=[journal.on_event])
    for item in items:
        queue.put_nowait(item)
    await _run(consumer, queue)
    seen = [e.removeprefix("event:") for e in journal.entries if e.startswith("event:")]
    assert seen == [e.name for e in events]
    # In each batch the events come first: the first change follows at least one event.
    first_change = next(i for i, e in enumerate(journal.entries) if e.startswith("change:"))
    assert first_change > 0 and journal.entries[-1] == "change:ended"


async def test_a_failing_listener_is_counted_and_stops_nothing(engine: AsyncEngine, traces: Path) -> None:
    items = load_items(traces, "inbound_answered")
    journal = Journal(fail_on="DialBegin")
    queue: asyncio.Queue[QueueItem] = asyncio.Queue()
    consumer = CallConsumer(queue, engine, lab_settings, [journal], event_listeners=[journal.on_event])
    for item in items:
        queue.put_nowait(item)
    await _run(consumer, queue)
    dial_begins = sum(1 for i in items if isinstance(i, AmiEvent) and i.name == "DialBegin")
    assert consumer.listener_errors == dial_begins > 0
    assert "change:ended" in journal.entries


def test_simulator_only_without_pbx_and_when_enabled() -> None:
    s = Settings()
    assert uses_simulator(s)
    s.simulator.enabled = False
    assert not uses_simulator(s)
    s.simulator.enabled = True
    s.pbx = [PbxConfig()]
    assert not uses_simulator(s)


async def test_serve_in_process_readiness_follows_the_connection(settings: Settings,
                                                                 engine: AsyncEngine) -> None:
    settings.server.port = 0
    settings.simulator.port = 0
    settings.simulator.calls_per_second = 0
    settings.recordings.policy = "none"
    settings.transcription.in_process = False  # about readiness: no vosk model to load
    stop = asyncio.Event()
    started: asyncio.Future[Bridge] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(serve(settings, stop, started))
    bridge = await asyncio.wait_for(started, 20)
    try:
        assert settings.pbx == []  # the caller's settings are not changed
        async with engine.begin() as conn:
            _, token = await create_token(conn, name="ops", role="manager")
        sim = bridge.simulator
        assert sim is not None
        url = f"http://127.0.0.1:{bridge.http_port}/readyz"
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"}) as http:
            async def status() -> tuple[int, dict[str, str]]:
                async with http.get(url) as r:
                    return r.status, (await r.json())["checks"]

            async def ready() -> bool:
                return (await status())[0] == 200

            await wait_until(ready, 10, "ready")
            # The PBX goes away (logins refused from now on): not ready, and why.
            sim.action_hook = lambda _session, action: action.name == "Login"
            sim.drop_clients()

            async def not_ready() -> bool:
                return (await status())[0] == 503

            await wait_until(not_ready, 10, "not ready")
            _code, checks = await status()
            assert checks["pbx:simulator"] != "ok" and checks["database"] == "ok"
            sim.action_hook = None
            await wait_until(ready, 15, "ready again")
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)
    assert bridge.runtime.pbx["simulator"].state == "stopped"
    assert bridge.consumer is not None and bridge.consumer.queue.empty()


async def test_without_any_pbx_it_still_serves_and_says_why(settings: Settings, engine: AsyncEngine,
                                                            caplog: Any) -> None:
    settings.server.port = 0
    settings.simulator.enabled = False
    stop = asyncio.Event()
    started: asyncio.Future[Bridge] = asyncio.get_running_loop().create_future()
    with caplog.at_level(logging.INFO):
        task = asyncio.create_task(serve(settings, stop, started))
        bridge = await asyncio.wait_for(started, 20)
        stop.set()
        await asyncio.wait_for(task, 15)
    assert bridge.simulator is None and bridge.runtime.pbx == {}
    text = caplog.text
    assert "serve.no_pbx" in text and "serve.ready" in text
