"""End to end over real MQTT into a real PostgreSQL: storage, idempotency, rejections."""

from __future__ import annotations

import asyncio
import json
import socket
from datetime import datetime, timedelta
from typing import Any

import psycopg
import pytest

from devices import topics
from hub.ingest import make_client
from hub.models import Reading
from hub.runtime import Hub
from hub.settings import Settings
from hub.storage.pool import create_pool
from hub.storage.writer import BatchWriter
from tests.fix_hub import (
    CHINA,
    DB,
    FACILITY,
    OTHER_FACILITY,
    fake_device,
    now_ts,
    raw_client,
    reading_at,
    wait_for,
)

pytestmark = [pytest.mark.mqtt, pytest.mark.db]


async def scalar(db: DB, query: str, *params: Any) -> Any:
    """The first column of the first row of a query."""
    cur = await db.execute(query.encode(), params)
    row = await cur.fetchone()
    assert row is not None
    return row[0]


VALID_MESSAGES = [
    (
        "fs-1",
        "event",
        {"event": "fall_detected", "confidence": 0.92, "zone": "room-101", "posture": "lying"},
    ),
    ("fs-1", "event", {"event": "fall_cleared"}),
    ("fs-1", "event", {"event": "dwell", "seconds": 900}),
    (
        "fs-1",
        "telemetry",
        {"presence": True, "battery": 88.5, "rssi": -61, "vendor_extra": {"fw": "1.2"}},
    ),
    ("eb-1", "event", {"event": "pressed", "button": "pull_cord"}),
    ("eb-1", "event", {"event": "pressed", "button": "red", "test": True}),
    ("eb-1", "event", {"event": "cancelled"}),
    ("eb-1", "telemetry", {"battery": 14, "rssi": -70}),
    ("oc-1", "telemetry", {"count": 12, "staff": 3, "zone": "class-a"}),
]


async def test_every_device_type_is_stored_exactly_once_even_when_published_twice(
    running_hub: Hub, db: DB
) -> None:
    """Each device type's valid events and telemetry land once, though each is published twice."""
    devices = {}
    for device_id in ("fs-1", "eb-1", "oc-1"):
        devices[device_id] = fake_device(running_hub.settings, device_id)
    entered = {device_id: await cm.__aenter__() for device_id, cm in devices.items()}
    try:
        for device_id, channel, fields in VALID_MESSAGES:
            device = entered[device_id]
            payload = device.message(**fields)
            await device.send(channel, payload)
            await device.send(channel, payload)  # the same message, redelivered

        async def all_stored() -> bool:
            events = await scalar(db, "SELECT count(*) FROM events")
            readings = await scalar(db, "SELECT count(*) FROM readings")
            return bool(events == 6 and readings == 3)

        await wait_for(all_stored)
        assert await scalar(db, "SELECT count(*) FROM events") == 6
        assert await scalar(db, "SELECT count(DISTINCT (device_id, seq)) FROM events") == 6
        assert await scalar(db, "SELECT count(*) FROM readings") == 3
        assert await scalar(db, "SELECT count(*) FROM dead_letters") == 0
        assert all(not device.rejections for device in entered.values())
        # Unknown fields are kept, not refused.
        extra = await scalar(
            db, "SELECT payload->'vendor_extra'->>'fw' FROM readings WHERE device_id = 'fs-1'"
        )
        assert extra == "1.2"
        confidence = await scalar(
            db, "SELECT (payload->>'confidence')::float FROM events WHERE event = 'fall_detected'"
        )
        assert confidence == pytest.approx(0.92)
        # The device's latest state is kept current.
        cur = await db.execute(
            "SELECT device_id, battery, presence, count, staff, online FROM device_state ORDER BY 1"
        )
        state = {row[0]: row[1:] for row in await cur.fetchall()}
        assert state["fs-1"] == (88.5, True, None, None, True)
        assert state["eb-1"][0] == 14
        assert state["oc-1"][2:4] == (12, 3)
    finally:
        for cm in devices.values():
            await cm.__aexit__(None, None, None)


