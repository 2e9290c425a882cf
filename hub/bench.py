"""`carehub bench ingest`: QoS 1 telemetry at a fixed rate into a hub subprocess; prints figures.

The hub runs as a child process (`python -m hub.cli serve`) on the configured broker and
database, in a schema and under a topic root of its own, so its CPU and memory are
measured apart from the load generator. The generator is lean on purpose: pre-encoded
MQTT 3.1.1 PUBLISH packets written in bulk over asyncio streams, PUBACKs read in bulk. It
is honest: QoS 1, every message counts as published only once the broker has PUBACKed
it. What reached the database is counted in the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
import os
import secrets
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

import psutil
import psycopg
from psycopg import sql

from devices import topic
from hub.errors import HubError
from hub.settings import MqttTarget, Settings
from hub.storage.migrate import migrate

# Targets of SPEC-level capacity planning: one hub process, one district.
TARGET_RATE = 10_000.0
TARGET_RSS_BYTES = 400 * 1024 * 1024
# An offered rate of exactly the target cannot be stored faster than offered; a window
# edge falls inside a batch, so the measured rate jitters by a batch either way.
RATE_TOLERANCE = 0.01
CONNECTIONS = 8
FACILITIES = 8
DEVICE_TYPES = ("fall_sensor", "emergency_button", "occupancy_counter")
# The generator wakes this often; each wake sends what the token bucket allows.
TICK_S = 0.005
# Burst a connection may catch up after a stall; beyond it, offered load is forgone.
BUCKET_S = 0.05
# Unacknowledged PUBLISHes per connection before the generator waits for the broker.
WINDOW = 4000
SAMPLE_S = 0.5
READY_TIMEOUT_S = 60.0
# Drain: stop when everything published is stored, or nothing new arrives for this long.
DRAIN_QUIET_S = 10.0
DRAIN_TIMEOUT_S = 180.0
PUBACK_TIMEOUT_S = 30.0
CST = timezone(timedelta(hours=8))


@dataclass(slots=True)
class _Sample:
    at: float
    cpu_s: float
    rss: int


@dataclass(slots=True)
class _Load:
    """What the generator did, summed over its connections."""

    sent: int = 0
    acked: int = 0
    forgone: float = 0.0
    errors: list[str] = field(default_factory=list)


def run_bench(
    settings: Settings,
    which: str,
    *,
    duration_s: float = 60.0,
    devices: int = 10_000,
    rate: float = TARGET_RATE,
    connections: int = CONNECTIONS,
    keep: bool = False,
) -> int:
    """Run one benchmark and print its figures; 0 even when a target is missed."""
    if which != "ingest":
        raise HubError(f"unknown benchmark {which!r}; only `ingest` is built")
    if duration_s <= 0 or devices < 1 or rate <= 0 or connections < 1:
        raise HubError("--duration, --devices, --rate and --connections must be positive")
    connections = min(connections, devices)
    return asyncio.run(_bench_ingest(settings, duration_s, devices, rate, connections, keep=keep))


# -- the registry of bench devices ---------------------------------------------------


def _device_ids(count: int) -> list[tuple[str, str, str]]:
    """(device_id, facility_id, type) of every bench device."""
    facilities = min(FACILITIES, count)
    return [
        (f"bd{i:06d}", f"bf{i % facilities:02d}", DEVICE_TYPES[i % len(DEVICE_TYPES)])
        for i in range(count)
    ]


async def _register(
    conn: psycopg.AsyncConnection[object], fleet: Sequence[tuple[str, str, str]]
) -> None:
    facility_ids = sorted({facility for _, facility, _ in fleet})
    async with conn.transaction(), conn.cursor() as cur:
        async with cur.copy("COPY facilities (id, name, kind, district) FROM STDIN") as copy:
            for facility in facility_ids:
                await copy.write_row((facility, f"bench {facility}", "integrated", "bench"))
        async with cur.copy("COPY zones (facility_id, zone_id, name, kind) FROM STDIN") as copy:
            for facility in facility_ids:
                await copy.write_row((facility, "room1", "bench room", "room"))
        async with cur.copy(
            "COPY devices (id, facility_id, type, zone_id, heartbeat_s) FROM STDIN"
        ) as copy:
            for device_id, facility, kind in fleet:
                await copy.write_row((device_id, facility, kind, "room1", 300))


# -- the load generator ----------------------------------------------------------------


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _utf8(text: str) -> bytes:
    raw = text.encode()
    return len(raw).to_bytes(2, "big") + raw


def _connect_packet(client_id: str, target: MqttTarget) -> bytes:
    flags = 0x02  # clean session: the generator keeps no state across runs
    payload = _utf8(client_id)
    if target.username is not None:
        flags |= 0x80
        payload += _utf8(target.username)
        if target.password is not None:
            flags |= 0x40
            payload += _utf8(target.password)
    body = _utf8("MQTT") + bytes((4, flags)) + (60).to_bytes(2, "big") + payload
    return b"\x10" + _varint(len(body)) + body


def _telemetry_tail(kind: str, index: int) -> bytes:
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


class _Publisher:
    """One MQTT connection publishing for a slice of the devices, paced by a token bucket."""

    def __init__(
        self,
        index: int,
        target: MqttTarget,
        root: str,
        fleet: Sequence[tuple[str, str, str]],
        *,
        offset: int,
        rate: float,
        load: _Load,
    ) -> None:
        self._index = index
        self._target = target
        self._rate = rate
        self._load = load
        self._client_id = f"carehub-bench-{os.getpid()}-{index}"
        self._topics = [
            _utf8(topic(root, facility, device_id, "telemetry")) for device_id, facility, _ in fleet
        ]
        self._tails = [_telemetry_tail(kind, offset + i) for i, (_, _, kind) in enumerate(fleet)]
        self._inflight: set[int] = set()
        self._room = asyncio.Event()
        self._room.set()
        self._settled = asyncio.Event()
        self._closing = False
        self._next_id = 0
        self._counter = 0
        self.sent = 0
        self.acked = 0
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def connect(self) -> None:
        """Open the connection and wait for a successful CONNACK."""
        self._reader, self._writer = await _open_mqtt(
            self._target, self._client_id, f"bench connection {self._index}", 10
        )

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
                raise HubError(f"bench connection {self._index}: the broker closed it")
            buffer += chunk
            pos, end = 0, len(buffer)
            while end - pos >= 2:
                kind, length = buffer[pos], buffer[pos + 1]
                if length & 0x80:
                    raise HubError(f"bench connection {self._index}: unexpected packet {kind:#x}")
                if end - pos < 2 + length:
                    break
                if kind == 0x40 and length == 2:
                    packet_id = (buffer[pos + 2] << 8) | buffer[pos + 3]
                    if packet_id in inflight:
                        inflight.discard(packet_id)
                        self.acked += 1
                        self._load.acked += 1
                elif kind != 0xD0:  # PINGRESP is the only other packet a publisher gets
                    raise HubError(f"bench connection {self._index}: unexpected packet {kind:#x}")
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
            inflight.add(packet_id)
            payload = head + str(seq).encode() + tails[device]
            name = topics[device]
            parts.append(b"\x32" + _varint(len(name) + 2 + len(payload)))
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

    async def settle(self) -> int:
        """Wait for outstanding PUBACKs (bounded); return how many stayed unconfirmed."""
        if self._inflight:
            self._settled.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._settled.wait(), PUBACK_TIMEOUT_S)
        return len(self._inflight)

    async def close(self) -> None:
        """Disconnect cleanly."""
        if self._writer is None:
            return
        self._closing = True
        with contextlib.suppress(OSError):
            self._writer.write(b"\xe0\x00")
            await self._writer.drain()
        self._writer.close()
        with contextlib.suppress(OSError):
            await self._writer.wait_closed()


# -- the hub under test ----------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _http_get(url: str, timeout: float = 2.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - our own http://127.0.0.1
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


class _HubProcess:
    """`carehub serve` as a child process, with its CPU and memory sampled."""

    def __init__(
        self,
        settings: Settings,
        schema: str,
        root: str,
        workdir: Path,
        *,
        mqtt_protocol: int | None = None,
    ) -> None:
        self.port = _free_port()
        self.log_path = workdir / "hub.log"
        env = dict(os.environ)
        env.update(
            CAREHUB_MQTT_URL=settings.mqtt_url,
            CAREHUB_DATABASE_URL=settings.database_url,
            CAREHUB_DATABASE_SCHEMA=schema,
            CAREHUB_TOPIC_ROOT=root,
            CAREHUB_MQTT_CLIENT_ID=f"carehub-bench-hub-{root}",
            # Long enough to ride out a reconnect mid-run, short enough not to leave a
            # session behind at the broker for a day.
            CAREHUB_MQTT_SESSION_EXPIRY_S="300",
            CAREHUB_HTTP_HOST="127.0.0.1",
            CAREHUB_HTTP_PORT=str(self.port),
            CAREHUB_SPOOL_DIR=str(workdir / "spool"),
            CAREHUB_LOG_LEVEL=os.environ.get("CAREHUB_LOG_LEVEL", "WARNING"),
        )
        if mqtt_protocol is not None:
            env["CAREHUB_MQTT_PROTOCOL"] = str(mqtt_protocol)
        # One hub takes the whole stream; a shared group would split it with strangers.
        env.pop("CAREHUB_MQTT_SHARED_GROUP", None)
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "hub.cli", "serve"],
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self.ps = psutil.Process(self.process.pid)
        self.samples: list[_Sample] = []

    @property
    def base_url(self) -> str:
        """Where the hub's HTTP server listens."""
        return f"http://127.0.0.1:{self.port}"

    async def wait_ready(self) -> None:
        """Wait until /readyz says 200 (broker connected, database up)."""
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise HubError(f"the hub exited with {self.process.returncode}:\n{self.log_tail()}")
            with contextlib.suppress(OSError):
                status, _ = await asyncio.to_thread(_http_get, self.base_url + "/readyz", 1.0)
                if status == 200:
                    return
            await asyncio.sleep(0.2)
        raise HubError(f"the hub was not ready within {READY_TIMEOUT_S:.0f} s:\n{self.log_tail()}")

    def sample(self) -> None:
        """Record the hub's CPU time and RSS now."""
        with contextlib.suppress(psutil.Error):
            cpu = self.ps.cpu_times()
            self.samples.append(
                _Sample(time.monotonic(), cpu.user + cpu.system, self.ps.memory_info().rss)
            )

    async def sample_forever(self) -> None:
        """Sample every SAMPLE_S until cancelled."""
        while True:
            self.sample()
            await asyncio.sleep(SAMPLE_S)

    def peak_rss(self) -> int:
        """VmHWM from /proc: the kernel's own high-water mark of the resident set."""
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
        return max((s.rss for s in self.samples), default=0)

    def metrics(self) -> dict[str, float]:
        """The hub's own counters from /metrics (name{labels} -> value)."""
        try:
            status, text = _http_get(self.base_url + "/metrics")
        except OSError:
            return {}
        if status != 200:
            return {}
        counters: dict[str, float] = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                with contextlib.suppress(ValueError):
                    counters[name] = float(value)
        return counters

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it does not stop in time."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()

    def log_tail(self, lines: int = 30) -> str:
        """The last lines the hub wrote."""
        self._log.flush()
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""


