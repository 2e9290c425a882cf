"""Schema migrations: idempotent, safe to run side by side, and right on both storage paths.

Plain PostgreSQL (CAREHUB_TIMESCALEDB=off) gets BRIN indexes on time and a plain occupancy
view; TimescaleDB gets hypertables, compression and retention policies and a continuous
aggregate of occupancy per 5 minutes. The TimescaleDB tests run only on a server that has
the extension preloaded; elsewhere they are skipped with the reason.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg_pool import AsyncConnectionPool

from hub.errors import StorageError
from hub.models import Reading
from hub.settings import Settings
from hub.storage.migrate import load_migrations, migrate, storage_flavour
from hub.storage.pool import create_pool
from hub.storage.writer import BatchWriter
from tests.child_process import run_carehub
from tests.fix_hub import DB, FACILITY, database_only_settings, register_site, rows

pytestmark = [pytest.mark.db]


PLAIN_VERSIONS = [m.version for m in load_migrations() if m.flavour in ("both", "plain")]
TIMESCALE_VERSIONS = [m.version for m in load_migrations() if m.flavour in ("both", "timescale")]
NO_TIMESCALE = (
    "TimescaleDB is not usable in this PostgreSQL ({why}); point CAREHUB_TEST_DATABASE_URL at"
    " a server with the timescaledb extension installed and in shared_preload_libraries to run"
    " this test"
)

# What a schema is made of, read from the catalogue. Each query takes the schema name. OIDs
# are part of it on purpose: an object dropped and created again is a change.
CATALOG: dict[str, str] = {
    "relations": """
        SELECT c.relname, c.relkind, c.oid::bigint, coalesce(c.reloptions::text, '')
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = %(schema)s ORDER BY 1""",
    "columns": """
        SELECT c.relname, a.attnum, a.attname, format_type(a.atttypid, a.atttypmod),
               a.attnotnull, coalesce(pg_get_expr(d.adbin, d.adrelid), '')
        FROM pg_attribute a
        JOIN pg_class c ON c.oid = a.attrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace
        LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
        WHERE n.nspname = %(schema)s AND a.attnum > 0 AND NOT a.attisdropped
        ORDER BY 1, 2""",
    "indexes": """
        SELECT tablename, indexname, indexdef FROM pg_indexes
        WHERE schemaname = %(schema)s ORDER BY 1, 2""",
    "constraints": """
        SELECT c.conrelid::regclass::text, c.conname, c.contype, pg_get_constraintdef(c.oid)
        FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace
        WHERE n.nspname = %(schema)s ORDER BY 1, 2""",
    "functions": """
        SELECT p.proname, pg_get_function_identity_arguments(p.oid), md5(p.prosrc)
        FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
        WHERE n.nspname = %(schema)s ORDER BY 1, 2""",
    "views": """
        SELECT c.relname, pg_get_viewdef(c.oid)
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = %(schema)s AND c.relkind IN ('v', 'm') ORDER BY 1""",
    "triggers": """
        SELECT c.relname, t.tgname, pg_get_triggerdef(t.oid)
        FROM pg_trigger t
        JOIN pg_class c ON c.oid = t.tgrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = %(schema)s AND NOT t.tgisinternal ORDER BY 1, 2""",
    "migrations": "SELECT version FROM {schema}.schema_migrations ORDER BY 1",
}
# TimescaleDB keeps part of a schema's make-up in its own catalogue.
TIMESCALE_CATALOG: dict[str, str] = {
    "hypertables": """
        SELECT hypertable_name, num_dimensions, compression_enabled
        FROM timescaledb_information.hypertables
        WHERE hypertable_schema = %(schema)s ORDER BY 1""",
    "dimensions": """
        SELECT hypertable_name, column_name, time_interval::text
        FROM timescaledb_information.dimensions
        WHERE hypertable_schema = %(schema)s ORDER BY 1, 2""",
    # A continuous aggregate's refresh job belongs to its materialisation hypertable, which
    # lives in TimescaleDB's own schema.
    "jobs": """
        SELECT job_id, proc_name, hypertable_name, schedule_interval::text, config::text
        FROM timescaledb_information.jobs
        WHERE hypertable_schema = %(schema)s
           OR (hypertable_schema, hypertable_name) IN (
               SELECT materialization_hypertable_schema, materialization_hypertable_name
               FROM timescaledb_information.continuous_aggregates
               WHERE view_schema = %(schema)s)
        ORDER BY 1""",
    "continuous_aggregates": """
        SELECT view_name, materialized_only, materialization_hypertable_name
        FROM timescaledb_information.continuous_aggregates
        WHERE view_schema = %(schema)s ORDER BY 1""",
}


async def snapshot(db: DB, schema: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every table, column, type, index, constraint, function, view and policy of a schema."""
    queries = dict(CATALOG)
    cur = await db.execute("SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'")
    if await cur.fetchone() is not None:
        queries.update(TIMESCALE_CATALOG)
    result: dict[str, list[tuple[Any, ...]]] = {}
    for name, query in queries.items():
        text = query.replace("{schema}", sql.Identifier(schema).as_string(db))
        cur = await db.execute(text.encode(), {"schema": schema})
        result[name] = await cur.fetchall()
    return result


