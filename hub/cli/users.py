"""`carehub users add|list|disable|unlock`: the accounts that sign in to the API and dashboards."""

from __future__ import annotations

import argparse
import getpass
import sys

from hub.auth import (
    PASSWORD_MIN,
    ROLES,
    account_locks,
    add_user,
    disable_user,
    list_users,
    unlock_user,
)
from hub.cli.commands import Subcommands, add_actions, print_table, refuse, refuses, run_on_database
from hub.errors import AuthError
from hub.settings import Settings


def _read_password(from_stdin: bool) -> str:
    """The new account's password: one line of stdin, or typed twice at a prompt."""
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    password = getpass.getpass("password: ")
    if password and getpass.getpass("again: ") != password:
        raise AuthError("invalid", "the two passwords differ", "password")
    return password


def _cmd_users_add(settings: Settings, args: argparse.Namespace) -> int:
    try:
        password = _read_password(args.password_stdin)
    except (EOFError, KeyboardInterrupt):
        return refuse("no password given")

    try:
        user = run_on_database(
            settings,
            lambda conn: add_user(
                conn,
                args.name,
                args.role,
                password,
                facility_id=args.facility,
                district=args.district,
                display_name=args.display_name or "",
            ),
        )
    except AuthError as exc:
        return refuse(exc)
    scope = user.facility_id or user.district or "everything"
    print(f"account {user.username} added: {user.role} of {scope}")
    return 0


def actor() -> str:
    """Who runs this command, for the account audit."""
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"


def _cmd_users_list(settings: Settings, _args: argparse.Namespace) -> int:
    users = run_on_database(settings, list_users)
    locks = run_on_database(settings, account_locks)
    print_table(
        ("username", "role", "scope", "display name", "state", "created"),
        [
            (
                user.username,
                user.role,
                user.facility_id or user.district or "-",
                user.display_name,
                "disabled"
                if user.disabled
                else f"locked until {locks[user.username]:%Y-%m-%d %H:%M%z}"
                if user.username in locks
                else "active",
                f"{user.created_at:%Y-%m-%d %H:%M%z}",
            )
            for user in users
        ],
        empty="no accounts; add one with `carehub users add NAME --role admin`",
    )
    return 0


@refuses(AuthError)
def _cmd_users_disable(settings: Settings, args: argparse.Namespace) -> int:
    run_on_database(settings, lambda conn: disable_user(conn, args.name, actor=actor()))
    print(f"account {args.name} disabled; its tokens are revoked")
    return 0


@refuses(AuthError)
def _cmd_users_unlock(settings: Settings, args: argparse.Namespace) -> int:
    was_locked = run_on_database(settings, lambda conn: unlock_user(conn, args.name, actor=actor()))
    if was_locked:
        print(f"account {args.name} unlocked; its failed sign-ins are forgotten")
    else:
        print(f"account {args.name} was not locked; its failed sign-ins are forgotten")
    return 0


def add_user_commands(sub: Subcommands) -> None:
    """Register `users` on the `carehub` command's subparsers."""
    actions = add_actions(sub, "users", "accounts for the API and the dashboards")
    add = actions.add_parser("add", help="add an account (password from a prompt or stdin)")
    add.add_argument("name", help="the sign-in name: letters, digits, . _ @ -")
    add.add_argument("--role", required=True, choices=ROLES)
    add.add_argument("--facility", default=None, help="the facility id of a manager or staff")
    add.add_argument("--district", default=None, help="the district of a regulator")
    add.add_argument("--display-name", default=None, help="the name shown on screens")
    add.add_argument(
        "--password-stdin",
        action="store_true",
        help=f"read the password (at least {PASSWORD_MIN} characters) from one line of stdin",
    )
    add.set_defaults(handler=_cmd_users_add)
    listing = actions.add_parser("list", help="every account")
    listing.set_defaults(handler=_cmd_users_list)
    disable = actions.add_parser("disable", help="disable an account and revoke its tokens")
    disable.add_argument("name")
    disable.set_defaults(handler=_cmd_users_disable)
    unlock = actions.add_parser(
        "unlock", help="lift the lock that failed sign-ins put on an account (audited)"
    )
    unlock.add_argument("name")
    unlock.set_defaults(handler=_cmd_users_unlock)
