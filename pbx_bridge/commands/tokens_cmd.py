"""`pbx-bridge tokens create|list|revoke`: API tokens for the CRM, the web UI and scripts."""

from __future__ import annotations

import argparse
import json
from typing import Any

from pbx_bridge.auth.tokens import TokenError, create_token, list_tokens, revoke_token
from pbx_bridge.commands.context import database, settings_from_args
from pbx_bridge.http.auth import ROLES


def register(sub: Any) -> None:
    parser = sub.add_parser("tokens", help="API tokens (create, list, revoke)")
    inner = parser.add_subparsers(dest="tokens_command", metavar="ACTION", required=True)
    create = inner.add_parser("create", help="create a token; it is printed once, never again")
    create.add_argument("--role", required=True, choices=ROLES)
    create.add_argument("--name", required=True, help="who or what uses the token")
    create.add_argument("--extension", help="operator tokens: the operator's own extension")
    create.set_defaults(handler=run_create)
    lst = inner.add_parser("list", help="list tokens (never the tokens themselves)")
    lst.add_argument("--json", action="store_true", help="JSON instead of a table")
    lst.set_defaults(handler=run_list)
    revoke = inner.add_parser("revoke", help="revoke a token by id")
    revoke.add_argument("id", type=int)
    revoke.set_defaults(handler=run_revoke)


async def run_create(args: argparse.Namespace) -> int:
    from pbx_bridge.errors import UserError

    settings = settings_from_args(args)
    async with database(settings) as engine, engine.begin() as conn:
        try:
            info, token = await create_token(conn, name=args.name, role=args.role,
                                             extension=args.extension)
        except TokenError as exc:
            raise UserError(str(exc)) from None
    ext = f" extension={info.extension}" if info.extension else ""
    print(f"token {info.id} ({info.role}{ext}) {info.name!r} created. It is shown only now:")
    print(token)
    return 0


async def run_list(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    async with database(settings) as engine, engine.connect() as conn:
        tokens = await list_tokens(conn)
    if args.json:
        print(json.dumps([t.to_dict() for t in tokens], ensure_ascii=False, indent=2))
        return 0
    rows = [("ID", "NAME", "ROLE", "EXT", "PREFIX", "CREATED", "REVOKED")]
    for t in tokens:
        rows.append((str(t.id), t.name, t.role, t.extension or "-", t.prefix + "...",
                     t.created_at.strftime("%Y-%m-%d %H:%M"),
                     t.revoked_at.strftime("%Y-%m-%d %H:%M") if t.revoked_at else "-"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    return 0


async def run_revoke(args: argparse.Namespace) -> int:
    from pbx_bridge.errors import UserError

    settings = settings_from_args(args)
    async with database(settings) as engine, engine.begin() as conn:
        info = await revoke_token(conn, args.id)
    if info is None:
        raise UserError(f"no token with id {args.id}")
    print(f"token {info.id} ({info.name!r}) revoked")
    return 0
