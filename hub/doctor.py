"""`carehub doctor`: the broker and database settings that lose data or slow emergencies.

Each check gives a Finding: ok, warn (it works, but a burst, a crash or a checkpoint will
hurt) or fail (messages the devices were told are delivered can be lost). Every finding
that is not ok says what to change.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import aiomqtt

from hub.errors import StorageError
from hub.ingest import BROKER_DROPPED_TOPIC, make_client
from hub.settings import Settings
from hub.storage import health
from hub.storage.pool import connect

Level = Literal["ok", "warn", "fail"]

# How long the broker has to send its retained $SYS values after we subscribe.
SYS_WAIT_S = 2.0
BROKER_VERSION_TOPIC = "$SYS/broker/version"
# The broker's queue should hold this many seconds of the site's traffic: a hub restart,
# or a minute of it being away (a database outage is the hub's spool's, not the broker's).
QUEUE_SECONDS = 60
# Checkpoints more often than this stall commits (and so acks) under load.
MIN_WAL_MB = 1024
MIN_CHECKPOINT_S = 300
# TimescaleDB 2.28.3 on PostgreSQL 15.20 marks every job run as failed with this error,
# although the compression, retention and refresh are done: its job runner commits the
# job's work and then drops a portal it created but never started, which PostgreSQL 15.20
# refuses ("while it is being set up").
PORTAL_BUG = "cannot drop portal"
# Where to see that a job falsely marked failed did its work, by what the job runs.
DONE_WHERE = {
    "policy_compression": "the hypertable's older chunks show is_compressed"
    " (timescaledb_information.chunks)",
    "policy_retention": "no chunk of the hypertable ends before the retention window"
    " (timescaledb_information.chunks)",
    "policy_refresh_continuous_aggregate": "the server log has the refresh's 'inserted N"
    " row(s) into materialization table' line before the error",
}
DONE_WHERE_ELSE = "the server log shows the job's work before the error"
# A job the scheduler had no free background worker for: it waits for its retry.
NO_WORKER = "failed to start"
# TimescaleDB's own report of its usage to Timescale: not the hub's, and it fails wherever
# the server cannot reach telemetry.timescale.com, as a site's database often cannot.
TELEMETRY_JOB = "policy_telemetry"
# Mosquitto's defaults for what a file does not set (mosquitto.conf(5), 2.0).
MOSQUITTO_DEFAULTS = {
    "persistence": "false",
    "max_queued_messages": "1000",
    "max_queued_bytes": "0",
    "max_inflight_messages": "20",
    "autosave_interval": "1800",
    "set_tcp_nodelay": "false",
}


@dataclass(frozen=True, slots=True)
class Finding:
    """One check's verdict on one setting."""

    level: Level
    part: str  # database, timescaledb, broker, mosquitto.conf
    what: str
    advice: str = ""


def mosquitto_settings(path: Path) -> dict[str, str]:
    """The options of a Mosquitto config file and its include_dir, last one winning."""
    options: dict[str, str] = {}
    for raw in path.read_text(encoding="utf-8", errors="replace").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, _, value = line.partition(" ")
        value = value.strip()
        if name == "include_dir" and value:
            directory = Path(value) if Path(value).is_absolute() else path.parent / value
            for included in sorted(directory.glob("*.conf")):
                options.update(mosquitto_settings(included))
        else:
            options[name] = value
    return options


