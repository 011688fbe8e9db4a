"""AMI over TLS: events/s read by PbxConnection from the simulated Asterisk at full speed, over
TLS (`[[pbx]] tls = true`, certificate verified against a CA made here with trustme) and, the
reference in the same run, over plaintext TCP. The simulator runs in its own process (as Asterisk
would); the two are measured alternately, twice each, and the better run of each kept (the
machine is shared: the better run is the one least disturbed).

Run: .venv/bin/python -m bench.bench_tls [--quick]
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import trustme

from bench.bench_wire import read_through
from pbx_bridge.config import PbxConfig
from pbx_bridge.simulator.server import AmiSimulator, SimulatorSettings

TEMPLATES = ("inbound_answered", "queue_ringall_answered", "inbound_noanswer", "inbound_busy",
             "outbound_answered", "internal_call")


def _serve(port_queue: Any, result_queue: Any, calls: int, cert: str | None, key: str | None) -> None:
    async def main() -> None:
        sim = AmiSimulator(SimulatorSettings(seed=1, tls_cert_file=Path(cert) if cert else None,
                                             tls_key_file=Path(key) if key else None))
        await sim.start()
        for name in TEMPLATES:
            sim.template(name)  # built before timing
        port_queue.put(sim.port)
        await sim.wait_logins(1, timeout=60)
        await asyncio.sleep(0.5)  # the client's login sequence is over
        started = time.perf_counter()
        sent = await sim.blast(calls, concurrent=100)
        result_queue.put((sent, time.perf_counter() - started))
        await asyncio.sleep(3600)

    asyncio.run(main())


async def events_per_second(calls: int, certs: dict[str, str] | None) -> tuple[float, int]:
    ctx = mp.get_context("spawn")
    ports, results = ctx.Queue(), ctx.Queue()
    process = ctx.Process(target=_serve, daemon=True, args=(
        ports, results, calls, certs and certs["cert"], certs and certs["key"]))
    process.start()
    try:
        port = await asyncio.to_thread(ports.get, True, 60)
        config = PbxConfig(name="bench", port=port, secret="simulator", ping_interval=3600,
                           tls=certs is not None, tls_ca_file=certs["ca"] if certs else "")

        async def sent() -> int:
            return int((await asyncio.to_thread(results.get, True, 600))[0])

        return await read_through(config, sent)
    finally:
        process.terminate()
        process.join(10)


def run(quick: bool = False) -> list[dict[str, Any]]:
    calls = 300 if quick else 3000
    with tempfile.TemporaryDirectory() as tmp:
        ca = trustme.CA()
        server = ca.issue_cert("127.0.0.1")
        certs = {"ca": f"{tmp}/ca.pem", "cert": f"{tmp}/server.pem", "key": f"{tmp}/server.key"}
        ca.cert_pem.write_to_path(certs["ca"])
        server.private_key_pem.write_to_path(certs["key"])
        server.cert_chain_pems[0].write_to_path(certs["cert"])
        plain, tls = [], []
        for _ in range(2):
            plain.append(asyncio.run(events_per_second(calls, None)))
            tls.append(asyncio.run(events_per_second(calls, certs)))
    best_plain, best_tls = max(plain), max(tls)
    return [
        {"figure": f"PbxConnection over TLS, verified ({best_tls[1]} events)", "value": best_tls[0],
         "unit": "events/s", "target": ">= 20000", "reference": best_plain[0],
         "reference_name": "plaintext AMI, same run"},
        {"figure": "TLS throughput / plaintext", "value": best_tls[0] / best_plain[0] * 100,
         "unit": "%", "target": "-", "reference": None, "reference_name": ""},
    ]


if __name__ == "__main__":
    for row in run(quick="--quick" in sys.argv):
        ref = f"  (reference {row['reference']:.0f}: {row['reference_name']})" if row["reference"] else ""
        print(f"{row['figure']}: {row['value']:.0f} {row['unit']}  target {row['target']}{ref}")