def assert_same_catalogue(
    before: dict[str, list[tuple[Any, ...]]], after: dict[str, list[tuple[Any, ...]]]
) -> None:
    """Fail with what was added and removed, section by section, if the catalogue changed."""
    changes = []
    for section in sorted(before.keys() | after.keys()):
        old, new = set(before.get(section, [])), set(after.get(section, []))
        changes += [f"{section}: removed {row}" for row in sorted(old - new, key=repr)]
        changes += [f"{section}: added {row}" for row in sorted(new - old, key=repr)]
    assert not changes, "the schema changed:\n" + "\n".join(changes)


def timescale_unusable(database_url: str) -> str | None:
    """Why TimescaleDB cannot be used on this server, or None when it can."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        found = conn.execute(
            "SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'"
        ).fetchone()
        if found is None:
            return "the timescaledb extension is not installed"
        row = conn.execute("SELECT current_setting('shared_preload_libraries')").fetchone()
        if row is None or "timescaledb" not in str(row[0]):
            return "timescaledb is installed but not in shared_preload_libraries"
    return None


SettingsFor = Callable[..., Settings]


@pytest.fixture
def settings_for(database_url: str, db_schema: str, tmp_path: Path) -> SettingsFor:
    """Settings for this test's schema, with a TimescaleDB mode and overrides of its own."""

    def build(timescaledb: str, **overrides: Any) -> Settings:
        return database_only_settings(
            database_url, db_schema, "migrations", tmp_path, timescaledb=timescaledb, **overrides
        )

    return build


@pytest.fixture
async def db(database_url: str, db_schema: str) -> AsyncIterator[DB]:
    """A connection in this test's schema, for reading the catalogue."""
    async with await psycopg.AsyncConnection.connect(
        database_url, autocommit=True, options=f"-c search_path={db_schema},public"
    ) as conn:
        yield conn


@pytest.fixture
def timescale(database_url: str) -> None:
    """Skip unless this PostgreSQL can run TimescaleDB."""
    why = timescale_unusable(database_url)
    if why is not None:
        pytest.skip(NO_TIMESCALE.format(why=why))


@pytest.fixture(params=["plain", "timescale"])
def flavour(request: pytest.FixtureRequest, database_url: str) -> str:
    """Each storage path; the TimescaleDB one only where the server can run it."""
    if request.param == "timescale":
        why = timescale_unusable(database_url)
        if why is not None:
            pytest.skip(NO_TIMESCALE.format(why=why))
    flavour: str = request.param
    return flavour


# --- idempotency ------------------------------------------------------------------------


async def test_migrating_twice_applies_nothing_the_second_time_and_changes_nothing(
    settings_for: SettingsFor, db: DB, db_schema: str, flavour: str
) -> None:
    """A second `migrate` applies no migration and leaves the catalogue exactly as it was."""
    settings = settings_for("on" if flavour == "timescale" else "off")
    versions = TIMESCALE_VERSIONS if flavour == "timescale" else PLAIN_VERSIONS

    assert await migrate(settings) == versions
    first = await snapshot(db, db_schema)
    assert await migrate(settings) == []
    assert_same_catalogue(first, await snapshot(db, db_schema))
    assert [row[0] for row in first["migrations"]] == versions
    assert {"facilities", "zones", "devices", "readings", "events", "dead_letters"} <= {
        row[0] for row in first["relations"]
    }


