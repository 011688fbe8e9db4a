"""`pbx-bridge simulate`: run the simulated Asterisk AMI server on its own."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import ssl
from pathlib import Path
from typing import Any

from pbx_bridge.commands.context import settings_from_args

log = logging.getLogger("pbx_bridge.simulate")


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "simulate", help="run a simulated Asterisk (AMI) that replays or generates real calls",
        description="Without --trace: endless realistic calls from the bundled real traces. "
                    "With --trace: replay those trace files once a client has logged in.")
    parser.add_argument("--listen", metavar="HOST:PORT",
                        help="address to listen on (default: [simulator] host and port)")
    parser.add_argument("--trace", nargs="+", metavar="FILE", help="replay these .ami traces")
    parser.add_argument("--speed", type=float, default=1.0,
                        help="time scale: 2 = twice as fast, 0 = as fast as possible (default 1)")
    parser.add_argument("--now-timestamps", action="store_true",
                        help="replay: shift Timestamp headers so the trace starts now")
    parser.add_argument("--loop", action="store_true", help="replay: start again at the end")
    parser.add_argument("--calls-per-second", type=float,
                        help="generator: new calls per second (default: [simulator] calls_per_second)")
    parser.add_argument("--max-calls", type=int, help="generator: stop after this many calls")
    parser.add_argument("--spool", metavar="DIR", help="where MixMonitor writes recordings")
    parser.add_argument("--cel-url", metavar="URL",
                        help="also write the CEL rows of every call played into this database "
                             "(postgresql+asyncpg://... or mysql+aiomysql://...), as cel_pgsql would")
    parser.add_argument("--cel-table", metavar="NAME", help="its table (default: cel)")
    parser.add_argument("--tls-cert", metavar="FILE",
                        help="serve AMI over TLS with this PEM certificate (chain first), as "
                             "manager.conf tlsenable does")
    parser.add_argument("--tls-key", metavar="FILE", help="its private key (PEM; default: in --tls-cert)")
    parser.set_defaults(handler=run)


def _listen(text: str) -> tuple[str, int]:
    from pbx_bridge.errors import UserError

    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
        raise UserError(f"--listen {text!r}: expected HOST:PORT, e.g. 127.0.0.1:15038")
    return host or "127.0.0.1", int(port)


async def run(args: argparse.Namespace) -> int:
    from pbx_bridge.errors import UserError
    from pbx_bridge.simulator.embedded import simulator_settings
    from pbx_bridge.simulator.server import AmiSimulator

    settings = settings_from_args(args)
    sim_settings = simulator_settings(settings.simulator, settings.data_path)
    if args.listen:
        sim_settings.host, sim_settings.port = _listen(args.listen)
    if args.spool:
        sim_settings.spool_dir = Path(args.spool)
    if args.cel_url:
        sim_settings.cel_url = args.cel_url
    if args.cel_table:
        sim_settings.cel_table = args.cel_table
    if args.speed < 0:
        raise UserError("--speed must be 0 or more")
    if args.tls_key and not args.tls_cert:
        raise UserError("--tls-key needs --tls-cert")
    for flag, name in (("--tls-cert", args.tls_cert), ("--tls-key", args.tls_key)):
        if name and not Path(name).is_file():  # noqa: ASYNC240 - before anything runs
            raise UserError(f"{flag} {name}: no such file")
    if args.tls_cert:
        sim_settings.tls_cert_file = Path(args.tls_cert)
        sim_settings.tls_key_file = Path(args.tls_key) if args.tls_key else None
    sim_settings.speed = args.speed
    traces = [Path(t) for t in args.trace or []]
    for trace in traces:
        if not trace.is_file():
            raise UserError(f"--trace {trace}: no such file")
    simulator = AmiSimulator(sim_settings)
    try:
        await simulator.start()
    except ssl.SSLError as exc:
        raise UserError(f"--tls-cert/--tls-key: not a usable certificate and key ({exc})") from None
    tls = " (TLS)" if args.tls_cert else ""
    print(f"simulated Asterisk AMI listening on {sim_settings.host}:{simulator.port}{tls}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    replaying: asyncio.Task[None] | None = None
    try:
        if traces:
            async def replay() -> None:
                await simulator.wait_logins(1, timeout=365 * 86400)
                while True:
                    await simulator.replay(traces, speed=args.speed,
                                           now_timestamps=args.now_timestamps)
                    if not args.loop:
                        return

            replaying = asyncio.create_task(replay())
        else:
            cps = args.calls_per_second if args.calls_per_second is not None \
                else settings.simulator.calls_per_second
            if cps <= 0:
                raise UserError("--calls-per-second must be more than 0")
            simulator.start_generator(cps, max_calls=args.max_calls)
        await stop.wait()
        log.info("simulate.stopping")
    finally:
        if replaying is not None:
            replaying.cancel()
            await asyncio.gather(replaying, return_exceptions=True)
        await simulator.stop()
    return 0
