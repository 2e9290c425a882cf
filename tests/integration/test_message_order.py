"""One device's messages across two hubs: its state and its alerts follow (ts, seq), not arrival.

Behind a shared subscription the broker hands one device's messages to either hub, and
each hub commits them when its own batch closes, so they reach the database in any
order. What the screens show (battery, presence, count) and what the rules decide must
be what the device said last, by its own clock and counter.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
from collections.abc import AsyncIterator, Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from devices import topic
from hub.alerts import AlertStore
from hub.models import AlertDecision, Reading
from hub.rules import decision
from hub.settings import Settings
from hub.storage.pool import create_pool
from hub.storage.writer import STATE_FIELDS, BatchWriter
from tests.fix_hub import CHINA, DB, FACILITY, connect_db, raw_client, reading_at, rows, wait_for
from tests.hub_pair import two_hubs
from tests.private_broker import private_mosquitto

pytestmark = [pytest.mark.mqtt, pytest.mark.db]

BASE = datetime.now(CHINA).replace(microsecond=0) - timedelta(minutes=20)


def _reading(device_id: str, seq: int, second: float, **measured: Any) -> Reading:
    return reading_at(device_id, seq, BASE + timedelta(seconds=second), **measured)


# A fall sensor's and a counter's messages, as they were sent. Hostile to arrival order:
# several share one clock tick (seq decides), the newest leaves fields out (an older
# message's value stands), one has a higher seq but an older clock (the clock decides:
# a device that restarts its counter must not freeze its state), and one is redelivered.
SENT = [
    _reading("fs-1", 1, 0, battery=90, presence=False, rssi=-70),
    _reading("fs-1", 2, 1, battery=89, presence=True),
    _reading("fs-1", 3, 1, battery=88),
    _reading("fs-1", 4, 1, presence=False, rssi=-60),
    _reading("fs-1", 0, 0.5, battery=10, presence=True, rssi=-99),
    _reading("fs-1", 5, 2, rssi=-65),
    _reading("fs-1", 5, 2, rssi=-65),
    _reading("oc-1", 10, 0, count=12, staff=3),
    _reading("oc-1", 11, 3, count=14),
    _reading("oc-1", 12, 3, count=13),
    _reading("oc-1", 9, 2, count=40, staff=9),
]
EXPECTED = {
    "fs-1": {"battery": 88, "presence": False, "rssi": -65, "last_seq": 5},
    "oc-1": {"count": 13, "staff": 9, "last_seq": 12},
}


def _orders() -> list[tuple[str, list[list[Reading]]]]:
    """The sent messages cut into batches and committed in hostile orders."""
    one_by_one = [[m] for m in SENT]
    orders = [
        ("as sent, one batch", [list(SENT)]),
        ("reversed, one batch", [SENT[::-1]]),
        ("as sent, one batch each", one_by_one),
        ("reversed, one batch each", one_by_one[::-1]),
    ]
    for seed in range(8):
        shuffled = list(SENT)
        random.Random(seed).shuffle(shuffled)
        cut = random.Random(seed + 100).randint(1, len(SENT) - 1)
        orders.append((f"shuffled {seed}, two batches", [shuffled[:cut], shuffled[cut:]]))
        orders.append((f"shuffled {seed}, one batch each", [[m] for m in shuffled]))
    return orders


async def _state(db: DB, device_id: str) -> dict[str, Any]:
    columns = ", ".join((*STATE_FIELDS, "last_seq"))
    (row,) = await rows(db, f"SELECT {columns} FROM device_state WHERE device_id = %s", device_id)
    return {
        name: value
        for name, value in zip((*STATE_FIELDS, "last_seq"), row, strict=True)
        if value is not None
    }


@pytest.mark.parametrize(("name", "batches"), _orders(), ids=[name for name, _ in _orders()])
async def test_the_latest_state_is_the_newest_message_per_field_in_any_commit_order(
    migrated: Settings, db: DB, name: str, batches: Sequence[Sequence[Reading]]
) -> None:
    """Whatever order the batches commit in, each field holds its newest message's value."""
    async with create_pool(migrated) as pool:
        writer = BatchWriter(pool, migrated.topic_root)
        for batch in batches:
            await writer.write(batch)
    for device_id, expected in EXPECTED.items():
        assert await _state(db, device_id) == expected, name
    # Every distinct message is stored once, the redelivered copy too.
    assert await rows(db, "SELECT count(*) FROM readings") == [(len(SENT) - 1,)]


