"""`carehub facilities|zones|devices import`, and the devices heard but not registered."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import TextIO

from hub.cli.commands import Subcommands, add_actions, print_table
from hub.settings import Settings

REGISTRIES = ("facilities", "zones", "devices")
# Enough to fix a file in one pass; a file wrong on every row would flood the terminal.
ERRORS_SHOWN = 200


def _cmd_import(settings: Settings, args: argparse.Namespace) -> int:
    from hub.importer import import_file

    credentials_out = getattr(args, "credentials_out", None)
    out = None
    if credentials_out is not None:
        from hub.cli.commands import refuse
        from hub.cli.credentials import open_credentials_file
        from hub.errors import CredentialError

        # Before the import: a file that exists is refused before anything changes.
        try:
            out = open_credentials_file(Path(credentials_out))
        except CredentialError as exc:
            return refuse(exc)
    try:
        report = asyncio.run(
            import_file(settings, args.registry, Path(args.file), progress=not args.quiet)
        )
        if out is not None:
            issued = _issue_credentials(settings, Path(args.file), out)
            print(
                f"devices: credentials issued to {issued} new devices, written to {credentials_out}"
            )
    finally:
        if out is not None:
            out.close()
    for error in report.errors[:ERRORS_SHOWN]:
        print(f"{args.file}: {error}", file=sys.stderr)
    if len(report.errors) > ERRORS_SHOWN:
        print(
            f"{args.file}: ... and {len(report.errors) - ERRORS_SHOWN} more errors",
            file=sys.stderr,
        )
    print(f"{args.registry}: {report.imported} rows imported, {report.refused} rows refused")
    return 1 if report.errors else 0


def _issue_credentials(settings: Settings, path: Path, out: TextIO) -> int:
    """Credentials for every device of the file that is registered and has none yet."""
    from hub.cli.commands import run_on_database
    from hub.cli.credentials import issue_for_new_devices
    from hub.importer import DeviceRow, parse_rows

    device_ids = [row.id for row in parse_rows("devices", path) if isinstance(row, DeviceRow)]
    return run_on_database(
        settings, lambda conn: issue_for_new_devices(conn, settings, device_ids, out)
    )


def _cmd_pending(settings: Settings, _args: argparse.Namespace) -> int:
    from hub.storage.registry import list_pending

    pending = asyncio.run(list_pending(settings))
    print_table(
        ("device_id", "facility_id", "first_seen", "last_seen", "messages", "last_topic"),
        [
            (
                p.device_id,
                p.facility_id,
                f"{p.first_seen:%Y-%m-%d %H:%M:%S%z}",
                f"{p.last_seen:%Y-%m-%d %H:%M:%S%z}",
                str(p.messages),
                p.last_topic,
            )
            for p in pending
        ],
        empty="no pending devices",
    )
    from hub.cli.commands import run_on_database
    from hub.storage.registry import list_unplaced

    unplaced = run_on_database(settings, list_unplaced)
    if unplaced:
        print(
            f"{len(unplaced)} registered device(s) with credentials wait to be placed in a zone:"
            " see `carehub devices unplaced`, then `carehub devices place ID --zone Z`"
        )
    return 0


def _cmd_register(settings: Settings, args: argparse.Namespace) -> int:
    from hub.storage.registry import register_pending

    asyncio.run(register_pending(settings, args.device_id, args.type, args.zone, args.heartbeat_s))
    print(f"device {args.device_id} registered as {args.type}")
    return 0


def add_registry_commands(sub: Subcommands) -> None:
    """Register `facilities`, `zones` and `devices` on the subcommands."""
    for registry in REGISTRIES:
        actions = add_actions(sub, registry, f"the {registry} registry")
        importer = actions.add_parser("import", help=f"import {registry} from CSV or XLSX")
        importer.add_argument("file")
        importer.add_argument("--quiet", action="store_true", help="no progress bar")
        importer.set_defaults(handler=_cmd_import, registry=registry)
        if registry == "devices":
            importer.add_argument(
                "--credentials-out",
                metavar="CREDS.csv",
                default=None,
                help="issue MQTT credentials to every device without any, and write them here"
                " (one row per device; the file is created readable by you only)",
            )
            _add_pending_actions(actions)
            from hub.cli.credentials import add_credential_actions

            add_credential_actions(actions)


def _add_pending_actions(actions: Subcommands) -> None:
    from devices import CATALOGUE

    pending = actions.add_parser("pending", help="devices heard but not registered")
    pending.set_defaults(handler=_cmd_pending)
    register = actions.add_parser("register", help="register a pending device")
    register.add_argument("device_id")
    register.add_argument("--type", required=True, choices=sorted(CATALOGUE))
    register.add_argument("--zone", default=None, help="zone id at the device's facility")
    register.add_argument(
        "--heartbeat-s",
        type=int,
        default=None,
        help="seconds between heartbeats (default: the type's)",
    )
    register.set_defaults(handler=_cmd_register)