async def test_every_migration_file_can_run_again_over_its_own_result(
    settings_for: SettingsFor, db: DB, db_schema: str, flavour: str
) -> None:
    """With its record lost (a crash before it was written), each file re-runs without effect."""
    settings = settings_for("on" if flavour == "timescale" else "off")
    versions = TIMESCALE_VERSIONS if flavour == "timescale" else PLAIN_VERSIONS
    await migrate(settings)
    await register_site(settings)
    first = await snapshot(db, db_schema)

    await db.execute("DELETE FROM schema_migrations")
    assert await migrate(settings) == versions
    assert_same_catalogue(first, await snapshot(db, db_schema))
    # The data survived too.
    cur = await db.execute("SELECT count(*) FROM devices WHERE facility_id = %s", (FACILITY,))
    assert await cur.fetchone() == (3,)


async def test_hubs_starting_together_apply_each_migration_once(
    settings_for: SettingsFor, db: DB, db_schema: str
) -> None:
    """Hubs migrating at once: the advisory lock lets one apply, the others find it done."""
    settings = settings_for("off")
    results = await asyncio.gather(*(migrate(settings) for _ in range(4)))
    applied = sorted(version for result in results for version in result)
    assert applied == PLAIN_VERSIONS
    assert sorted(results, key=len)[:-1] == [[], [], []]
    assert [row[0] for row in (await snapshot(db, db_schema))["migrations"]] == PLAIN_VERSIONS


# --- the `carehub migrate` command --------------------------------------------------------


def _unused_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


async def test_carehub_migrate_command_applies_then_reports_up_to_date(
    database_url: str, db_schema: str, db: DB
) -> None:
    """`carehub migrate` names the schema and what it applied, then says there is nothing to do."""
    env = {
        "CAREHUB_DATABASE_URL": database_url,
        "CAREHUB_DATABASE_SCHEMA": db_schema,
        "CAREHUB_TIMESCALEDB": "off",
    }
    first = await asyncio.to_thread(run_carehub, "migrate", **env)
    assert first.returncode == 0, first.stderr
    assert db_schema in first.stdout
    for version in PLAIN_VERSIONS:
        assert version in first.stdout
    assert "Traceback" not in first.stderr

    again = await asyncio.to_thread(run_carehub, "migrate", **env)
    assert again.returncode == 0, again.stderr
    assert db_schema in again.stdout
    assert "up to date" in again.stdout or "nothing" in again.stdout
    assert not any(version in again.stdout for version in PLAIN_VERSIONS)

    cur = await db.execute("SELECT version FROM schema_migrations ORDER BY 1")
    assert [row[0] for row in await cur.fetchall()] == PLAIN_VERSIONS


async def test_carehub_migrate_command_explains_an_unreachable_database() -> None:
    """No database at the URL: exit status 1 and one line saying so, not a traceback."""
    url = f"postgresql://postgres@127.0.0.1:{_unused_port()}/carehub?connect_timeout=3"
    result = await asyncio.to_thread(run_carehub, "migrate", CAREHUB_DATABASE_URL=url)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "database" in result.stderr.lower()
    assert result.stdout == ""


# --- plain PostgreSQL -----------------------------------------------------------------------


def _bucket_start(now: datetime) -> datetime:
    """A 5-minute bucket boundary two hours ago (UTC), well inside every retention window."""
    start = now.astimezone(UTC).replace(second=0, microsecond=0) - timedelta(hours=2)
    return start - timedelta(minutes=start.minute % 5)


