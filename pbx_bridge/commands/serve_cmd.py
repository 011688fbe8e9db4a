"""`pbx-bridge serve`: run the bridge."""

from __future__ import annotations

import argparse
from typing import Any

from pbx_bridge.commands.context import settings_from_args


def register(sub: Any) -> None:
    parser = sub.add_parser("serve", help="run the bridge (AMI, call log, HTTP API, web UI)")
    parser.add_argument("--host", help="HTTP listen address (overrides server.host)")
    parser.add_argument("--port", type=int, help="HTTP port (overrides server.port)")
    parser.set_defaults(handler=run)


async def run(args: argparse.Namespace) -> int:
    from pbx_bridge.app import serve

    settings = settings_from_args(args, service=True)
    if args.host:
        settings.server.host = args.host
    if args.port:
        settings.server.port = args.port
    await serve(settings)
    return 0
