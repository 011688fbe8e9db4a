"""`pbx-bridge cel check`: connect to each PBX's CEL source and say what it holds and what is
missing. `pbx-bridge calls backfill --since T [--until T]`: put in the log every call CEL shows
over in that time that the log lacks (or has only in part), with its card, timeline, call-back
task and CRM outbox item, as `serve` does at start; a progress bar on stderr."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from datetime import UTC, datetime
from typing import Any

from pbx_bridge.config import PbxConfig, Settings


def register(sub: Any) -> None:
    parser = sub.add_parser("cel", help="Asterisk's CEL: the call log's second source")
    inner = parser.add_subparsers(dest="cel_command", metavar="ACTION", required=True)
    check = inner.add_parser("check", help="connect to each [[pbx]] cel_url and say what it holds")
    check.add_argument("--pbx", help="only this PBX")
    check.set_defaults(handler=run_check)


def register_backfill(calls_parser: Any) -> None:
    """`calls backfill`, a sub-command of `calls` (pbx_bridge.commands.calls_cmd)."""
    bf = calls_parser.add_parser(
        "backfill", help="add the calls CEL shows over in a time range that the log lacks",
        description="Every call whose end (CEL LINKEDID_END) is in [--since, --until) and that the "
                    "log lacks, has live, or has ended during an outage is rebuilt from its CEL "
                    "rows and saved, with its card, timeline, call-back task and outbox item. "
                    "Safe to run while serve runs and to repeat: never a duplicate, never over a "
                    "record the AMI events completed.")
    bf.add_argument("--since", required=True, metavar="TIME", type=_time,
                    help="ISO 8601 date or time (UTC unless it says), e.g. 2026-11-01")
    bf.add_argument("--until", metavar="TIME", type=_time, help="default: now")
    bf.add_argument("--pbx", help="only this PBX")
    bf.add_argument("--quiet", action="store_true", help="no progress bar")
    bf.set_defaults(handler=run_backfill)


def _time(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date or time (e.g. 2026-11-01 or "
                                         "2026-11-01T09:00+03:00)") from None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def _sources(settings: Settings, only: str | None) -> list[PbxConfig]:
    from pbx_bridge.errors import UserError

    pbxes = [p for p in settings.pbx if only is None or p.name == only]
    if only is not None and not pbxes:
        raise UserError(f"no [[pbx]] named {only!r}")
    with_cel = [p for p in pbxes if p.cel_url]
    if not with_cel:
        raise UserError("no [[pbx]] has a cel_url: CEL is not configured (see docs/asterisk.md)")
    return with_cel


async def run_check(args: argparse.Namespace) -> int:
    from pbx_bridge.cel.source import CelSource, CelUnavailable
    from pbx_bridge.commands.context import settings_from_args

    settings = settings_from_args(args)
    failed = 0
    for pbx in _sources(settings, args.pbx):
        source = CelSource(pbx.name, pbx.cel_url, pbx.cel_table, pbx.cel_timezone,
                           query_timeout=settings.cel.query_timeout)
        print(f"[{pbx.name}] {pbx.cel_table} ({pbx.cel_timezone})")
        try:
            info = await source.describe()
        except CelUnavailable as exc:
            print(f"  {source.state}: {exc}")
            failed += 1
            continue
        finally:
            await source.close()
        print(f"  columns: {', '.join(info.columns)}")
        newest = info.newest.isoformat(timespec="seconds") if info.newest else "none (empty)"
        print(f"  newest row: {newest}; rows in the day before it: {info.rows_last_day}")
        print("  event types: " + (", ".join(f"{k} {v}" for k, v in sorted(info.event_types.items()))
                                    or "none"))
        print("  APP_START of: " + (", ".join(f"{k} {v}" for k, v in sorted(info.applications.items()))
                                     or "none"))
        print(f"  indexed: {', '.join(info.indexed) or 'nothing'}")
        for warning in info.warnings:
            print(f"  warning: {warning}")
    return 1 if failed else 0


async def run_backfill(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from pbx_bridge.calls.backfill import Backfiller
    from pbx_bridge.calls.consumer import CallConsumer, tracker_settings_for
    from pbx_bridge.calls.queue import QueueItem
    from pbx_bridge.cel.source import CelSource, CelUnavailable
    from pbx_bridge.clients.hook import CrmHook
    from pbx_bridge.commands.context import database, settings_from_args
    from pbx_bridge.db.engine import make_sessionmaker
    from pbx_bridge.errors import UserError
    from pbx_bridge.recording.hook import RecordingHook
    from pbx_bridge.recording.service import RecordingService
    from pbx_bridge.runtime import Runtime

    settings = settings_from_args(args)
    pbxes = _sources(settings, args.pbx)
    until = args.until or datetime.now(UTC)
    if until <= args.since:
        raise UserError("--until must be after --since")
    async with database(settings) as engine:
        runtime = Runtime(settings=settings, engine=engine, sessions=make_sessionmaker(engine))
        # The after-call work serve does: cards, timeline, tasks and the CRM's outbox (delivered
        # by serve's outbox worker), and recordings marked (or found in the spool).
        crm = CrmHook(engine, settings)
        recordings = RecordingService(runtime)
        queue: asyncio.Queue[QueueItem] = asyncio.Queue()
        consumer = CallConsumer(queue, engine, tracker_settings_for(settings.pbx, settings.phone),
                                [crm, RecordingHook(recordings)], cel_live_grace=0.0)
        task = asyncio.create_task(consumer.run())
        total = 0
        try:
            for pbx in pbxes:
                source = CelSource(pbx.name, pbx.cel_url, pbx.cel_table, pbx.cel_timezone,
                                   query_timeout=settings.cel.query_timeout)
                backfiller = Backfiller(pbx.name, source, engine, queue.put, settings.cel)
                with tqdm(total=0, unit="call", desc=pbx.name, file=sys.stderr,
                          disable=args.quiet or not sys.stderr.isatty()) as bar:
                    def progress(done: int, needed: int, bar: Any = bar) -> None:
                        bar.total = needed
                        bar.n = done
                        bar.refresh()

                    try:
                        report = await backfiller.sweep("command", since=args.since.timestamp(),
                                                        until=until.timestamp(), progress=progress)
                    except CelUnavailable as exc:
                        raise UserError(f"{pbx.name}: CEL source {source.state}: {exc}") from None
                    finally:
                        await source.close()
                await queue.join()
                total += report.needed
                print(f"{pbx.name}: {report.ended} calls ended in CEL, {report.needed} backfilled",
                      flush=True)
        finally:
            await consumer.stop()
            await asyncio.wait_for(task, 600)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(recordings.drain(), 60)
            crm.close()
    return 0