def _counts(start: datetime) -> list[Reading]:
    """Occupancy readings: 10 and 20 in one 5-minute bucket, 12 in the next."""
    rows = [(1, 10, 2), (4, 20, 3), (6, 12, 1)]
    return [
        Reading(
            device_id="oc-1",
            facility_id=FACILITY,
            zone_id="class-a",
            seq=seq,
            ts=start + timedelta(minutes=minute),
            received_at=datetime.now(UTC),
            battery=None,
            presence=None,
            count=count,
            staff=staff,
            rssi=None,
            payload={"count": count, "staff": staff},
        )
        for seq, (minute, count, staff) in enumerate(rows, start=1)
    ]


Pool = AsyncConnectionPool[psycopg.AsyncConnection[object]]
PoolFor = Callable[[Settings], Awaitable[Pool]]


@pytest.fixture
async def pool_for() -> AsyncIterator[PoolFor]:
    """Open hub connection pools for settings, closed at teardown."""
    pools: list[Pool] = []

    async def open_pool(settings: Settings) -> Pool:
        pool = create_pool(settings, min_size=1)
        await pool.open(wait=True, timeout=10)
        pools.append(pool)
        return pool

    yield open_pool
    for pool in pools:
        await pool.close()


async def _store_counts(settings: Settings, pool: Pool) -> datetime:
    """Write occupancy readings through the hub's own batch writer, twice; return the bucket."""
    start = _bucket_start(datetime.now(UTC))
    writer = BatchWriter(pool, settings.topic_root)
    first = await writer.write(_counts(start))
    again = await writer.write(_counts(start))
    assert (first.readings, again.readings) == (3, 0), "a redelivered batch was stored again"
    return start


async def _occupancy(db: DB, start: datetime) -> list[tuple[Any, ...]]:
    return await rows(
        db,
        "SELECT bucket, zone_id, avg_count, max_count, max_staff FROM occupancy_5m"
        " WHERE device_id = 'oc-1' AND bucket >= %s ORDER BY bucket",
        start,
    )


def _expected_occupancy(start: datetime) -> list[tuple[Any, ...]]:
    return [
        (start, "class-a", 15.0, 20, 3),
        (start + timedelta(minutes=5), "class-a", 12.0, 12, 1),
    ]


@pytest.mark.parametrize("mode", ["off", "auto"])
async def test_plain_postgresql_has_brin_on_time_and_answers_time_queries(
    settings_for: SettingsFor,
    db: DB,
    db_schema: str,
    database_url: str,
    pool_for: PoolFor,
    mode: str,
) -> None:
    """Without TimescaleDB: BRIN on readings.ts and events.ts, and a working occupancy view."""
    if mode == "auto" and await asyncio.to_thread(timescale_unusable, database_url) is None:
        pytest.skip("this PostgreSQL runs TimescaleDB, so `auto` takes the TimescaleDB path")
    settings = settings_for(mode)
    assert await migrate(settings) == PLAIN_VERSIONS
    await register_site(settings)
    assert await storage_flavour(db) == "plain"

    cur = await db.execute(
        "SELECT tablename, indexdef FROM pg_indexes WHERE schemaname = %s AND indexdef LIKE %s",
        (db_schema, "%USING brin%"),
    )
    brin: dict[str, str] = dict(await cur.fetchall())
    assert set(brin) == {"readings", "events"}
    assert all(definition.endswith("USING brin (ts)") for definition in brin.values())
    cur = await db.execute(
        "SELECT relkind FROM pg_class WHERE oid = %s::regclass",
        (f"{db_schema}.occupancy_5m",),
    )
    assert await cur.fetchone() == ("v",)

    start = await _store_counts(settings, await pool_for(settings))
    assert await _occupancy(db, start) == _expected_occupancy(start)

    # A time-range query can use the BRIN index. The table is tiny, and ts is also the last
    # column of the identity index, so leave the planner only bitmap scans to choose from.
    for scan in ("seqscan", "indexscan", "indexonlyscan"):
        await db.execute(f"SET enable_{scan} = off")
    cur = await db.execute(
        "EXPLAIN SELECT count(*) FROM readings WHERE ts >= %s AND ts < %s",
        (start, start + timedelta(minutes=10)),
    )
    plan = "\n".join(row[0] for row in await cur.fetchall())
    assert "readings_ts_brin" in plan, plan
    cur = await db.execute(
        "SELECT count(*) FROM readings WHERE ts >= %s AND ts < %s",
        (start, start + timedelta(minutes=5)),
    )
    assert await cur.fetchone() == (2,)


