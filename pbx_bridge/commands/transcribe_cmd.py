"""`pbx-bridge transcribe`, `worker`, `search`: transcription from the command line.

`transcribe FILE.wav...` prints the dialog and needs no database; with --since / --call /
--all-missing it queues jobs for the workers. `worker` runs worker processes only (on any
machine that reaches the database). `search` finds calls by what was said.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pbx_bridge.commands.context import database, settings_from_args
from pbx_bridge.config import Settings

# Files with at least this much audio in total get a progress bar (on a terminal).
PROGRESS_MIN_AUDIO_SECONDS = 30.0


def _call_id(text: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 2**31:
        raise argparse.ArgumentTypeError(f"{text!r} is not a call id")
    return int(text)


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number")
    return int(text)


def register(sub: Any) -> None:
    tr = sub.add_parser("transcribe", help="print the dialog of WAV files, or queue calls for transcription")
    tr.add_argument("files", nargs="*", metavar="FILE.wav", help="recordings to transcribe now (no database)")
    tr.add_argument("--since", metavar="DATE", help="queue calls started on or after DATE (ISO 8601, UTC)")
    tr.add_argument("--call", type=_call_id, action="append", metavar="ID",
                    help="queue this call (repeatable)")
    tr.add_argument("--wav", metavar="FILE", help="with one --call: the recording to use")
    tr.add_argument("--all-missing", action="store_true",
                    help="queue every recorded call without a transcript")
    tr.add_argument("--json", action="store_true", help="print the transcripts as JSON")
    tr.add_argument("--progress", choices=("auto", "always", "never"), default="auto",
                    help="progress bar on stderr (auto: on a terminal, for long work)")
    tr.set_defaults(handler=run_transcribe)
    wk = sub.add_parser("worker", help="run transcription workers only (jobs from the database)")
    wk.add_argument("--workers", type=_positive, metavar="N",
                    help="processes (default transcription.workers)")
    wk.set_defaults(handler=run_worker)
    se = sub.add_parser("search", help="find calls by what was said in them")
    se.add_argument("query", help='words, "a phrase", or, -exclude')
    se.add_argument("--limit", type=_positive, default=20)
    se.set_defaults(handler=run_search)


def _user_error(message: str) -> Exception:
    from pbx_bridge.errors import UserError

    return UserError(message)


def _load_model(settings: Settings) -> tuple[Any, Path]:
    from pbx_bridge.transcription.options import model_dir
    from recordings.transcription.recognize import ModelError, load_model

    try:
        path = model_dir(settings)
        return load_model(path), path
    except ModelError as exc:
        raise _user_error(str(exc)) from None


async def run_transcribe(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    queue_mode = bool(args.since or args.call or args.all_missing)
    if args.files and queue_mode:
        raise _user_error("give either files to transcribe now or --since/--call/--all-missing, not both")
    if args.wav and not (args.call and len(args.call) == 1):
        raise _user_error("--wav needs exactly one --call")
    if queue_mode:
        return await _queue(settings, args)
    if not args.files:
        raise _user_error("nothing to transcribe: give FILE.wav or --since/--call/--all-missing")
    return await asyncio.to_thread(_transcribe_files, settings, args)


def _transcribe_files(settings: Settings, args: argparse.Namespace) -> int:
    import json
    import wave

    from tqdm import tqdm

    from pbx_bridge.transcription.options import term_lists
    from recordings.transcription.dialog import format_dialog
    from recordings.transcription.pipeline import transcribe_file
    from recordings.transcription.recognize import BadAudio, model_language, model_name

    paths = [Path(f) for f in args.files]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise _user_error(f"no such file: {', '.join(missing)}")
    model, path = _load_model(settings)
    total_bytes, audio_seconds = 0, 0.0
    for p in paths:  # the bar counts bytes of audio, all channels
        try:
            with wave.open(str(p), "rb") as wav:
                total_bytes += wav.getnframes() * wav.getnchannels() * wav.getsampwidth()
                audio_seconds += wav.getnframes() / max(1, wav.getframerate())
        except Exception:  # noqa: S112 - a bad file is reported when it is transcribed
            continue
    show = args.progress == "always" or (
        args.progress == "auto" and audio_seconds >= PROGRESS_MIN_AUDIO_SECONDS and sys.stderr.isatty())
    failures = 0
    outputs: list[dict[str, Any]] = []
    with tqdm(total=total_bytes, unit="B", unit_scale=True, disable=not show, file=sys.stderr,
              desc="transcribing") as bar:
        for p in paths:
            try:
                result = transcribe_file(model, p, term_lists(settings),
                                         language=model_language(path, settings.transcription.language),
                                         model_label=model_name(path), progress=bar.update)
            except BadAudio as exc:
                print(f"pbx-bridge: {exc}", file=sys.stderr)
                failures += 1
                continue
            if args.json:
                outputs.append({"file": str(p), "duration_seconds": result.duration,
                                "turns": [t.to_dict() for t in result.turns],
                                "text": result.plain_text, "analytics": result.analytics})
                continue
            a = result.analytics
            talk = ", ".join(f"{s} {v:.1f} s" for s, v in a["talk_seconds"].items())
            lines = [f"== {p} ({result.duration:.1f} s; talk: {talk}; silence {a['silence_seconds']:.1f} s)"]
            lines.append(format_dialog(result.turns) if result.turns else "(no speech recognised)")
            if a["tags"]:
                lines.append(f"tags: {', '.join(a['tags'])}")
            bar.write("\n".join(lines))
    if args.json:
        print(json.dumps(outputs, ensure_ascii=False, indent=2))
    return 1 if failures else 0


async def _queue(settings: Settings, args: argparse.Namespace) -> int:
    from pbx_bridge.transcription.selection import (
        NoRecordingsTable,
        Selected,
        recordings_dir,
        select_recordings,
    )
    from recordings.transcription import jobs

    since = None
    if args.since:
        try:
            since = datetime.fromisoformat(args.since)
        except ValueError:
            raise _user_error(f"--since {args.since!r} is not a date (e.g. 2026-11-01)") from None
        since = since.replace(tzinfo=UTC) if since.tzinfo is None else since
    wav = await asyncio.to_thread(lambda: Path(args.wav).resolve()) if args.wav else None
    if wav is not None and not await asyncio.to_thread(wav.is_file):
        raise _user_error(f"no such file: {args.wav}")
    async with database(settings) as engine:
        async with engine.begin() as conn:
            if wav is not None:
                selected = [Selected(args.call[0], str(wav))]
            else:
                try:
                    selected = await select_recordings(conn, recordings_dir(settings), since=since,
                                                       call_ids=args.call, missing_only=args.all_missing)
                except NoRecordingsTable as exc:
                    raise _user_error(f"{exc}; queue a file with --call ID --wav FILE") from None
            for item in selected:
                await jobs.enqueue(conn, item.call_id, item.wav_path)
    print(f"queued {len(selected)} recording(s) for transcription")
    return 0


async def run_worker(args: argparse.Namespace) -> int:
    from pbx_bridge.transcription.options import worker_count, worker_options
    from recordings.transcription.recognize import ModelError, check_model_dir
    from recordings.transcription.worker import WorkerPool

    settings = settings_from_args(args, service=True)
    try:
        options = worker_options(settings)
        check_model_dir(Path(options.model_dir))  # the model's error first, before the database's
    except ModelError as exc:
        raise _user_error(str(exc)) from None
    async with database(settings):
        pass  # the schema must be current before workers touch the tables
    try:
        pool = WorkerPool(options, worker_count(settings, args.workers))
        await asyncio.to_thread(pool.start)
    except ModelError as exc:
        raise _user_error(str(exc)) from None
    print(f"transcription workers running: {pool.processes} (pool pid {pool.pid})", file=sys.stderr)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    watch = asyncio.create_task(asyncio.to_thread(pool.wait))
    stopper = asyncio.create_task(stop.wait())
    done, _ = await asyncio.wait({watch, stopper}, return_when=asyncio.FIRST_COMPLETED)
    await asyncio.to_thread(pool.stop)
    stopper.cancel()
    return 0 if stopper in done else 1


async def run_search(args: argparse.Namespace) -> int:
    from recordings.transcription.dialog import clock
    from recordings.transcription.search import SearchQueryError, search_call_ids

    settings = settings_from_args(args)
    async with database(settings) as engine, engine.connect() as conn:
        try:
            hits = await search_call_ids(conn, args.query, limit=args.limit)
        except SearchQueryError as exc:
            raise _user_error(str(exc)) from None
    for hit in hits:
        at = clock(hit.offset) if hit.offset is not None else "--:--"
        print(f"call {hit.call_id}\t{at}\t{hit.speaker or '-'}: {hit.snippet}")
    if not hits:
        print("no calls found", file=sys.stderr)
    return 0
