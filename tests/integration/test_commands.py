"""The `carehub demo` and `carehub simulate` commands, run as a user runs them."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from bench.mqtt import connect_packet
from hub.runtime import Hub
from hub.settings import Settings
from tests.child_process import ChildOutput, clean_env, run_carehub, start_demo
from tests.fix_hub import connect_db, wait_for
from tests.integration.test_migrations import NO_TIMESCALE, timescale_unusable

pytestmark = [pytest.mark.mqtt, pytest.mark.db]

READY_LINE = "Press Ctrl-C to stop."


@pytest.fixture
def demo() -> Iterator[tuple[subprocess.Popen[str], ChildOutput]]:
    """`carehub demo` with 3 facilities, in a data dir of its own."""
    # Outside pytest's basetemp, for the reason given in fix_services.database_url.
    folder = Path(tempfile.mkdtemp(prefix="carehub-test-demo-"))
    child = start_demo(folder / "demo", "--facilities", "3", "--time-scale", "120")
    assert child.stdout is not None
    lines = ChildOutput(child.stdout)
    try:
        yield child, lines
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        lines.join()
        child.stdout.close()
        shutil.rmtree(folder, ignore_errors=True)


def test_demo_runs_the_whole_stack_on_free_ports_and_stops_on_ctrl_c(
    demo: tuple[subprocess.Popen[str], ChildOutput],
) -> None:
    """The demo runs broker, database, hub and simulator on free ports; Ctrl-C stops it cleanly."""
    child, out = demo
    out.wait_for(READY_LINE, timeout=90)
    text = out.text()
    broker_port = int(re.search(r"MQTT broker\s+mqtt://127\.0\.0\.1:(\d+)", text).group(1))  # type: ignore[union-attr]
    database_url = re.search(r"PostgreSQL\s+(\S+)", text).group(1)  # type: ignore[union-attr]
    http = re.search(r"HTTP API\s+(http://[\d.]+:\d+)/", text).group(1)  # type: ignore[union-attr]
    # The machine's Mosquitto and PostgreSQL keep their ports; the demo's PostgreSQL has none.
    assert broker_port != 1883
    assert "host=%2F" in database_url
    assert not http.endswith(":8080") or "8080" not in os.environ.get("CAREHUB_HTTP_PORT", "")

    import urllib.request

    with urllib.request.urlopen(f"{http}/readyz", timeout=5) as response:
        assert response.status == 200

    # The first start wrote its districts' month of history, and said how long it took.
    assert re.search(r"history\s+30 days written now, in \d+\.\d s \([\d,]+ readings", text), text

    def stored() -> tuple[int, int, int, int]:
        with psycopg.connect(database_url, options="-c search_path=carehub") as conn:
            row = conn.execute(
                "SELECT (SELECT count(*) FROM facilities), (SELECT count(*) FROM devices),"
                " (SELECT count(*) FROM readings"
                "  WHERE ts >= (SELECT max(period_end) FROM seeded_history)),"
                " (SELECT count(*) FROM alerts WHERE state = 'resolved')"
            ).fetchone()
        assert row is not None
        return int(row[0]), int(row[1]), int(row[2]), int(row[3])

    deadline = time.monotonic() + 30
    while stored()[2] == 0:
        assert time.monotonic() < deadline, "no live simulated reading was stored within 30 s"
        time.sleep(0.5)
    facilities, devices, _, resolved = stored()
    assert facilities == 3
    assert devices > 3 * 3  # every facility has sensors, buttons and counters
    assert resolved > 20  # the month's alerts, answered by the facilities' staff
    # Authentication is on: each simulated device has its own credentials, and a client
    # without any is refused (CONNACK return code 5, not authorized).
    with psycopg.connect(database_url, options="-c search_path=carehub") as conn:
        issued = conn.execute(
            "SELECT count(*) FROM device_credentials WHERE secret_hash IS NOT NULL"
        ).fetchone()
    assert issued == (devices,)
    with socket.create_connection(("127.0.0.1", broker_port), 5) as probe:
        probe.sendall(connect_packet("anonymous-probe"))
        connack = probe.recv(4)
    assert connack[:1] == b"\x20" and connack[3:4] == b"\x05", connack

    child.send_signal(signal.SIGINT)
    try:
        # Every stage's stop is bounded (about a minute in all, PostgreSQL's included).
        code = child.wait(timeout=90)
    except subprocess.TimeoutExpired:
        pytest.fail("the demo did not stop within 90 s of Ctrl-C:\n" + out.text())
    assert code == 0, out.text()
    assert "carehub demo: stopped" in out.text()
    # A stage left behind prints where its tasks waited: a stop that is not clean fails.
    assert "did not stop within" not in out.text(), out.text()
    assert "Traceback" not in out.text(), out.text()


def _run_demo_until_ready(data_dir: Path) -> str:
    """Start `carehub demo` on `data_dir`, wait for its banner, stop it with Ctrl-C; its output."""
    child = start_demo(data_dir, "--facilities", "2", "--time-scale", "120")
    assert child.stdout is not None
    out = ChildOutput(child.stdout)
    try:
        out.wait_for(READY_LINE, timeout=90)
        child.send_signal(signal.SIGINT)
        assert child.wait(timeout=90) == 0, out.text()
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        out.join()
        child.stdout.close()
    return out.text()


def test_a_second_demo_start_keeps_the_month_and_writes_nothing() -> None:
    """The history is written on the first start only; the second says so and adds no row."""
    folder = Path(tempfile.mkdtemp(prefix="carehub-test-demo-again-"))
    try:
        first = _run_demo_until_ready(folder / "demo")
        written = re.search(
            r"history\s+30 days written now, in [\d.]+ s \(([\d,]+) readings", first
        )
        assert written is not None, first
        second = _run_demo_until_ready(folder / "demo")
        kept = re.search(
            r"history\s+30 days since \S+, written on the first start in [\d.]+ s"
            r" \(([\d,]+) readings.*; nothing written now",
            second,
        )
        assert kept is not None, second
        assert kept.group(1) == written.group(1)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


async def test_simulate_registers_its_district_and_its_devices_are_stored(
    running_hub: Hub,
) -> None:
    """`carehub simulate` registers its facilities, and the hub stores their readings and events."""
    settings = running_hub.settings
    env = clean_env(
        CAREHUB_MQTT_URL=settings.mqtt_url,
        CAREHUB_MQTT_PROTOCOL=str(settings.mqtt_protocol),
        CAREHUB_DATABASE_URL=settings.database_url,
        CAREHUB_DATABASE_SCHEMA=settings.database_schema,
        CAREHUB_TOPIC_ROOT=settings.topic_root,
        CAREHUB_TIMESCALEDB="off",
    )
    # A child process the event loop awaits: the in-process hub keeps ingesting meanwhile.
    child = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "hub.cli", "simulate", "--facilities", "2"),
        *("--duration", "12", "--time-scale", "120", "--scenario", "fall", "--scenario", "garbage"),
        # The suite's broker has one account, the hub's (tests/fix_services.py).
        "--shared-account",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(child.communicate(), timeout=120)
    assert child.returncode == 0, stderr.decode()
    assert "simulating 2 facilities" in stdout.decode()

    async with await connect_db(settings) as conn:

        async def facility_readings() -> bool:
            cursor = await conn.execute(
                "SELECT count(DISTINCT facility_id) FROM readings WHERE facility_id <> 'f-sun'"
            )
            row = await cursor.fetchone()
            return row is not None and row[0] == 2

        await wait_for(facility_readings, timeout=15)
        cursor = await conn.execute(
            "SELECT count(*) FROM events WHERE event = 'fall_detected' AND facility_id <> 'f-sun'"
        )
        falls = await cursor.fetchone()
        assert falls is not None and falls[0] >= 1
        cursor = await conn.execute("SELECT count(*) FROM dead_letters")
        garbage = await cursor.fetchone()
        assert garbage is not None and garbage[0] > 0


def test_simulate_refuses_an_unknown_scenario() -> None:
    """`carehub simulate` exits with 1 and names a scenario it does not know."""
    result = _carehub({}, "simulate", "--scenario", "meteor", "--no-register")
    assert result.returncode == 1
    assert "unknown scenario meteor" in result.stderr


def _carehub(settings_env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """Run `carehub ARGS` in a clean environment with these settings; its result."""
    return run_carehub(*args, timeout=60, **settings_env)


def _doctor(settings_env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return _carehub(settings_env, "doctor", "--json", *args)


def test_doctor_passes_the_test_services_with_the_site_broker_file(running_hub: Hub) -> None:
    """Real database and broker; the site's mosquitto.conf passes for a small site."""
    import json

    settings = running_hub.settings
    env = {
        "CAREHUB_MQTT_URL": settings.mqtt_url,
        "CAREHUB_MQTT_PROTOCOL": str(settings.mqtt_protocol),
        "CAREHUB_DATABASE_URL": settings.database_url,
    }
    site_conf = Path(__file__).parents[2] / "deploy" / "mosquitto" / "mosquitto.conf"
    result = _doctor(env, "--mosquitto-conf", str(site_conf))
    findings = json.loads(result.stdout)
    assert result.returncode == 0, result.stdout + result.stderr
    parts = {f["part"] for f in findings}
    assert {"database", "broker", "mosquitto.conf", "timescaledb"} <= parts
    assert {"level": "ok", "part": "database", "what": "synchronous_commit = on", "advice": ""} in (
        findings
    )
    assert not [f for f in findings if f["level"] == "fail"]


