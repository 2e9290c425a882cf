"""The one MQTT load generator: QoS 1 telemetry from a bench fleet, paced by token buckets.

Lean on purpose: pre-encoded MQTT 3.1.1 PUBLISH packets written in bulk over asyncio
streams, PUBACKs read in bulk. Honest: every message counts as published only once the
broker has PUBACKed it. `bench ingest` measures what it stores; `bench latency` runs it
as the background traffic its button presses must get through.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import psycopg

from bench.harness import CST, copy_registry
from bench.mqtt import (
    PINGRESP,
    PUBACK,
    PUBLISH_QOS1,
    RawConnection,
    mqtt_string,
    remaining_length,
)
from devices import topic
from devices.mqtt import MqttTarget
from hub.errors import HubError
from hub.settings import Settings

CONNECTIONS = 8
FACILITIES = 8
DEVICE_TYPES = ("fall_sensor", "emergency_button", "occupancy_counter")
# The generator wakes this often; each wake sends what the token bucket allows.
TICK_S = 0.005
# Burst a connection may catch up after a stall; beyond it, offered load is forgone.
BUCKET_S = 0.05
# Unacknowledged PUBLISHes per connection before the generator waits for the broker.
WINDOW = 4000
PUBACK_TIMEOUT_S = 30.0
# Drain: stop when everything published is stored, or nothing new arrives for this long.
DRAIN_QUIET_S = 10.0
DRAIN_TIMEOUT_S = 180.0

# (device_id, facility_id, type) of one bench device.
BenchDevice = tuple[str, str, str]


@dataclass(slots=True)
class TelemetryLoad:
    """What the generator did, summed over its connections."""

    sent: int = 0
    acked: int = 0
    forgone: float = 0.0
    errors: list[str] = field(default_factory=list)


# -- the fleet of bench devices -----------------------------------------------------------


def bench_fleet(count: int) -> list[BenchDevice]:
    """(device_id, facility_id, type) of every bench device."""
    facilities = min(FACILITIES, count)
    return [
        (f"bd{i:06d}", f"bf{i % facilities:02d}", DEVICE_TYPES[i % len(DEVICE_TYPES)])
        for i in range(count)
    ]


async def register_fleet(conn: psycopg.AsyncConnection[Any], fleet: Sequence[BenchDevice]) -> None:
    """Register the fleet's facilities, one room each, and its devices."""
    facility_ids = sorted({facility for _, facility, _ in fleet})
    await copy_registry(
        conn,
        [
            (
                "facilities",
                ("id", "name", "kind", "district"),
                (
                    (facility, f"bench {facility}", "integrated", "bench")
                    for facility in facility_ids
                ),
            ),
            (
                "zones",
                ("facility_id", "zone_id", "name", "kind"),
                ((facility, "room1", "bench room", "room") for facility in facility_ids),
            ),
            (
                "devices",
                ("id", "facility_id", "type", "zone_id", "heartbeat_s"),
                ((device_id, facility, kind, "room1", 300) for device_id, facility, kind in fleet),
            ),
        ],
    )


def telemetry_tail(kind: str, index: int) -> bytes:
    """The type's fields after `ts` and `seq`, valid per the device catalogue."""
    rssi = -40 - index % 50
    battery = 20 + index % 80
    if kind == "fall_sensor":
        return b',"presence":%s,"battery":%d,"rssi":%d}' % (
            b"true" if index % 2 else b"false",
            battery,
            rssi,
        )
    if kind == "emergency_button":
        return b',"battery":%d,"rssi":%d}' % (battery, rssi)
    return b',"count":%d,"staff":%d,"zone":"room1","rssi":%d}' % (index % 12, index % 3, rssi)


# -- the load generator -------------------------------------------------------------------


