"""A minimal AMI server for the recording tests, answering like the traces' Asterisk 22.10.1, and
a minimal AMI client with the PbxConnection.send_action contract.

The server speaks the real wire protocol over TCP: banner, Login, CoreSettings, MixMonitor
(answered exactly as in inbound_answered_recorded.ami: `Response: Success` + ActionID) and
StopMixMonitor. Like Asterisk, MixMonitor writes a real file: the real `.raw` recording from the
traces (or its two legs for `r()`/`t()`), at the path the action names, seen through a "shared
mount" (Asterisk's spool dir mapped to a local directory).

Used because the project's simulator (pbx_bridge/simulator, another feature) is not merged yet.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pbx_bridge.ami.errors import ActionFailed, ActionTimeout, PbxUnavailable


@dataclass
class FakeSpoolWrite:
    """What MixMonitor on a channel writes: the audio source, and how to damage it."""

    source: Path
    truncate_extra: bytes = b""  # bytes appended after the whole frames (a partial frame)
    empty: bool = False
    skip: bool = False  # write nothing (the mount lags, or the file never came)


@dataclass
class AmiPeer:
    asterisk_spool: str  # the path prefix Asterisk uses
    local_spool: Path  # where those files land for the bridge
    version: str = "22.10.1"
    username: str = "bridge"
    secret: str = "secret"
    channels: dict[str, FakeSpoolWrite] = field(default_factory=dict)
    actions: list[dict[str, str]] = field(default_factory=list)
    port: int = 0
    _server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._session, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def _local(self, path: str) -> Path:
        if path.startswith("/"):
            prefix = self.asterisk_spool.rstrip("/") + "/"
            assert path.startswith(prefix), f"{path} is outside Asterisk's spool {prefix}"
            path = path[len(prefix):]
        assert "/" not in path and not path.startswith(".")
        return self.local_spool / path

    def _write(self, channel: str, action: dict[str, str]) -> None:
        spec = self.channels[channel]
        if spec.skip:
            return
        data = b"" if spec.empty else spec.source.read_bytes() + spec.truncate_extra
        options = action.get("Options", "")
        legs = re.search(r"r\(([^)]*)\)", options), re.search(r"t\(([^)]*)\)", options)
        if "D" in options or not all(legs):
            self._local(action["File"]).write_bytes(data)
            return
        whole = data[: len(data) - len(data) % 4]
        stereo = np.frombuffer(whole, dtype="<i2").reshape(-1, 2)
        rx, tx = legs
        assert rx is not None and tx is not None
        self._local(rx.group(1)).write_bytes(stereo[:, 0].astype("<i2").tobytes() + spec.truncate_extra)
        self._local(tx.group(1)).write_bytes(stereo[:, 1].astype("<i2").tobytes())
        # Like MixMonitor with r()/t(): the mixed file is written too.
        mixed = (stereo.astype(np.int32).sum(axis=1) // 2).astype("<i2").tobytes()
        self._local(action["File"]).write_bytes(mixed)

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"Asterisk Call Manager/11.0.0\r\n")
        logged_in = False
        try:
            while True:
                action = await _read_message(reader)
                if action is None:
                    break
                self.actions.append(action)
                name = action.get("Action", "").lower()
                aid = action.get("ActionID", "")
                if name == "login":
                    if action.get("Username") == self.username and action.get("Secret") == self.secret:
                        logged_in = True
                        reply = _msg(Response="Success", ActionID=aid, Message="Authentication accepted")
                    else:
                        reply = _msg(Response="Error", ActionID=aid, Message="Authentication failed")
                elif not logged_in:
                    reply = _msg(Response="Error", ActionID=aid, Message="Permission denied")
                elif name == "coresettings":
                    reply = _msg(Response="Success", ActionID=aid, AMIversion="11.0.0",
                                 AsteriskVersion=self.version, SystemName="pbx", CoreMaxCalls="0")
                elif name == "mixmonitor":
                    if action.get("Channel") not in self.channels:
                        reply = _msg(Response="Error", ActionID=aid, Message="No such channel")
                    else:
                        self._write(action["Channel"], action)
                        reply = _msg(Response="Success", ActionID=aid)  # exactly the trace's answer
                elif name == "stopmixmonitor":
                    if action.get("Channel") not in self.channels:
                        reply = _msg(Response="Error", ActionID=aid, Message="No such channel")
                    else:
                        reply = _msg(Response="Success", ActionID=aid)
                else:
                    reply = _msg(Response="Error", ActionID=aid, Message="Invalid/unknown command")
                writer.write(reply)
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()


def _msg(**headers: str) -> bytes:
    return "".join(f"{k}: {v}\r\n" for k, v in headers.items()).encode() + b"\r\n"


async def _read_message(reader: asyncio.StreamReader) -> dict[str, str] | None:
    headers: dict[str, str] = {}
    while True:
        line = await reader.readline()
        if not line:
            return None
        text = line.decode("utf-8", "replace").rstrip("\r\n")
        if not text:
            if headers:
                return headers
            continue
        key, _, value = text.partition(":")
        headers[key.strip()] = value.strip()


class AmiClient:
    """send_action(action, timeout) over a real TCP AMI session (PbxConnection's contract)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._lock = asyncio.Lock()

    @classmethod
    async def login(cls, port: int, username: str, secret: str) -> AmiClient:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        banner = await reader.readline()
        assert banner.startswith(b"Asterisk Call Manager/")
        client = cls(reader, writer)
        await client.send_action({"Action": "Login", "Username": username, "Secret": secret}, timeout=5)
        return client

    async def send_action(
        self, action: dict[str, str], timeout: float  # noqa: ASYNC109 - PbxConnection's contract
    ) -> dict[str, str]:
        aid = uuid.uuid4().hex
        wire = "".join(f"{k}: {v}\r\n" for k, v in {**action, "ActionID": aid}.items()) + "\r\n"
        async with self._lock:
            try:
                self._writer.write(wire.encode())
                await self._writer.drain()
                reply = await asyncio.wait_for(_read_message(self._reader), timeout)
            except TimeoutError:
                raise ActionTimeout(f"no answer to {action['Action']} in {timeout} s") from None
            except ConnectionError as exc:
                raise PbxUnavailable(str(exc)) from None
        if reply is None:
            raise PbxUnavailable("connection closed")
        assert reply.get("ActionID") == aid
        if reply.get("Response") == "Error":
            raise ActionFailed(reply.get("Message", "error"))
        return reply

    async def close(self) -> None:
        self._writer.close()
        with contextlib.suppress(ConnectionError):
            await self._writer.wait_closed()


@contextlib.asynccontextmanager
async def running_peer(peer: AmiPeer) -> AsyncIterator[AmiClient]:
    await peer.start()
    client = await AmiClient.login(peer.port, peer.username, peer.secret)
    try:
        yield client
    finally:
        await client.close()
        await peer.close()
