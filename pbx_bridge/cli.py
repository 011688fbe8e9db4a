"""The `pbx-bridge` command line: one parser, one module per command group under commands/.

Errors a user can fix print one line and exit non-zero (2 for configuration), never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Sequence
from types import ModuleType

from pbx_bridge import __version__
from pbx_bridge.commands import COMMAND_MODULES
from pbx_bridge.config import ConfigError
from pbx_bridge.db.engine import DatabaseUrlError
from pbx_bridge.errors import UserError


def build_parser(modules: Sequence[ModuleType] = COMMAND_MODULES) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pbx-bridge",
        description="Asterisk to CRM bridge: call log, recordings, transcripts, client cards.",
    )
    parser.add_argument("--version", action="version", version=f"pbx-bridge {__version__}")
    parser.add_argument(
        "--config",
        metavar="FILE",
        help="configuration file (default: $PBX_BRIDGE_CONFIG or config/pbx-bridge.toml)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in modules:
        module.register(sub)
    return parser


# Whatever the bridge writes (database, recordings, exports, backups, journals) is for its own
# user and group only: files at most 0640, directories at most 0750, as the systemd units'
# UMask=0027 already makes them. A stricter umask from the caller is kept.
PRIVATE_UMASK = 0o027


def narrow_umask() -> int:
    current = os.umask(PRIVATE_UMASK)
    os.umask(current | PRIVATE_UMASK)
    return current | PRIVATE_UMASK


def main(argv: Sequence[str] | None = None) -> int:
    narrow_umask()
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        result = args.handler(args)
        if asyncio.iscoroutine(result):
            result = asyncio.run(result)
        return int(result or 0)
    except ConfigError as exc:
        print(f"pbx-bridge: configuration error: {exc}", file=sys.stderr)
        return 2
    except DatabaseUrlError as exc:
        print(f"pbx-bridge: configuration error: {exc}", file=sys.stderr)
        return 2
    except UserError as exc:
        print(f"pbx-bridge: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (`pbx-bridge calls list | head`): stop quietly with the status of
        # a program ended by SIGPIPE. Standard output goes to /dev/null first, or Python would
        # report the broken pipe again when it flushes it at exit. (SIGPIPE is not restored to
        # its default: `serve` writes to sockets that may close, which must not kill it.)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 128 + signal.SIGPIPE
    except OSError as exc:
        logging.getLogger("pbx_bridge").debug("os error", exc_info=True)
        print(f"pbx-bridge: {exc}", file=sys.stderr)
        return 1
