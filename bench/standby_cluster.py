"""Several `pbx-bridge serve` processes sharing one PostgreSQL and one simulated PBX (which
writes its CEL into PostgreSQL too), for the hot-standby tests (tests/test_standby.py) and the
takeover benchmark (bench/bench_standby.py). Each bridge has its own data dir, HTTP port and
log; its database may be reached through a TCP proxy the caller can cut (a network partition).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parent.parent
LAB_OPERATORS = r"^Local/(?P<ext>1\d\d)@(operators|op-phone)-"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _toml(value: object) -> str:
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


class TcpProxy:
    """127.0.0.1:<port> -> target; `cut()` drops every connection and refuses new ones, as a
    network partition would."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = free_port()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        self._writers |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, asyncio.IncompleteReadError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            with contextlib.suppress(OSError):
                dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self._writers -= {writer, up_writer}

    def cut(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()


@dataclass
class BridgeNode:
    index: int
    config: Path
    http_port: int
    log: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def start(self, env: dict[str, str]) -> None:
        fh = self.log.open("ab")
        try:
            self.proc = subprocess.Popen([sys.executable, "-m", "pbx_bridge", "serve"], cwd=ROOT,
                                         env={**env, "PBX_BRIDGE_CONFIG": str(self.config)},
                                         stdout=fh, stderr=fh)
        finally:
            fh.close()

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    async def role(self, http: aiohttp.ClientSession) -> str | None:
        """active / standby / alone, or None when it does not answer."""
        try:
            async with http.get(f"{self.url}/healthz/active",
                                timeout=aiohttp.ClientTimeout(total=1)) as r:
                return str((await r.json())["role"])
        except (aiohttp.ClientError, TimeoutError, ValueError, KeyError):
            return None

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(signal.SIGCONT)  # a frozen one must wake to stop
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


@dataclass
class Cluster:
    tmp: Path
    db_url: str  # the bridges' shared PostgreSQL database
    cel_url: str
    cel_table: str
    sim_port: int
    spool: Path
    lease_seconds: float = 3.0
    renew_seconds: float = 1.0
    sweep_seconds: float = 60.0
    record: bool = True
    nodes: list[BridgeNode] = field(default_factory=list)
    proxies: dict[int, TcpProxy] = field(default_factory=dict)

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PBX_BRIDGE_")}
        env["PYTHONPATH"] = str(ROOT)
        return env

    async def add(self, *, through_proxy: bool = False) -> BridgeNode:
        index = len(self.nodes)
        db_url = self.db_url
        if through_proxy:
            url = sa.engine.make_url(db_url)
            proxy = TcpProxy(url.host or "127.0.0.1", url.port or 5432)
            await proxy.start()
            self.proxies[index] = proxy
            db_url = url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
        node = BridgeNode(index, self.tmp / f"bridge-{index}.toml", free_port(),
                          self.tmp / f"bridge-{index}.log")
        node.config.write_text(f"""
[server]
port = {node.http_port}
data_dir = {_toml(self.tmp / f"var-{index}")}

[database]
url = {_toml(db_url)}

[standby]
lease_seconds = {self.lease_seconds}
renew_seconds = {self.renew_seconds}
node_name = "node{index}"

[cel]
sweep_seconds = {self.sweep_seconds}

[recordings]
policy = {_toml("all" if self.record else "none")}
spool_dir = ""
local_spool_dir = {_toml(self.spool / "monitor")}

[transcription]
in_process = false

[[pbx]]
name = "main"
port = {self.sim_port}
secret = "simulator"
operator_channel = {_toml(LAB_OPERATORS)}
inbound_contexts = ["from-trunk"]
asterisk_version = "22.10.1"
operator_dial_string = "Local/{{ext}}@op-phone/n"
reconnect_min = 0.05
reconnect_max = 0.5
cel_url = {_toml(self.cel_url)}
cel_table = {_toml(self.cel_table)}
""")
        self.nodes.append(node)
        node.start(self.env())
        return node

    async def wait_role(self, node: BridgeNode, role: str, within: float) -> float:
        """Seconds until the node says it has `role`."""
        started = time.monotonic()
        async with aiohttp.ClientSession() as http:
            while True:
                if await node.role(http) == role:
                    return time.monotonic() - started
                if node.proc is not None and node.proc.poll() is not None:
                    raise AssertionError(f"bridge {node.index} exited: {node.text()[-3000:]}")
                if time.monotonic() - started > within:
                    raise AssertionError(f"bridge {node.index} not {role} within {within} s: "
                                         f"{node.text()[-3000:]}")
                await asyncio.sleep(0.05)

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
        for proxy in self.proxies.values():
            proxy.cut()