# -- the run ---------------------------------------------------------------------------


@dataclass(slots=True)
class _Stored:
    rows: int
    distinct: int
    window_rows: int
    per_second: list[int]
    p50_ms: float | None
    p99_ms: float | None
    max_ms: float | None


async def _db_now(conn: psycopg.AsyncConnection[object]) -> datetime:
    cur = await conn.execute("SELECT clock_timestamp()")
    row = await cur.fetchone()
    assert row is not None  # noqa: S101 - SELECT without FROM returns one row
    now: datetime = row[0]  # type: ignore[index]
    return now


async def _count(conn: psycopg.AsyncConnection[object]) -> int:
    cur = await conn.execute("SELECT count(*) FROM readings")
    row = await cur.fetchone()
    return int(row[0]) if row else 0  # type: ignore[index]


async def _stored(
    conn: psycopg.AsyncConnection[object], window_from: datetime, window_to: datetime
) -> _Stored:
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
    per_second = [int(row[0]) for row in await cur.fetchall()]  # type: ignore[index]
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
    if latency is not None and latency[0] is not None:  # type: ignore[index]
        p50, p99 = (float(v) * 1000 for v in latency[0])  # type: ignore[index]
        peak = float(latency[1]) * 1000  # type: ignore[index]
    return _Stored(
        rows=int(totals[0]) if totals else 0,  # type: ignore[index]
        distinct=int(totals[1]) if totals else 0,  # type: ignore[index]
        window_rows=int(window[0]) if window else 0,  # type: ignore[index]
        per_second=per_second,
        p50_ms=p50,
        p99_ms=p99,
        max_ms=peak,
    )


