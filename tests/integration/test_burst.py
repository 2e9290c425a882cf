"""A burst of every device flushing its queue at once is stored whole, on the brokers a
site has: the embedded one (or CI's), and a Mosquitto with its default settings."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import aiomqtt
import psycopg
import pytest

from devices import topics
from hub.runtime import run_hub
from hub.settings import Settings
from tests.fix_hub import (
    DB,
    FACILITY,
    connect_db,
    now_ts,
    raw_client,
    register_buttons,
    rows,
    wait_for,
)
from tests.private_broker import private_mosquitto

pytestmark = [pytest.mark.mqtt, pytest.mark.db, pytest.mark.slow]

# Four publishers, as in the burst (four paho clients, 1,000 devices).
PUBLISHERS = 4
# QoS 1 publishes awaiting their PUBACK at once, per publisher: as fast as the broker takes them.
IN_FLIGHT = 200
STORE_TIMEOUT_S = 120.0


async def _burst(settings: Settings, devices: list[str], per_device: int) -> int:
    """Every device sends `per_device` readings, all at once; the count the broker PUBACKed."""
    readings = [
        (device, seq) for seq in range(1, per_device + 1) for device in devices
    ]  # interleaved, as a reconnected fleet sends them

    async def publish(share: list[tuple[str, int]]) -> int:
        slots = asyncio.Semaphore(IN_FLIGHT)

        async def one(client: aiomqtt.Client, device: str, seq: int) -> None:
            topic = topics.topic(settings.topic_root, FACILITY, device, "telemetry")
            body = {"ts": now_ts(), "seq": seq, "battery": 80, "rssi": -60}
            try:
                await client.publish(topic, json.dumps(body).encode(), qos=1)
            finally:
                slots.release()

        async with raw_client(settings, "burst") as client, asyncio.TaskGroup() as group:
            for device, seq in share:
                await slots.acquire()  # released when that publish is PUBACKed
                group.create_task(one(client, device, seq))
        return len(share)

    shares = [readings[n::PUBLISHERS] for n in range(PUBLISHERS)]
    return sum(await asyncio.gather(*(publish(share) for share in shares)))


async def _stored(db: DB) -> tuple[int, int]:
    """Rows of readings, and distinct (device_id, seq) among them."""
    ((total, distinct),) = await rows(
        db, "SELECT count(*), count(DISTINCT (device_id, seq)) FROM readings"
    )
    return total, distinct


async def test_a_burst_from_500_devices_is_stored_whole_on_the_test_broker(
    migrated: Settings, db: DB
) -> None:
    """The broker of this run (embedded, or CI's Mosquitto): 5,000 readings at full speed."""
    devices = [f"bb-{n:03d}" for n in range(500)]
    await register_buttons(db, devices)
    async with run_hub(migrated) as hub:
        await hub.wait_connected(15)
        sent = await _burst(migrated, devices, per_device=10)

        async def all_stored() -> bool:
            return (await _stored(db))[0] >= sent

        await wait_for(all_stored, timeout=STORE_TIMEOUT_S)
        assert await _stored(db) == (sent, sent)
        assert hub.metrics.spooled_batches == 0


async def test_a_burst_the_hub_cannot_commit_yet_waits_in_a_default_mosquitto(
    migrated: Settings, tmp_path: Path
) -> None:
    """30,000 readings from 1,000 devices while the hub cannot write at all.

    Mosquitto as it comes queues 1,000 messages a session and drops the rest; what it has
    sent and the hub not yet acknowledged is not queued but in flight, up to the hub's
    Receive Maximum. That window must hold the burst: the hub acknowledges only after its
    commit, so until the database takes the rows every message waits in it.
    """
    devices = [f"bd-{n:04d}" for n in range(1000)]
    with private_mosquitto(tmp_path) as url:  # nothing but a listener: the defaults
        settings = migrated.model_copy(update={"mqtt_url": url, "mqtt_protocol": 5})
        db = await connect_db(settings)
        blocker = await psycopg.AsyncConnection.connect(
            settings.database_url, options=f"-c search_path={settings.database_schema},public"
        )
        async with db, blocker:
            await register_buttons(db, devices)
            async with run_hub(settings) as hub:
                await hub.wait_connected(15)
                await blocker.execute("LOCK TABLE readings IN SHARE MODE")
                sent = await _burst(settings, devices, per_device=30)
                assert sent == 30_000
                assert await _stored(db) == (0, 0), "the table was locked"
                await blocker.rollback()

                async def all_stored() -> bool:
                    return (await _stored(db))[0] >= sent

                await wait_for(all_stored, timeout=STORE_TIMEOUT_S)
                assert await _stored(db) == (sent, sent)
                assert hub.metrics.spooled_batches == 0
