"""`carehub simulate`: register a simulated district, then run its devices on the broker."""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Sequence
from pathlib import Path

from hub.errors import HubError
from hub.importer import RegistryKind, import_file
from hub.settings import Settings
from hub.storage.migrate import migrate
from simulators import SCENARIOS, District, build_district, run_simulation

logger = logging.getLogger(__name__)

REGISTRIES: tuple[RegistryKind, ...] = ("facilities", "zones", "devices")


async def register_district(settings: Settings, district: District, folder: Path) -> None:
    """Import the district's registry through the same CSV path a site's files take."""
    await migrate(settings)
    paths = district.write_csv(folder)
    for kind, path in zip(REGISTRIES, paths, strict=True):
        report = await import_file(settings, kind, path, progress=False)
        if report.errors:
            # The simulator writes its own files; a refused row is a bug, not a user error.
            raise HubError(f"simulated {kind} refused: {report.errors[0]}")
        logger.info("registered %d simulated %s", report.imported, kind)


async def run_simulate(
    settings: Settings,
    *,
    facilities: int,
    scenarios: Sequence[str],
    duration_s: float | None,
    time_scale: float,
    register: bool,
    seed: int,
) -> int:
    """Run `facilities` simulated facilities against the configured broker until done."""
    unknown = [name for name in scenarios if name not in SCENARIOS]
    if unknown:
        known = ", ".join(SCENARIOS)
        raise HubError(f"unknown scenario {', '.join(unknown)}; known scenarios: {known}")
    if not 0 < facilities <= 999:
        raise HubError("--facilities must be between 1 and 999")
    district = build_district(facilities, seed=seed)
    if register:
        with tempfile.TemporaryDirectory(prefix="carehub-district-") as folder:
            await register_district(settings, district, Path(folder))
    print(
        f"simulating {len(district.facilities)} facilities, {len(district.devices)} devices "
        f"on {settings.mqtt.host}:{settings.mqtt.port} under {settings.topic_root}/v1 "
        f"(time x{time_scale:g}); Ctrl-C stops",
        flush=True,
    )
    await run_simulation(
        district,
        mqtt_url=settings.mqtt_url,
        topic_root=settings.topic_root,
        protocol=settings.mqtt_protocol,
        time_scale=time_scale,
        scenarios=scenarios,
        duration_s=duration_s,
        seed=seed,
    )
    return 0