async def _drain(conn: psycopg.AsyncConnection[object], published: int) -> tuple[int, float]:
    """Wait for the hub to store what was published; (rows, seconds waited)."""
    started = time.monotonic()
    rows = await _count(conn)
    last_growth = started
    while rows < published and time.monotonic() - started < DRAIN_TIMEOUT_S:
        await asyncio.sleep(0.5)
        now_rows = await _count(conn)
        if now_rows > rows:
            last_growth = time.monotonic()
        elif time.monotonic() - last_growth > DRAIN_QUIET_S:
            break
        rows = now_rows
    return rows, time.monotonic() - started


async def _bench_ingest(
    settings: Settings,
    duration_s: float,
    device_count: int,
    rate: float,
    connections: int,
    *,
    keep: bool,
) -> int:
    tag = secrets.token_hex(4)
    schema, root = f"bench_{tag}", f"bench{tag}"
    bench_settings = settings.model_copy(update={"database_schema": schema, "topic_root": root})
    print(
        f"carehub bench ingest: {duration_s:g} s, {device_count} devices over {connections} "
        f"connections, {rate:g} msgs/s offered (QoS 1 telemetry)\n"
        f"  broker {settings.mqtt.host}:{settings.mqtt.port}, schema {schema}, topic root {root}",
        flush=True,
    )
    # The bench schema's migrations are not news.
    logging.getLogger("hub.storage.migrate").setLevel(logging.WARNING)
    await migrate(bench_settings)
    conn = await psycopg.AsyncConnection.connect(
        settings.database_url, autocommit=True, options=f"-c search_path={schema},public"
    )
    fleet = _device_ids(device_count)
    try:
        await _register(conn, fleet)
        with tempfile.TemporaryDirectory(prefix="carehub-bench-") as workdir:
            hub = _HubProcess(bench_settings, schema, root, Path(workdir))
            try:
                await hub.wait_ready()
                await _load_and_report(
                    conn,
                    hub,
                    bench_settings,
                    fleet=fleet,
                    duration_s=duration_s,
                    rate=rate,
                    connections=connections,
                )
            finally:
                hub.stop()
    finally:
        if not keep:
            await conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))
            print(f"  dropped schema {schema}")
        else:
            print(f"  kept schema {schema} (--keep)")
        await conn.close()
    return 0


