"""Fixtures for a running hub: its settings, a registered facility, devices that speak MQTT."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, TypeVar

import aiomqtt
import psycopg
import pytest

from devices import mqtt, topics
from hub.clock import ManualClock
from hub.models import Reading
from hub.runtime import Hub, run_hub
from hub.settings import Settings, load_settings
from hub.storage.migrate import migrate
from hub.storage.writer import STATE_FIELDS
from tests.postgres_proxy import PostgresProxy

FACILITY = "f-sun"
OTHER_FACILITY = "f-moon"
DEVICES = {
    "fs-1": "fall_sensor",
    "eb-1": "emergency_button",
    "oc-1": "occupancy_counter",
}


CHINA = timezone(timedelta(hours=8))

T = TypeVar("T")


def now_ts(offset: timedelta = timedelta()) -> str:
    """An RFC 3339 time with a +08:00 offset, as a device in Wenzhou would send it."""
    return (datetime.now(CHINA) + offset).isoformat(timespec="milliseconds")


def build_settings(
    *,
    mqtt_url: str,
    mqtt_protocol: int,
    database_url: str,
    schema: str,
    topic_root: str,
    spool_dir: Path,
    **overrides: Any,
) -> Settings:
    """Settings for a hub under test: its own schema, topic root, client id and spool."""
    values: dict[str, Any] = {
        "mqtt_url": mqtt_url,
        "mqtt_protocol": mqtt_protocol,
        "mqtt_client_id": f"hub-{topic_root}",
        "mqtt_session_expiry_s": 600,
        "database_url": database_url,
        "database_schema": schema,
        "topic_root": topic_root,
        "spool_dir": spool_dir,
        "batch_interval_ms": 10,
        # Plain PostgreSQL unless asked: CAREHUB_TEST_TIMESCALEDB=auto runs the whole suite
        # on hypertables when the test database has the extension.
        "timescaledb": os.environ.get("CAREHUB_TEST_TIMESCALEDB", "off"),
    }
    values.update(overrides)
    return load_settings(**values)


# Nothing listens on this port: a test that only migrates never talks to a broker.
NO_BROKER = "mqtt://127.0.0.1:1"


def database_only_settings(
    database_url: str, schema: str, topic_root: str, tmp_path: Path, **overrides: Any
) -> Settings:
    """Settings for a test of the database alone (migrations, retention): no broker."""
    return build_settings(
        mqtt_url=NO_BROKER,
        mqtt_protocol=5,
        database_url=database_url,
        schema=schema,
        topic_root=topic_root,
        spool_dir=tmp_path / "spool",
        **overrides,
    )


@pytest.fixture
def hub_settings(
    mqtt_url: str,
    mqtt_protocol: int,
    database_url: str,
    db_schema: str,
    topic_root: str,
    tmp_path: Path,
) -> Settings:
    """Settings of the hub under test."""
    return build_settings(
        mqtt_url=mqtt_url,
        mqtt_protocol=mqtt_protocol,
        database_url=database_url,
        schema=db_schema,
        topic_root=topic_root,
        spool_dir=tmp_path / "spool",
    )


# A test's own connection to the hub's database: rows come back as plain tuples.
DB = psycopg.AsyncConnection[tuple[Any, ...]]


async def connect_db(settings: Settings) -> DB:
    """An autocommit connection in the hub's schema, for assertions."""
    return await psycopg.AsyncConnection.connect(
        settings.database_url,
        autocommit=True,
        options=f"-c search_path={settings.database_schema},public",
    )


async def rows(db: DB, query: str, *params: object) -> list[tuple[Any, ...]]:
    """Every row of a query."""
    cur = await db.execute(query.encode(), params or None)
    return await cur.fetchall()


async def register_buttons(db: DB, device_ids: list[str], heartbeat_s: int = 60) -> None:
    """Register more emergency buttons in room-101 of FACILITY (the site's first)."""
    async with db.cursor() as cur:
        await cur.executemany(
            "INSERT INTO devices (id, facility_id, type, zone_id, heartbeat_s)"
            " VALUES (%s, %s, 'emergency_button', 'room-101', %s)",
            [(device_id, FACILITY, heartbeat_s) for device_id in device_ids],
        )


async def register_site(settings: Settings) -> None:
    """Register two facilities, zones and one device of each type at the first."""
    async with await connect_db(settings) as conn:
        await conn.execute(
            "INSERT INTO facilities"
            " (id, name, kind, district, latitude, longitude, beds, childcare_places)"
            " VALUES (%s, '阳光托育养老中心', 'integrated', '鹿城区', 28.01, 120.67, 40, 30),"
            "        (%s, '月亮湾颐养院', 'elderly', '鹿城区', 28.02, 120.69, 60, 0)",
            (FACILITY, OTHER_FACILITY),
        )
        await conn.execute(
            "INSERT INTO zones (facility_id, zone_id, name, kind, capacity, class_type) VALUES"
            " (%s, 'room-101', '101 室', 'room', 2, NULL),"
            " (%s, 'class-a', '托小班 A', 'class', 15, '托小班')",
            (FACILITY, FACILITY),
        )
        for device_id, device_type in DEVICES.items():
            zone = "class-a" if device_type == "occupancy_counter" else "room-101"
            await conn.execute(
                "INSERT INTO devices (id, facility_id, type, zone_id, heartbeat_s)"
                " VALUES (%s, %s, %s, %s, 60)",
                (device_id, FACILITY, device_type, zone),
            )


