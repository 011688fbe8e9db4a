"""The AMI journal: what the reader read is on disk before the pipeline sees it, numbered;
read back after a crash (a torn last record skipped); numbering never goes back; applied
segments deleted; the pipeline applies what an earlier process never saved, with the exact
record, and saves its checkpoint with the calls."""

from __future__ import annotations

import asyncio
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from pbx_bridge.ami.events import AmiEvent
from pbx_bridge.ami.journal import SUFFIX, Journal, read_records
from pbx_bridge.ami.protocol import parse_event
from pbx_bridge.calls import store
from pbx_bridge.calls.consumer import CallConsumer
from pbx_bridge.db.schema import journal_checkpoints
from pbx_bridge.simulator.templates import broadcast_events
from pbx_bridge.simulator.trace import read_trace
from tests.tracker_support import EXPECTED, check_record, settings_for


def trace_texts(traces: Path, name: str) -> list[str]:
    """The event messages of a trace as the reader gets them (text without the blank line)."""
    frames = broadcast_events(read_trace(traces / f"{name}.ami"))
    return [f.raw.decode().rstrip("\r\n") for f in frames]


def journal_with(root: Path, texts: list[str], *, received_at: float = 1795730000.0,
                 **kwargs: int) -> Journal:
    journal = Journal(root, "lab", **kwargs)
    for text in texts:
        journal.append(parse_event("lab", text, received_at), text)
    journal.flush()
    return journal


def segment_files(root: Path) -> list[Path]:
    return sorted((root / "lab").glob(f"*{SUFFIX}"))


def test_records_read_back_exactly_and_numbering_goes_on(tmp_path: Path, traces: Path) -> None:
    texts = trace_texts(traces, "inbound_answered")
    first = journal_with(tmp_path, texts)
    first.close()
    assert first.last_seq == len(texts)
    # The next process: a segment of its own, numbers going on; the earlier events read back.
    second = Journal(tmp_path, "lab")
    assert second.last_seq == len(texts)
    back = second.unapplied(0)
    assert [seq for seq, _ in back] == list(range(1, len(texts) + 1))
    assert [ev for _, ev in back] == [parse_event("lab", t, 1795730000.0) for t in texts]
    assert [seq for seq, _ in second.unapplied(len(texts) - 3)] == [len(texts) - 2, len(texts) - 1,
                                                                      len(texts)]
    event = parse_event("lab", texts[0], 1.5)
    assert second.append(event, texts[0]) == len(texts) + 1
    second.close()
    assert len(segment_files(tmp_path)) == 2


def test_a_torn_last_record_is_skipped(tmp_path: Path, traces: Path) -> None:
    texts = trace_texts(traces, "inbound_busy")
    journal_with(tmp_path, texts).close()
    [path] = segment_files(tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 40])  # the machine died in the middle of the last write
    assert [seq for seq, _at, _text in read_records(path)] == list(range(1, len(texts)))
    assert Journal(tmp_path, "lab").last_seq == len(texts) - 1


def test_numbering_never_goes_below_the_saved_checkpoint(tmp_path: Path, traces: Path) -> None:
    """The journal directory emptied by hand: new events must not get numbers already applied."""
    journal = Journal(tmp_path, "lab", floor=5000)
    text = trace_texts(traces, "inbound_busy")[0]
    assert journal.append(parse_event("lab", text, 1.0), text) == 5001


def test_applied_segments_are_deleted_the_newest_kept(tmp_path: Path, traces: Path) -> None:
    texts = trace_texts(traces, "queue_ringall_answered")
    journal = Journal(tmp_path, "lab", segment_bytes=4096)
    for text in texts:  # a flush per event: a new segment every 4 kB
        journal.append(parse_event("lab", text, 1.0), text)
        journal.flush()
    files = segment_files(tmp_path)
    assert len(files) > 3
    firsts = [int(p.name[: -len(SUFFIX)]) for p in files]
    journal.applied(firsts[2] - 1)  # everything in the first two segments is saved
    assert segment_files(tmp_path) == files[2:]
    journal.applied(journal.last_seq)
    assert segment_files(tmp_path) == files[-1:]  # the one being written stays
    journal.close()


async def test_pipeline_applies_what_an_earlier_process_never_saved(
        engine: AsyncEngine, tmp_path: Path, traces: Path) -> None:
    texts = trace_texts(traces, "inbound_answered")
    journal_with(tmp_path, texts).close()  # the killed process had read the whole call
    later = Journal(tmp_path, "lab")
    queue: asyncio.Queue[object] = asyncio.Queue()
    consumer = CallConsumer(queue, engine, lambda name: settings_for("lab", pbx=name),  # type: ignore[arg-type]
                            journals={"lab": later})
    task = asyncio.create_task(consumer.run())
    try:
        for _ in range(500):
            async with engine.connect() as conn:
                calls = await store.list_calls(conn)
            if calls and calls[0].ended_at is not None:
                break
            await asyncio.sleep(0.02)
    finally:
        await consumer.stop()
        await asyncio.wait_for(task, 10)
    [rec] = calls
    check_record(rec, EXPECTED["inbound_answered"])
    assert consumer.replayed == len(texts)
    async with engine.connect() as conn:
        saved = dict((await conn.execute(sa.select(journal_checkpoints.c.pbx,
                                                   journal_checkpoints.c.seq))).all())
    assert saved == {"lab": len(texts)}
    # Applied: replaying again (a third start) finds nothing to do.
    assert Journal(tmp_path, "lab").unapplied(saved["lab"]) == []


async def test_checkpoint_is_saved_with_the_calls_it_covers(
        engine: AsyncEngine, tmp_path: Path, traces: Path) -> None:
    """Events that came through the queue (journaled by the reader) move the checkpoint in the
    same transaction as their calls; after a clean stop nothing is left to apply."""
    texts = trace_texts(traces, "inbound_noanswer")
    journal = Journal(tmp_path, "lab")
    queue: asyncio.Queue[object] = asyncio.Queue()
    for text in texts:
        event: AmiEvent = parse_event("lab", text, 1795730000.0)
        event.seq = journal.append(event, text)
        queue.put_nowait(event)
    journal.flush()
    consumer = CallConsumer(queue, engine, lambda name: settings_for("lab", pbx=name),  # type: ignore[arg-type]
                            journals={"lab": journal})
    task = asyncio.create_task(consumer.run())
    await asyncio.wait_for(queue.join(), 10)  # type: ignore[attr-defined]
    await consumer.stop()
    await asyncio.wait_for(task, 10)
    async with engine.connect() as conn:
        assert await store.load_journal_checkpoints(conn) == {"lab": len(texts)}
        [rec] = await store.list_calls(conn)
    check_record(rec, EXPECTED["inbound_noanswer"])
    journal.close()
    assert Journal(tmp_path, "lab").unapplied(len(texts)) == []