async def _load_and_report(
    conn: psycopg.AsyncConnection[object],
    hub: _HubProcess,
    settings: Settings,
    *,
    fleet: Sequence[tuple[str, str, str]],
    duration_s: float,
    rate: float,
    connections: int,
) -> None:
    load = _Load()
    size = math.ceil(len(fleet) / connections)
    # Each connection's rate is in proportion to its devices, so every device sends alike.
    publishers = [
        _Publisher(
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
    for publisher in publishers:
        await publisher.connect()
    loop = asyncio.get_running_loop()
    me = psutil.Process()
    machine_cpu_before = _machine_clock()
    me_cpu_before = sum(me.cpu_times()[:2])
    sampler = asyncio.create_task(hub.sample_forever())
    readers = [asyncio.create_task(p.read_acks()) for p in publishers]
    # The steady window is cut on the database's clock, the one stored_at is read from.
    wall_started = await _db_now(conn) + timedelta(seconds=0.1)
    started = loop.time() + 0.1
    until = started + duration_s
    try:
        async with asyncio.TaskGroup() as group:
            for publisher in publishers:
                group.create_task(publisher.publish(started, until))
    except* (OSError, TimeoutError, HubError) as failed:
        load.errors.extend(repr(exc) for exc in failed.exceptions)
    stopped = loop.time()
    wall_stopped = await _db_now(conn)
    if load.errors:
        unconfirmed = load.sent - load.acked
    else:
        unconfirmed = sum([await publisher.settle() for publisher in publishers])
    machine_cpu = _machine_clock()
    me_cpu = sum(me.cpu_times()[:2]) - me_cpu_before
    load_samples = [s for s in hub.samples if s.at <= time.monotonic()]
    rows, drain_s = await _drain(conn, load.acked)
    sampler.cancel()
    hub.sample()
    for publisher in publishers:
        await publisher.close()
    for reader in readers:
        reader.cancel()
    for outcome in await asyncio.gather(*readers, return_exceptions=True):
        if isinstance(outcome, Exception):
            load.errors.append(repr(outcome))
    with contextlib.suppress(asyncio.CancelledError):
        await sampler
    counters = await asyncio.to_thread(hub.metrics)
    peak_rss = hub.peak_rss()

    warmup = min(5.0, duration_s * 0.1)
    window_from = wall_started + timedelta(seconds=warmup)
    window_s = max((wall_stopped - window_from).total_seconds(), 1e-3)
    stored = await _stored(conn, window_from, wall_stopped)
    _report(
        load=load,
        unconfirmed=unconfirmed,
        rate=rate,
        elapsed=stopped - started,
        rows=rows,
        drain_s=drain_s,
        stored=stored,
        window=(warmup, warmup + window_s),
        hub=hub,
        load_samples=load_samples,
        counters=counters,
        peak_rss=peak_rss,
        machine=(machine_cpu_before, machine_cpu),
        generator_cpu_s=me_cpu,
    )


def _machine_clock() -> tuple[float, float]:
    """(all, idle) CPU seconds of the whole machine so far."""
    times = psutil.cpu_times()
    return sum(times), times.idle + getattr(times, "iowait", 0.0)


def _busy(before: tuple[float, float], after: tuple[float, float]) -> float:
    """Machine-wide busy share (0..1) between two _machine_clock() readings."""
    total = after[0] - before[0]
    idle = after[1] - before[1]
    return (total - idle) / total if total > 0 else 0.0


def _report(
    *,
    load: _Load,
    unconfirmed: int,
    rate: float,
    elapsed: float,
    rows: int,
    drain_s: float,
    stored: _Stored,
    window: tuple[float, float],
    hub: _HubProcess,
    load_samples: list[_Sample],
    counters: dict[str, float],
    peak_rss: int,
    machine: tuple[tuple[float, float], tuple[float, float]],
    generator_cpu_s: float,
) -> None:
    cores = psutil.cpu_count() or 1
    published = load.acked
    lost = published - stored.distinct
    duplicated = stored.rows - stored.distinct
    window_s = window[1] - window[0]
    sustained = stored.window_rows / window_s
    offered = load.sent / elapsed if elapsed > 0 else 0.0
    cpu_pct = cpu_peak = 0.0
    if len(load_samples) >= 2:
        first, last = load_samples[0], load_samples[-1]
        cpu_pct = 100 * (last.cpu_s - first.cpu_s) / max(last.at - first.at, 1e-6)
        cpu_peak = max(
            100 * (b.cpu_s - a.cpu_s) / max(b.at - a.at, 1e-6)
            for a, b in itertools.pairwise(load_samples)
        )
    per_second = stored.per_second
    mb = 1024 * 1024

    def ms(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.1f} ms"

    print(
        f"offered      {offered:,.1f} msgs/s for {elapsed:.1f} s: {load.sent:,} sent, "
        f"{published:,} PUBACKed, {unconfirmed:,} unconfirmed"
        + (f", {load.forgone:,.0f} forgone (broker window full)" if load.forgone >= 1 else "")
    )
    print(
        f"stored       {rows:,} rows; sustained {sustained:,.1f} msgs/s over the steady window "
        f"{window[0]:.1f}–{window[1]:.1f} s"
        + (
            f" (per second: min {min(per_second):,}, median {statistics.median(per_second):,.0f}, "
            f"max {max(per_second):,})"
            if per_second
            else ""
        )
    )
    print(f"drain        {drain_s:.1f} s after the last PUBACK")
    print(
        f"latency      publish→commit p50 {ms(stored.p50_ms)}, p99 {ms(stored.p99_ms)}, "
        f"max {ms(stored.max_ms)}"
    )
    print(
        f"hub CPU      {cpu_pct:.1f} % of one core on average ({cpu_pct / cores:.1f} % of "
        f"{cores} cores), peak {cpu_peak:.1f} % over {SAMPLE_S:g} s"
    )
    print(
        f"hub RSS      peak {peak_rss / mb:.1f} MB (VmHWM), "
        f"{(hub.samples[-1].rss if hub.samples else 0) / mb:.1f} MB at the end"
    )
    print(f"lost         {lost:,}  (PUBACKed − distinct (device_id, seq) stored)")
    print(f"duplicated   {duplicated:,}  (rows − distinct (device_id, seq))")
    rejected = sum(
        v for k, v in counters.items() if k.startswith("carehub_messages_rejected_total")
    )
    batches = counters.get("carehub_batches_total", 0.0)
    received = counters.get("carehub_messages_received_total", 0.0)
    print(
        f"hub counters received {received:,.0f}, batches {batches:,.0f} "
        f"(avg {received / batches if batches else 0:,.0f} msgs), rejected {rejected:,.0f}, "
        f"spooled {counters.get('carehub_spooled_messages_total', 0.0):,.0f}, "
        f"duplicates {counters.get('carehub_messages_duplicate_total', 0.0):,.0f}"
    )
    before, after = machine
    print(
        f"machine      {100 * _busy(before, after):.0f} % busy of {cores} cores during the load; "
        f"generator {100 * generator_cpu_s / max(elapsed, 1e-6):.0f} % of one core"
    )
    for error in load.errors:
        print(f"generator    error: {error}")

    below = " (offered below the target)" if rate < TARGET_RATE else ""
    checks = [
        (
            sustained >= TARGET_RATE * (1 - RATE_TOLERANCE),
            f"sustained {sustained:,.0f} ≥ {TARGET_RATE:,.0f} msgs/s"
            f" (±{RATE_TOLERANCE:.0%}){below}",
        ),
        (lost == 0 and unconfirmed == 0 and not load.errors, f"lost {lost:,} = 0"),
        (duplicated == 0, f"duplicated {duplicated:,} = 0"),
        (peak_rss <= TARGET_RSS_BYTES, f"RSS {peak_rss / mb:.0f} ≤ {TARGET_RSS_BYTES / mb:.0f} MB"),
    ]
    verdict = "PASS" if all(ok for ok, _ in checks) else "MISS"
    print(f"{verdict:<13}" + "; ".join(("ok " if ok else "MISS ") + text for ok, text in checks))
    if hub.process.poll() is not None:
        print(f"hub exited early ({hub.process.returncode}):\n{hub.log_tail()}")


@dataclass(frozen=True, slots=True)
class _Spread:
    """Latency percentiles of one measurement, in milliseconds."""

    count: int
    p50_ms: float
    p99_ms: float
    max_ms: float

    def __str__(self) -> str:
        return (
            f"p50 {self.p50_ms:.1f} ms, p99 {self.p99_ms:.1f} ms, max {self.max_ms:.1f} ms "
            f"(n={self.count:,})"
        )


def _spread(seconds: Sequence[float]) -> _Spread | None:
    """Nearest-rank percentiles of latencies given in seconds; None when there are none."""
    if not seconds:
        return None
    ordered = sorted(seconds)

    def rank(q: float) -> float:
        return ordered[max(math.ceil(q * len(ordered)) - 1, 0)] * 1000

    return _Spread(len(ordered), rank(0.5), rank(0.99), ordered[-1] * 1000)


async def _open_mqtt(
    target: MqttTarget, client_id: str, who: str, connack_s: float
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A raw MQTT connection for a bench client: TCP (or TLS), CONNECT, a successful CONNACK.

    `who` names the client in errors ("bench connection 3", "button eb-1").
    """
    context = ssl.create_default_context() if target.tls else None
    try:
        reader, writer = await asyncio.open_connection(target.host, target.port, ssl=context)
    except OSError as exc:
        raise HubError(
            f"{who} cannot reach the broker at {target.host}:{target.port}: {exc}"
        ) from exc
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    writer.write(_connect_packet(client_id, target))
    connack = await asyncio.wait_for(reader.readexactly(4), connack_s)
    if connack[0] != 0x20 or connack[3] != 0:
        raise HubError(f"broker refused {who}: CONNACK {connack.hex()}")
    return reader, writer
