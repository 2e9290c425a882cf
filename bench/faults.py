"""`carehub bench faults`: QoS 1 telemetry through a broker restart, a hub SIGKILL and a
database cut; prints what was lost or duplicated, and how long the hub took to recover.

The faults need parts the bench can break without touching anything else on the machine:

- a Mosquitto of its own on a free port, configured as the site file configures one
  (persistence, a queue that rides out a minute of the hub being away), restarted with
  SIGTERM, which saves its persistence file as a site's service manager would;
- a TCP relay in front of PostgreSQL: the cut closes every connection through it and
  refuses new ones until the cut is over, as a pulled cable or a failed-over server does;
- the hub as a child process (bench.harness), killed with SIGKILL and started again on
  the same spool directory and MQTT client id.

Lost counts what the broker confirmed (PUBACKed) and the database never got. What was in
flight when the broker went down was never confirmed: it is counted apart, and the part
of it that was stored anyway is taken out of the lost count honestly.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from bench import harness
from bench.load import (
    CONNECTIONS,
    TelemetryLoad,
    TelemetryPublisher,
    bench_fleet,
    close_load,
    count_readings,
    drain_readings,
    register_fleet,
    telemetry_load,
)
from hub.errors import HubError
from hub.settings import Settings

DEFAULT_RATE = 10_000.0
DEFAULT_DURATION_S = 240.0
DEFAULT_CUT_S = 60.0
# When each fault strikes, as a share of the run.
BROKER_AT = 0.12
HUB_AT = 0.28
CUT_AT = 0.45
# The broker as the site file sets it up (deploy/mosquitto/mosquitto.conf).
BROKER_CONFIG = (
    "persistence true",
    "autosave_interval 60",
    "max_queued_messages 200000",
    "max_queued_bytes 0",
    "max_inflight_messages 1000",
    "message_size_limit 65536",
)
RECONNECT_S = 0.5
CATCH_UP_TIMEOUT_S = 300.0
CATCH_UP_POLL_S = 1.0


# -- the parts the bench breaks ---------------------------------------------------------


class PrivateBroker:
    """`mosquitto` on a free port with the site's settings and a persistence file."""

    def __init__(self, directory: Path) -> None:
        binary = shutil.which("mosquitto")
        if binary is None:
            raise HubError("bench faults needs mosquitto on PATH (apt-get install mosquitto)")
        self._binary = binary
        self._directory = directory
        self.port = harness.free_port()
        self._conf = directory / "mosquitto.conf"
        self._conf.write_text(
            "\n".join(
                (
                    f"listener {self.port} 127.0.0.1",
                    "allow_anonymous true",
                    f"persistence_location {directory}/",
                    *BROKER_CONFIG,
                )
            )
            + "\n"
        )
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The broker's mqtt:// URL."""
        return f"mqtt://127.0.0.1:{self.port}"

    async def start(self) -> None:
        """Start it and wait until it accepts connections."""
        self._process = self._spawn()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise HubError(f"mosquitto exited with {self._process.returncode}")
            with contextlib.suppress(OSError):
                _, writer = await asyncio.open_connection("127.0.0.1", self.port)
                writer.close()
                return
            await asyncio.sleep(0.05)
        raise HubError("mosquitto did not start within 10 s")

    def _spawn(self) -> subprocess.Popen[bytes]:
        with (self._directory / "mosquitto.log").open("ab") as log:
            # The mosquitto found on PATH, with arguments of our own.
            return subprocess.Popen(  # noqa: S603
                [self._binary, "-c", str(self._conf)], stdout=log, stderr=log
            )

    async def stop(self) -> None:
        """SIGTERM (Mosquitto writes its persistence file), then wait for it."""
        if self._process is None or self._process.poll() is not None:
            return
        self._process.send_signal(signal.SIGTERM)
        try:
            await asyncio.to_thread(self._process.wait, 30)
        except subprocess.TimeoutExpired:
            self._process.kill()
            await asyncio.to_thread(self._process.wait)