# -- the rules ------------------------------------------------------------------------


def _fall(seq: int, second: float, confidence: float = 0.9) -> AlertDecision:
    return decision(
        "fall",
        facility_id=FACILITY,
        zone_id="room-101",
        device_id="fs-1",
        subject="fs-1",
        at=datetime.now(CHINA),
        seq=seq,
        ts=BASE + timedelta(seconds=second),
        detail={"confidence": confidence},
    )


def _order(seq: int, second: float) -> tuple[datetime, int]:
    return (BASE + timedelta(seconds=second), seq)


@contextlib.asynccontextmanager
async def _alert_store(settings: Settings) -> AsyncIterator[AlertStore]:
    async with create_pool(settings) as pool:
        yield AlertStore(pool, settings.database_schema)


async def _fall_alert(db: DB) -> tuple[int, int, bool, float]:
    """(count, seq, cleared at the device, confidence) of the one fall alert."""
    (row,) = await rows(
        db,
        "SELECT count, seq, cleared_at IS NOT NULL, (detail->>'confidence')::float"
        " FROM alerts WHERE kind = 'fall'",
    )
    return row[0], row[1], row[2], row[3]


async def test_a_clear_that_overtakes_its_fall_leaves_the_fall_cleared(
    migrated: Settings, db: DB
) -> None:
    """fall_cleared (seq 6) committed before its fall_detected (seq 5): the alert opens cleared."""
    async with _alert_store(migrated) as alerts:
        assert await alerts.clear("fall", "fs-1", datetime.now(CHINA), order=_order(6, 6)) is None
        change = await alerts.raise_alert(_fall(5, 5))
    assert change is not None
    assert change.action == "raise"
    assert await _fall_alert(db) == (1, 5, True, 0.9)


async def test_a_late_clear_does_not_clear_a_newer_fall(migrated: Settings, db: DB) -> None:
    """Falls 5 and 7, then the clear of fall 5 (seq 6) arrives: the sensor is down again."""
    async with _alert_store(migrated) as alerts:
        await alerts.raise_alert(_fall(5, 5, confidence=0.7))
        await alerts.raise_alert(_fall(7, 7, confidence=0.95))
        assert await alerts.clear("fall", "fs-1", datetime.now(CHINA), order=_order(6, 6)) is None
    assert await _fall_alert(db) == (2, 7, False, 0.95)


async def test_a_late_repeat_neither_unclears_nor_rolls_back_the_alert(
    migrated: Settings, db: DB
) -> None:
    """Fall 5, its clear 6, then fall 4 arrives last: counted, still cleared, still fall 5."""
    async with _alert_store(migrated) as alerts:
        await alerts.raise_alert(_fall(5, 5, confidence=0.8))
        cleared = await alerts.clear("fall", "fs-1", datetime.now(CHINA), order=_order(6, 6))
        assert cleared is not None
        assert cleared.action == "clear"
        await alerts.raise_alert(_fall(4, 4, confidence=0.61))
        # Equal clocks: seq decides. A fall in the clear's own second, but after it.
        assert await _fall_alert(db) == (2, 5, True, 0.8)
        await alerts.raise_alert(_fall(8, 6))
    assert await _fall_alert(db) == (3, 8, False, 0.9)


async def test_raises_and_clears_racing_on_two_connections_end_as_the_device_said(
    migrated: Settings, db: DB
) -> None:
    """Fifty sensors, each a fall and its clear committed at once: every alert ends cleared."""
    sensors = [f"fs-r{n:02d}" for n in range(50)]
    async with db.cursor() as cur:
        await cur.executemany(
            "INSERT INTO devices (id, facility_id, type, zone_id) VALUES (%s, %s, 'fall_sensor',"
            " 'room-101')",
            [(sensor, FACILITY) for sensor in sensors],
        )
    # Two stores on two pools: two hubs, as far as the database can tell.
    async with _alert_store(migrated) as one, _alert_store(migrated) as other:
        for round_ in range(2):
            work = []
            for n, sensor in enumerate(sensors):
                fall = replace(_fall(2 * round_ + 1, 2 * round_), device_id=sensor, subject=sensor)
                first, second = (one, other) if n % 2 else (other, one)
                work.append(first.raise_alert(fall))
                work.append(
                    second.clear(
                        "fall",
                        sensor,
                        datetime.now(CHINA),
                        order=_order(2 * round_ + 2, 2 * round_ + 1),
                    )
                )
            await asyncio.gather(*work)
    found = await rows(
        db,
        "SELECT device_id, count, cleared_at IS NOT NULL FROM alerts WHERE kind = 'fall'"
        " AND device_id LIKE 'fs-r%%' ORDER BY device_id",
    )
    assert found == [(sensor, 2, True) for sensor in sensors]


