"""One conversion attempt for an ended call: spool files -> one WAV on the call's timeline,
verified -> row updated.

A missing, empty or truncated file is retried (shared mounts lag behind Asterisk) with a
growing delay; after the last attempt the recording is marked `missing` or `truncated`, whatever
audio there is is still stored, and the spool files are kept so nothing is lost. The spool files
are removed only after the WAV has been read back and checked.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncEngine

from recordings import catalog, convert
from recordings.catalog import RecordingRow
from recordings.convert import Compression, FileProblem, SegmentAudio, VerificationError, WavInfo
from recordings.mixmonitor import Segment
from recordings.storage import Locations, stored_relpath
from recordings.timeline import CallTimeline, place, span_of

log = logging.getLogger("recordings.finalize")


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 6  # conversion attempts in all
    delay_seconds: float = 2.0  # before the first retry, then doubling ...
    max_delay_seconds: float = 60.0  # ... up to this

    def delay_after(self, attempt: int) -> float:
        """Seconds to wait after the `attempt`-th failed attempt (1-based)."""
        return min(self.max_delay_seconds, self.delay_seconds * (2 ** max(0, attempt - 1)))


@dataclass(frozen=True)
class FinalizeOptions:
    locations: Locations
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    compress: Compression = "none"
    ffmpeg: str | None = None  # found executable, or None (compression is then skipped)


@dataclass
class FileOutcome:
    state: str  # ready | retry | missing | truncated | failed
    wav: WavInfo | None = None
    error: str | None = None
    compressed: Path | None = None
    notes: list[str] = field(default_factory=list)


def _describe(problems: list[FileProblem]) -> str:
    return "; ".join(str(p) for p in problems)


def convert_files(segments: list[Segment], call_id: int, recorded_at: datetime,
                  options: FinalizeOptions, *, last_attempt: bool,
                  timeline: CallTimeline | None = None) -> FileOutcome:
    """The file work of one attempt (blocking: run it in a thread). The segments are placed on
    the call's timeline (recordings.timeline); without one, by their own times."""
    loc = options.locations
    audios: list[SegmentAudio] = []
    problems: list[FileProblem] = []
    for segment in sorted(segments, key=lambda s: s.index):
        try:
            audio = convert.read_segment(loc.local_spool_dir, segment)
        except FileProblem as problem:
            problems.append(problem)
            continue
        audios.append(audio)
        problems.extend(audio.problems)
    if not segments:
        return FileOutcome("missing", error="no MixMonitor segment was started")
    notes: list[str] = []
    if last_attempt and audios:
        # With option b an empty file is a segment that was never bridged (a transferred
        # customer who hung up while the next phone rang): no audio lost, not a fault.
        empty = [p for p in problems if p.kind == "empty"]
        problems = [p for p in problems if p.kind != "empty"]
        notes = [f"segment without audio: {p.path.name}" for p in empty]
    if problems and not last_attempt:
        return FileOutcome("retry", error=_describe(problems))
    if not audios:
        return FileOutcome("missing", error=_describe(problems))
    by_index = {s.index: s for s in segments}
    parts = [(by_index[a.index], a.pcm) for a in audios]
    placed = place(parts, timeline if timeline is not None else span_of(parts))
    out = loc.recordings_dir / stored_relpath(call_id, recorded_at)
    try:
        info = convert.write_wav([placed], out)
        convert.verify_wav(info)
    except (OSError, VerificationError) as exc:
        state = "failed" if last_attempt else "retry"
        return FileOutcome(state, error=f"writing {out.name}: {exc}")
    if problems:
        # Whatever audio there was is stored; the sources stay for a person to look at.
        final = "truncated" if all(p.kind == "truncated" for p in problems) else "missing"
        return FileOutcome(final, wav=info, error="; ".join([_describe(problems), *notes]))
    outcome = FileOutcome("ready", wav=info, notes=notes)
    for path in convert.source_paths(loc.local_spool_dir, segments):
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:
            outcome.notes.append(f"could not remove {path.name}: {exc.strerror or exc}")
    if options.compress != "none":
        if options.ffmpeg is None:
            # Not an error of this recording: the service warns once at start-up.
            log.debug("recording.compression_skipped", extra={"kv": {"call_id": call_id}})
        else:
            try:
                outcome.compressed = convert.compress(info.path, options.compress, options.ffmpeg)
            except (OSError, RuntimeError, TimeoutError) as exc:
                outcome.notes.append(f"{options.compress} compression failed: {exc}")
    return outcome


async def attempt(engine: AsyncEngine, row: RecordingRow, options: FinalizeOptions,
                  now: Callable[[], datetime] | None = None) -> RecordingRow:
    """Run one attempt for a `processing` row and store its result; returns the updated row."""
    clock = now or (lambda: datetime.now(UTC))
    number = row.attempts + 1
    last = number >= options.retry.attempts
    try:
        outcome = await asyncio.to_thread(convert_files, row.segments, row.call_id, row.created_at,
                                          options, last_attempt=last, timeline=row.timeline)
    except Exception as exc:  # never let one bad recording stop the worker
        log.exception("recording.convert_crashed", extra={"kv": {"call_id": row.call_id}})
        outcome = FileOutcome("failed" if last else "retry", error=f"{type(exc).__name__}: {exc}")
    at = clock()
    values: dict[str, object] = {"attempts": number, "updated_at": at, "last_error": outcome.error}
    if outcome.state == "retry":
        delay = options.retry.delay_after(number)
        values.update(next_attempt_at=at + timedelta(seconds=delay))
        log.warning("recording.retry", extra={"kv": {
            "call_id": row.call_id, "attempt": number, "of": options.retry.attempts,
            "retry_in_s": delay, "error": outcome.error}})
    else:
        values.update(state=outcome.state, next_attempt_at=None)
        if outcome.wav is not None:
            loc = options.locations
            values.update(
                stored_path=outcome.wav.path.relative_to(loc.recordings_dir).as_posix(),
                format="wav", channels=outcome.wav.channels, sample_rate=outcome.wav.sample_rate,
                duration_seconds=round(outcome.wav.duration_seconds, 3),
                size_bytes=outcome.wav.size_bytes, sha256=outcome.wav.sha256,
                ready_at=at,
            )
            if outcome.compressed is not None:
                values["compressed_path"] = outcome.compressed.relative_to(loc.recordings_dir).as_posix()
        if outcome.notes:
            values["last_error"] = "; ".join(filter(None, [outcome.error, *outcome.notes]))
        level = logging.INFO if outcome.state == "ready" else logging.ERROR
        log.log(level, f"recording.{outcome.state}", extra={"kv": {
            "call_id": row.call_id, "attempts": number, "error": values["last_error"],
            "duration_s": values.get("duration_seconds"), "size": values.get("size_bytes")}})
    async with engine.begin() as conn:
        await catalog.update(conn, row.id, **values)
        updated = await catalog.get(conn, row.id)
    assert updated is not None
    return updated
