"""Issue 18 point 8, through the real server: the access log does not keep a signed recording
link whole (anyone reading the log could replay it until it expires), and no response's `Server`
header names Python's or aiohttp's version."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator

import pytest

from pbx_bridge.log import JsonFormatter, KeyValueFormatter
from tests.api.conftest import Api

SIGNATURE = "Zq9vX2kLmN3pQr5sTu7wYz1aBcDeFgHiJkLmNoPqRsT"  # 43 characters, like a real one


class Lines(logging.Handler):
    """The log lines exactly as `serve` writes them, in both formats."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []
        self.formatters = (KeyValueFormatter(), JsonFormatter())

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.extend(f.format(record) for f in self.formatters)


@pytest.fixture
def log_lines() -> Iterator[Lines]:
    handler = Lines()
    logger = logging.getLogger("pbx_bridge")
    old = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(old)


async def test_access_log_masks_signed_links(api: Api, log_lines: Lines) -> None:
    token = f"7.{int(time.time()) + 3600}.{SIGNATURE}"
    resp = await api.client.get(f"/api/v1/recordings/signed/{token}?sig={SIGNATURE}&x=1")
    assert resp.status in (403, 404)
    await asyncio.sleep(0.05)
    written = [line for line in log_lines.lines if "http.request" in line]
    assert written, log_lines.lines
    assert any("/api/v1/recordings/signed/7." in line for line in written)  # the call stays visible
    assert all(SIGNATURE not in line and SIGNATURE[4:] not in line for line in log_lines.lines)


async def test_server_header_names_no_versions(api: Api) -> None:
    checks = [await api.client.get("/healthz"), await api.client.get("/nope"),
              await api.client.get("/api/v1/calls"), await api.client.get("/ui/login")]
    for resp in checks:
        server = resp.headers.get("Server", "")
        assert server == "pbx-bridge", (resp.url, server)
    ws = await api.client.ws_connect("/api/v1/events", headers=api.auth("manager"))
    assert ws._response.headers.get("Server") == "pbx-bridge"
    await ws.close()
    # A request aiohttp cannot parse is answered before any app code runs.
    reader, writer = await asyncio.open_connection("127.0.0.1", api.port)
    writer.write(b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    await writer.drain()
    head = (await asyncio.wait_for(reader.read(4096), 5)).decode("latin-1")
    writer.close()
    assert " 414 " in head.split("\r\n", 1)[0]
    assert "Server: pbx-bridge\r\n" in head and "Python" not in head and "aiohttp" not in head
