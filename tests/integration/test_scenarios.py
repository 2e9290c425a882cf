"""The simulators' scenarios against the hub: what a demo shows, checked end to end.

A small simulated district is registered and its devices run over real MQTT, as
`carehub simulate` runs them; each named scenario is injected and its alert checked in
the database and on the device's `ack` topic. The hub's clock is the test's, so hold
times and escalation need no waiting.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from hub.cli.simulate import register_district
from hub.clock import ManualClock
from hub.runtime import Hub
from hub.settings import Settings
from simulators import scenarios
from simulators.device import SimulatedDevice
from simulators.district import District, build_district
from simulators.fleet import Fleet
from tests.fix_hub import DB, background_task, clocked_hub, escalation_marks, wait_for

pytestmark = [pytest.mark.mqtt, pytest.mark.db, pytest.mark.slow]


@pytest.fixture
async def district(migrated: Settings, tmp_path: Path) -> District:
    """Two simulated facilities, registered in the test's schema."""
    built = build_district(2, seed=11)
    await register_district(migrated, built, tmp_path / "registry")
    return built


@pytest.fixture
async def site(
    migrated: Settings, district: District
) -> AsyncIterator[tuple[Hub, Fleet, ManualClock]]:
    """The hub on a manual clock, and the district's fleet connected to the same broker."""
    clock = ManualClock()
    fleet = Fleet(
        district,
        mqtt_url=migrated.mqtt_url,
        topic_root=migrated.topic_root,
        protocol=5 if migrated.mqtt_protocol == 5 else 311,
        # A simulated minute per real second: counters report every second.
        time_scale=60.0,
        seed=11,
    )
    async with clocked_hub(migrated, clock) as hub, background_task(fleet.run()):
        await fleet.wait_online(share=1.0, timeout_s=30)
        yield hub, fleet, clock


def chosen(fleet: Fleet, report: scenarios.ScenarioReport) -> SimulatedDevice:
    """The device a scenario picked: its id starts the report's summary."""
    return fleet.devices[report.summary.split(" ", 1)[0]]


def acks(sim: SimulatedDevice) -> list[dict[str, Any]]:
    return [body for channel, body in sim.received if channel == "ack"]


async def alert_of(db: DB, kind: str, device_id: str) -> tuple[Any, ...] | None:
    cur = await db.execute(
        "SELECT id, state, priority, latched FROM alerts"
        " WHERE kind = %s AND device_id = %s ORDER BY id DESC LIMIT 1",
        (kind, device_id),
    )
    return await cur.fetchone()


async def raised(db: DB, kind: str, device_id: str) -> tuple[Any, ...]:
    """Wait (15 s at most) for the device's alert of `kind`: its id, state, priority, latched."""

    async def found() -> bool:
        return await alert_of(db, kind, device_id) is not None

    await wait_for(found, timeout=15)
    return await alert_of(db, kind, device_id) or ()


async def test_sos_and_fall_scenarios_raise_their_alerts_and_the_devices_hear_every_state(
    site: tuple[Hub, Fleet, ManualClock], db: DB
) -> None:
    """sos: received → acknowledged → attended → resolved on the button; fall escalates."""
    hub, fleet, clock = site
    button = chosen(fleet, await scenarios.sos(fleet, random.Random(1)))
    sos_id, state, priority, latched = await raised(db, "sos", button.id)
    assert (state, priority, latched) == ("active", "high", True)
    await wait_for(lambda: {"received"} <= {a["state"] for a in acks(button)}, timeout=5)

    await hub.alerts.acknowledge(sos_id, "护理员王")
    await hub.alerts.attend(sos_id, "护理员王", "已到房间")
    await hub.alerts.resolve(sos_id, "护理员王", "real", "协助如厕")

    def button_heard_everything() -> bool:
        mine = [a["state"] for a in acks(button) if a.get("alert_id") == str(sos_id)]
        return mine[-3:] == ["acknowledged", "attended", "resolved"]

    await wait_for(button_heard_everything, timeout=10)

    sensor = chosen(fleet, await scenarios.fall(fleet, random.Random(2)))
    fall_id, state, priority, _ = await raised(db, "fall", sensor.id)
    assert (state, priority) == ("active", "high")
    await wait_for(lambda: any(a.get("alert_id") == str(fall_id) for a in acks(sensor)), timeout=5)
    clock.advance(181)
    await hub.timers.sweep()
    assert await escalation_marks(db, fall_id) == (True, True)


async def test_over_capacity_and_dropout_scenarios_raise_zone_and_offline_alerts(
    site: tuple[Hub, Fleet, ManualClock], db: DB
) -> None:
    """A surge held past 2 min raises over_capacity; a facility's dropout, device_offline each."""
    hub, fleet, clock = site
    counter = chosen(fleet, await scenarios.over_capacity(fleet, random.Random(3)))
    zone = fleet.district.zone(counter.device.zone_id or "")
    capacity = zone.capacity or 0

    async def surge_stored() -> bool:
        cur = await db.execute("SELECT count FROM device_state WHERE device_id = %s", (counter.id,))
        row = await cur.fetchone()
        return row is not None and row[0] is not None and row[0] > capacity

    await wait_for(surge_stored, timeout=30)
    await hub.timers.sweep()
    # The hold is 2 min on the hub's clock; a count older than 2 heartbeats (2 min) is
    # not trusted, so the clock moves in two steps, each followed by a fresh count.
    for _ in range(2):
        clock.advance(61)
        advanced = clock.now()

        async def still_surging(advanced: datetime = advanced) -> bool:
            cur = await db.execute(
                "SELECT last_seen >= %s FROM device_state WHERE device_id = %s",
                (advanced, counter.id),
            )
            row = await cur.fetchone()
            return bool(row and row[0]) and await surge_stored()

        await wait_for(still_surging, timeout=30)
    await hub.timers.sweep()
    subject = f"zone:{counter.device.facility_id}/{zone.zone_id}"
    cur = await db.execute(
        "SELECT state, priority FROM alerts WHERE kind = 'over_capacity' AND subject = %s",
        (subject,),
    )
    assert await cur.fetchall() == [("active", "medium")]

    report = await scenarios.dropout(fleet, random.Random(4))
    facility_id = report.summary.split("(", 1)[1].split(")", 1)[0]
    dropped = {sim.id for sim in fleet.in_facility(facility_id)}
    assert dropped

    async def all_offline() -> bool:
        await hub.timers.sweep()
        cur = await db.execute(
            "SELECT device_id FROM alerts WHERE kind = 'device_offline'"
            " AND state <> 'resolved' AND facility_id = %s",
            (facility_id,),
        )
        return {row[0] for row in await cur.fetchall()} == dropped

    await wait_for(all_offline, timeout=30, step=0.5)
