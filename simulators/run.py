"""Run a whole simulated district on a broker, and inject named scenarios into it."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Final

import aiomqtt

from simulators.device import raise_if_cancelled
from simulators.district import District
from simulators.fleet import Fleet
from simulators.scenarios import (
    SCENARIOS,
    ScenarioReport,
    drop_facility,
    flood_facilities,
    run_scenario,
)

logger = logging.getLogger(__name__)

# Scenarios wait for most devices to be online, so the hub sees them against a live district.
ONLINE_SHARE: Final = 0.9
ONLINE_WAIT_S: Final = 15.0
# A short pause between scenarios keeps their alerts apart on the screen.
SCENARIO_GAP_S: Final = 2.0

__all__ = ["SCENARIOS", "run_simulation"]


def _print_report(report: ScenarioReport) -> None:
    print(report, flush=True)


async def _inject(
    fleet: Fleet,
    scenarios: Sequence[str],
    seed: int,
    on_report: Callable[[ScenarioReport], None],
) -> None:
    online = await fleet.wait_online(ONLINE_SHARE, ONLINE_WAIT_S)
    logger.info(
        "%d of %d devices online; injecting %s", online, len(fleet.devices), ", ".join(scenarios)
    )
    rng = random.Random(f"carehub-scenarios:{seed}")
    for index, name in enumerate(scenarios):
        if index:
            await asyncio.sleep(SCENARIO_GAP_S)
        try:
            report = await run_scenario(name, fleet, rng)
        except aiomqtt.MqttError as exc:
            raise_if_cancelled()
            # A scenario that cannot reach the broker is reported, not fatal to the district.
            logger.error("scenario %s failed: %s", name, exc)
            continue
        on_report(report)


async def _floods(
    fleet: Fleet, mean_s: float, seed: int, on_report: Callable[[ScenarioReport], None]
) -> None:
    """Now and then a facility loses power: all its devices drop at once (a flood of alerts)."""
    rng = random.Random(f"carehub-floods:{seed}")
    candidates = flood_facilities(fleet.district)
    while candidates:
        await asyncio.sleep(rng.expovariate(1 / mean_s))
        on_report(drop_facility(fleet, rng.choice(candidates)))


async def run_simulation(
    district: District,
    *,
    mqtt_url: str,
    topic_root: str = "carehub",
    protocol: int = 5,
    time_scale: float = 60.0,
    scenarios: Sequence[str] = (),
    duration_s: float | None = None,
    seed: int = 7,
    telemetry_qos: int = 1,
    start: datetime | None = None,
    on_report: Callable[[ScenarioReport], None] | None = None,
    flood_mean_s: float | None = None,
    passwords: Mapping[str, str] | None = None,
) -> None:
    """Run every device of `district` until cancelled or `duration_s`, injecting `scenarios`.

    With `flood_mean_s`, a random facility's devices all drop now and then, that many
    real seconds apart on average.
    """
    unknown = [name for name in scenarios if name not in SCENARIOS]
    if unknown:
        raise ValueError(f"unknown scenario {', '.join(unknown)}; known: {', '.join(SCENARIOS)}")
    if duration_s is not None and duration_s <= 0:
        raise ValueError("duration_s must be positive")
    if flood_mean_s is not None and not flood_mean_s > 0:
        raise ValueError("flood_mean_s must be positive")
    fleet = Fleet(
        district,
        mqtt_url=mqtt_url,
        topic_root=topic_root,
        protocol=protocol,
        time_scale=time_scale,
        seed=seed,
        telemetry_qos=telemetry_qos,
        start=start,
        passwords=passwords,
    )
    try:
        async with asyncio.timeout(duration_s), asyncio.TaskGroup() as tasks:
            tasks.create_task(fleet.run(), name="fleet")
            if scenarios:
                tasks.create_task(
                    _inject(fleet, scenarios, seed, on_report or _print_report), name="scenarios"
                )
            if flood_mean_s is not None:
                tasks.create_task(
                    _floods(fleet, flood_mean_s, seed, on_report or _print_report), name="floods"
                )
    except TimeoutError:
        logger.info("simulation ended after %.0f s", duration_s)
    sent = sum(sim.messages_sent for sim in fleet.devices.values())
    logger.info("simulated devices sent %d messages", sent)
