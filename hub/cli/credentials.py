"""`carehub devices credentials|revoke|place|unplaced`, `carehub broker setup|sync`, and the
credentials file an installer's `devices import --credentials-out` writes."""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import sys
from pathlib import Path
from typing import Any, TextIO

from psycopg import AsyncConnection

from devices import topics
from hub.cli.commands import Subcommands, add_actions, print_table, refuse, refuses, run_on_database
from hub.cli.users import actor
from hub.credentials import IssuedCredentials, issue, revoke
from hub.credentials.dynsec import site_brokers, sync_registry, write_site
from hub.errors import BrokerAdminError, CredentialError, RegistryError
from hub.settings import Settings
from hub.storage import registry

# The header of the credentials file (README "Connecting a device").
CREDENTIALS_HEADER = (
    "device_id",
    "facility_id",
    "username",
    "client_id",
    "password",
    "topic_prefix",
)


@refuses(CredentialError)
def _cmd_credentials(settings: Settings, args: argparse.Namespace) -> int:
    brokers = site_brokers(settings)
    issued = run_on_database(
        settings,
        lambda conn: issue(conn, args.device_id, actor(), rotate=args.rotate, brokers=brokers),
    )
    if args.json:
        print(json.dumps(issued.as_json()))
        return 0
    print(
        f"device {issued.device_id}: MQTT credentials (shown once: put them in the device now)\n"
        f"  username   {issued.username}\n"
        f"  client id  {issued.device_id}\n"
        f"  password   {issued.password}"
    )
    if args.rotate:
        print("  the old password no longer works; a device connected with it was disconnected")
    return 0


@refuses(CredentialError)
def _cmd_revoke(settings: Settings, args: argparse.Namespace) -> int:
    brokers = site_brokers(settings)
    run_on_database(settings, lambda conn: revoke(conn, args.device_id, actor(), brokers=brokers))
    print(f"device {args.device_id}: credentials revoked; it is disconnected and cannot reconnect")
    return 0


@refuses(RegistryError)
def _cmd_place(settings: Settings, args: argparse.Namespace) -> int:
    device = run_on_database(
        settings, lambda conn: registry.place_device(conn, args.device_id, args.zone)
    )
    print(f"device {args.device_id} placed in zone {args.zone} of {device.facility_id}")
    return 0


def _cmd_unplaced(settings: Settings, args: argparse.Namespace) -> int:
    waiting = run_on_database(settings, lambda conn: registry.list_unplaced(conn, args.facility))
    print_table(
        ("device_id", "facility_id", "type", "last_seen", "credentials issued"),
        [
            (
                device.device_id,
                device.facility_id,
                device.type,
                f"{device.last_seen:%Y-%m-%d %H:%M:%S%z}" if device.last_seen else "never",
                f"{device.credentials_issued_at:%Y-%m-%d %H:%M:%S%z}",
            )
            for device in waiting
        ],
        empty="no devices waiting to be placed",
    )
    return 0


def open_credentials_file(path: Path) -> TextIO:
    """Create the credentials file, readable by its owner only; refuse to overwrite one."""
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError as exc:
        raise CredentialError(
            "conflict", f"{path} exists; the passwords in it would be lost: name a new file"
        ) from exc
    return os.fdopen(descriptor, "w", encoding="utf-8", newline="")


async def issue_for_new_devices(
    conn: AsyncConnection[Any], settings: Settings, device_ids: list[str], out: TextIO
) -> int:
    """Issue credentials to each device of `device_ids` that has none; one CSV row each."""
    writer = csv.writer(out)
    writer.writerow(CREDENTIALS_HEADER)
    brokers = site_brokers(settings)
    issued_count = 0
    for device_id in await registry.without_credentials(conn, device_ids):
        issued: IssuedCredentials = await issue(conn, device_id, actor(), brokers=brokers)
        device = await registry.find_device(conn, device_id)
        facility_id = device.facility_id if device else ""
        writer.writerow(
            (
                device_id,
                facility_id,
                issued.username,
                device_id,
                issued.password,
                topics.topic(settings.topic_root, facility_id, device_id, "").removesuffix("/"),
            )
        )
        issued_count += 1
    out.flush()
    return issued_count


