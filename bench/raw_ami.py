"""A raw asyncio AMI peer pair for the API's tests and benchmarks, until the real simulator and
PbxConnection (issue 3) are merged:

- RawAmiServer: speaks AMI on 127.0.0.1 (banner, Login, Originate answered "successfully
  queued"), timestamps each action the moment its last line arrives, and can play events
  after an Originate (e.g. the real click_to_call trace with the request's ids).
- MiniAmiClient: the smallest client with PbxConnection's originate(fields, timeout)
  contract (Async: true, never re-sent; PbxUnavailable when not connected); it hands every
  event, in order, to one async callback, as the bridge's consumer does.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from pbx_bridge.ami.errors import ActionFailed, ActionTimeout, PbxUnavailable
from pbx_bridge.ami.events import AmiEvent

Headers = list[tuple[str, str]]
Script = Callable[[dict[str, Any]], list[tuple[float, bytes]]]


def encode(headers: Headers) -> bytes:
    return b"".join(f"{k}: {v}\r\n".encode() for k, v in headers) + b"\r\n"


def parse_block(block: bytes) -> Headers:
    out: Headers = []
    for line in block.decode("utf-8", errors="replace").split("\r\n"):
        key, sep, value = line.partition(":")
        if sep:
            out.append((key.strip(), value[1:] if value.startswith(" ") else value))
    return out


class RawAmiServer:
    def __init__(self, username: str = "bridge", secret: str = "test", script: Script | None = None,
                 originate_response: str = "Success") -> None:
        self.username = username
        self.secret = secret
        self.script = script
        self.originate_response = originate_response
        self.actions: list[dict[str, Any]] = []
        self.action_seen = asyncio.Event()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.port = 0

    async def start(self, port: int = 0) -> int:
        self._server = await asyncio.start_server(self._client, "127.0.0.1", port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        self.drop_clients()
        for task in list(self._tasks):
            task.cancel()
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2.0)

    def drop_clients(self) -> None:
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    def originates(self) -> list[dict[str, Any]]:
        return [a for a in self.actions if a.get("Action") == "Originate"]

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        writer.write(b"Asterisk Call Manager/11.0.0\r\n")
        try:
            while True:
                block = await reader.readuntil(b"\r\n\r\n")
                seen = time.monotonic()  # the clock bench_api.py compares across processes
                headers = parse_block(block)
                action: dict[str, Any] = {"received_at": seen}
                for k, v in headers:
                    if k == "Variable":
                        action.setdefault("Variable", []).append(v)
                    else:
                        action[k] = v
                self.actions.append(action)
                self.action_seen.set()
                await self._answer(action, writer)
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()

    async def _answer(self, action: dict[str, Any], writer: asyncio.StreamWriter) -> None:
        name = action.get("Action", "")
        aid = action.get("ActionID", "")
        if name == "Login":
            ok = action.get("Username") == self.username and action.get("Secret") == self.secret
            writer.write(encode([("Response", "Success" if ok else "Error"), ("ActionID", aid),
                                 ("Message", "Authentication accepted" if ok else "Authentication failed")]))
        elif name == "Originate":
            if self.originate_response != "Success":
                writer.write(encode([("Response", "Error"), ("ActionID", aid),
                                     ("Message", self.originate_response)]))
                return
            writer.write(encode([("Response", "Success"), ("ActionID", aid),
                                 ("Message", "Originate successfully queued")]))
            if self.script is not None:
                task = asyncio.create_task(self._play(writer, self.script(action)))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
        else:
            writer.write(encode([("Response", "Success"), ("ActionID", aid)]))

    async def _play(self, writer: asyncio.StreamWriter, frames: list[tuple[float, bytes]]) -> None:
        for delay, raw in frames:
            if delay > 0:
                await asyncio.sleep(delay)
            if writer.is_closing():
                return
            writer.write(raw)


class MiniAmiClient:
    def __init__(self, name: str = "main",
                 on_event: Callable[[AmiEvent], Awaitable[None]] | None = None) -> None:
        self.name = name
        self.on_event = on_event
        self.connected = False
        self._writer: asyncio.StreamWriter | None = None
        self._pending: dict[str, asyncio.Future[Headers]] = {}
        self._ids = itertools.count(1)
        self._events: asyncio.Queue[AmiEvent] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []

    async def connect(self, port: int, username: str = "bridge", secret: str = "test") -> None:
        reader, self._writer = await asyncio.open_connection("127.0.0.1", port)
        await reader.readline()  # banner
        self._tasks = [asyncio.create_task(self._read(reader)), asyncio.create_task(self._consume())]
        self.connected = True
        answer = await self._send([("Action", "Login"), ("Username", username), ("Secret", secret)], 5)
        if dict(answer).get("Response") != "Success":
            self.connected = False
            raise PbxUnavailable("login refused")

    async def close(self) -> None:
        self.connected = False
        if self._writer is not None:
            self._writer.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def originate(self, fields: dict[str, Any], timeout: float) -> Headers:  # noqa: ASYNC109
        headers: Headers = []
        for key, value in fields.items():
            if key == "Action":
                continue
            for v in value if isinstance(value, list) else [value]:
                headers.append((key, str(v)))
        answer = await self._send([("Action", "Originate"), *headers, ("Async", "true")], timeout)
        if dict(answer).get("Response") != "Success":
            raise ActionFailed(dict(answer).get("Message", "Originate failed"))
        return answer

    async def _send(self, headers: Headers, timeout: float) -> Headers:  # noqa: ASYNC109
        if not self.connected or self._writer is None or self._writer.is_closing():
            raise PbxUnavailable(f"not connected to {self.name}")
        aid = f"{uuid.uuid4().hex[:8]}-{next(self._ids)}"
        future: asyncio.Future[Headers] = asyncio.get_running_loop().create_future()
        self._pending[aid] = future
        self._writer.write(encode([*headers, ("ActionID", aid)]))
        try:
            return await asyncio.wait_for(future, timeout)
        except TimeoutError:
            raise ActionTimeout(f"no answer from {self.name}") from None
        finally:
            self._pending.pop(aid, None)

    async def _read(self, reader: asyncio.StreamReader) -> None:
        try:
            while True:
                block = await reader.readuntil(b"\r\n\r\n")
                headers = parse_block(block)
                if not headers:
                    continue
                first = headers[0][0]
                if first == "Response":
                    future = self._pending.get(dict(headers).get("ActionID", ""))
                    if future is not None and not future.done():
                        future.set_result(headers)
                elif first == "Event":
                    self._events.put_nowait(to_event(self.name, headers))
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self.connected = False
            for future in self._pending.values():
                if not future.done():
                    future.set_exception(PbxUnavailable("connection lost"))

    async def _consume(self) -> None:
        while True:
            item = await self._events.get()
            if self.on_event is not None:
                await self.on_event(item)


def to_event(pbx: str, headers: Headers) -> AmiEvent:
    values: dict[str, str] = {}
    variables: dict[str, str] = {}
    name = ""
    for key, value in headers:
        if key == "Event":
            name = value
        elif key == "ChanVariable" or key.startswith("ChanVariable("):
            var, _, val = value.partition("=")
            variables[var] = val
        else:
            values[key] = value
    return AmiEvent(pbx, name, values, variables, time.time())
