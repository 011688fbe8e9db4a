"""Shared by the end-to-end tests: the real AMI path in-process (simulator over TCP ->
PbxConnection (panoramisk) -> one queue -> CallConsumer -> tracker -> database), and helpers to
run `pbx-bridge` as a subprocess."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from pbx_bridge.ami.connection import PbxConnection
from pbx_bridge.calls import store
from pbx_bridge.calls.consumer import CallConsumer, tracker_settings_for
from pbx_bridge.calls.queue import QueueItem
from pbx_bridge.calls.record import CallRecord
from pbx_bridge.config import PbxConfig, PhoneConfig
from pbx_bridge.simulator.server import AmiSimulator, SimulatorSettings
from pbx_bridge.simulator.templates import broadcast_events
from pbx_bridge.simulator.trace import Frame
from tests.tracker_support import LAB_OPERATORS, SIP_OPERATORS

ROOT = Path(__file__).resolve().parent.parent


def pbx_config(trace: str, port: int, name: str = "lab") -> PbxConfig:
    """How the traces' README says the bridge is configured to replay them."""
    return PbxConfig(name=name, host="127.0.0.1", port=port, username="bridge", secret="simulator",
                     operator_channel=SIP_OPERATORS if trace.startswith("sip_") else LAB_OPERATORS,
                     inbound_contexts=["from-trunk"], asterisk_version="22.10.1",
                     ping_interval=1.0, ping_timeout=2.0, reconnect_min=0.05, reconnect_max=0.2)


async def wait_until(predicate: Callable[[], Awaitable[bool]] | Callable[[], bool],
                     within: float = 10.0, what: str = "condition") -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        result = predicate()
        if isinstance(result, Awaitable):
            result = await result
        if result:
            return
        if loop.time() > deadline:
            raise AssertionError(f"{what}: not reached within {within} s")
        await asyncio.sleep(0.02)


async def all_calls(engine: AsyncEngine) -> list[CallRecord]:
    async with engine.connect() as conn:
        return await store.list_calls(conn, limit=None)


def split_at_event(frames: list[Frame], k: int) -> tuple[list[Frame], list[Frame]]:
    """The trace's frames before its k-th broadcast event, and the rest."""
    events = broadcast_events(frames)
    if k >= len(events):
        return frames, []
    cut = next(i for i, f in enumerate(frames) if f is events[k])
    return frames[:cut], frames[cut:]


@dataclass
class AmiPath:
    """One PBX's whole AMI path in this process."""

    sim: AmiSimulator
    connection: PbxConnection
    consumer: CallConsumer
    engine: AsyncEngine

    async def replay(self, frames: list[Frame]) -> None:
        """At full speed; returns once the bridge has read every event it was sent."""
        before = self.connection.events_received
        sent = await self.sim.replay([frames], speed=0)
        await wait_until(lambda: self.connection.events_received - before >= sent, 10,
                         "the bridge read every replayed event")

    async def settled(self) -> None:
        """Until the pipeline has saved everything queued."""
        await wait_until(lambda: self.consumer.queue.empty() and not self.consumer.busy, 10,
                         "queue drained and the last batch saved and hooked")
        await wait_until(lambda: not self.consumer._pending, 10, "pending saved")

    async def reconnected(self, logins: int) -> None:
        await self.sim.wait_logins(logins, timeout=10)
        await wait_until(lambda: self.connection.connected, 10, "connected again")


@asynccontextmanager
async def ami_path(engine: AsyncEngine, trace: str, tmp: Path,
                   before_connect: Callable[[AmiSimulator], None] | None = None,
                   ) -> AsyncIterator[AmiPath]:
    sim = AmiSimulator(SimulatorSettings(auth_fail_delay=0.05, seed=7, spool_dir=tmp / "spool"))
    await sim.start()
    if before_connect is not None:
        before_connect(sim)
    cfg = pbx_config(trace, sim.port)
    queue: asyncio.Queue[QueueItem] = asyncio.Queue()
    consumer = CallConsumer(queue, engine, tracker_settings_for([cfg], PhoneConfig()))
    task = asyncio.create_task(consumer.run())
    connection = PbxConnection(cfg, queue)
    await connection.start()
    path = AmiPath(sim, connection, consumer, engine)
    try:
        await path.reconnected(1)
        yield path
    finally:
        await connection.stop()
        await consumer.stop()
        await asyncio.wait_for(task, 10)
        await sim.stop()


# --- the CLI as a subprocess ------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def cli_env(config: Path | None = None, **overrides: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PBX_BRIDGE_")}
    env["PYTHONPATH"] = str(ROOT)
    if config is not None:
        env["PBX_BRIDGE_CONFIG"] = str(config)
    env.update(overrides)
    return env


async def run_cli(*args: str, env: dict[str, str], timeout: float = 60.0) -> tuple[int, str, str]:  # noqa: ASYNC109
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "pbx_bridge", *args, cwd=ROOT, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def start_serve(env: dict[str, str], log: Path) -> asyncio.subprocess.Process:
    fh = log.open("ab")
    try:
        return await asyncio.create_subprocess_exec(
            sys.executable, "-m", "pbx_bridge", "serve", cwd=ROOT, env=env,
            stdout=fh, stderr=fh)
    finally:
        fh.close()


def toml_str(value: Any) -> str:
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'