@refuses(BrokerAdminError)
def _cmd_broker_setup(settings: Settings, args: argparse.Namespace) -> int:
    site = write_site(
        Path(args.dir),
        port=args.port,
        root=settings.topic_root,
        plugin=args.plugin,
        bind=args.bind,
    )
    print(
        f"wrote {site.config} and {site.security_file} (the hub's accounts; keep it private)\n"
        f"start the broker:\n  mosquitto -c {site.config}\n"
        "then give the hub these settings (the passwords are shown only now):\n"
        f"  CAREHUB_MQTT_URL={site.mqtt_url}\n"
        f"  CAREHUB_MQTT_ADMIN_URL={site.admin_url}"
    )
    return 0


@refuses(BrokerAdminError)
def _cmd_broker_sync(settings: Settings, _args: argparse.Namespace) -> int:
    report = asyncio.run(sync_registry(settings))
    if report is None:
        return refuse("CAREHUB_MQTT_ADMIN_URL is not set: there is no broker account store to sync")
    print(
        f"broker in step: {report.in_step} devices; roles created {len(report.created_roles)},"
        f" updated {len(report.updated_roles)}; accounts deleted {len(report.deleted)}"
        + (f" ({', '.join(report.deleted[:20])})" if report.deleted else "")
    )
    if report.missing:
        print(
            f"{len(report.missing)} device(s) have credentials but no account at the broker"
            " (the hub keeps only hashes): run `carehub devices credentials ID --rotate` for"
            f" each: {', '.join(report.missing[:20])}",
            file=sys.stderr,
        )
        return 1
    return 0


def add_credential_actions(actions: Subcommands) -> None:
    """Add the credential and placement actions to `carehub devices`."""
    credentials = actions.add_parser(
        "credentials", help="issue a device's MQTT username and password (shown once)"
    )
    credentials.add_argument("device_id")
    credentials.add_argument(
        "--rotate", action="store_true", help="replace credentials in force; the old stop working"
    )
    credentials.add_argument(
        "--json", action="store_true", help='print {"device_id", "username", "password"}'
    )
    credentials.set_defaults(handler=_cmd_credentials)
    revoker = actions.add_parser("revoke", help="revoke a device's credentials and disconnect it")
    revoker.add_argument("device_id")
    revoker.set_defaults(handler=_cmd_revoke)
    place = actions.add_parser("place", help="put a device in a zone of its facility")
    place.add_argument("device_id")
    place.add_argument("--zone", required=True)
    place.set_defaults(handler=_cmd_place)
    unplaced = actions.add_parser(
        "unplaced", help="devices with credentials but no zone, waiting to be placed"
    )
    unplaced.add_argument("--facility", default=None)
    unplaced.set_defaults(handler=_cmd_unplaced)


def add_broker_commands(sub: Subcommands) -> None:
    """Register `carehub broker setup mosquitto` and `carehub broker sync`."""
    actions = add_actions(sub, "broker", "the site broker's accounts (Mosquitto dynamic security)")
    setup = actions.add_parser("setup", help="write a site broker's configuration")
    kinds = setup.add_subparsers(dest="kind", required=True, metavar="BROKER")
    mosquitto = kinds.add_parser(
        "mosquitto", help="mosquitto.conf and a dynamic-security file with the hub's accounts"
    )
    mosquitto.add_argument("--dir", required=True, help="where to write them (created)")
    mosquitto.add_argument("--port", type=int, default=1883)
    mosquitto.add_argument("--bind", default=None, help="listen on this address only")
    mosquitto.add_argument(
        "--plugin", default=None, help="path of mosquitto_dynamic_security.so if not Debian's"
    )
    mosquitto.set_defaults(handler=_cmd_broker_setup)
    sync = actions.add_parser(
        "sync", help="make the broker's device accounts those the hub has issued"
    )
    sync.set_defaults(handler=_cmd_broker_sync)
