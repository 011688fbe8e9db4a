"""`pbx-bridge users create|list|disable|enable|password`: people who sign in to the web UI."""

from __future__ import annotations

import argparse
import getpass
import sys
from typing import Any

from pbx_bridge.commands.context import database, settings_from_args
from pbx_bridge.web import users as store
from pbx_bridge.web.passwords import PasswordRejected, check_new_password


def register(sub: Any) -> None:
    parser = sub.add_parser("users", help="people who sign in to the web UI")
    inner = parser.add_subparsers(dest="users_command", metavar="ACTION", required=True)
    create = inner.add_parser("create", help="add a person (asks for the password)")
    create.add_argument("--username", required=True)
    create.add_argument("--role", required=True, help="admin, manager or operator")
    create.add_argument("--extension", help="the operator's phone extension (required for operators)")
    create.add_argument("--language", choices=store.LANGUAGES, help="UI language (default: browser's)")
    create.add_argument("--password-stdin", action="store_true",
                        help="read the password from the first line of standard input")
    create.set_defaults(handler=run_create)
    lst = inner.add_parser("list", help="list people")
    lst.set_defaults(handler=run_list)
    disable = inner.add_parser("disable", help="stop a person signing in (ends their sessions)")
    disable.add_argument("username")
    disable.set_defaults(handler=run_disable, disabled=True)
    enable = inner.add_parser("enable", help="let a disabled person sign in again")
    enable.add_argument("username")
    enable.set_defaults(handler=run_disable, disabled=False)
    password = inner.add_parser("password", help="set a new password (ends their sessions)")
    password.add_argument("username")
    password.add_argument("--password-stdin", action="store_true")
    password.set_defaults(handler=run_password)


def read_password(from_stdin: bool) -> str:
    from pbx_bridge.errors import UserError

    if from_stdin:
        line = sys.stdin.readline()
        if not line:
            raise UserError("no password on standard input")
        password = line.rstrip("\r\n")
    else:
        if not sys.stdin.isatty():
            raise UserError("standard input is not a terminal: use --password-stdin")
        password = getpass.getpass("Password: ")
        if getpass.getpass("Repeat the password: ") != password:
            raise UserError("the two passwords differ")
    try:
        check_new_password(password)
    except PasswordRejected as exc:
        raise UserError(str(exc)) from None
    return password


async def run_create(args: argparse.Namespace) -> int:
    from pbx_bridge.errors import UserError

    try:
        store.validate_user_fields(args.username, args.role, args.extension)
    except store.UserInputError as exc:
        raise UserError(str(exc)) from None
    settings = settings_from_args(args)
    password = read_password(args.password_stdin)
    async with database(settings) as engine:
        try:
            async with engine.begin() as conn:
                user = await store.create_user(
                    conn, username=args.username, password=password, role=args.role,
                    extension=args.extension, language=args.language)
        except (store.UserInputError, PasswordRejected) as exc:
            raise UserError(str(exc)) from None
    ext = f" extension {user.extension}" if user.extension else ""
    print(f"created user {user.username} ({user.role}{ext})")
    return 0


async def run_list(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    async with database(settings) as engine, engine.connect() as conn:
        people = await store.list_users(conn)
    print(f"{'username':<24} {'role':<9} {'ext':<6} {'lang':<5} {'state':<9} last sign-in")
    for u in people:
        last = u.last_login_at.strftime("%Y-%m-%d %H:%M UTC") if u.last_login_at else "never"
        print(f"{u.username:<24} {u.role:<9} {u.extension or '-':<6} {u.language or '-':<5} "
              f"{'disabled' if u.disabled else 'active':<9} {last}")
    return 0


async def run_disable(args: argparse.Namespace) -> int:
    from pbx_bridge.errors import UserError

    settings = settings_from_args(args)
    async with database(settings) as engine:
        try:
            async with engine.begin() as conn:
                user = await store.set_disabled(conn, args.username, args.disabled)
        except store.UserInputError as exc:
            raise UserError(str(exc)) from None
    print(f"user {user.username} {'disabled' if user.disabled else 'enabled'}")
    return 0


async def run_password(args: argparse.Namespace) -> int:
    from pbx_bridge.errors import UserError

    settings = settings_from_args(args)
    password = read_password(args.password_stdin)
    async with database(settings) as engine:
        try:
            async with engine.begin() as conn:
                await store.set_password(conn, args.username, password)
        except store.UserInputError as exc:
            raise UserError(str(exc)) from None
    print(f"password of {args.username} changed")
    return 0
