"""The assembled bridge's AMI path as `serve` runs it: the simulator blasting generated calls over
TCP -> PbxConnection (panoramisk) -> the one queue -> CallConsumer -> tracker -> SQLite -> the
serve hooks (client cards, recordings with policy "none", click-to-call, notifier), with the AMI
journal on. References in the same run: the same pipeline with no hooks, and with every hook but
the journal off. The simulator runs in the same process (and on the same core), so these figures
are a lower bound for the bridge alone.

Run: /work/venv/bin/python -m bench.bench_serve [--quick]
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from pbx_bridge.assembly import assemble
from pbx_bridge.config import Settings
from pbx_bridge.db import migrate
from pbx_bridge.db.engine import make_engine


async def _until(condition: Any) -> None:
    while not condition():  # noqa: ASYNC110 - polling counters of another task
        await asyncio.sleep(0.005)


async def _measure(calls: int, hooks: bool, journal: bool = True) -> tuple[float, float, int]:
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings()
        settings.events.journal = journal
        settings.server.data_dir = str(Path(tmp) / "var")
        settings.server.port = 0
        settings.simulator.port = 0
        settings.simulator.calls_per_second = 0
        settings.recordings.policy = "none"
        Path(settings.server.data_dir).mkdir()  # noqa: ASYNC240 - set-up, not measured
        engine = make_engine(settings.database_url)
        await migrate.upgrade(engine)
        bridge = assemble(settings, engine)
        await bridge.start()
        try:
            consumer, sim = bridge.consumer, bridge.simulator
            assert consumer is not None and sim is not None
            if not hooks:
                consumer.hooks = []
                consumer.event_listeners = []
            connection = bridge.runtime.pbx["simulator"]
            await _until(lambda: connection.connected)
            before = consumer.events_processed
            cpu0, wall0 = time.process_time(), time.perf_counter()
            sent = await sim.blast(calls, concurrent=50)
            await _until(lambda: consumer.events_processed - before >= sent)
            await _until(lambda: consumer.queue.empty() and not consumer._pending)
            cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
        finally:
            await bridge.stop()
            await engine.dispose()
    return sent / cpu, sent / wall, sent


def run(quick: bool = False) -> list[dict[str, Any]]:
    calls = 100 if quick else 1000
    full_cpu, full_wall, events = asyncio.run(_measure(calls, hooks=True))
    bare_cpu, bare_wall, _ = asyncio.run(_measure(calls, hooks=False))
    unjournaled_cpu, _, _ = asyncio.run(_measure(calls, hooks=True, journal=False))
    print(f"{calls} calls, {events} events each run", file=sys.stderr)
    return [
        {"figure": "serve pipeline with all hooks: the AMI journal's cost (CPU time)",
         "value": round(full_cpu), "unit": "events/s", "target": "-",
         "reference": round(unjournaled_cpu), "reference_name": "same, journal off"},
        {"figure": "serve pipeline over TCP with all hooks, SQLite (CPU time, simulator included)",
         "value": round(full_cpu), "unit": "events/s", "target": ">= 1000 (1,000-seat call centre)",
         "reference": round(bare_cpu), "reference_name": "same pipeline without hooks (CPU time)"},
        {"figure": "serve pipeline over TCP with all hooks, SQLite (wall clock)",
         "value": round(full_wall), "unit": "events/s", "target": ">= 1000",
         "reference": round(bare_wall), "reference_name": "same pipeline without hooks (wall clock)"},
    ]


if __name__ == "__main__":
    for row in run(quick="--quick" in sys.argv):
        print(row)