class TelemetryPublisher(RawConnection):
    """One MQTT connection publishing for a slice of the devices, paced by a token bucket."""

    def __init__(
        self,
        index: int,
        target: MqttTarget,
        root: str,
        fleet: Sequence[BenchDevice],
        *,
        offset: int,
        rate: float,
        load: TelemetryLoad,
    ) -> None:
        super().__init__(target, "carehub-bench", index, f"bench connection {index}")
        self._rate = rate
        self._load = load
        self._topics = [
            mqtt_string(topic(root, facility, device_id, "telemetry"))
            for device_id, facility, _ in fleet
        ]
        self._tails = [telemetry_tail(kind, offset + i) for i, (_, _, kind) in enumerate(fleet)]
        self.device_ids = [device_id for device_id, _, _ in fleet]
        # packet id -> the message's number (device = number % devices, seq = number // devices)
        self._inflight: dict[int, int] = {}
        self._room = asyncio.Event()
        self._room.set()
        self._settled = asyncio.Event()
        self._next_id = 0
        self._counter = 0
        self.sent = 0
        self.acked = 0

    async def connect(self) -> None:
        """Open the connection and wait for a successful CONNACK."""
        await self._open(10)

    def set_rate(self, rate: float) -> None:
        """Offer `rate` messages per second from the next publish() on (a ramp's next step)."""
        self._rate = rate

    async def read_acks(self) -> None:
        """Count PUBACKs (in bulk) until the connection closes."""
        assert self._reader is not None  # noqa: S101 - connect() ran first
        buffer = b""
        inflight = self._inflight
        while True:
            chunk = await self._reader.read(65536)
            if not chunk:
                if self._closing:
                    return
                raise HubError(f"{self._who}: the broker closed it")
            buffer += chunk
            # Inline rather than bench.mqtt.next_packet: a publisher gets only two-byte
            # PUBACKs and PINGRESPs, tens of thousands a second.
            pos, end = 0, len(buffer)
            while end - pos >= 2:
                kind, length = buffer[pos], buffer[pos + 1]
                if length & 0x80:
                    raise HubError(f"{self._who}: unexpected packet {kind:#x}")
                if end - pos < 2 + length:
                    break
                if kind == PUBACK and length == 2:
                    packet_id = (buffer[pos + 2] << 8) | buffer[pos + 3]
                    if inflight.pop(packet_id, None) is not None:
                        self.acked += 1
                        self._load.acked += 1
                elif kind != PINGRESP:  # the only other packet a publisher gets
                    raise HubError(f"{self._who}: unexpected packet {kind:#x}")
                pos += 2 + length
            buffer = buffer[pos:]
            if len(inflight) < WINDOW:
                self._room.set()
            if not inflight:
                self._settled.set()

    def _packets(self, count: int) -> bytes:
        stamp = datetime.now(CST).isoformat(timespec="microseconds").encode()
        head = b'{"ts":"' + stamp + b'","seq":'
        topics, tails, inflight = self._topics, self._tails, self._inflight
        devices = len(topics)
        first_byte = bytes((PUBLISH_QOS1,))
        parts: list[bytes] = []
        for _ in range(count):
            device = self._counter % devices
            seq = self._counter // devices
            self._counter += 1
            packet_id = self._next_id
            while True:
                packet_id = packet_id % 65535 + 1
                if packet_id not in inflight:
                    break
            self._next_id = packet_id
            inflight[packet_id] = self._counter - 1
            payload = head + str(seq).encode() + tails[device]
            name = topics[device]
            # bench.mqtt.publish_packet, unrolled: the topic is encoded once per device,
            # and the parts are joined once per tick.
            parts.append(first_byte + remaining_length(len(name) + 2 + len(payload)))
            parts.append(name)
            parts.append(packet_id.to_bytes(2, "big"))
            parts.append(payload)
        return b"".join(parts)

    async def publish(self, started: float, until: float) -> None:
        """Publish at the connection's rate from `started` until `until` (monotonic)."""
        assert self._writer is not None  # noqa: S101 - connect() ran first
        loop = asyncio.get_running_loop()
        capacity = max(self._rate * BUCKET_S, 1.0)
        tokens = 0.0
        last = started
        await asyncio.sleep(max(started - loop.time(), 0))
        while True:
            now = loop.time()
            if now >= until:
                return
            tokens += self._rate * (now - last)
            last = now
            if tokens > capacity:
                self._load.forgone += tokens - capacity
                tokens = capacity
            room = WINDOW - len(self._inflight)
            count = min(int(tokens), room)
            if count < int(tokens):
                self._room.clear()
            if count > 0:
                tokens -= count
                self._writer.write(self._packets(count))
                self.sent += count
                self._load.sent += count
                if self._writer.transport.get_write_buffer_size() > 1 << 20:
                    await self._writer.drain()
            if room <= 0:
                await asyncio.wait_for(self._room.wait(), PUBACK_TIMEOUT_S)
            await asyncio.sleep(TICK_S)

    def forget_inflight(self) -> list[tuple[str, int]]:
        """After the connection broke: the (device_id, seq) the broker never confirmed.

        They are given up, not sent again: the broker took no responsibility for them (a
        real device would send them again; the bench only counts them apart).
        """
        devices = len(self.device_ids)
        lost = [(self.device_ids[n % devices], n // devices) for n in self._inflight.values()]
        self._inflight.clear()
        self._room.set()
        self._settled.set()
        return lost

    async def settle(self) -> int:
        """Wait for outstanding PUBACKs (bounded); return how many stayed unconfirmed."""
        if self._inflight:
            self._settled.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._settled.wait(), PUBACK_TIMEOUT_S)
        return len(self._inflight)


def telemetry_load(
    settings: Settings, fleet: Sequence[BenchDevice], *, rate: float, connections: int
) -> tuple[TelemetryLoad, list[TelemetryPublisher]]:
    """A new load's tally, and the fleet over at most `connections` publishers counting into
    it, each at a rate in proportion to its devices."""
    load = TelemetryLoad()
    size = math.ceil(len(fleet) / connections)
    # So every device sends alike, whichever connection it is on.
    publishers = [
        TelemetryPublisher(
            n,
            settings.mqtt,
            settings.topic_root,
            fleet[i : i + size],
            offset=i,
            rate=rate * len(fleet[i : i + size]) / len(fleet),
            load=load,
        )
        for n, i in enumerate(range(0, len(fleet), size))
    ]
    return load, publishers


async def close_load(
    connections: Sequence[RawConnection], tasks: Sequence[asyncio.Task[Any]], load: TelemetryLoad
) -> None:
    """Close the connections, then cancel and await the tasks; their failures go to load.errors."""
    # Closed first, so that readers end on their own; then whatever is left is cancelled.
    for connection in connections:
        await connection.close()
    for task in tasks:
        task.cancel()
    for outcome in await asyncio.gather(*tasks, return_exceptions=True):
        if isinstance(outcome, Exception):
            load.errors.append(repr(outcome))


# -- what reached the database --------------------------------------------------------------


@dataclass(slots=True)
class StoredReadings:
    """What the hub stored of the load: totals, the steady window, and its latency."""

    rows: int
    distinct: int
    window_rows: int
    per_second: list[int]
    p50_ms: float | None
    p99_ms: float | None
    max_ms: float | None


async def count_readings(conn: psycopg.AsyncConnection[Any]) -> int:
    """Rows in `readings` now."""
    cur = await conn.execute("SELECT count(*) FROM readings")
    row = await cur.fetchone()
    return int(row[0]) if row else 0


async def stored_readings(
    conn: psycopg.AsyncConnection[Any], window_from: datetime, window_to: datetime
) -> StoredReadings:
    """Totals, rows stored per second in the window, and publish→commit of what it sent."""
    cur = await conn.execute("SELECT count(*), count(DISTINCT (device_id, seq)) FROM readings")
    totals = await cur.fetchone()
    cur = await conn.execute(
        "SELECT count(*) FROM readings WHERE stored_at >= %s AND stored_at < %s",
        (window_from, window_to),
    )
    window = await cur.fetchone()
    # Whole seconds only: a partial last second would read as a dip.
    whole_to = window_from + timedelta(seconds=int((window_to - window_from).total_seconds()))
    cur = await conn.execute(
        "SELECT count(*) FROM readings WHERE stored_at >= %s AND stored_at < %s"
        " GROUP BY floor(extract(epoch FROM stored_at - %s)) ORDER BY 1",
        (window_from, whole_to, window_from),
    )
    per_second = [int(row[0]) for row in await cur.fetchall()]
    # Latency of what was published in the steady window, whenever it was committed.
    cur = await conn.execute(
        "SELECT percentile_cont(ARRAY[0.5, 0.99]) WITHIN GROUP"
        " (ORDER BY extract(epoch FROM stored_at - ts)),"
        " max(extract(epoch FROM stored_at - ts))"
        " FROM readings WHERE ts >= %s AND ts < %s",
        (window_from, window_to),
    )
    latency = await cur.fetchone()
    p50 = p99 = peak = None
    if latency is not None and latency[0] is not None:
        p50, p99 = (float(v) * 1000 for v in latency[0])
        peak = float(latency[1]) * 1000
    return StoredReadings(
        rows=int(totals[0]) if totals else 0,
        distinct=int(totals[1]) if totals else 0,
        window_rows=int(window[0]) if window else 0,
        per_second=per_second,
        p50_ms=p50,
        p99_ms=p99,
        max_ms=peak,
    )


async def drain_readings(conn: psycopg.AsyncConnection[Any], published: int) -> tuple[int, float]:
    """Wait for the hub to store what was published; (rows, seconds waited)."""
    started = time.monotonic()
    rows = await count_readings(conn)
    last_growth = started
    while rows < published and time.monotonic() - started < DRAIN_TIMEOUT_S:
        await asyncio.sleep(0.5)
        now_rows = await count_readings(conn)
        if now_rows > rows:
            last_growth = time.monotonic()
        elif time.monotonic() - last_growth > DRAIN_QUIET_S:
            break
        rows = now_rows
    return rows, time.monotonic() - started