async def escalation_marks(
    db: psycopg.AsyncConnection[tuple[Any, ...]], alert_id: int
) -> tuple[bool, bool]:
    """Whether the alert's manager was notified again, and whether it is flagged overdue."""
    cur = await db.execute(
        "SELECT renotified_at IS NOT NULL, overdue_at IS NOT NULL FROM alerts WHERE id = %s",
        (alert_id,),
    )
    row = await cur.fetchone()
    assert row is not None, f"no alert {alert_id}"
    return bool(row[0]), bool(row[1])


@pytest.fixture
async def migrated(hub_settings: Settings) -> Settings:
    """The hub's schema, migrated, with a registered site."""
    await migrate(hub_settings)
    await register_site(hub_settings)
    return hub_settings


@pytest.fixture
async def proxy(migrated: Settings) -> AsyncIterator[PostgresProxy]:
    """A TCP proxy in front of the migrated database, for a test to cut (SPEC §8)."""
    async with PostgresProxy(migrated.database_url) as server:
        yield server


@pytest.fixture
async def running_hub(migrated: Settings) -> AsyncIterator[Hub]:
    """A hub running in this event loop, connected and subscribed."""
    async with run_hub(migrated) as hub:
        await hub.wait_connected(15)
        yield hub


@pytest.fixture
def clock() -> ManualClock:
    """The hub's clock, moved forward by the test."""
    return ManualClock()


@contextlib.asynccontextmanager
async def clocked_hub(settings: Settings, clock: ManualClock) -> AsyncIterator[Hub]:
    """A hub on `clock`, connected, its live feed listening and its timers leading."""
    async with run_hub(settings, clock=clock) as hub:
        await hub.wait_connected(15)
        await asyncio.wait_for(hub.live.listening.wait(), 15)
        await asyncio.wait_for(hub.timers.leader.wait(), 15)
        yield hub


@pytest.fixture
async def db(migrated: Settings) -> AsyncIterator[DB]:
    """A connection to the hub's schema for assertions."""
    async with await connect_db(migrated) as conn:
        yield conn


@dataclass
class FakeDevice:
    """A device under test's control: publishes raw bytes, collects `rejected` and `ack`."""

    client: aiomqtt.Client
    root: str
    facility_id: str
    device_id: str
    rejections: list[dict[str, Any]] = field(default_factory=list)
    acks: list[dict[str, Any]] = field(default_factory=list)
    seq: int = 0

    def topic(self, channel: str) -> str:
        """This device's topic for `channel`."""
        return topics.topic(self.root, self.facility_id, self.device_id, channel)

    def message(self, **fields: Any) -> bytes:
        """A valid-looking payload with the next seq and the current time."""
        self.seq += 1
        return json.dumps({"ts": now_ts(), "seq": self.seq, **fields}).encode()

    async def send(self, channel: str, payload: bytes | str, qos: int = 1) -> None:
        """Publish raw bytes on one of this device's channels."""
        await self.client.publish(self.topic(channel), payload, qos=qos)


async def wait_for(
    probe: Callable[[], Awaitable[bool]] | Callable[[], bool],
    timeout: float = 10.0,
    step: float = 0.05,
) -> None:
    """Poll `probe` until it is true, or fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = probe()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            pytest.fail(
                f"condition not met within {timeout} s: {getattr(probe, '__name__', probe)}"
            )
        await asyncio.sleep(step)


@contextlib.asynccontextmanager
async def background_task(coroutine: Coroutine[Any, Any, T]) -> AsyncIterator[asyncio.Task[T]]:
    """Run `coroutine` as a task while the block runs; then cancel it and await its end."""
    task = asyncio.create_task(coroutine)
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@contextlib.asynccontextmanager
async def fake_device(
    settings: Settings, device_id: str, facility_id: str = FACILITY
) -> AsyncIterator[FakeDevice]:
    """Connect as a device and listen on its `rejected` and `ack` topics."""
    client = _client(settings, f"dev-{device_id}-{uuid.uuid4().hex[:6]}")
    async with client:
        device = FakeDevice(client, settings.topic_root, facility_id, device_id)
        await client.subscribe(device.topic("rejected"), qos=1)
        await client.subscribe(device.topic("ack"), qos=1)

        async def listen() -> None:
            async for message in client.messages:
                body = json.loads(bytes(message.payload))  # type: ignore[arg-type]
                target = (
                    device.rejections if message.topic.value.endswith("/rejected") else device.acks
                )
                target.append(body)

        async with background_task(listen()):
            yield device


@contextlib.asynccontextmanager
async def raw_client(settings: Settings, name: str = "raw") -> AsyncIterator[aiomqtt.Client]:
    """A plain MQTT client on the test broker (clean session)."""
    async with _client(settings, f"{name}-{uuid.uuid4().hex[:6]}") as client:
        yield client


def _client(settings: Settings, identifier: str) -> aiomqtt.Client:
    target = settings.mqtt
    protocol = (
        aiomqtt.ProtocolVersion.V5 if settings.mqtt_protocol == 5 else aiomqtt.ProtocolVersion.V311
    )
    return mqtt.Client(
        target.host,
        target.port,
        identifier=identifier,
        protocol=protocol,
        username=target.username,
        password=target.password,
    )


def reading_at(device_id: str, seq: int, at: datetime, **measured: Any) -> Reading:
    """A decoded telemetry message of FACILITY sent at `at`, with the measured fields given
    (battery, presence, count, staff, rssi; the others None), as the batch writer gets it."""
    fields = dict.fromkeys(STATE_FIELDS) | measured
    return Reading(
        device_id=device_id,
        facility_id=FACILITY,
        zone_id=None,
        seq=seq,
        ts=at,
        received_at=datetime.now(CHINA),
        payload={"ts": at.isoformat(), "seq": seq, **measured},
        **fields,
    )
