"""Calls placed by another AMI client (a CRM's own AMI connection, FreePBX's click-to-call
module), over the real TCP path: the bridge sees the Originate's events and its
OriginateResponse on its own session and makes the same outbound record our click-to-call would,
even when the operator never picks up."""

from __future__ import annotations

import asyncio
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncEngine

from tests.e2e_support import all_calls, ami_path, wait_until


async def _other_client_originates(port: int, exten: str, timeout_ms: int) -> str:
    """Log in as another AMI client and Originate Local/101@op-phone/n -> from-internal,exten
    without a ChannelId (so Asterisk names no Uniqueid if it fails); returns the answer."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        await reader.readline()  # banner
        writer.write(b"Action: Login\r\nUsername: bridge\r\nSecret: simulator\r\n\r\n")
        await reader.readuntil(b"\r\n\r\n")
        writer.write(("Action: Originate\r\nActionID: crm-1\r\nChannel: Local/101@op-phone/n\r\n"
                      f"Context: from-internal\r\nExten: {exten}\r\nPriority: 1\r\n"
                      f"Async: true\r\nTimeout: {timeout_ms}\r\n\r\n").encode())
        while True:
            block = (await reader.readuntil(b"\r\n\r\n")).decode()
            if "ActionID: crm-1" in block and block.startswith("Response:"):
                return block
    finally:
        writer.close()


async def _ended(engine: AsyncEngine) -> bool:
    calls = await all_calls(engine)
    return len(calls) == 1 and calls[0].ended_at is not None


async def test_an_originate_by_another_client_the_operator_never_answers(
        engine: AsyncEngine, tmp_path: Path) -> None:
    async with ami_path(engine, "lab", tmp_path) as path:
        path.sim.settings.originate_outcome = "operator_no_answer"
        answer = await _other_client_originates(path.sim.port, "89161234567", 1500)
        assert "Response: Success" in answer
        await wait_until(lambda: _ended(engine), 20, "the call ended")
        [rec] = await all_calls(engine)
    assert (rec.direction, rec.customer_number, rec.dialled) == ("outbound", "+79161234567", "89161234567")
    assert rec.operators_rung == ["101"] and rec.operator == "101"
    assert rec.status == "no_answer" and not rec.missed and rec.click_to_call_id is None


async def test_an_originate_by_another_client_that_is_answered(engine: AsyncEngine, tmp_path: Path) -> None:
    async with ami_path(engine, "lab", tmp_path) as path:
        await _other_client_originates(path.sim.port, "84951234567", 30000)
        await wait_until(lambda: _ended(engine), 30, "the call ended")
        [rec] = await all_calls(engine)
    assert (rec.direction, rec.customer_number, rec.status) == ("outbound", "+74951234567", "answered")
    assert rec.operators_rung == ["101"] and rec.operator == "101"