def test_doctor_fails_a_database_role_that_commits_asynchronously(running_hub: Hub) -> None:
    """A role with synchronous_commit=off (as a DBA might set it): exit 1, and why."""
    import json
    import uuid
    from urllib.parse import urlsplit, urlunsplit

    settings = running_hub.settings
    role = f"doctor_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(settings.database_url, autocommit=True) as admin:
        admin.execute(f"CREATE ROLE {role} LOGIN")
        admin.execute(f"ALTER ROLE {role} SET synchronous_commit = off")
        try:
            parts = urlsplit(settings.database_url)
            # Only the user changes: the host may be a socket path in the query.
            url = urlunsplit(parts._replace(netloc=f"{role}@{parts.netloc.rpartition('@')[2]}"))
            result = _doctor(
                {
                    "CAREHUB_MQTT_URL": settings.mqtt_url,
                    "CAREHUB_MQTT_PROTOCOL": str(settings.mqtt_protocol),
                    "CAREHUB_DATABASE_URL": url,
                }
            )
        finally:
            admin.execute(f"DROP ROLE {role}")
    assert result.returncode == 1, result.stdout + result.stderr
    failed = [f for f in json.loads(result.stdout) if f["level"] == "fail"]
    assert [f["what"].split(":")[0] for f in failed] == ["synchronous_commit = off"]


