"""A hub killed mid-stream loses nothing and stores nothing twice (SPEC §8).

`carehub serve` runs as a real child process on the test broker and database, with a fixed
client id so the broker keeps its persistent session. Devices publish a steady QoS 1 stream;
the hub is SIGKILLed while messages are in flight, devices keep publishing while it is down,
and a new hub process takes the session over. Every message the broker acknowledged to a
device must then be in the database exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from devices import mqtt, topics
from hub.settings import Settings
from tests.fix_hub import DB, FACILITY, connect_db, now_ts
from tests.private_broker import free_port

pytestmark = [pytest.mark.mqtt, pytest.mark.db, pytest.mark.slow]


# The first hub is SIGKILLed once KILL_AT messages are acked; the stream flows on for
# AFTER_KILL more, then WHILE_DEAD more are published with no hub connected. The broker
# queues all of those in the hub's session, and Mosquitto keeps at most 1000 per session
# (max_queued_messages) and drops the rest: these leave room for what was in flight.
KILL_AT = 1800
AFTER_KILL = 200
WHILE_DEAD = 400
AFTER_RESTART = 1600
TOTAL = KILL_AT + AFTER_KILL + WHILE_DEAD + AFTER_RESTART
# QoS 1 publishes awaiting their PUBACK at once: a steady stream, not one at a time.
IN_FLIGHT = 50
READY_TIMEOUT_S = 60.0
DRAIN_TIMEOUT_S = 90.0
# The backlog drains in a few seconds; this long without a new row means it never will.
STALL_S = 15.0


class HubProcess:
    """`carehub serve` as a child process, started and killed as an operator would."""

    def __init__(self, settings: Settings, client_id: str, workdir: Path) -> None:
        self._settings = settings
        self._client_id = client_id
        self._workdir = workdir
        self._child: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.starts = 0

    @property
    def log(self) -> Path:
        """Where the current child writes its output."""
        return self._workdir / f"hub-{self.starts}.log"

    def start(self) -> None:
        """Start a hub process on the test's broker, database, schema and topic root."""
        assert self._child is None or self._child.poll() is not None
        self.starts += 1
        self.port = free_port()
        s = self._settings
        env = {key: value for key, value in os.environ.items() if not key.startswith("CAREHUB_")}
        env.update(
            CAREHUB_MQTT_URL=s.mqtt_url,
            CAREHUB_MQTT_PROTOCOL=str(s.mqtt_protocol),
            # The same id on every start: that is what resumes the broker's session.
            CAREHUB_MQTT_CLIENT_ID=self._client_id,
            CAREHUB_MQTT_SESSION_EXPIRY_S="300",
            CAREHUB_DATABASE_URL=s.database_url,
            CAREHUB_DATABASE_SCHEMA=s.database_schema,
            CAREHUB_TIMESCALEDB="off",
            CAREHUB_TOPIC_ROOT=s.topic_root,
            CAREHUB_SPOOL_DIR=str(self._workdir / "spool"),
            CAREHUB_HTTP_HOST="127.0.0.1",
            CAREHUB_HTTP_PORT=str(self.port),
            CAREHUB_LOG_LEVEL="WARNING",
        )
        with self.log.open("wb") as log:
            self._child = subprocess.Popen(
                [sys.executable, "-m", "hub.cli", "serve"],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, in-flight messages are neither acked nor flushed."""
        assert self._child is not None
        self._child.send_signal(signal.SIGKILL)
        self._child.wait(timeout=10)

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM, as a service manager stops it; return the exit code."""
        assert self._child is not None
        self._child.send_signal(signal.SIGTERM)
        return self._child.wait(timeout=timeout)

    def ensure_dead(self) -> None:
        """Kill the child if it still runs (test teardown)."""
        if self._child is not None and self._child.poll() is None:
            self._child.kill()
            self._child.wait(timeout=10)

    def output(self) -> str:
        """What the current child printed, for failure messages."""
        return self.log.read_text("utf-8", "replace") if self.log.exists() else ""

    async def wait_ready(self) -> dict[str, Any]:
        """Poll /readyz until the hub says it is connected to the broker and the database."""
        deadline = time.monotonic() + READY_TIMEOUT_S
        url = f"http://127.0.0.1:{self.port}/readyz"
        while True:
            assert self._child is not None
            if self._child.poll() is not None:
                pytest.fail(f"hub exited with {self._child.returncode}:\n{self.output()}")
            body = await asyncio.to_thread(_get_json, url)
            if body is not None:
                return body
            if time.monotonic() > deadline:
                pytest.fail(f"hub not ready within {READY_TIMEOUT_S} s:\n{self.output()}")
            await asyncio.sleep(0.1)

    async def get(self, path: str) -> str:
        """GET a path of the hub's HTTP API as text."""
        url = f"http://127.0.0.1:{self.port}{path}"
        return await asyncio.to_thread(_get_text, url)


def _get_json(url: str) -> dict[str, Any] | None:
    """The JSON body of a 200 answer, or None while the server is down or not ready."""
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            body: dict[str, Any] = json.loads(response.read())
            return body
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return None


def _get_text(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:
        text: str = response.read().decode()
        return text


@pytest.fixture
def hub_process(migrated: Settings, tmp_path: Path) -> Iterator[HubProcess]:
    """A hub child process of this test's own, killed at teardown whatever happened."""
    process = HubProcess(migrated, f"crash-{migrated.topic_root}", tmp_path)
    try:
        yield process
    finally:
        process.ensure_dead()


class Stream:
    """Devices publishing QoS 1 with increasing seq; counts only what the broker acked."""

    def __init__(self, client: aiomqtt.Client, root: str) -> None:
        self._client = client
        self._root = root
        self._seq = {"fs-1": 0, "eb-1": 0, "oc-1": 0}
        self._turn = 0
        self.acked: set[tuple[str, int]] = set()

    def _next(self) -> tuple[str, int, str, bytes]:
        device = ("fs-1", "eb-1", "oc-1")[self._turn % 3]
        self._turn += 1
        self._seq[device] += 1
        seq = self._seq[device]
        fields: dict[str, Any]
        if device == "fs-1":
            channel, fields = "telemetry", {"presence": seq % 2 == 0, "battery": 90, "rssi": -60}
        elif device == "eb-1":
            channel = "event"
            fields = {"event": "pressed", "button": "pendant", "test": True}
        else:
            channel, fields = "telemetry", {"count": seq % 15, "staff": 2, "zone": "class-a"}
        body = {"ts": now_ts(), "seq": seq, **fields}
        topic = topics.topic(self._root, FACILITY, device, channel)
        return device, seq, topic, json.dumps(body).encode()

    async def publish(self, count: int) -> None:
        """Publish `count` more messages, IN_FLIGHT at a time."""
        target = len(self.acked) + count
        while len(self.acked) < target:
            batch = [self._next() for _ in range(min(IN_FLIGHT, target - len(self.acked)))]
            results = await asyncio.gather(
                *(self._client.publish(topic, payload, qos=1) for _, _, topic, payload in batch),
                return_exceptions=True,
            )
            for (device, seq, *_), result in zip(batch, results, strict=True):
                if isinstance(result, BaseException):
                    raise result
                self.acked.add((device, seq))


@contextlib.asynccontextmanager
async def _stream(settings: Settings) -> AsyncIterator[Stream]:
    target = settings.mqtt
    client = mqtt.Client(
        target.host,
        target.port,
        identifier=f"crash-devices-{settings.topic_root}",
        protocol=aiomqtt.ProtocolVersion.V5
        if settings.mqtt_protocol == 5
        else aiomqtt.ProtocolVersion.V311,
        username=target.username,
        password=target.password,
    )
    # IN_FLIGHT publishes await their PUBACK at once by design: no warning for each.
    client.pending_calls_threshold = 2 * IN_FLIGHT
    async with client:
        yield Stream(client, settings.topic_root)


async def _stored(db: DB) -> list[tuple[str, int]]:
    cur = await db.execute(
        "SELECT device_id, seq FROM readings UNION ALL SELECT device_id, seq FROM events"
    )
    return [(str(device), int(seq)) for device, seq in await cur.fetchall()]


async def _stored_count(db: DB) -> int:
    cur = await db.execute("SELECT (SELECT count(*) FROM readings) + (SELECT count(*) FROM events)")
    row = await cur.fetchone()
    assert row is not None
    return int(row[0])


async def test_hub_killed_mid_stream_loses_nothing_and_stores_nothing_twice(
    migrated: Settings, hub_process: HubProcess
) -> None:
    """SIGKILL mid-stream, publish on, restart: every acked message is stored exactly once."""
    hub = hub_process
    hub.start()
    ready = await hub.wait_ready()
    assert ready["mqtt"] is True
    assert ready["database"] is True

    async with await connect_db(migrated) as db, _stream(migrated) as stream:
        # The first hub takes a steady stream and is killed while it is still flowing.
        flowing = asyncio.create_task(stream.publish(KILL_AT + AFTER_KILL))
        while len(stream.acked) < KILL_AT:
            assert not flowing.done(), "the stream ended before the kill"
            await asyncio.sleep(0.005)
        hub.kill()
        stored_at_kill = await _stored_count(db)
        await flowing

        # Nobody is subscribed now: the broker holds these in the hub's session.
        await stream.publish(WHILE_DEAD)
        assert await _stored_count(db) < len(stream.acked)

        hub.start()
        await hub.wait_ready()
        await stream.publish(AFTER_RESTART)
        assert len(stream.acked) == TOTAL

        deadline = time.monotonic() + DRAIN_TIMEOUT_S
        progress, progress_at = -1, time.monotonic()
        while (count := await _stored_count(db)) < TOTAL:
            now = time.monotonic()
            if count != progress:
                progress, progress_at = count, now
            assert now < deadline and now - progress_at < STALL_S, (
                f"{count} of {TOTAL} stored, none more for {now - progress_at:.0f} s"
                f" ({stored_at_kill} at the kill; a broker that caps its session queue"
                " drops the rest):\n" + hub.output()
            )
            await asyncio.sleep(0.1)
        # Let a late duplicate (a redelivery stored twice) show itself.
        await asyncio.sleep(1.0)

        stored = await _stored(db)
        assert len(stored) == TOTAL, "a message was stored more than once"
        assert set(stored) == stream.acked, "stored messages differ from those published"
        for device in ("fs-1", "eb-1", "oc-1"):
            seqs = sorted(seq for d, seq in stored if d == device)
            assert seqs == list(range(1, len(seqs) + 1)), f"{device}: a gap or a repeat in seq"
        cur = await db.execute("SELECT count(*) FROM dead_letters")
        assert await cur.fetchone() == (0,)

    metrics = await hub.get("/metrics")
    assert "carehub_spool_pending_batches 0" in metrics
    # uvicorn shuts down gracefully on SIGTERM, then re-raises it so the exit status tells
    # a service manager why the process ended.
    code = hub.stop()
    assert code in (0, -signal.SIGTERM), f"the hub did not stop on SIGTERM:\n{hub.output()}"
    output = hub.output()
    assert "Traceback" not in output
    assert "CRITICAL" not in output