# --- TimescaleDB ----------------------------------------------------------------------------


@pytest.mark.usefixtures("timescale")
async def test_timescaledb_has_hypertables_policies_and_an_occupancy_aggregate(
    settings_for: SettingsFor, db: DB, db_schema: str, pool_for: PoolFor
) -> None:
    """With TimescaleDB: hypertables, compression and retention as set, occupancy per 5 min."""
    settings = settings_for("on", retention_days=30, compress_after_days=3)
    assert await migrate(settings) == TIMESCALE_VERSIONS
    await register_site(settings)
    assert await storage_flavour(db) == "timescale"
    catalogue = await snapshot(db, db_schema)

    hypertables = {name: compressed for name, _, compressed in catalogue["hypertables"]}
    assert hypertables == {"readings": True, "events": False}
    dimensions = {(table, column) for table, column, _ in catalogue["dimensions"]}
    assert dimensions == {("readings", "ts"), ("events", "ts")}
    cur = await db.execute(
        "SELECT attname, segmentby_column_index FROM timescaledb_information.compression_settings"
        " WHERE hypertable_schema = %s AND hypertable_name = 'readings'"
        " AND segmentby_column_index IS NOT NULL",
        (db_schema,),
    )
    assert await cur.fetchall() == [("device_id", 1)]

    (aggregate,) = catalogue["continuous_aggregates"]
    cur = await db.execute(
        "SELECT proc_name, hypertable_name,"
        " coalesce(config->>'compress_after', config->>'drop_after', config->>'start_offset')"
        " FROM timescaledb_information.jobs WHERE job_id = ANY(%s)",
        ([row[0] for row in catalogue["jobs"]],),
    )
    # The refresh job is listed under the aggregate (2.x recent) or its materialisation table.
    jobs = sorted(
        (proc, "occupancy_5m" if table == aggregate[2] else table, offset)
        for proc, table, offset in await cur.fetchall()
    )
    assert aggregate[0] == "occupancy_5m"
    assert aggregate[1] is False, "real-time aggregation: the latest minutes are included"
    assert jobs == sorted(
        [
            ("policy_compression", "readings", "3 days"),
            ("policy_retention", "readings", "30 days"),
            ("policy_retention", "events", "30 days"),
            ("policy_refresh_continuous_aggregate", "occupancy_5m", "2 days"),
        ]
    )

    start = await _store_counts(settings, await pool_for(settings))
    # Real time: what is not yet materialised is aggregated on the fly.
    assert await _occupancy(db, start) == _expected_occupancy(start)
    await db.execute("CALL refresh_continuous_aggregate('occupancy_5m', NULL, NULL)")
    assert await _occupancy(db, start) == _expected_occupancy(start)


async def test_timescaledb_on_without_a_usable_extension_fails_clearly_and_creates_nothing(
    settings_for: SettingsFor, db: DB, db_schema: str, database_url: str
) -> None:
    """CAREHUB_TIMESCALEDB=on where TimescaleDB cannot run: an error saying why, and no tables."""
    why = await asyncio.to_thread(timescale_unusable, database_url)
    if why is None:
        pytest.skip("this PostgreSQL runs TimescaleDB; the failure needs one that cannot")
    settings = settings_for("on")
    with pytest.raises(StorageError) as failure:
        await migrate(settings)
    message = str(failure.value)
    assert "timescaledb" in message.lower()
    if "not installed" in why:
        assert "not installed" in message
    else:
        assert "shared_preload_libraries" in message
    cur = await db.execute(
        "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = %s",
        (db_schema,),
    )
    assert await cur.fetchone() == (0,)

    result = await asyncio.to_thread(
        run_carehub,
        "migrate",
        CAREHUB_DATABASE_URL=database_url,
        CAREHUB_DATABASE_SCHEMA=db_schema,
        CAREHUB_TIMESCALEDB="on",
    )
    assert result.returncode == 1
    assert "timescaledb" in result.stderr.lower()
    assert "Traceback" not in result.stderr