def check_mosquitto_conf(options: dict[str, str], rate: int, protocol: int) -> list[Finding]:
    """Judge a Mosquitto config for a site offering `rate` msgs/s to a hub on `protocol`."""
    part = "mosquitto.conf"
    merged = {**MOSQUITTO_DEFAULTS, **options}
    numbers = ("autosave_interval", "max_queued_messages", "max_queued_bytes")
    bad = [name for name in (*numbers, "max_inflight_messages") if not _is_count(merged[name])]
    if bad:
        return [
            Finding(
                "fail",
                part,
                f"{', '.join(bad)}: not a whole number, so Mosquitto will not start",
                "fix the file: e.g. `max_queued_messages 200000`",
            )
        ]
    findings = []
    if merged["persistence"] != "true":
        findings.append(
            Finding(
                "fail",
                part,
                "persistence is off: a broker restart loses every queued message and the"
                " hub's session",
                "set `persistence true` and a `persistence_location`",
            )
        )
    else:
        autosave = int(merged["autosave_interval"])
        late = autosave > 60
        findings.append(
            Finding(
                "warn" if late else "ok",
                part,
                f"persistence is on, saved every {autosave} s"
                + (": a broker crash loses what was queued since the last save" if late else ""),
                "set `autosave_interval 60` or lower" if late else "",
            )
        )
    queued = int(merged["max_queued_messages"])
    needed = rate * QUEUE_SECONDS
    if queued == 0:
        findings.append(Finding("ok", part, "max_queued_messages 0: the hub's queue is unbounded"))
    else:
        held = queued / max(rate, 1)
        findings.append(
            Finding(
                "fail" if queued < needed else "ok",
                part,
                f"max_queued_messages {queued}: {held:,.1f} s of {rate:,} msgs/s while the"
                " hub is away or behind; beyond that the broker drops messages it has"
                " already acknowledged to the devices",
                f"set `max_queued_messages {needed}` ({QUEUE_SECONDS} s of traffic) or more"
                if queued < needed
                else "",
            )
        )
    queued_bytes = int(merged["max_queued_bytes"])
    if queued_bytes and queued_bytes < needed * 1024:
        findings.append(
            Finding(
                "fail",
                part,
                f"max_queued_bytes {queued_bytes}: the queue is cut by size before it is full",
                "set `max_queued_bytes 0`",
            )
        )
    inflight = int(merged["max_inflight_messages"])
    if protocol == 311 and 0 < inflight < 1000:
        findings.append(
            Finding(
                "warn",
                part,
                f"max_inflight_messages {inflight}: the hub speaks MQTT 3.1.1, so this caps"
                " how many messages it can commit in one batch",
                "set `max_inflight_messages 1000`, or CAREHUB_MQTT_PROTOCOL=5",
            )
        )
    if merged["set_tcp_nodelay"] != "true":
        findings.append(
            Finding(
                "warn",
                part,
                "set_tcp_nodelay false: Nagle's algorithm holds a small packet to a device"
                " until its last one is acknowledged, and a device's TCP stack delays that"
                " acknowledgement by up to 40 ms, so some emergency acks arrive 40 ms late",
                "set `set_tcp_nodelay true`",
            )
        )
    if options.get("allow_anonymous") == "true":
        findings.append(
            Finding(
                "warn",
                part,
                "allow_anonymous true: any client that reaches the broker can publish as"
                " any device",
                "set `allow_anonymous false` and give each device its own credentials",
            )
        )
    return findings


def _is_count(text: str) -> bool:
    return text.isascii() and text.isdigit()


def check_database_settings(settings: dict[str, str]) -> list[Finding]:
    """Judge the durability and checkpoint settings of the hub's database sessions."""
    part = "database"
    findings = []
    if settings.get("fsync") == "off":
        findings.append(
            Finding(
                "fail",
                part,
                "fsync is off: a power cut can lose or corrupt committed data",
                "set `fsync = on`",
            )
        )
    commit = settings.get("synchronous_commit", "on")
    findings.append(
        Finding(
            "fail" if commit == "off" else "ok",
            part,
            f"synchronous_commit = {commit}"
            + (
                ": the hub acknowledges to the broker what a PostgreSQL crash can still lose"
                if commit == "off"
                else ""
            ),
            "set `synchronous_commit = on` for the hub's database or role"
            if commit == "off"
            else "",
        )
    )
    if settings.get("full_page_writes") == "off":
        findings.append(
            Finding(
                "warn",
                part,
                "full_page_writes is off: a crash mid-write can leave torn pages",
                "set `full_page_writes = on`",
            )
        )
    wal_mb = int(settings.get("max_wal_size", str(MIN_WAL_MB)))
    timeout_s = int(settings.get("checkpoint_timeout", str(MIN_CHECKPOINT_S)))
    target = float(settings.get("checkpoint_completion_target", "0.9"))
    often = wal_mb < MIN_WAL_MB or timeout_s < MIN_CHECKPOINT_S or target < 0.9
    findings.append(
        Finding(
            "warn" if often else "ok",
            part,
            f"checkpoints: max_wal_size {wal_mb} MB, checkpoint_timeout {timeout_s} s,"
            f" checkpoint_completion_target {target:g}"
            + (": frequent or bunched checkpoints stall commits, and so acks" if often else ""),
            "set `max_wal_size = 4GB`, `checkpoint_timeout = 15min`,"
            " `checkpoint_completion_target = 0.9`"
            if often
            else "",
        )
    )
    return findings


