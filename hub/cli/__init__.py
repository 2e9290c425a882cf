"""The `carehub` command: its parser, its command groups, and those other packages add.

Each command group lives in a module of its own here and registers its subcommands on the
parser. Packages outside the hub (the benchmarks) add theirs through the
`carehub.commands` entry-point group, so the hub never imports them.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Iterable, Sequence
from importlib.metadata import entry_points

from hub.cli.audit import add_audit_commands
from hub.cli.commands import CommandGroup
from hub.cli.credentials import add_broker_commands
from hub.cli.demo import add_demo_command
from hub.cli.doctor import add_doctor_command
from hub.cli.imports import add_registry_commands
from hub.cli.kpis import add_kpis_command
from hub.cli.report import add_report_commands
from hub.cli.rules import add_rules_commands
from hub.cli.service import add_migrate_command, add_serve_command
from hub.cli.simulate import add_simulate_command
from hub.cli.users import add_user_commands
from hub.cli.vendor_check import add_vendor_check_command
from hub.cli.webhooks import add_webhook_commands
from hub.errors import HubError
from hub.settings import load_settings

logger = logging.getLogger("carehub")

# Installed packages name a `register(subcommands)` function here to add their commands.
COMMAND_GROUPS = "carehub.commands"
# The hub's own groups, in the order `carehub --help` lists them. Discovered groups go
# between the two, where `carehub bench` has always been listed.
BEFORE_DISCOVERED: tuple[CommandGroup, ...] = (
    add_demo_command,
    add_serve_command,
    add_migrate_command,
    add_doctor_command,
    add_registry_commands,
    add_simulate_command,
    add_broker_commands,
    add_vendor_check_command,
)
AFTER_DISCOVERED: tuple[CommandGroup, ...] = (
    add_kpis_command,
    add_report_commands,
    add_audit_commands,
    add_rules_commands,
    add_webhook_commands,
    add_user_commands,
)


def _configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def discovered_command_groups() -> list[CommandGroup]:
    """The command groups installed packages declare under `carehub.commands`, by name."""
    groups: list[CommandGroup] = []
    for entry in sorted(entry_points(group=COMMAND_GROUPS), key=lambda entry: entry.name):
        try:
            groups.append(entry.load())
        except ImportError as exc:
            # A stale install must not take every other command down with it.
            print(f"carehub: the {entry.name} commands are unavailable: {exc}", file=sys.stderr)
    return groups


def build_parser(command_groups: Iterable[CommandGroup] | None = None) -> argparse.ArgumentParser:
    """The argument parser for every `carehub` subcommand (discovered groups by default)."""
    parser = argparse.ArgumentParser(
        prog="carehub",
        description="Monitoring hub for elderly-care and childcare facilities. "
        "Settings come from CAREHUB_* environment variables (see the README).",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    discovered = discovered_command_groups() if command_groups is None else command_groups
    for add_group in (*BEFORE_DISCOVERED, *discovered, *AFTER_DISCOVERED):
        add_group(sub)
    return parser


def main(
    argv: Sequence[str] | None = None, command_groups: Iterable[CommandGroup] | None = None
) -> int:
    """Entry point of the `carehub` console script."""
    args = build_parser(command_groups).parse_args(argv)
    try:
        settings = load_settings()
    except HubError as exc:
        print(f"carehub: bad setting: {exc}", file=sys.stderr)
        return 2
    _configure_logging(settings.log_level)
    try:
        code: int = args.handler(settings, args)
    except KeyboardInterrupt:
        return 130
    except HubError as exc:
        print(f"carehub: {exc}", file=sys.stderr)
        return 1
    return code
