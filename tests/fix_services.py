"""Real services for tests: the machine's broker and PostgreSQL when named, embedded ones if not.

CAREHUB_TEST_MQTT_URL        e.g. mqtt://127.0.0.1:1883 (else an amqtt broker in a thread)
CAREHUB_TEST_MQTT_PROTOCOL   311 or 5 (default: 5 for a named broker, 311 for amqtt)
CAREHUB_TEST_DATABASE_URL    e.g. postgresql://postgres@127.0.0.1:5432/test (else pgserver)
"""

from __future__ import annotations

import hmac
import os
import secrets
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from psycopg import sql

from hub.acl import Grant, hub_grant
from hub.embedded.broker import run_broker_in_thread
from hub.embedded.postgres import EmbeddedPostgres

MQTT_URL_ENV = "CAREHUB_TEST_MQTT_URL"
MQTT_PROTOCOL_ENV = "CAREHUB_TEST_MQTT_PROTOCOL"
DATABASE_URL_ENV = "CAREHUB_TEST_DATABASE_URL"


def _redacted(url: str) -> str:
    """The URL without its password, for printing."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def pytest_report_header(config: pytest.Config) -> list[str]:
    """Say which broker and which PostgreSQL this run talks to."""
    del config
    mqtt_url = os.environ.get(MQTT_URL_ENV)
    database_url = os.environ.get(DATABASE_URL_ENV)
    broker = (
        _redacted(mqtt_url) if mqtt_url else "embedded amqtt, in a thread (started on first use)"
    )
    database = (
        _redacted(database_url)
        if database_url
        else "embedded pgserver, in a temp dir (started on first use)"
    )
    protocol = os.environ.get(MQTT_PROTOCOL_ENV) or ("5" if mqtt_url else "3.1.1")
    return [f"carehub broker: {broker}, MQTT {protocol}", f"carehub database: {database}"]


# The embedded test broker's one account: the hub's (tests' own clients use it too). Anyone
# else is refused, so the suite runs with authentication on, as `carehub demo` does.
HUB_USERNAME = "carehub-hub"
HUB_PASSWORD = secrets.token_urlsafe(24)


async def hub_account_gate(
    username: str | None, password: str | None, client_id: str | None
) -> Grant | None:
    """Admit the hub's account, under every topic root (each test has its own); no one else."""
    del client_id
    if username == HUB_USERNAME and hmac.compare_digest(password or "", HUB_PASSWORD):
        return hub_grant(HUB_USERNAME, None)
    return None


def with_account(url: str, username: str, password: str) -> str:
    """`url` (mqtt://host:port) with the account's credentials in it."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=f"{username}:{password}@{parts.netloc}"))


@pytest.fixture(scope="session")
def mqtt_url() -> Iterator[str]:
    """The test broker's URL: $CAREHUB_TEST_MQTT_URL, or an embedded broker for the session
    (authentication on; the URL carries the hub's account)."""
    if url := os.environ.get(MQTT_URL_ENV):
        yield url
        return
    broker = run_broker_in_thread(gate=hub_account_gate)
    try:
        yield with_account(broker.url, HUB_USERNAME, HUB_PASSWORD)
    finally:
        broker.stop()


@pytest.fixture(scope="session")
def mqtt_protocol() -> int:
    """The MQTT version to speak to the test broker: 5, or 311 for amqtt (which has no 5)."""
    if value := os.environ.get(MQTT_PROTOCOL_ENV):
        if value not in {"311", "5"}:
            pytest.exit(f"{MQTT_PROTOCOL_ENV} must be 311 or 5, not {value!r}", returncode=4)
        return int(value)
    return 5 if os.environ.get(MQTT_URL_ENV) else 311


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    """The test database's URL: $CAREHUB_TEST_DATABASE_URL, or an embedded PostgreSQL."""
    if url := os.environ.get(DATABASE_URL_ENV):
        yield url
        return
    # Not under pytest's basetemp: pgserver runs the server as the user `pgserver` and opens
    # the parents of its data dir to it, but every pytest session closes
    # /tmp/pytest-of-<user> again (mode 0700), which would lock out a concurrent run's server.
    folder = Path(tempfile.mkdtemp(prefix="carehub-test-pg-"))
    try:
        with EmbeddedPostgres(folder / "pgdata", database="test", delete_on_stop=True) as server:
            yield server.url
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def db_schema(database_url: str) -> Iterator[str]:
    """A fresh schema of this test's own in the test database, dropped afterwards."""
    name = f"t_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(sql.SQL("create schema {}").format(sql.Identifier(name)))
    try:
        yield name
    finally:
        with psycopg.connect(database_url, autocommit=True) as conn:
            # TimescaleDB's background jobs (compression, retention, refresh) would race the
            # drop ("tuple concurrently deleted"): remove this schema's jobs first.
            if conn.execute("select 1 from pg_extension where extname = 'timescaledb'").fetchone():
                conn.execute(
                    "select delete_job(j.job_id) from timescaledb_information.jobs j"
                    " where j.hypertable_schema = %(schema)s or exists ("
                    "  select 1 from timescaledb_information.continuous_aggregates c"
                    "  where c.view_schema = %(schema)s"
                    "  and c.materialization_hypertable_schema = j.hypertable_schema"
                    "  and c.materialization_hypertable_name = j.hypertable_name)",
                    {"schema": name},
                )
            conn.execute(sql.SQL("drop schema if exists {} cascade").format(sql.Identifier(name)))


@pytest.fixture
def topic_root() -> str:
    """A topic root of this test's own, so tests never see each other's messages."""
    return f"t{uuid.uuid4().hex[:16]}"
