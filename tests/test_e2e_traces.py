"""Every real trace through the real TCP path: the simulator replays it (full speed) ->
PbxConnection (panoramisk) -> one queue -> CallConsumer -> tracker -> database; the stored record
is the one in the traces' README. Then the same with the connection cut at random points and
resynced (CoreShowChannels from the simulator's current state): the same records, no duplicates."""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from pbx_bridge.simulator.server import AmiSimulator
from pbx_bridge.simulator.templates import broadcast_events
from pbx_bridge.simulator.trace import read_trace
from tests.e2e_support import AmiPath, all_calls, ami_path, split_at_event, wait_until
from tests.tracker_support import EXPECTED, check_record

NAMES = sorted(EXPECTED)


def _seed_mid_call(frames_path: Path) -> Callable[[AmiSimulator], None]:
    """resync_mid_call: the PBX already has the call when the bridge logs in, so the bridge's
    first CoreShowChannels is its only view of how the call began (as in the trace)."""
    def seed(sim: AmiSimulator) -> None:
        sim._seed_from_list(read_trace(frames_path))

    return seed


def _before(traces: Path, name: str) -> Callable[[AmiSimulator], None] | None:
    return _seed_mid_call(traces / f"{name}.ami") if name == "resync_mid_call" else None


async def _one_ended_record(path: AmiPath, name: str) -> None:
    await path.settled()
    await wait_until(lambda: _ended(path), 10, "the call record is final")
    records = await all_calls(path.engine)
    assert len(records) == 1, [r.to_dict() for r in records]
    check_record(records[0], EXPECTED[name])
    assert not records[0].ended_during_outage


async def _ended(path: AmiPath) -> bool:
    return any(r.ended_at is not None for r in await all_calls(path.engine))


@pytest.mark.parametrize("name", NAMES)
async def test_trace_over_tcp_gives_the_readme_record(engine: AsyncEngine, traces: Path, tmp_path: Path,
                                                      name: str) -> None:
    async with ami_path(engine, name, tmp_path, _before(traces, name)) as path:
        await path.replay(read_trace(traces / f"{name}.ami"))
        await _one_ended_record(path, name)
        assert path.consumer.item_errors == 0 and path.consumer.save_errors == 0


@pytest.mark.parametrize("name", NAMES)
async def test_connection_cut_at_random_points_then_resync(engine: AsyncEngine, traces: Path,
                                                           tmp_path: Path, name: str) -> None:
    """Cut after the k-th event (TCP reset); the bridge reconnects, logs in, resyncs from the
    simulator's CoreShowChannels; the call goes on. Several cuts per trace."""
    frames = read_trace(traces / f"{name}.ami")
    count = len(broadcast_events(frames))
    rng = random.Random(f"cut-{name}")
    cuts = sorted(rng.sample(range(1, count), k=min(3, count - 1)))
    async with ami_path(engine, name, tmp_path, _before(traces, name)) as path:
        rest, played, logins = frames, 0, 1
        for k in cuts:
            head, rest = split_at_event(rest, k - played)
            played = k
            await path.replay(head)
            path.sim.drop_clients()
            logins += 1
            await path.reconnected(logins)
        await path.replay(rest)
        await _one_ended_record(path, name)
        # Every (re)login asked for the live channels.
        asked = [a for a in path.sim.actions if a.name == "CoreShowChannels"]
        assert len(asked) >= logins


async def test_calls_that_ended_during_the_outage_are_closed_once(engine: AsyncEngine, traces: Path,
                                                                  tmp_path: Path) -> None:
    """The connection is down while the call ends: the resync closes it, flagged, never twice."""
    name = "inbound_answered"
    frames = read_trace(traces / f"{name}.ami")
    # While the operator's phone rings (after the customer's DialBegin to it).
    dial_begins = [i for i, f in enumerate(broadcast_events(frames)) if f.name == "DialBegin"]
    head, rest = split_at_event(frames, dial_begins[-1] + 1)
    async with ami_path(engine, name, tmp_path) as path:
        await path.replay(head)
        await path.settled()
        [live] = await all_calls(engine)
        assert live.ended_at is None
        # Make the bridge wait for its reconnect while the PBX plays the rest of the call.
        path.sim.action_hook = lambda _session, action: action.name == "Login"
        path.sim.drop_clients()
        await path.sim.replay([rest], speed=0)
        path.sim.action_hook = None
        await path.reconnected(2)
        await path.settled()
        await wait_until(lambda: _ended(path), 10, "closed by the resync")
        [rec] = await all_calls(engine)
        assert rec.id == live.id and rec.ended_during_outage
        assert rec.ended_at is not None and rec.linkedid == live.linkedid
