"""`pbx-bridge serve` as a newcomer runs it (the README's `make run`): a fresh data directory,
`db upgrade`, no [[pbx]] -> the built-in simulated PBX; calls appear, /healthz and /readyz answer,
SIGTERM stops it promptly with exit code 0."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from pathlib import Path

import aiohttp

from tests.e2e_support import cli_env, free_port, run_cli, start_serve


async def test_serve_on_the_embedded_default(tmp_path: Path) -> None:
    port = free_port()
    # The shipped configuration file, as `make run` uses it; only ports and places differ.
    env = cli_env(PBX_BRIDGE_SERVER__DATA_DIR=str(tmp_path / "var"),
                  PBX_BRIDGE_SERVER__PORT=str(port),
                  PBX_BRIDGE_SIMULATOR__PORT="0",
                  PBX_BRIDGE_SIMULATOR__CALLS_PER_SECOND="1")
    code, out, err = await run_cli("db", "upgrade", env=env)
    assert code == 0, err
    code, out, err = await run_cli("tokens", "create", "--role", "manager", "--name", "probe", env=env)
    assert code == 0, err
    token = out.strip().splitlines()[-1]
    log = tmp_path / "serve.log"
    proc = await start_serve(env, log)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 15
        calls: list[dict[str, object]] = []
        async with aiohttp.ClientSession() as http:
            ready = healthy = 0
            while time.monotonic() < deadline and not (calls and ready == healthy == 200):
                await asyncio.sleep(0.5)
                assert proc.returncode is None, log.read_text()
                try:
                    async with http.get(f"{base}/healthz") as r:
                        healthy = r.status
                    async with http.get(f"{base}/readyz",
                                        headers={"Authorization": f"Bearer {token}"}) as r:
                        ready = r.status
                        body = await r.json()
                except aiohttp.ClientConnectionError:
                    continue
                code, out, err = await run_cli("calls", "list", "--json", env=env)
                assert code == 0, err
                calls = json.loads(out)
            assert healthy == 200 and ready == 200, (healthy, ready, log.read_text()[-3000:])
            assert body["checks"] == {"database": "ok", "pbx:simulator": "ok"}
            assert calls, log.read_text()[-3000:]
            assert all(c["pbx"] == "simulator" for c in calls)
            # Traffic from the configured operators, recorded as the README's shape.
            assert {"id", "linkedid", "direction", "status", "operators_rung"} <= set(calls[0])
            # Live events: the notifier's call messages reach a WebSocket client.
            auth = {"Authorization": f"Bearer {token}"}
            async with http.ws_connect(f"{base}/api/v1/events", headers=auth) as ws:
                assert (await ws.receive_json(timeout=5))["type"] == "ready"
                # Other features' messages (client.created of a card a call made) may come first.
                seen = [await ws.receive_json(timeout=10)]
                while not seen[-1]["type"].startswith("call.") and len(seen) < 20:
                    seen.append(await ws.receive_json(timeout=10))
                assert seen[-1]["type"].startswith("call."), seen
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(proc.wait(), 10)
        assert code == 0, log.read_text()[-3000:]
        assert time.monotonic() - started < 5
        text = log.read_text()
        assert "Traceback" not in text, text[-3000:]
        assert "shutdown" in text and "stopped" in text
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_port_in_use_is_one_line_and_exit_1(tmp_path: Path) -> None:
    """The simulator's or the HTTP port taken by something else: one clear line, no traceback,
    and nothing left running."""
    import socket

    env = cli_env(PBX_BRIDGE_SERVER__DATA_DIR=str(tmp_path / "var"))
    code, _out, err = await run_cli("db", "upgrade", env=env)
    assert code == 0, err
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        for key, other in (("PBX_BRIDGE_SIMULATOR__PORT", "PBX_BRIDGE_SERVER__PORT"),
                           ("PBX_BRIDGE_SERVER__PORT", "PBX_BRIDGE_SIMULATOR__PORT")):
            free = str(free_port())
            code, _out, err = await run_cli("serve", env={**env, key: port, other: free}, timeout=30)
            lines = [line for line in err.splitlines() if line.startswith("pbx-bridge:")]
            assert code == 1 and "Traceback" not in err, err
            assert len(lines) == 1 and "address already in use" in lines[0] and port in lines[0]
