"""MixMonitor's options on the simulator, as app_mixmonitor.c honours them: `D` (one stereo file:
read left, written right), `r()` / `t()` (each direction in a file of its own, the main file the
two mixed), `b` (only while the channel is in a bridge: the rest is left out of the file, not
written as silence). Checked sample by sample against the times of the events the simulator
sent (MixMonitorStart, BridgeLeave, BridgeEnter, Hangup) and the parties' voices.

The call is the SIP attended-transfer trace's blind-transfer variant: the customer talks to 101,
is blind-transferred to 102, is in no bridge while 102 rings for 2 s, then talks to 102.
"""

from __future__ import annotations

import asyncio
import wave
from pathlib import Path

import numpy as np
import pytest

from pbx_bridge.simulator import media
from pbx_bridge.simulator.server import AmiSimulator
from tests.test_simulator_transfers import (  # the fixtures `sim` and `listener` too
    Listener,
    _event,
    channel_of,
    finished,
    listener,
    paused,
    sim,
    trace_call,
)

__all__ = ["listener", "sim"]
pytestmark = pytest.mark.timeout(120)


def _raw(path: Path, channels: int) -> np.ndarray:
    data = np.frombuffer(path.read_bytes(), dtype="<i2")
    return data.reshape(-1, channels) if channels == 2 else data


async def _recorded_blind_transfer(sim: AmiSimulator, listener: Listener, options: str,
                                   files: dict[str, str]) -> dict[str, float]:
    """Record the customer's channel with `options`, blind-transfer the call, wait for its end;
    the Asterisk times of what matters for the file."""
    call = trace_call(sim)
    first = sim.template("sip_attended_transfer").pauses[0].index
    await paused(call, first)
    customer, operator = channel_of(call, "PJSIP/trunk-"), channel_of(call, "PJSIP/101-")
    answer = await listener.answer(Action="MixMonitor", Channel=customer, ActionID="m1", **files,
                                   Options=options)
    assert answer == b"Response: Success\r\nActionID: m1\r\n\r\n"  # as inbound_answered_recorded
    answer = await listener.answer(Action="BlindTransfer", Channel=operator, Context="transfer",
                                   Exten="102", ActionID="b1")
    assert b"Transfer succeeded" in answer
    await finished(call)
    for _ in range(200):
        if not sim.recorder.active(customer):
            break
        await asyncio.sleep(0.02)
    events = [_event(raw) for raw in listener.events]
    mine = [e for e in events if e.get("Channel") == customer]
    leaves = [float(e["Timestamp"]) for e in mine if e["Event"] == "BridgeLeave"]
    return {
        "start": float(next(e["Timestamp"] for e in mine if e["Event"] == "MixMonitorStart")),
        "leave": leaves[0],  # out of bridge A, to the dialplan
        "enter": float([e["Timestamp"] for e in mine if e["Event"] == "BridgeEnter"][-1]),
        "gone_102": float(next(e["Timestamp"] for e in events if e["Event"] == "BridgeLeave"
                               and e["Channel"].startswith("PJSIP/102-"))),
        "left": leaves[-1],  # out of bridge C, after 102 hung up
        "hangup": float(next(e["Timestamp"] for e in mine if e["Event"] == "Hangup")),
    }


def _expected(t: dict[str, float], bridged_only: bool) -> tuple[np.ndarray, np.ndarray]:
    s = media.sample_at
    stretches = [(s(t["start"]), s(t["leave"]), ["op:101"]), (s(t["enter"]), s(t["gone_102"]), ["op:102"]),
                 (s(t["gone_102"]), s(t["left"]), [])]
    if not bridged_only:  # the ringing and the last moment after the bridge, heard as silence
        stretches[1:1] = [(s(t["leave"]), s(t["enter"]), [])]
        stretches.append((s(t["left"]), s(t["hangup"]), []))
    read = np.concatenate([media.mix(["customer"], a, b - a) for a, b, _ in stretches])
    heard = np.concatenate([media.mix(parties, a, b - a) for a, b, parties in stretches])
    return read, heard


@pytest.mark.parametrize("options", ["bD", "D"])
async def test_option_d_and_b(sim: AmiSimulator, listener: Listener, tmp_path: Path, options: str) -> None:
    t = await _recorded_blind_transfer(sim, listener, options, {"File": "call.raw"})
    data = _raw(tmp_path / "spool" / "monitor" / "call.raw", 2)
    read, heard = _expected(t, bridged_only="b" in options)
    ring = media.sample_at(t["enter"]) - media.sample_at(t["leave"])
    assert ring > 1.9 * 8000  # 102 rang 2 s while the customer was in no bridge
    total = media.sample_at(t["hangup"]) - media.sample_at(t["start"])
    unbridged = ring + media.sample_at(t["hangup"]) - media.sample_at(t["left"])
    assert len(data) == (total - unbridged if "b" in options else total)
    assert np.array_equal(data[:, 0], read)  # the customer's own voice
    assert np.array_equal(data[:, 1], heard)  # 101, then (b) straight on with 102


async def test_options_r_and_t(sim: AmiSimulator, listener: Listener, tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    t = await _recorded_blind_transfer(sim, listener, f"br({spool}/monitor/rx.raw)t(tx.raw)",
                                       {"File": "mix.wav"})
    read, heard = _expected(t, bridged_only=True)
    assert np.array_equal(_raw(spool / "monitor" / "rx.raw", 1), read)
    assert np.array_equal(_raw(spool / "monitor" / "tx.raw", 1), heard)  # relative: in monitor/
    with wave.open(str(spool / "monitor" / "mix.wav")) as wav:
        assert (wav.getnchannels(), wav.getframerate(), wav.getsampwidth()) == (1, 8000, 2)
        mixed = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2")
    assert np.array_equal(mixed, np.clip(read.astype(np.int32) + heard, -32768, 32767))