def test_doctor_fails_a_timescaledb_job_that_raises_and_warns_a_role_that_cannot_see_why(
    hub_settings: Settings, database_url: str, db_schema: str
) -> None:
    """A job that raises: a failure naming its error, or a warning for a role kept from it."""
    import json
    import uuid
    from urllib.parse import urlsplit, urlunsplit

    why = timescale_unusable(database_url)
    if why is not None:
        pytest.skip(NO_TIMESCALE.format(why=why))
    role = f"doctor_{uuid.uuid4().hex[:8]}"
    env = {
        "CAREHUB_MQTT_URL": hub_settings.mqtt_url,
        "CAREHUB_MQTT_PROTOCOL": str(hub_settings.mqtt_protocol),
        "CAREHUB_DATABASE_URL": database_url,
    }
    with psycopg.connect(database_url, autocommit=True) as admin:
        admin.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
        procedure = sql.Identifier(db_schema, "broken_job")
        admin.execute(
            sql.SQL(
                "CREATE PROCEDURE {}(job_id int, config jsonb) LANGUAGE plpgsql"
                " AS $$ BEGIN RAISE EXCEPTION 'carehub test job failed'; END $$"
            ).format(procedure)
        )
        row = admin.execute(
            sql.SQL("SELECT add_job({}::regproc, INTERVAL '1 day')").format(
                sql.Literal(f"{db_schema}.broken_job")
            )
        ).fetchone()
        assert row is not None
        job_id = row[0]
        admin.execute(f"CREATE ROLE {role} LOGIN")
        try:
            # The scheduler runs a new job at once; give it a busy machine's while.
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                status = admin.execute(
                    "SELECT last_run_status FROM timescaledb_information.job_stats"
                    " WHERE job_id = %s",
                    (job_id,),
                ).fetchone()
                if status is not None and status[0] == "Failed":
                    break
                time.sleep(0.5)
            else:
                pytest.fail(f"TimescaleDB did not run job {job_id} within 60 s")
            as_owner = _doctor(env)
            parts = urlsplit(database_url)
            url = urlunsplit(parts._replace(netloc=f"{role}@{parts.netloc.rpartition('@')[2]}"))
            as_stranger = _doctor({**env, "CAREHUB_DATABASE_URL": url})
        finally:
            admin.execute("SELECT delete_job(%s)", (job_id,))
            admin.execute(f"DROP ROLE {role}")
    mine = f"job {job_id} "
    owner_sees = [f for f in json.loads(as_owner.stdout) if f["what"].startswith(mine)]
    assert [f["level"] for f in owner_sees] == ["fail"], as_owner.stdout
    assert "carehub test job failed" in owner_sees[0]["what"]
    assert as_owner.returncode == 1
    stranger_sees = [f for f in json.loads(as_stranger.stdout) if f["what"].startswith(mine)]
    assert [f["level"] for f in stranger_sees] == ["warn"], as_stranger.stdout
    assert "hidden from this role" in stranger_sees[0]["what"]


def test_doctor_refuses_a_missing_broker_file() -> None:
    result = _carehub({}, "doctor", "--mosquitto-conf", "/nonexistent.conf")
    assert result.returncode == 2
    assert "no such file: /nonexistent.conf" in result.stderr
