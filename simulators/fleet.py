"""Every simulated device of a district, built once and run together on one broker."""

from __future__ import annotations

import asyncio
import logging
import random
import re
from collections.abc import Mapping
from datetime import datetime

from devices.mqtt import parse_mqtt_url
from devices.registry_files import Zone
from simulators.behaviour import SimClock, make_behaviour
from simulators.device import Link, SimulatedDevice, first_seq
from simulators.district import District

logger = logging.getLogger(__name__)

# Connections are opened over the first second or so, not all in the same instant.
CONNECT_SPREAD_S = 1.5
_ROOT = re.compile(r"[^#+/\x00]+(/[^#+/\x00]+)*")


class Fleet:
    """The simulated devices of one district, with the clock and broker they share."""

    def __init__(
        self,
        district: District,
        *,
        mqtt_url: str,
        topic_root: str = "carehub",
        protocol: int = 5,
        time_scale: float = 60.0,
        seed: int = 7,
        telemetry_qos: int = 1,
        start: datetime | None = None,
        passwords: Mapping[str, str] | None = None,
    ) -> None:
        """`passwords`: each device's own MQTT password, by device id (SPEC §7)."""
        if not _ROOT.fullmatch(topic_root):
            raise ValueError(f"topic root {topic_root!r} must be non-empty and hold no wildcards")
        self.district = district
        self.link = Link(parse_mqtt_url(mqtt_url), topic_root, protocol, telemetry_qos)
        self.seed = seed
        self.clock = SimClock(time_scale, start)
        zones: dict[str, Zone] = {zone.zone_id: zone for zone in district.zones}
        now = self.clock.now()
        seq_start = first_seq()
        spread = random.Random(f"carehub-connect:{seed}")
        self.devices: dict[str, SimulatedDevice] = {}
        for device in district.devices:
            rng = random.Random(f"carehub-device:{seed}:{device.id}")
            zone = zones.get(device.zone_id) if device.zone_id else None
            behaviour = make_behaviour(device, zone, rng, now)
            behaviour.day_clock = self.clock.wall
            self.devices[device.id] = SimulatedDevice(
                device,
                behaviour,
                link=self.link,
                clock=self.clock,
                seq_start=seq_start,
                connect_delay_s=spread.uniform(0, CONNECT_SPREAD_S),
                password=(passwords or {}).get(device.id),
            )

    def of_type(self, device_type: str) -> list[SimulatedDevice]:
        """The devices of one catalogue type, in registry order."""
        return [sim for sim in self.devices.values() if sim.device.type == device_type]

    def in_facility(self, facility_id: str) -> list[SimulatedDevice]:
        """The devices of one facility, in registry order."""
        return [sim for sim in self.devices.values() if sim.device.facility_id == facility_id]

    def online(self) -> int:
        """How many devices are connected now."""
        return sum(1 for sim in self.devices.values() if sim.connected.is_set())

    async def wait_online(self, share: float = 0.9, timeout_s: float = 15.0) -> int:
        """Wait until `share` of the devices are connected (or `timeout_s`); return how many are."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        waiting = {asyncio.ensure_future(sim.connected.wait()) for sim in self.devices.values()}
        try:
            while waiting and self.online() < share * len(self.devices):
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                _, waiting = await asyncio.wait(
                    waiting, timeout=remaining, return_when=asyncio.FIRST_COMPLETED
                )
        finally:
            for waiter in waiting:
                waiter.cancel()
            await asyncio.gather(*waiting, return_exceptions=True)
        return self.online()

    async def run(self) -> None:
        """Run every device until cancelled; each keeps its own connection and reconnects."""
        logger.info(
            "simulating %d devices of %d facilities in %s on %s:%d (root %r)",
            len(self.devices),
            len(self.district.facilities),
            self.district.name,
            self.link.target.host,
            self.link.target.port,
            self.link.topic_root,
        )
        async with asyncio.TaskGroup() as tasks:
            for sim in self.devices.values():
                tasks.create_task(sim.run(), name=f"device {sim.id}")
