"""Load generators for bench_api, run in their own process so the bridge's event loop is not
shared with them. Times are time.monotonic() (CLOCK_MONOTONIC: the same clock in every process).

  python -m bench.api_clients post URL TOKEN RATE COUNT       # click-to-call POSTs, open loop
  python -m bench.api_clients get URL RATE COUNT              # the constant reference handler
  python -m bench.api_clients ws URL TOKEN CLIENTS EXPECTED   # WebSocket clients, receive times
  python -m bench.api_clients ami SECRET                      # the PBX: prints "PORT n", then on
                                                              # stdin EOF the Originates' times

Each prints one JSON document on stdout.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

import aiohttp


async def _open_loop(session: aiohttp.ClientSession, rate: float, count: int, send: Any) -> list[Any]:
    """Request i is due at start + i / rate whatever happened before (no coordinated omission)."""
    start = time.monotonic() + 0.2
    tasks = []
    for i in range(count):
        due = start + i / rate
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(send(session, i, due)))
    return list(await asyncio.gather(*tasks))


async def post(url: str, token: str, rate: float, count: int) -> list[Any]:
    headers = {"Authorization": f"Bearer {token}"}

    async def one(session: aiohttp.ClientSession, i: int, due: float) -> Any:
        body = {"extension": str(101 + i % 50), "number": f"8 (916) {i % 1000:03d}-{i % 100:02d}-01"}
        async with session.post(url, json=body, headers=headers) as resp:
            data = await resp.json()
            return [due, time.monotonic(), resp.status, data.get("id")]

    connector = aiohttp.TCPConnector(limit=200)
    async with aiohttp.ClientSession(connector=connector) as session:
        return await _open_loop(session, rate, count, one)


async def get(url: str, rate: float, count: int) -> list[Any]:
    async def one(session: aiohttp.ClientSession, i: int, due: float) -> Any:
        async with session.get(url) as resp:
            await resp.read()
            return [due, time.monotonic(), resp.status]

    connector = aiohttp.TCPConnector(limit=200)
    async with aiohttp.ClientSession(connector=connector) as session:
        return await _open_loop(session, rate, count, one)


async def ws(url: str, token: str, clients: int, expected: int) -> dict[str, Any]:
    received: list[list[Any]] = []
    ready = 0

    async def one(session: aiohttp.ClientSession) -> None:
        nonlocal ready
        async with session.ws_connect(url, headers={"Authorization": f"Bearer {token}"},
                                      max_msg_size=0) as sock:
            got = 0
            async for msg in sock:
                now = time.monotonic()
                data = json.loads(msg.data)
                if data["type"] == "ready":
                    ready += 1
                    if ready == clients:
                        print("READY", flush=True)
                    continue
                received.append([data["call"]["linkedid"], now, data["client"] is not None])
                got += 1
                if got >= expected:
                    break

    async with aiohttp.ClientSession() as session:
        try:
            await asyncio.wait_for(asyncio.gather(*[one(session) for _ in range(clients)]), 600)
        except TimeoutError:
            pass
    return {"received": received}


async def ami(secret: str) -> dict[str, Any]:
    """The AMI peer in its own process, as Asterisk is: the project's simulator, its Originates
    answered "queued" without playing a call (the bench measures the API's side)."""
    from pbx_bridge.simulator.server import AmiSimulator, SimulatorSettings

    seen: dict[str, float] = {}
    sim = AmiSimulator(SimulatorSettings(secret=secret))

    def hook(session: Any, action: Any) -> bool:
        if action.name != "Originate":
            return False
        now = time.monotonic()
        for key, value in action.headers:
            if key == "Variable" and value.startswith("__CALL_ID="):
                seen[value.split("=", 1)[1]] = now
        session.write(f"Response: Success\r\nActionID: {action.get('ActionID')}\r\n"
                      "Message: Originate successfully queued\r\n\r\n".encode())
        return True

    sim.action_hook = hook
    await sim.start()
    print(f"PORT {sim.port} simulator", flush=True)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.read)  # until the bench closes our stdin
    await sim.stop()
    return {"kind": "simulator", "seen": seen}


def main(argv: list[str]) -> int:
    kind = argv[0]
    if kind == "post":
        out: Any = asyncio.run(post(argv[1], argv[2], float(argv[3]), int(argv[4])))
    elif kind == "get":
        out = asyncio.run(get(argv[1], float(argv[2]), int(argv[3])))
    elif kind == "ami":
        out = asyncio.run(ami(argv[1]))
    else:
        out = asyncio.run(ws(argv[1], argv[2], int(argv[3]), int(argv[4])))
    print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
