"""What every bench shares: its own schema and topic root, the hub under test, the figures.

The hub runs as a child process (`python -m hub.cli serve`) on the configured broker and
database, in a schema and under a topic root of its own, so its CPU and memory are
measured apart from the load. Percentiles, CPU shares and verdicts are computed and
printed here once, so that every bench reports them alike.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import psutil
import psycopg
from psycopg import sql

from hub.errors import HubError
from hub.settings import Settings
from hub.storage.migrate import migrate

# Device timestamps carry the offset of the facilities' own clocks (China Standard Time).
CST = timezone(timedelta(hours=8))
SAMPLE_S = 0.5
READY_TIMEOUT_S = 60.0
# A hub that lost its HTTP port to another socket before it could bind it starts again.
PORT_RETRIES = 3
ADDRESS_IN_USE = "address already in use"
MB = 1024 * 1024


# -- the run's own schema and topic root --------------------------------------------------


@dataclass(frozen=True, slots=True)
class BenchRun:
    """One run's schema and topic root, and the settings pointed at them."""

    schema: str
    root: str
    settings: Settings

    @classmethod
    def new(cls, settings: Settings) -> BenchRun:
        """A fresh, random schema and topic root, so runs never meet each other's rows."""
        tag = secrets.token_hex(4)
        schema, root = f"bench_{tag}", f"bench{tag}"
        bench = settings.model_copy(update={"database_schema": schema, "topic_root": root})
        return cls(schema, root, bench)

    def announce(self, headline: str) -> None:
        """Print the bench's headline and the schema its rows go to (for --keep)."""
        print(f"{headline}\n  database schema {self.schema}", flush=True)

    @contextlib.asynccontextmanager
    async def database(self, *, keep: bool = False) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        """The schema migrated, with a connection into it; dropped at the end unless kept."""
        # The bench schema's migrations are not news.
        logging.getLogger("hub.storage.migrate").setLevel(logging.WARNING)
        await migrate(self.settings)
        conn = await psycopg.AsyncConnection.connect(
            self.settings.database_url,
            autocommit=True,
            options=f"-c search_path={self.schema},public",
        )
        try:
            yield conn
        finally:
            if keep:
                print(f"  kept schema {self.schema} (--keep)")
            else:
                await conn.execute(
                    sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(self.schema))
                )
                print(f"  dropped schema {self.schema}")
            await conn.close()

    @contextlib.asynccontextmanager
    async def hub(self, *, mqtt_protocol: int | None = None) -> AsyncIterator[HubProcess]:
        """`carehub serve` on the run's schema and topic root, ready, until the block ends."""
        async with self.hubs(1, mqtt_protocol=mqtt_protocol) as (hub,):
            yield hub

    @contextlib.asynccontextmanager
    async def hubs(
        self, count: int, *, mqtt_protocol: int | None = None
    ) -> AsyncIterator[tuple[HubProcess, ...]]:
        """`count` hub processes, ready, until the block ends; more than one share the stream.

        Several hubs subscribe as one shared group (`$share/{root}/...`), each with a client
        id, spool and HTTP port of its own, as the hubs of a city do (SPEC §2, §9).
        """
        group = self.root if count > 1 else None
        with tempfile.TemporaryDirectory(prefix="carehub-bench-") as workdir:
            started: list[HubProcess] = []
            try:
                for index in range(count):
                    own = Path(workdir) / f"hub-{index}"
                    own.mkdir()
                    started.append(
                        HubProcess(
                            self.settings,
                            own,
                            mqtt_protocol=mqtt_protocol,
                            index=index if count > 1 else None,
                            shared_group=group,
                        )
                    )
                await asyncio.gather(*(hub.wait_ready() for hub in started))
                yield tuple(started)
            finally:
                for hub in started:
                    hub.stop()


