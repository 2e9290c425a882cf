"""What every `carehub` command group shares: its subparsers, its actions, its tables."""

from __future__ import annotations

import argparse
import asyncio
import functools
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeAlias, TypeVar

from psycopg import AsyncConnection

from hub.settings import Settings
from hub.storage.pool import connect

# The object `add_subparsers()` returns; each command group adds its parsers to it. A
# string, because argparse's class is generic only to type checkers.
Subcommands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"
# A command group: adds its subcommands (with `handler` defaults) to the `carehub` parser.
CommandGroup = Callable[[Subcommands], None]

_Result = TypeVar("_Result")

# Bad input (a missing facility, a short password): like argparse's own usage errors.
USAGE_ERROR = 2


def refuse(reason: object) -> int:
    """Tell the operator on stderr why a command refused its input; the usage exit code."""
    print(f"carehub: {reason}", file=sys.stderr)
    return USAGE_ERROR


Command = Callable[[Settings, argparse.Namespace], int]


def refuses(*refused: type[Exception]) -> Callable[[Command], Command]:
    """A command that answers the errors `refused` with refuse(): the operator's input was
    turned down (exit 2), not the command broken (any other error, exit 1)."""

    def wrap(command: Command) -> Command:
        @functools.wraps(command)
        def run(settings: Settings, args: argparse.Namespace) -> int:
            try:
                return command(settings, args)
            except refused as exc:
                return refuse(exc)

        return run

    return wrap


def add_actions(sub: Subcommands, name: str, help_text: str) -> Subcommands:
    """Add `carehub NAME ACTION ...` and return the subparsers its actions go on."""
    group = sub.add_parser(name, help=help_text)
    return group.add_subparsers(dest="action", required=True, metavar="ACTION")


def print_table(header: Sequence[str], rows: Sequence[Sequence[str]], *, empty: str) -> None:
    """Print rows under a header, each column as wide as its widest cell; `empty` if none."""
    if not rows:
        print(empty)
        return
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]
    for row in (header, *rows):
        cells = (cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        print("  ".join(cells).rstrip())


def run_on_database(
    settings: Settings, work: Callable[[AsyncConnection[Any]], Awaitable[_Result]]
) -> _Result:
    """Run one piece of storage work on a connection of its own, and return what it gives."""

    async def run() -> _Result:
        async with await connect(settings) as conn:
            return await work(conn)

    return asyncio.run(run())
