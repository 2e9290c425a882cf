"""`carehub bench live`: many websocket screens, alert changes at a fixed rate, commit → screen.

The hub runs as `carehub serve` in a child process (its CPU and memory are its own;
bench.harness), on the configured broker and database, in a schema and under a topic root
of its own, with a
registered district (500 facilities and 10,000 devices by default, so the status watcher
does its real work). This process signs in an admin, connects N lean websocket clients
(every one sees every facility, so every one must get every change) and drives R alert
changes a second through AlertStore: an sos raised, acknowledged, resolved, round robin
over the buttons. Each change's commit time is its `live_changes.at` (clock_timestamp() in
its transaction, the last row written before the commit), read afterwards; each client
notes when each change reached it. Clients and database share this machine's clock; the
offset to the database's is measured and removed anyway.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import math
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import psutil
import psycopg
from psycopg_pool import AsyncConnectionPool

from bench import harness
from hub.alerts import AlertStore
from hub.auth import add_user, login
from hub.errors import HubError
from hub.rules import decision
from hub.settings import Settings

# 500 screens watching a district, 100 alert changes a second, each on every screen
# within 100 ms at the 99th percentile.
TARGET_P99_MS = 100.0
FACILITIES = 500
# Clients connect this many at a time (each gets a whole snapshot first).
CONNECT_BATCH = 25
CONNECT_TIMEOUT_S = 30.0
# After the last change, clients get this long to receive what is still on its way.
DELIVERY_GRACE_S = 10.0
# The hub settles (first status poll, pool warm) this long before changes start.
WARMUP_S = 1.0
_CHANGE_ID = b'"change_id":'
_SNAPSHOT = b'{"type":"snapshot"'
_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


@dataclass(eq=False)
class _Client(asyncio.Protocol):
    """A lean websocket client: handshake, then frames parsed by hand, arrivals noted.

    A full client library costs tens of microseconds a message; 500 of them at 100
    changes a second would measure this process, not the hub.
    """

    key: str = field(default_factory=lambda: base64.b64encode(secrets.token_bytes(16)).decode())
    snapshot_id: int | None = None
    # (change_id, arrival as epoch seconds) of every alert message.
    arrivals: list[tuple[int, float]] = field(default_factory=list)
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    close_code: int | None = None
    error: str | None = None
    _buffer: bytearray = field(default_factory=bytearray)
    _upgraded: bool = False
    _transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Keep the transport."""
        assert isinstance(transport, asyncio.Transport)  # noqa: S101 - TCP
        self._transport = transport

    def handshake(self, host: str, port: int, path: str) -> None:
        """Send the upgrade request (no extensions: no compression)."""
        assert self._transport is not None  # noqa: S101 - connected first
        self._transport.write(
            (
                f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {self.key}\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )

    def data_received(self, data: bytes) -> None:
        """Parse what arrived; note each alert message's change id with the arrival time."""
        now = time.time()
        buffer = self._buffer
        buffer += data
        if not self._upgraded:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            if not buffer.startswith(b"HTTP/1.1 101"):
                self.error = bytes(buffer[: buffer.find(b"\r\n")]).decode(errors="replace")
                self.closed.set()
                self.ready.set()
                return
            self._upgraded = True
            del buffer[: end + 4]
        pos, size = 0, len(buffer)
        while size - pos >= 2:
            opcode, length = buffer[pos] & 0x0F, buffer[pos + 1] & 0x7F
            start = pos + 2
            if length == 126:
                if size - pos < 4:
                    break
                length, start = int.from_bytes(buffer[pos + 2 : pos + 4], "big"), pos + 4
            elif length == 127:
                if size - pos < 10:
                    break
                length, start = int.from_bytes(buffer[pos + 2 : pos + 10], "big"), pos + 10
            if size - start < length:
                break
            self._frame(opcode, buffer, start, start + length, now)
            pos = start + length
        del buffer[:pos]

    def _frame(self, opcode: int, buffer: bytearray, start: int, end: int, now: float) -> None:
        if opcode == 1:
            if buffer.startswith(_SNAPSHOT, start):
                at = buffer.find(_CHANGE_ID, start, end)
                stop = buffer.find(b",", at)
                self.snapshot_id = int(buffer[at + len(_CHANGE_ID) : stop])
                self.ready.set()
            else:
                # One message, or a JSON array of several: every change id in the frame.
                at = buffer.find(_CHANGE_ID, start, end)
                while at >= 0:
                    digits = at + len(_CHANGE_ID)
                    stop = digits
                    while stop < end and 48 <= buffer[stop] <= 57:
                        stop += 1
                    self.arrivals.append((int(buffer[digits:stop]), now))
                    at = buffer.find(_CHANGE_ID, stop, end)
        elif opcode == 9:  # ping: answer with a masked pong carrying the same payload
            payload = bytes(buffer[start:end])
            mask = secrets.token_bytes(4)
            masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
            if self._transport is not None:
                self._transport.write(bytes([0x8A, 0x80 | len(payload)]) + mask + masked)
        elif opcode == 8:
            if end - start >= 2:
                self.close_code = int.from_bytes(buffer[start : start + 2], "big")
            self.ready.set()
            if self._transport is not None:
                self._transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        """Note the end."""
        self.closed.set()
        self.ready.set()

    def close(self) -> None:
        """Drop the connection."""
        if self._transport is not None:
            self._transport.close()


# -- the run ---------------------------------------------------------------------------


def run_live_bench(
    settings: Settings,
    *,
    clients: int = 500,
    rate: float = 100.0,
    duration_s: float = 30.0,
    devices: int = 10_000,
) -> int:
    """Drive alert changes to many websocket clients and print commit → client; 0 if run."""
    if clients < 1 or rate <= 0 or duration_s <= 0 or devices < 3:
        raise HubError(
            "--clients must be at least 1, --rate and --duration positive, --devices at least 3"
        )
    return asyncio.run(_bench(settings, clients, rate, duration_s, devices))


def _fleet(devices: int) -> tuple[list[str], list[tuple[str, str, str, str]]]:
    """Facility ids, and (device, facility, type, zone) of the bench district."""
    facilities = [f"lf{i:03d}" for i in range(min(FACILITIES, devices))]
    types = ("emergency_button", "fall_sensor", "occupancy_counter")
    fleet = [
        (f"ld{i:05d}", facilities[i % len(facilities)], types[i % 3], f"z{i % 2}")
        for i in range(devices)
    ]
    return facilities, fleet


async def _register(
    conn: psycopg.AsyncConnection[Any],
    facilities: Sequence[str],
    fleet: Sequence[tuple[str, str, str, str]],
) -> None:
    await harness.copy_registry(
        conn,
        [
            (
                "facilities",
                ("id", "name", "kind", "district", "beds"),
                (
                    (facility, f"bench {facility}", "elderly", "bench", 50)
                    for facility in facilities
                ),
            ),
            (
                "zones",
                ("facility_id", "zone_id", "name", "kind", "capacity"),
                (
                    (facility, zone, f"room {zone}", "room", 20)
                    for facility in facilities
                    for zone in ("z0", "z1")
                ),
            ),
            (
                "devices",
                ("id", "facility_id", "type", "zone_id", "heartbeat_s"),
                ((device, facility, kind, zone, 300) for device, facility, kind, zone in fleet),
            ),
        ],
    )


async def _bench(
    settings: Settings, clients: int, rate: float, duration_s: float, devices: int
) -> int:
    run = harness.BenchRun.new(settings)
    facilities, fleet = _fleet(devices)
    buttons = [(d, f, z) for d, f, kind, z in fleet if kind == "emergency_button"]
    print(
        f"carehub bench live: {clients} websocket clients (admin: each sees all "
        f"{len(facilities)} facilities, {devices} devices), {rate:g} alert changes/s for "
        f"{duration_s:g} s\n  broker {settings.mqtt.host}:{settings.mqtt.port}, "
        f"schema {run.schema}",
        flush=True,
    )
    async with run.database() as conn:
        await _register(conn, facilities, fleet)
        password = secrets.token_urlsafe(16)
        await add_user(conn, "bench", "admin", password)
        token = (await login(conn, "bench", password, 3600)).token
        async with run.hub(mqtt_protocol=settings.mqtt_protocol) as hub:
            await _run(
                conn,
                hub,
                settings=run.settings,
                token=token,
                buttons=buttons,
                clients=clients,
                rate=rate,
                duration_s=duration_s,
            )
    return 0


async def _connect(port: int, token: str, count: int) -> list[_Client]:
    loop = asyncio.get_running_loop()
    connected: list[_Client] = []
    path = f"/api/v1/live?token={token}"
    for first in range(0, count, CONNECT_BATCH):
        batch: list[_Client] = []
        for _ in range(min(CONNECT_BATCH, count - first)):
            _, client = await loop.create_connection(_Client, "127.0.0.1", port)
            client.handshake("127.0.0.1", port, path)
            batch.append(client)
        async with asyncio.timeout(CONNECT_TIMEOUT_S):
            await asyncio.gather(*(client.ready.wait() for client in batch))
        for client in batch:
            if client.snapshot_id is None:
                raise HubError(
                    f"a client got no snapshot: {client.error or f'closed {client.close_code}'}"
                )
        connected += batch
    return connected


async def _drive(
    store: AlertStore,
    buttons: Sequence[tuple[str, str, str]],
    rate: float,
    until: float,
) -> tuple[int, list[str]]:
    """Raise, acknowledge and resolve sos alerts round robin, `rate` changes a second."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    count = 0
    errors: list[str] = []
    open_alerts: list[int] = []
    button = 0
    while (due := started + count / rate) < until:
        await asyncio.sleep(max(due - loop.time(), 0))
        step = count % 3
        try:
            if step == 0:
                device_id, facility_id, zone_id = buttons[button % len(buttons)]
                button += 1
                sos = decision(
                    "sos",
                    facility_id=facility_id,
                    zone_id=zone_id,
                    device_id=device_id,
                    subject=device_id,
                    at=datetime.now(UTC),
                )
                change = await store.raise_alert(sos)
                if change is not None:
                    open_alerts.append(change.alert.id)
            elif step == 1 and open_alerts:
                await store.acknowledge(open_alerts[-1], "bench")
            elif open_alerts:
                await store.resolve(open_alerts.pop(), "bench", "test")
        except HubError as exc:
            errors.append(str(exc))
        count += 1
    return count, errors


async def _run(
    conn: psycopg.AsyncConnection[Any],
    hub: harness.HubProcess,
    *,
    settings: Settings,
    token: str,
    buttons: Sequence[tuple[str, str, str]],
    clients: int,
    rate: float,
    duration_s: float,
) -> None:
    loop = asyncio.get_running_loop()
    connecting = time.monotonic()
    screens = await _connect(hub.port, token, clients)
    connect_s = time.monotonic() - connecting
    floor = max(client.snapshot_id or 0 for client in screens)
    await asyncio.sleep(WARMUP_S)
    pool: AsyncConnectionPool[psycopg.AsyncConnection[object]] = AsyncConnectionPool(
        settings.database_url,
        min_size=2,
        max_size=2,
        kwargs={"options": f"-c search_path={settings.database_schema},public"},
        open=False,
    )
    await pool.open()
    sampler = asyncio.create_task(hub.sample_forever())
    meter = harness.CpuMeter()
    try:
        started = loop.time()
        driven, errors = await _drive(
            AlertStore(pool, settings.database_schema), buttons, rate, started + duration_s
        )
        driven_s = loop.time() - started
        machine_busy = meter.machine_busy()
        in_run = [s for s in hub.samples if s.at <= time.monotonic()]
        committed = await _committed(conn, floor)
        expected = len(committed)
        for _ in range(int(DELIVERY_GRACE_S / 0.1)):
            if all(len(c.arrivals) >= expected or c.closed.is_set() for c in screens):
                break
            await asyncio.sleep(0.1)
    finally:
        sampler.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sampler
        await pool.close()
    bench_cpu_s = meter.own_cpu_s()
    offset = await _clock_offset(conn)
    for client in screens:
        client.close()
    _report(
        screens=screens,
        committed=committed,
        offset=offset,
        driven=driven,
        driven_s=driven_s,
        errors=errors,
        rate=rate,
        connect_s=connect_s,
        hub=hub,
        samples=in_run,
        bench_cpu_s=bench_cpu_s,
        machine_busy=machine_busy,
    )


async def _committed(conn: psycopg.AsyncConnection[Any], floor: int) -> dict[int, float]:
    """change id -> commit time (epoch seconds, database clock) of every change of the run."""
    cur = await conn.execute(
        "SELECT id, extract(epoch FROM at)::float8 FROM live_changes WHERE id > %s", (floor,)
    )
    return {int(row[0]): float(row[1]) for row in await cur.fetchall()}


async def _clock_offset(conn: psycopg.AsyncConnection[Any]) -> float:
    """Database clock minus this machine's, in seconds (0 when they are the same clock)."""
    before = time.time()
    cur = await conn.execute("SELECT extract(epoch FROM clock_timestamp())::float8")
    row = await cur.fetchone()
    after = time.time()
    return 0.0 if row is None else float(row[0]) - (before + after) / 2


def _report(
    *,
    screens: Sequence[_Client],
    committed: dict[int, float],
    offset: float,
    driven: int,
    driven_s: float,
    errors: list[str],
    rate: float,
    connect_s: float,
    hub: harness.HubProcess,
    samples: Sequence[harness.Sample],
    bench_cpu_s: float,
    machine_busy: float,
) -> None:
    latencies: list[float] = []
    delivered = 0
    lost = 0
    for client in screens:
        seen: set[int] = set()
        for change_id, arrived in client.arrivals:
            at = committed.get(change_id)
            if at is not None and change_id not in seen:
                seen.add(change_id)
                latencies.append(arrived + offset - at)
        delivered += len(seen)
        lost += len(committed) - len(seen)
    figures = harness.spread(latencies)
    cpu_pct = harness.cpu_percent(samples)
    closed = sum(1 for client in screens if client.closed.is_set())
    print(f"clients      {len(screens):,} connected in {connect_s:.1f} s; {closed} closed early")
    print(
        f"changes      {len(committed):,} committed ({len(committed) / max(driven_s, 1e-6):.1f}/s"
        f" over {driven_s:.1f} s, {rate:g}/s asked, {driven:,} driven)"
    )
    print(
        f"delivered    {delivered:,} of {len(committed) * len(screens):,} messages "
        f"({delivered / max(driven_s, 1e-6):,.0f}/s); lost {lost:,}"
    )
    print(f"latency      commit→client {figures or 'n/a'}")
    print(f"hub CPU      {cpu_pct:.1f} % of one core on average ({psutil.cpu_count()} cores)")
    print(f"hub RSS      peak {hub.peak_rss() / harness.MB:.1f} MB (VmHWM)")
    print(
        f"machine      {100 * machine_busy:.0f} % busy of {psutil.cpu_count()} cores; bench "
        f"(clients and driver) {100 * bench_cpu_s / max(driven_s, 1e-6):.0f} % of one core"
    )
    for error in errors[:10]:
        print(f"driver       error: {error}")
    p99 = figures.p99_ms if figures is not None else math.inf
    harness.print_verdict(
        [
            (p99 <= TARGET_P99_MS, f"p99 commit→client {p99:.1f} ≤ {TARGET_P99_MS:g} ms"),
            (lost == 0 and not errors and len(committed) > 0, f"lost {lost:,} = 0"),
        ],
        missed="FAIL",
    )
    hub.report_early_exit()