async def db_now(conn: psycopg.AsyncConnection[Any]) -> datetime:
    """The database's clock now: the one `stored_at` and `live_changes.at` are read from."""
    cur = await conn.execute("SELECT clock_timestamp()")
    row = await cur.fetchone()
    assert row is not None  # noqa: S101 - SELECT without FROM returns one row
    now: datetime = row[0]
    return now


async def copy_registry(
    conn: psycopg.AsyncConnection[Any],
    tables: Sequence[tuple[str, Sequence[str], Iterable[Sequence[Any]]]],
) -> None:
    """COPY a bench district into its tables, (table, columns, rows) each, in one transaction."""
    async with conn.transaction(), conn.cursor() as cur:
        for table, columns, rows in tables:
            statement = sql.SQL("COPY {} ({}) FROM STDIN").format(
                sql.Identifier(table), sql.SQL(", ").join(map(sql.Identifier, columns))
            )
            async with cur.copy(statement) as copy:
                for row in rows:
                    await copy.write_row(row)


# -- the hub under test -------------------------------------------------------------------


@dataclass(slots=True)
class Sample:
    """A process's CPU seconds and resident set at one moment (monotonic seconds)."""

    at: float
    cpu_s: float
    rss: int


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def http_get(url: str, timeout: float = 2.0) -> tuple[int, str]:
    """(status, body) of a GET, error statuses included."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - our own http://127.0.0.1
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


class HubProcess:
    """`carehub serve` as a child process, with its CPU and memory sampled."""

    def __init__(
        self,
        settings: Settings,
        workdir: Path,
        *,
        mqtt_protocol: int | None = None,
        index: int | None = None,
        shared_group: str | None = None,
    ) -> None:
        """`index`: this hub's number among several; `shared_group`: the group they share."""
        self.port = free_port()
        self._port_retries = PORT_RETRIES
        self.log_path = workdir / "hub.log"
        self.name = "hub" if index is None else f"hub {index + 1}"
        root = settings.topic_root
        client_id = f"carehub-bench-hub-{root}" + ("" if index is None else f"-{index + 1}")
        env = dict(os.environ)
        env.update(
            CAREHUB_MQTT_URL=settings.mqtt_url,
            CAREHUB_DATABASE_URL=settings.database_url,
            CAREHUB_DATABASE_SCHEMA=settings.database_schema,
            CAREHUB_TOPIC_ROOT=root,
            CAREHUB_MQTT_CLIENT_ID=client_id,
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
        # The run's own group or none: a group from the environment would split the
        # stream with strangers.
        env.pop("CAREHUB_MQTT_SHARED_GROUP", None)
        if shared_group is not None:
            env["CAREHUB_MQTT_SHARED_GROUP"] = shared_group
        self._env = env
        # Appended to: a hub started again in the same directory keeps the first one's log.
        self._log = self.log_path.open("ab")
        self.process = self._spawn()
        self.ps = psutil.Process(self.process.pid)
        self.samples: list[Sample] = []

    def _spawn(self) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "-m", "hub.cli", "serve"],
            env=self._env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def _respawn_on_a_new_port(self) -> bool:
        """Start again on another port if the last start lost its port; False otherwise.

        free_port's port is free when chosen, but until the hub binds it, any outgoing
        connection on this machine may be given it as its own local port.
        """
        if self._port_retries <= 0 or ADDRESS_IN_USE not in self.log_tail(5):
            return False
        self._port_retries -= 1
        self.port = free_port()
        self._env["CAREHUB_HTTP_PORT"] = str(self.port)
        self.process = self._spawn()
        self.ps = psutil.Process(self.process.pid)
        return True

    @property
    def base_url(self) -> str:
        """Where the hub's HTTP server listens."""
        return f"http://127.0.0.1:{self.port}"

    async def wait_ready(self) -> None:
        """Wait until /readyz says 200 (broker connected, database up)."""
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                if self._respawn_on_a_new_port():
                    continue
                raise HubError(f"the hub exited with {self.process.returncode}:\n{self.log_tail()}")
            with contextlib.suppress(OSError):
                status, _ = await asyncio.to_thread(http_get, self.base_url + "/readyz", 1.0)
                if status == 200:
                    return
            await asyncio.sleep(0.2)
        raise HubError(f"the hub was not ready within {READY_TIMEOUT_S:.0f} s:\n{self.log_tail()}")

    def sample(self) -> None:
        """Record the hub's CPU time and RSS now."""
        with contextlib.suppress(psutil.Error):
            cpu = self.ps.cpu_times()
            self.samples.append(
                Sample(time.monotonic(), cpu.user + cpu.system, self.ps.memory_info().rss)
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
            status, text = http_get(self.base_url + "/metrics")
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

    def report_early_exit(self) -> None:
        """Print how the hub ended, if it did not last the run."""
        if self.process.poll() is not None:
            print(f"{self.name} exited early ({self.process.returncode}):\n{self.log_tail()}")


# -- the figures --------------------------------------------------------------------------


def machine_clock() -> tuple[float, float]:
    """(all, idle) CPU seconds of the whole machine so far."""
    times = psutil.cpu_times()
    return sum(times), times.idle + getattr(times, "iowait", 0.0)


def busy(before: tuple[float, float], after: tuple[float, float]) -> float:
    """Machine-wide busy share (0..1) between two machine_clock() readings."""
    total = after[0] - before[0]
    idle = after[1] - before[1]
    return (total - idle) / total if total > 0 else 0.0


class CpuMeter:
    """The machine's busy share and this bench process's own CPU, from its start to now or stop.

    Like a stopwatch: it reads the time so far until `stop()`, and the stopped figures after.
    """

    def __init__(self) -> None:
        self._me = psutil.Process()
        self._machine_from = machine_clock()
        self._own_from = self._own_cpu_s()
        self._stopped: tuple[tuple[float, float], float] | None = None

    def _own_cpu_s(self) -> float:
        # user + system: what the load generator itself costs the machine.
        return float(sum(self._me.cpu_times()[:2]))

    def stop(self) -> None:
        """Hold both figures as they are now: the load is over, what follows is not measured."""
        self._stopped = (machine_clock(), self._own_cpu_s())

    def machine_busy(self) -> float:
        """Machine-wide busy share (0..1) from the start until now, or until stop()."""
        machine_to = machine_clock() if self._stopped is None else self._stopped[0]
        return busy(self._machine_from, machine_to)

    def own_cpu_s(self) -> float:
        """CPU seconds this process used from the start until now, or until stop()."""
        own_to = self._own_cpu_s() if self._stopped is None else self._stopped[1]
        return own_to - self._own_from


def cpu_percent(samples: Sequence[Sample]) -> float:
    """A process's CPU, in % of one core, from its first sample to its last (0 if fewer)."""
    if len(samples) < 2:
        return 0.0
    first, last = samples[0], samples[-1]
    return 100 * (last.cpu_s - first.cpu_s) / max(last.at - first.at, 1e-6)


def rejected_total(counters: dict[str, float]) -> float:
    """Messages the hub rejected, summed over every reason code."""
    return sum(v for k, v in counters.items() if k.startswith("carehub_messages_rejected_total"))


@dataclass(frozen=True, slots=True)
class Spread:
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


def spread(seconds: Sequence[float]) -> Spread | None:
    """Nearest-rank percentiles of latencies given in seconds; None when there are none."""
    if not seconds:
        return None
    ordered = sorted(seconds)

    def rank(q: float) -> float:
        return ordered[max(math.ceil(q * len(ordered)) - 1, 0)] * 1000

    return Spread(len(ordered), rank(0.5), rank(0.99), ordered[-1] * 1000)


def print_verdict(checks: Sequence[tuple[bool, str]], *, missed: str = "MISS") -> None:
    """One line: PASS, or `missed`, then every check with its outcome. Never an exit code."""
    verdict = "PASS" if all(ok for ok, _ in checks) else missed
    print(
        f"{verdict:<13}" + "; ".join(("ok " if ok else f"{missed} ") + text for ok, text in checks)
    )