def check_jobs(
    version: str | None,
    jobs: list[health.FailedJob],
    server: str,
    timescale_settings: dict[str, str] | None = None,
) -> list[Finding]:
    """Judge TimescaleDB's background jobs (compression, retention, aggregate refresh)."""
    part = "timescaledb"
    if version is None:
        return [Finding("ok", part, "not installed: plain tables, no background jobs")]
    values = timescale_settings or {}
    findings = []
    for job in jobs:
        where = f" on {job.hypertable}" if job.hypertable else ""
        error = job.last_error or "no error recorded"
        if job.proc_name == TELEMETRY_JOB:
            # With telemetry off the scheduler no longer runs the job; its last failure
            # stays in job_stats.
            if values.get("timescaledb.telemetry_level") == "off":
                continue
            findings.append(
                Finding(
                    "warn",
                    part,
                    f"job {job.job_id} ({job.proc_name}) failed {job.total_failures} times:"
                    " TimescaleDB's usage report to Timescale was not sent (it fails on every"
                    " server that cannot reach telemetry.timescale.com); the hub's data is"
                    " not affected",
                    "set `timescaledb.telemetry_level = off` (ALTER SYSTEM, then"
                    " SELECT pg_reload_conf())",
                )
            )
        elif PORTAL_BUG in error:
            findings.append(
                Finding(
                    "warn",
                    part,
                    f"job {job.job_id} ({job.proc_name}{where}) is marked failed"
                    f" {job.total_failures} times with {error!r}: a known fault of"
                    f" TimescaleDB {version} on PostgreSQL {server}, where the job does its"
                    " work and is then marked failed",
                    f"check that {DONE_WHERE.get(job.proc_name, DONE_WHERE_ELSE)};"
                    " upgrade TimescaleDB when a fixed release is out",
                )
            )
        elif job.last_error is None and not job.error_visible:
            findings.append(
                Finding(
                    "warn",
                    part,
                    f"job {job.job_id} ({job.proc_name}{where}) is marked failed"
                    f" {job.total_failures} times; its error is hidden from this role"
                    " (timescaledb_information.job_errors shows it only to the job's owner"
                    " and the database's owner), so a real failure cannot be told from"
                    " TimescaleDB's false ones",
                    "run carehub doctor as the database's owner, or read job_errors as a superuser",
                )
            )
        elif NO_WORKER in error:
            findings.append(
                Finding(
                    "warn",
                    part,
                    f"job {job.job_id} ({job.proc_name}{where}) could not start"
                    f" ({job.total_failures} failures): no background worker was free, so"
                    " the run waits for its retry",
                    "raise max_worker_processes (see the worker finding) and restart PostgreSQL",
                )
            )
        else:
            findings.append(
                Finding(
                    "fail",
                    part,
                    f"job {job.job_id} ({job.proc_name}{where}) failed {job.total_failures}"
                    f" times; last error: {error}",
                    "read timescaledb_information.job_errors and fix the cause: retention"
                    " and compression are not happening",
                )
            )
    if not findings:
        findings.append(Finding("ok", part, f"{version}: no background job failing"))
    return [*check_workers(values), *findings]