async def test_status_and_last_will_update_online(running_hub: Hub, db: DB) -> None:
    """A retained status message sets the device online; its last will sets it offline."""
    async with fake_device(running_hub.settings, "eb-1") as device:
        await device.send("status", b'{"online": true}')
        await wait_for(lambda: _online(db, "eb-1", True))
        await device.send("status", b'{"online": false}')
        await wait_for(lambda: _online(db, "eb-1", False))
    assert await scalar(db, "SELECT count(*) FROM status_changes WHERE device_id = 'eb-1'") == 2


async def _online(db: DB, device_id: str, expected: bool) -> bool:
    cur = await db.execute("SELECT online FROM device_state WHERE device_id = %s", (device_id,))
    row = await cur.fetchone()
    return row is not None and row[0] is expected


def _crafted(ts: str) -> list[tuple[str, str, str, bytes, str]]:
    """(reason, facility, device, payload, channel) for every SPEC §3 reason code."""
    return [
        ("not_json", FACILITY, "eb-1", b"{not json", "event"),
        ("not_json", FACILITY, "eb-1", b"\xff\xfe\x00garbage", "event"),
        ("not_object", FACILITY, "eb-1", b"[1, 2, 3]", "event"),
        (
            "too_large",
            FACILITY,
            "eb-1",
            json.dumps(
                {"ts": ts, "seq": 1, "event": "pressed", "button": "red", "pad": "x" * 17_000}
            ).encode(),
            "event",
        ),
        (
            "unknown_device",
            FACILITY,
            "ghost-9",
            json.dumps({"ts": ts, "seq": 1}).encode(),
            "telemetry",
        ),
        (
            "wrong_facility",
            OTHER_FACILITY,
            "eb-1",
            json.dumps({"ts": ts, "seq": 1}).encode(),
            "telemetry",
        ),
        (
            "bad_field",
            FACILITY,
            "eb-1",
            json.dumps({"ts": ts, "seq": -1, "event": "cancelled"}).encode(),
            "event",
        ),
        (
            "bad_field",
            FACILITY,
            "fs-1",
            json.dumps({"ts": ts, "seq": 5, "event": "fall_detected", "confidence": 1.7}).encode(),
            "event",
        ),
        (
            "bad_field",
            FACILITY,
            "oc-1",
            json.dumps({"ts": ts, "seq": 5, "count": "many"}).encode(),
            "telemetry",
        ),
        (
            "bad_field",
            FACILITY,
            "eb-1",
            json.dumps({"ts": "yesterday", "seq": 5, "event": "cancelled"}).encode(),
            "event",
        ),
        (
            "bad_time",
            FACILITY,
            "eb-1",
            json.dumps(
                {"ts": now_ts(timedelta(hours=-25)), "seq": 6, "event": "cancelled"}
            ).encode(),
            "event",
        ),
        (
            "bad_time",
            FACILITY,
            "eb-1",
            json.dumps(
                {"ts": now_ts(timedelta(minutes=10)), "seq": 7, "event": "cancelled"}
            ).encode(),
            "event",
        ),
        (
            "unknown_event",
            FACILITY,
            "eb-1",
            json.dumps({"ts": ts, "seq": 8, "event": "exploded"}).encode(),
            "event",
        ),
    ]