class DatabaseRelay:
    """A TCP relay to PostgreSQL that can be cut: connections closed, new ones refused."""

    def __init__(self, host: str, port: int) -> None:
        self._target = (host, port)
        self.port = harness.free_port()
        self._server: asyncio.Server | None = None
        self._pipes: set[asyncio.StreamWriter] = set()

    async def open(self) -> None:
        """Listen on 127.0.0.1:port."""
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", self.port)

    async def cut(self) -> None:
        """Stop listening and close every connection through the relay."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for writer in list(self._pipes):
            writer.transport.abort()
        self._pipes.clear()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            host, port = self._target
            if host.startswith("/"):
                # A unix-socket server (the embedded PostgreSQL): libpq's socket file name.
                upstream_reader, upstream_writer = await asyncio.open_unix_connection(
                    f"{host}/.s.PGSQL.{port}"
                )
            else:
                upstream_reader, upstream_writer = await asyncio.open_connection(host, port)
        except OSError:
            writer.transport.abort()
            return
        self._pipes.update((writer, upstream_writer))
        try:
            await asyncio.gather(_pipe(reader, upstream_writer), _pipe(upstream_reader, writer))
        finally:
            for end in (writer, upstream_writer):
                self._pipes.discard(end)
                end.transport.abort()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError, asyncio.IncompleteReadError):
        while chunk := await reader.read(65536):
            writer.write(chunk)
            await writer.drain()
    writer.transport.abort()


# -- the run ----------------------------------------------------------------------------


@dataclass(slots=True)
class Fault:
    """One fault: what, when it began and ended, and when the hub had recovered."""

    name: str
    began: float = 0.0
    ended: float = 0.0
    ready_after: float | None = None
    caught_up_after: float | None = None


@dataclass(slots=True)
class Publishing:
    """The publishers, kept publishing across broker restarts."""

    publishers: Sequence[TelemetryPublisher]
    load: TelemetryLoad
    # (device_id, seq) in flight when a connection broke: never confirmed by the broker.
    unconfirmed: list[tuple[str, int]] = field(default_factory=list)
    reconnects: int = 0
    # The PUBACK readers of the publishers that finished, still reading until closed.
    readers: list[asyncio.Task[None]] = field(default_factory=list)

    async def run(self, started: float, until: float) -> None:
        """Each publisher publishes until `until`, reconnecting whenever its connection breaks."""
        async with asyncio.TaskGroup() as group:
            for publisher in self.publishers:
                group.create_task(self._keep_publishing(publisher, started, until))

    async def _keep_publishing(
        self, publisher: TelemetryPublisher, started: float, until: float
    ) -> None:
        loop = asyncio.get_running_loop()
        first = True
        while loop.time() < until:
            try:
                if not first:
                    await publisher.connect()
                    self.reconnects += 1
                first = False
                acks = asyncio.create_task(publisher.read_acks())
                sending = asyncio.create_task(publisher.publish(max(started, loop.time()), until))
                done, _ = await asyncio.wait({acks, sending}, return_when=asyncio.FIRST_COMPLETED)
                if sending in done and sending.exception() is None:
                    self.readers.append(acks)
                    return
                for task in (acks, sending):
                    task.cancel()
                    with contextlib.suppress(
                        asyncio.CancelledError, HubError, OSError, TimeoutError
                    ):
                        await task
            except (HubError, OSError, TimeoutError):
                pass
            self.unconfirmed.extend(publisher.forget_inflight())
            await asyncio.sleep(RECONNECT_S)


@dataclass(frozen=True, slots=True)
class _Plan:
    """What one run offers: for how long, how fast, the cut's length, how many devices."""

    duration_s: float
    rate: float
    cut_s: float
    devices: int
    connections: int


def run_faults_bench(
    settings: Settings,
    *,
    duration_s: float = DEFAULT_DURATION_S,
    rate: float = DEFAULT_RATE,
    cut_s: float = DEFAULT_CUT_S,
    devices: int = 10_000,
    connections: int = CONNECTIONS,
) -> int:
    """Run the fault bench and print its figures; 0 even when a target is missed."""
    if duration_s <= 0 or rate <= 0 or cut_s <= 0 or devices < 1 or connections < 1:
        raise HubError("--duration, --rate, --cut, --devices and --connections must be positive")
    if (CUT_AT * duration_s) + cut_s >= duration_s:
        raise HubError(
            f"--cut {cut_s:g} s does not fit in --duration {duration_s:g} s: the cut begins at "
            f"{CUT_AT:.0%} of the run and must end before it does"
        )
    return asyncio.run(_bench(settings, _Plan(duration_s, rate, cut_s, devices, connections)))


async def _bench(settings: Settings, plan: _Plan) -> int:
    duration_s, rate, cut_s, device_count = plan.duration_s, plan.rate, plan.cut_s, plan.devices
    with tempfile.TemporaryDirectory(prefix="carehub-bench-faults-") as scratch:
        workdir = Path(scratch)
        broker = PrivateBroker(workdir)
        await broker.start()
        target = psycopg.conninfo.conninfo_to_dict(settings.database_url)
        relay = DatabaseRelay(
            str(target.get("host") or "127.0.0.1"), int(target.get("port") or 5432)
        )
        await relay.open()
        try:
            direct = harness.BenchRun.new(settings.model_copy(update={"mqtt_url": broker.url}))
            relayed = direct.settings.model_copy(
                update={"database_url": _via(settings.database_url, relay.port)}
            )
            print(
                f"carehub bench faults: {duration_s:g} s of {rate:g} msgs/s QoS 1 telemetry from "
                f"{device_count} devices; a broker restart at {BROKER_AT * duration_s:.0f} s, a "
                f"hub SIGKILL at {HUB_AT * duration_s:.0f} s, a {cut_s:g} s database cut at "
                f"{CUT_AT * duration_s:.0f} s\n"
                f"  own broker {broker.url} (site settings), database relay 127.0.0.1:"
                f"{relay.port}, schema {direct.schema}",
                flush=True,
            )
            async with direct.database() as conn:
                fleet = bench_fleet(device_count)
                await register_fleet(conn, fleet)
                await _run(conn, relayed, workdir, broker, relay, fleet=fleet, plan=plan)
        finally:
            await relay.cut()
            await broker.stop()
    return 0