def check_workers(timescale_settings: dict[str, str]) -> list[Finding]:
    """Judge the worker pool TimescaleDB's jobs and parallel queries share.

    TimescaleDB's configuration guide: max_worker_processes should be at least
    timescaledb.max_background_workers + max_parallel_workers. Below that, jobs fail to
    start ("failed to start a background worker") and compression, retention and
    aggregate refreshes fall behind.
    """
    part = "timescaledb"
    names = ("max_worker_processes", "timescaledb.max_background_workers", "max_parallel_workers")
    texts = [timescale_settings.get(name, "") for name in names]
    if not all(_is_count(text) for text in texts):
        return []
    pool, background, parallel = (int(text) for text in texts)
    needed = background + parallel
    if pool >= needed:
        return [
            Finding(
                "ok",
                part,
                f"max_worker_processes {pool}: room for {background} background and"
                f" {parallel} parallel workers",
            )
        ]
    return [
        Finding(
            "warn",
            part,
            f"max_worker_processes {pool} is below timescaledb.max_background_workers"
            f" {background} + max_parallel_workers {parallel}: background jobs (compression,"
            " retention, aggregate refresh) can fail to start and fall behind",
            f"set `max_worker_processes = {needed}` or more and restart PostgreSQL",
        )
    ]


async def check_database(settings: Settings) -> list[Finding]:
    """Connect as the hub does and judge what the server says."""
    try:
        conn = await connect(settings)
    except StorageError as exc:
        return [Finding("fail", "database", f"cannot connect: {exc}", "check CAREHUB_DATABASE_URL")]
    async with conn:
        server = await health.server_version(conn)
        values = await health.server_settings(conn, health.DURABILITY_SETTINGS)
        version = await health.timescaledb_version(conn)
        jobs = await health.failed_jobs(conn) if version is not None else []
        timescale_settings = (
            await health.server_settings(conn, health.TIMESCALEDB_SETTINGS)
            if version is not None
            else {}
        )
    return [
        Finding("ok", "database", f"PostgreSQL {server} reachable"),
        *check_database_settings(values),
        *check_jobs(version, jobs, server, timescale_settings),
    ]


async def check_broker(settings: Settings) -> list[Finding]:
    """Connect as the hub does (with a client id of its own) and read the broker's $SYS."""
    part = "broker"
    seen: dict[str, str] = {}
    client = make_client(
        settings,
        identifier=f"{settings.mqtt_client_id}-doctor-{uuid.uuid4().hex[:6]}",
        persistent=False,
    )
    try:
        async with client:
            await client.subscribe([(BROKER_VERSION_TOPIC, 0), (BROKER_DROPPED_TOPIC, 0)])

            async def collect() -> None:
                async for message in client.messages:
                    payload = message.payload if isinstance(message.payload, bytes) else b""
                    seen[message.topic.value] = payload.decode("utf-8", "replace")

            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(SYS_WAIT_S):
                    await collect()
    except aiomqtt.MqttError as exc:
        target = settings.mqtt
        return [
            Finding(
                "fail",
                part,
                f"cannot connect to {target.host}:{target.port}: {exc}",
                "check CAREHUB_MQTT_URL and the hub's broker account",
            )
        ]
    version = seen.get(BROKER_VERSION_TOPIC)
    findings = [Finding("ok", part, f"reachable ({version or 'version not published'})")]
    if version is None:
        findings.append(
            Finding(
                "warn",
                part,
                "the broker shares no $SYS values with the hub: messages it drops for its"
                " queue limits cannot be reported",
                "allow the hub's account to read $SYS/# (Mosquitto)",
            )
        )
    dropped = int(seen.get(BROKER_DROPPED_TOPIC, "0") or 0)
    if dropped:
        findings.append(
            Finding(
                "warn",
                part,
                f"the broker has dropped {dropped:,} messages since it started (queue or"
                " in-flight limits)",
                "raise max_queued_messages (see the mosquitto.conf findings)",
            )
        )
    return findings


async def examine(settings: Settings, mosquitto_conf: Path | None, rate: int) -> list[Finding]:
    """Every check, database first."""
    findings = [*await check_database(settings), *await check_broker(settings)]
    if mosquitto_conf is None:
        findings.append(
            Finding(
                "warn",
                "mosquitto.conf",
                "not checked: the queue limits and persistence are in the broker's file",
                "run again with --mosquitto-conf /etc/mosquitto/mosquitto.conf",
            )
        )
    else:
        options = mosquitto_settings(mosquitto_conf)
        findings += check_mosquitto_conf(options, rate, settings.mqtt_protocol)
    return findings
