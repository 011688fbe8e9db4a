"""AMI wire throughput: events/s read from the simulated Asterisk at full speed.

- bare panoramisk 1.4 (stock AMIProtocol and Manager, one counting callback on `*`): the
  reference figure the call tracker's benchmark compares with;
- through PbxConnection into its asyncio.Queue, drained by one consumer task;
- the simulator's generator alone (rendering calls from the trace templates, no client).

The simulator runs in its own process (as Asterisk would), so reader and writer do not share a
core. Run: /work/venv/bin/python -m bench.bench_wire [--quick]
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

from panoramisk import Manager

from pbx_bridge.ami.connection import PbxConnection
from pbx_bridge.ami.events import AmiEvent, ChannelsSnapshot
from pbx_bridge.calls.queue import QueueItem
from pbx_bridge.config import PbxConfig
from pbx_bridge.simulator.server import AmiSimulator, SimulatorSettings


def _serve(port_queue: Any, result_queue: Any, calls: int) -> None:
    async def main() -> None:
        sim = AmiSimulator(SimulatorSettings(seed=1))
        await sim.start()
        for name in ("inbound_answered", "queue_ringall_answered", "inbound_noanswer",
                     "inbound_busy", "outbound_answered", "internal_call"):
            sim.template(name)  # build before timing
        port_queue.put(sim.port)
        await sim.wait_logins(1, timeout=60)
        await asyncio.sleep(0.5)  # the client's login sequence is over
        started = time.perf_counter()
        sent = await sim.blast(calls, concurrent=100)
        result_queue.put((sent, time.perf_counter() - started))
        await asyncio.sleep(3600)

    asyncio.run(main())


class _Server:
    def __init__(self, calls: int) -> None:
        ctx = mp.get_context("spawn")
        self.ports, self.results = ctx.Queue(), ctx.Queue()
        self.process = ctx.Process(target=_serve, args=(self.ports, self.results, calls), daemon=True)

    def __enter__(self) -> _Server:
        self.process.start()
        self.port: int = self.ports.get(timeout=60)
        return self

    def __exit__(self, *exc: object) -> None:
        self.process.terminate()
        self.process.join(10)

    async def result(self) -> tuple[int, float]:
        sent, took = await asyncio.get_running_loop().run_in_executor(None, self.results.get, True, 600)
        return int(sent), float(took)


async def _until(condition: Any, limit: float = 600.0) -> None:
    deadline = time.monotonic() + limit
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("benchmark did not finish")
        await asyncio.sleep(0.01)


async def bare_panoramisk(calls: int) -> tuple[float, int]:
    with _Server(calls) as server:
        times: list[float] = []
        count = 0

        def on_event(_manager: Any, message: Any) -> None:
            nonlocal count
            if message.event != "FullyBooted":
                count += 1
                now = time.perf_counter()
                if not times:
                    times.append(now)
                if len(times) < 2:
                    times.append(now)
                times[1] = now

        manager = Manager(loop=asyncio.get_running_loop(), host="127.0.0.1", port=server.port,
                          username="bridge", secret="simulator", ping_delay=3600,
                          ping_interval=3600)
        manager.register_event("*", on_event)
        manager.connect()
        sent, _ = await server.result()
        await _until(lambda: count >= sent)
        manager.close()
        return sent / (times[1] - times[0]), sent


async def read_through(config: PbxConfig,
                       sent_by_server: Callable[[], Awaitable[int]]) -> tuple[float, int]:
    """`PbxConnection` logs in with `config` and reads into its queue until it has every event the
    server says it sent: events per second from the first event read to the last."""
    queue: asyncio.Queue[QueueItem] = asyncio.Queue()
    conn = PbxConnection(config, queue)
    times: list[float] = []
    count = 0
    ready = asyncio.Event()

    async def consume() -> None:
        nonlocal count
        while True:
            item = await queue.get()
            if isinstance(item, ChannelsSnapshot):
                ready.set()
            elif isinstance(item, AmiEvent) and item.name != "FullyBooted":
                count += 1
                now = time.perf_counter()
                if not times:
                    times.extend([now, now])
                times[1] = now

    consumer = asyncio.create_task(consume())
    await conn.start()
    await asyncio.wait_for(ready.wait(), 60)
    sent = await sent_by_server()
    await _until(lambda: count >= sent)
    await conn.stop()
    consumer.cancel()
    return sent / (times[1] - times[0]), sent


async def through_pbx_connection(calls: int) -> tuple[float, int]:
    with _Server(calls) as server:

        async def sent() -> int:
            return (await server.result())[0]

        return await read_through(
            PbxConfig(name="bench", port=server.port, secret="simulator", ping_interval=3600), sent)


async def generator_alone(calls: int) -> tuple[float, int]:
    sim = AmiSimulator(SimulatorSettings(seed=2))
    await sim.start()
    try:
        for name in ("inbound_answered", "queue_ringall_answered", "inbound_noanswer",
                     "inbound_busy", "outbound_answered", "internal_call"):
            sim.template(name)
        started = time.perf_counter()
        sent = await sim.blast(calls, concurrent=100)
        return sent / (time.perf_counter() - started), sent
    finally:
        await sim.stop()


def run(quick: bool = False) -> list[dict[str, Any]]:
    calls = 200 if quick else 2000
    bare, n_bare = asyncio.run(bare_panoramisk(calls))
    ours, n_ours = asyncio.run(through_pbx_connection(calls))
    gen, n_gen = asyncio.run(generator_alone(calls))
    return [
        {"figure": f"bare panoramisk 1.4 reading the simulator ({n_bare} events)", "value": bare,
         "unit": "events/s", "target": "reference", "reference": None, "reference_name": ""},
        {"figure": f"PbxConnection -> queue -> consumer ({n_ours} events)", "value": ours,
         "unit": "events/s", "target": ">= 20000", "reference": bare,
         "reference_name": "bare panoramisk"},
        {"figure": f"simulator generator output, no client ({n_gen} events)", "value": gen,
         "unit": "events/s", "target": ">= 20000", "reference": None, "reference_name": ""},
    ]


if __name__ == "__main__":
    for row in run(quick="--quick" in sys.argv):
        ref = f"  (reference {row['reference']:.0f} {row['reference_name']})" if row["reference"] else ""
        print(f"{row['figure']}: {row['value']:.0f} {row['unit']}  target {row['target']}{ref}")
