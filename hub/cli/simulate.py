"""`carehub simulate`: register a simulated district, then run its devices on the broker."""

from __future__ import annotations

import argparse
import asyncio
import logging
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TypedDict

from hub.cli.commands import Subcommands
from hub.errors import HubError
from hub.settings import Settings

if TYPE_CHECKING:
    from hub.importer import RegistryKind
    from simulators import District

logger = logging.getLogger(__name__)

REGISTRIES: tuple[RegistryKind, ...] = ("facilities", "zones", "devices")


class SimulatorBroker(TypedDict):
    """run_simulation's broker keywords."""

    mqtt_url: str
    topic_root: str
    protocol: int


def simulator_broker(settings: Settings) -> SimulatorBroker:
    """Where the simulated devices publish: the hub's own broker, topic root and MQTT version."""
    return {
        "mqtt_url": settings.mqtt_url,
        "topic_root": settings.topic_root,
        "protocol": settings.mqtt_protocol,
    }


async def register_district(settings: Settings, district: District, folder: Path) -> None:
    """Import the district's registry through the same CSV path a site's files take."""
    from hub.importer import import_file
    from hub.storage.migrate import migrate

    await migrate(settings)
    paths = district.write_csv(folder)
    for kind, path in zip(REGISTRIES, paths, strict=True):
        report = await import_file(settings, kind, path, progress=False)
        if report.errors:
            # The simulator writes its own files; a refused row is a bug, not a user error.
            raise HubError(f"simulated {kind} refused: {report.errors[0]}")
        logger.info("registered %d simulated %s", report.imported, kind)


async def issue_district_credentials(settings: Settings, district: District) -> dict[str, str]:
    """Fresh MQTT credentials for every simulated device (rotated on each run), by device id.

    The hub keeps only hashes, so a run that starts the devices gives them new passwords;
    a site broker with dynamic security hears of each one.
    """
    from hub.cli.users import actor
    from hub.credentials import issue
    from hub.credentials.dynsec import site_brokers
    from hub.storage.pool import connect

    brokers = site_brokers(settings)
    passwords: dict[str, str] = {}
    async with await connect(settings) as conn:
        for device in district.devices:
            issued = await issue(conn, device.id, actor(), rotate=True, brokers=brokers)
            passwords[device.id] = issued.password
    return passwords


async def run_simulate(
    settings: Settings,
    *,
    facilities: int,
    scenarios: Sequence[str],
    duration_s: float | None,
    time_scale: float,
    register: bool,
    seed: int,
    shared_account: bool = False,
) -> int:
    """Run `facilities` simulated facilities against the configured broker until done."""
    from simulators import SCENARIOS, build_demo_district, run_simulation

    unknown = [name for name in scenarios if name not in SCENARIOS]
    if unknown:
        known = ", ".join(SCENARIOS)
        raise HubError(f"unknown scenario {', '.join(unknown)}; known scenarios: {known}")
    if not 0 < facilities <= 999:
        raise HubError("--facilities must be between 1 and 999")
    # The same district as `carehub demo`: 鹿城区 and 瓯海区.
    district = build_demo_district(facilities, seed=seed)
    passwords: dict[str, str] | None = None
    if register:
        with tempfile.TemporaryDirectory(prefix="carehub-district-") as folder:
            await register_district(settings, district, Path(folder))
        if not shared_account:
            passwords = await issue_district_credentials(settings, district)
    print(
        f"simulating {len(district.facilities)} facilities, {len(district.devices)} devices "
        f"on {settings.mqtt.host}:{settings.mqtt.port} under {settings.topic_root}/v1 "
        f"(time x{time_scale:g}); Ctrl-C stops",
        flush=True,
    )
    await run_simulation(
        district,
        **simulator_broker(settings),
        time_scale=time_scale,
        scenarios=scenarios,
        duration_s=duration_s,
        seed=seed,
        passwords=passwords,
    )
    return 0


# run_simulate's keywords; the parser stores each option under the same name.
SIMULATE_OPTIONS = (
    "facilities",
    "scenarios",
    "duration_s",
    "time_scale",
    "register",
    "seed",
    "shared_account",
)


def _cmd_simulate(settings: Settings, args: argparse.Namespace) -> int:
    options = {name: getattr(args, name) for name in SIMULATE_OPTIONS}
    return asyncio.run(run_simulate(settings, **options))


def add_simulate_command(sub: Subcommands) -> None:
    """Register `carehub simulate` on the subcommands."""
    simulate = sub.add_parser("simulate", help="simulated devices on the configured broker")
    simulate.add_argument("--facilities", type=int, default=20)
    simulate.add_argument(
        "--scenario",
        dest="scenarios",
        metavar="SCENARIO",
        action="append",
        default=[],
        help="inject a scenario: fall, sos, over_capacity, dropout, garbage (repeatable)",
    )
    simulate.add_argument(
        "--duration",
        dest="duration_s",
        metavar="DURATION",
        type=float,
        default=None,
        help="seconds to run (default: until Ctrl-C)",
    )
    simulate.add_argument("--time-scale", type=float, default=30.0)
    simulate.add_argument("--seed", type=int, default=7)
    simulate.add_argument(
        "--no-register",
        dest="register",
        action="store_false",
        help="do not register the simulated district in the database first (nor issue its"
        " devices credentials: they connect with CAREHUB_MQTT_URL's account)",
    )
    simulate.add_argument(
        "--shared-account",
        action="store_true",
        help="connect every device with CAREHUB_MQTT_URL's account instead of issuing each"
        " its own credentials (a broker with one shared account)",
    )
    simulate.set_defaults(handler=_cmd_simulate)