def _via(database_url: str, port: int) -> str:
    """`database_url` pointed at the relay on 127.0.0.1:`port`."""
    info = psycopg.conninfo.conninfo_to_dict(database_url)
    info.update(host="127.0.0.1", port=str(port))
    return psycopg.conninfo.make_conninfo("", **info)


async def _run(
    conn: psycopg.AsyncConnection[Any],
    settings: Settings,
    workdir: Path,
    broker: PrivateBroker,
    relay: DatabaseRelay,
    *,
    fleet: Sequence[tuple[str, str, str]],
    plan: _Plan,
) -> None:
    hub_dir = workdir / "hub"
    hub_dir.mkdir()
    # Every hub process of the run; the last is the one running.
    hubs = [harness.HubProcess(settings, hub_dir)]
    try:
        await _run_with_hub(conn, settings, hubs, broker, relay, fleet=fleet, plan=plan)
    finally:
        for hub in hubs:
            hub.stop()


async def _run_with_hub(
    conn: psycopg.AsyncConnection[Any],
    settings: Settings,
    hubs: list[harness.HubProcess],
    broker: PrivateBroker,
    relay: DatabaseRelay,
    *,
    fleet: Sequence[tuple[str, str, str]],
    plan: _Plan,
) -> None:
    duration_s = plan.duration_s
    await hubs[0].wait_ready()
    rss_start = _rss(hubs[0])
    load, publishers = telemetry_load(settings, fleet, rate=plan.rate, connections=plan.connections)
    for publisher in publishers:
        await publisher.connect()
    publishing = Publishing(publishers, load)
    loop = asyncio.get_running_loop()
    started = loop.time() + 0.1
    until = started + duration_s
    sender = asyncio.create_task(publishing.run(started, until))
    try:
        faults = await _strike(
            conn, settings, hubs, broker, relay, load, started, duration_s, plan.cut_s
        )
        await sender
    finally:
        if not sender.done():
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await sender
    unconfirmed_open = sum([await publisher.settle() for publisher in publishers])
    rows, drain_s = await drain_readings(conn, load.acked)
    if load.acked > rows:
        print(f"the hubs' log, last lines:\n{hubs[-1].log_tail(60)}")
    rss_end = _rss(hubs[-1])
    counters = await asyncio.to_thread(hubs[-1].metrics)
    await close_load(publishers, publishing.readers, load)
    cur = await conn.execute("SELECT count(*), count(DISTINCT (device_id, seq)) FROM readings")
    totals = await cur.fetchone()
    distinct = int(totals[1]) if totals else 0
    stored_unconfirmed = await _stored_among(conn, publishing.unconfirmed)
    _report(
        faults=faults,
        load=load,
        publishing=publishing,
        unconfirmed_open=unconfirmed_open,
        rows=rows,
        distinct=distinct,
        stored_unconfirmed=stored_unconfirmed,
        drain_s=drain_s,
        duration_s=duration_s,
        rss=(rss_start, rss_end),
        counters=counters,
    )


async def _strike(  # noqa: PLR0917 - one run's parts, passed on as they are
    conn: psycopg.AsyncConnection[Any],
    settings: Settings,
    hubs: list[harness.HubProcess],
    broker: PrivateBroker,
    relay: DatabaseRelay,
    load: TelemetryLoad,
    started: float,
    duration_s: float,
    cut_s: float,
) -> list[Fault]:
    """The three faults in turn, each followed by the hub's recovery (new hubs join `hubs`)."""
    loop = asyncio.get_running_loop()
    faults: list[Fault] = []

    async def at(share: float) -> None:
        await asyncio.sleep(max(started + share * duration_s - loop.time(), 0))

    await at(BROKER_AT)
    fault = Fault("broker restart", began=loop.time() - started)
    await broker.stop()
    await broker.start()
    fault.ended = loop.time() - started
    faults.append(fault)
    await _recover(conn, hubs[-1], fault, load, started)

    await at(HUB_AT)
    fault = Fault("hub SIGKILL", began=loop.time() - started)
    killed = hubs[-1]
    killed.process.kill()
    await asyncio.to_thread(killed.process.wait)
    killed.stop()
    # The same spool directory and MQTT client id: the broker's session resumes.
    hubs.append(harness.HubProcess(settings, killed.log_path.parent))
    fault.ended = loop.time() - started
    faults.append(fault)
    await _recover(conn, hubs[-1], fault, load, started)

    await at(CUT_AT)
    fault = Fault(f"database cut {cut_s:g} s", began=loop.time() - started)
    await relay.cut()
    await asyncio.sleep(cut_s)
    await relay.open()
    fault.ended = loop.time() - started
    faults.append(fault)
    await _recover(conn, hubs[-1], fault, load, started)
    return faults