# -- two hubs, one shared subscription, one fast device ------------------------------

MESSAGES = 1200
# Messages per tick of the device's clock: a device with a one-second clock that flushes
# its queue after a reconnect sends many messages with one ts.
PER_TICK = 40
FALLS = 30


def _counter_message(seq: int) -> dict[str, Any]:
    body: dict[str, Any] = {
        "ts": (BASE + timedelta(seconds=seq // PER_TICK)).isoformat(),
        "seq": seq,
        "count": seq % 17,
    }
    # Staff is reported now and then: its latest value is an older message's.
    if seq % 7 == 0:
        body["staff"] = seq % 5
    return body


async def test_two_hubs_on_one_shared_subscription_keep_one_fast_devices_order(
    migrated: Settings, tmp_path: Path
) -> None:
    """1,200 counts and 60 fall events from one device each, split by the broker over two hubs."""
    with private_mosquitto(tmp_path, "max_queued_messages 100000") as url:
        settings = migrated.model_copy(update={"mqtt_url": url, "mqtt_protocol": 5})
        async with (
            await connect_db(settings) as db,
            # Different cadences, so the two hubs' batches close out of step.
            two_hubs(
                settings,
                tmp_path,
                shared=True,
                each=({"batch_interval_ms": 5}, {"batch_interval_ms": 40}),
            ) as hubs,
        ):
            for hub in hubs:
                await hub.pipeline.devices.reload()
            root = settings.topic_root
            sent = [_counter_message(seq) for seq in range(1, MESSAGES + 1)]
            events = []
            for n in range(FALLS):
                ts = (BASE + timedelta(seconds=n)).isoformat()
                events.append(
                    {
                        "ts": ts,
                        "seq": 2 * n + 1,
                        "event": "fall_detected",
                        "confidence": 0.9,
                        "posture": "lying",
                    }
                )
                events.append({"ts": ts, "seq": 2 * n + 2, "event": "fall_cleared"})
            async with raw_client(settings, "fast-device") as client:
                client.pending_calls_threshold = 2000
                await asyncio.gather(
                    *(
                        client.publish(
                            topic(root, FACILITY, "oc-1", "telemetry"), json.dumps(body), qos=1
                        )
                        for body in sent
                    ),
                    *(
                        client.publish(
                            topic(root, FACILITY, "fs-1", "event"), json.dumps(body), qos=1
                        )
                        for body in events
                    ),
                )

            async def stored() -> bool:
                readings = await rows(db, "SELECT count(*) FROM readings")
                events_ = await rows(db, "SELECT count(*) FROM events")
                return readings == [(MESSAGES,)] and events_ == [(2 * FALLS,)]

            await wait_for(stored, timeout=60)

            # An event's alert work commits beside its batch, a moment after the row.
            async def settled() -> bool:
                alerts = await rows(
                    db, "SELECT count, seq, cleared_at IS NOT NULL FROM alerts WHERE kind = 'fall'"
                )
                # The last thing the sensor said was fall_cleared: one latched alert, cleared.
                return alerts == [(FALLS, 2 * FALLS - 1, True)]

            await wait_for(settled, timeout=15)
            # The broker really split the stream: each hub took a share of each lane.
            for hub in hubs:
                assert hub.pipeline.devices.loaded
                assert hub.metrics.received > 0, "one hub received nothing: not shared"
            last_staff = max(seq for seq in range(1, MESSAGES + 1) if seq % 7 == 0)
            assert await _state(db, "oc-1") == {
                "count": MESSAGES % 17,
                "staff": last_staff % 5,
                "last_seq": MESSAGES,
            }
            assert await rows(db, "SELECT last_seq FROM device_state WHERE device_id = 'fs-1'") == [
                (2 * FALLS,)
            ]