async def test_each_reason_code_comes_back_on_rejected_and_is_dead_lettered(
    running_hub: Hub, db: DB
) -> None:
    """Every crafted bad message gets its SPEC §3 reason code on `rejected` and a dead letter."""
    crafted = _crafted(now_ts())
    async with (
        fake_device(running_hub.settings, "eb-1") as eb,
        fake_device(running_hub.settings, "eb-1", OTHER_FACILITY) as eb_elsewhere,
        fake_device(running_hub.settings, "fs-1") as fs,
        fake_device(running_hub.settings, "oc-1") as oc,
        fake_device(running_hub.settings, "ghost-9") as ghost,
    ):
        listeners = {
            ("eb-1", FACILITY): eb,
            ("eb-1", OTHER_FACILITY): eb_elsewhere,
            ("fs-1", FACILITY): fs,
            ("oc-1", FACILITY): oc,
            ("ghost-9", FACILITY): ghost,
        }
        for _, facility, device_id, payload, channel in crafted:
            await listeners[(device_id, facility)].client.publish(
                topics.topic(running_hub.settings.topic_root, facility, device_id, channel),
                payload,
                qos=1,
            )

        def all_replied() -> bool:
            return sum(len(d.rejections) for d in listeners.values()) == len(crafted)

        await wait_for(all_replied)
        replied = sorted(r["reason"] for d in listeners.values() for r in d.rejections)
        assert replied == sorted(reason for reason, *_ in crafted)
        for rejection in (r for d in listeners.values() for r in d.rejections):
            assert rejection["topic"].startswith(topics.prefix(running_hub.settings.topic_root))
            assert rejection["detail"]
            assert rejection["received_at"]
        # bad_field names the field.
        details = {
            r["detail"].split(":")[0]
            for r in eb.rejections + fs.rejections + oc.rejections
            if r["reason"] == "bad_field"
        }
        assert details == {"seq", "confidence", "count", "ts"}

        async def all_dead_lettered() -> bool:
            return bool(await scalar(db, "SELECT count(*) FROM dead_letters") == len(crafted))

        await wait_for(all_dead_lettered)
    cur = await db.execute("SELECT reason, count(*) FROM dead_letters GROUP BY reason")
    by_reason = dict(await cur.fetchall())
    assert set(by_reason) == {reason for reason, *_ in crafted}
    assert (
        await scalar(db, "SELECT max(payload_size) FROM dead_letters WHERE reason = 'too_large'")
        > 16 * 1024
    )
    assert (
        await scalar(db, "SELECT facility_id FROM pending_devices WHERE device_id = 'ghost-9'")
        == FACILITY
    )
    assert await scalar(db, "SELECT count(*) FROM events") == 0
    assert running_hub.metrics.rejected["bad_field"] == 4


async def test_bad_topics_are_dead_lettered_without_stopping_ingest(
    running_hub: Hub, db: DB
) -> None:
    """Junk topics under the root become dead letters and valid traffic after them is stored."""
    root = running_hub.settings.topic_root
    junk = [
        f"{root}/v1/{FACILITY}/eb-1/firmware",
        f"{root}/v1/{FACILITY}/eb-1/event/extra",
        f"{root}/v1/bad facility/eb-1/event",
        f"{root}/v1/{FACILITY}/{'x' * 65}/event",
    ]
    async with (
        raw_client(running_hub.settings) as client,
        fake_device(running_hub.settings, "eb-1") as eb,
    ):
        for topic in junk:
            await client.publish(topic, b"{}", qos=1)
        await eb.send("event", eb.message(event="pressed", button="red"))

        async def stored() -> bool:
            return bool(await scalar(db, "SELECT count(*) FROM events") == 1)

        await wait_for(stored)
    # The hub subscribes to {root}/v1/+/+/{event,telemetry,status}: two of the junk topics
    # match those filters and must be dead-lettered as bad_topic.
    assert await scalar(db, "SELECT count(*) FROM dead_letters WHERE reason = 'bad_topic'") == 2