async def _recover(
    conn: psycopg.AsyncConnection[Any],
    hub: harness.HubProcess,
    fault: Fault,
    load: TelemetryLoad,
    started: float,
) -> None:
    """Wait until the hub is ready again, then until it has stored what was confirmed by
    the fault's end; note both times, counted from the fault's end."""
    loop = asyncio.get_running_loop()
    confirmed = load.acked
    with contextlib.suppress(HubError):
        await hub.wait_ready()
        fault.ready_after = loop.time() - started - fault.ended
    deadline = loop.time() + CATCH_UP_TIMEOUT_S
    while loop.time() < deadline:
        if await count_readings(conn) >= confirmed:
            fault.caught_up_after = loop.time() - started - fault.ended
            return
        await asyncio.sleep(CATCH_UP_POLL_S)


async def _stored_among(
    conn: psycopg.AsyncConnection[Any], messages: Sequence[tuple[str, int]]
) -> int:
    """How many of (device_id, seq) `messages` are in readings."""
    if not messages:
        return 0
    await conn.execute(
        "CREATE TEMP TABLE IF NOT EXISTS bench_unconfirmed (device_id text, seq bigint)"
    )
    async with conn.cursor() as cur, cur.copy("COPY bench_unconfirmed FROM STDIN") as copy:
        for message in messages:
            await copy.write_row(message)
    cur = await conn.execute(
        "SELECT count(*) FROM (SELECT DISTINCT device_id, seq FROM bench_unconfirmed) u"
        " WHERE EXISTS (SELECT 1 FROM readings r WHERE r.device_id = u.device_id"
        " AND r.seq = u.seq)"
    )
    row = await cur.fetchone()
    return int(row[0]) if row else 0


def _rss(hub: harness.HubProcess) -> int:
    hub.sample()
    return hub.samples[-1].rss if hub.samples else 0


def _seconds(value: float | None) -> str:
    return "never" if value is None else f"{value:.1f} s"


def _report(
    *,
    faults: Sequence[Fault],
    load: TelemetryLoad,
    publishing: Publishing,
    unconfirmed_open: int,
    rows: int,
    distinct: int,
    stored_unconfirmed: int,
    drain_s: float,
    duration_s: float,
    rss: tuple[int, int],
    counters: dict[str, float],
) -> None:
    for fault in faults:
        print(
            f"fault        {fault.name:<20} at {fault.began:6.1f} s, over at {fault.ended:6.1f} s; "
            f"hub ready {_seconds(fault.ready_after)} later, "
            f"caught up {_seconds(fault.caught_up_after)} later"
        )
    unconfirmed = len(publishing.unconfirmed)
    # Stored but never confirmed to the device: more rows than confirmations, not a loss.
    lost = load.acked - (distinct - stored_unconfirmed)
    duplicated = rows - distinct
    print(
        f"offered      {load.sent / duration_s:,.1f} msgs/s for {duration_s:g} s: {load.sent:,} "
        f"sent, {load.acked:,} PUBACKed; {unconfirmed:,} in flight when a connection broke "
        f"({stored_unconfirmed:,} of them stored anyway), {unconfirmed_open:,} unconfirmed at "
        f"the end; {publishing.reconnects} reconnects"
    )
    print(
        f"stored       {rows:,} rows, {distinct:,} distinct; drain {drain_s:.1f} s after the load"
    )
    print(f"lost         {lost:,}  (PUBACKed − stored of what was PUBACKed)")
    print(f"duplicated   {duplicated:,}  (rows − distinct (device_id, seq))")
    print(
        f"hub RSS      {rss[0] / harness.MB:.1f} MB at the start, {rss[1] / harness.MB:.1f} MB "
        "at the end (the second hub process, after the SIGKILL)"
    )
    print(
        f"hub counters spooled {counters.get('carehub_spooled_messages_total', 0.0):,.0f}, "
        f"replayed {counters.get('carehub_replayed_messages_total', 0.0):,.0f} "
        "(the second hub process)"
    )
    harness.print_verdict(
        [
            (lost == 0, f"lost {lost:,} = 0"),
            (duplicated == 0, f"duplicated {duplicated:,} = 0"),
            (
                all(f.caught_up_after is not None for f in faults),
                "caught up after every fault",
            ),
        ]
    )