async def test_a_batch_stored_out_of_turn_is_acked_only_after_the_one_before_it(
    running_hub: Hub, db: DB
) -> None:
    """Batches are written side by side, but acked in the order the broker sent them."""
    settings = running_hub.settings
    assert settings.batch_writers >= 2
    async with fake_device(settings, "fs-1") as first, fake_device(settings, "oc-1") as second:
        await first.send("telemetry", first.message(battery=80))
        await wait_for(lambda: scalar_is(db, "SELECT count(*) FROM device_state", 1))
        await wait_for(lambda: running_hub.metrics.acked == 1)
        blocker = await psycopg.AsyncConnection.connect(
            settings.database_url, options=f"-c search_path={settings.database_schema},public"
        )
        async with blocker:
            # fs-1's state row is locked: its next batch waits inside its transaction.
            await blocker.execute("SELECT 1 FROM device_state WHERE device_id = 'fs-1' FOR UPDATE")
            acked = running_hub.metrics.acked
            await first.send("telemetry", first.message(battery=79))
            await asyncio.sleep(0.2)  # its own batch (batch_interval_ms is 25)
            await second.send("telemetry", second.message(count=7, staff=1, zone="class-a"))
            # The later batch commits while the earlier one waits ...
            await wait_for(
                lambda: scalar_is(db, "SELECT count(*) FROM readings WHERE device_id = 'oc-1'", 1)
            )
            assert await scalar(db, "SELECT count(*) FROM readings WHERE device_id = 'fs-1'") == 1
            # ... and is not acked before it: neither message is.
            await asyncio.sleep(0.3)
            assert running_hub.metrics.acked == acked
            await blocker.rollback()
        await wait_for(lambda: running_hub.metrics.acked == acked + 2)
        assert await scalar(db, "SELECT count(*) FROM readings WHERE device_id = 'fs-1'") == 2


async def scalar_is(db: DB, query: str, expected: Any) -> bool:
    """True when the query's first value is `expected`."""
    return bool(await scalar(db, query) == expected)


def _reading(device_id: str, seq: int, battery: float) -> Reading:
    at = datetime.now(CHINA).replace(microsecond=0) - timedelta(minutes=5) + timedelta(seconds=seq)
    return reading_at(device_id, seq, at, battery=battery)


async def test_a_batch_with_a_redelivered_reading_is_staged_and_stores_only_what_is_new(
    migrated: Settings, db: DB
) -> None:
    """Readings are copied straight in until a stored one comes back; that batch (and the
    next ones) go through the staging table: each message stored once, counted once."""
    first = [_reading("fs-1", seq, 90 - seq) for seq in range(5)]
    # Two of the first batch again (a reconnect's redelivery), three new, one twice.
    second = [first[3], first[4], *(_reading("fs-1", seq, 90 - seq) for seq in (5, 6, 7))]
    second.append(second[-1])
    third = [_reading("fs-1", seq, 90 - seq) for seq in (8, 9)]
    async with create_pool(migrated) as pool:
        writer = BatchWriter(pool, migrated.topic_root)
        results = [await writer.write(batch) for batch in (first, second, third, first)]

    assert [result.readings for result in results] == [5, 3, 2, 0]
    assert await scalar(db, "SELECT count(*) FROM readings") == 10
    assert await scalar(db, "SELECT count(DISTINCT seq) FROM readings") == 10
    # The state is the newest message's, whichever path wrote it.
    assert await scalar(db, "SELECT battery FROM device_state WHERE device_id = 'fs-1'") == 81


async def test_only_the_urgent_lane_turns_nagles_algorithm_off(hub_settings: Settings) -> None:
    """An ack must not wait for the broker's delayed TCP ack of our PUBACK (up to 40 ms);
    the telemetry lane keeps Nagle, which packs its hundreds of PUBACKs per commit."""
    for no_delay in (True, False):
        client = make_client(
            hub_settings,
            identifier=f"{hub_settings.mqtt_client_id}-nodelay",
            persistent=False,
            no_delay=no_delay,
        )
        async with client:
            # aiomqtt does not expose paho's socket; paho has it once connected.
            sock = client._client.socket()
            assert isinstance(sock, socket.socket)
            assert bool(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)) is no_delay
