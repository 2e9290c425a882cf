"""Schema migrations: numbered SQL files, applied once each, under an advisory lock."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from importlib import resources

import psycopg
from psycopg import sql

from hub.errors import StorageError
from hub.settings import Settings

logger = logging.getLogger(__name__)

# Any constant works; it only has to be the same in every hub process.
_MIGRATION_LOCK = 0x0CA4E_4B_01
_PLAIN_ONLY = "-- carehub:plain-only"
_TIMESCALE_ONLY = "-- carehub:timescale-only"
# A statement ends with ';' at the end of a line; the SQL files are written that way.
_STATEMENT_END = re.compile(r";\s*$", re.MULTILINE)


@dataclass(frozen=True, slots=True)
class Migration:
    """One SQL file of hub/storage/migrations."""

    version: str
    sql_text: str

    @property
    def flavour(self) -> str:
        """'plain', 'timescale' or 'both': which storage path this file belongs to."""
        if _PLAIN_ONLY in self.sql_text:
            return "plain"
        if _TIMESCALE_ONLY in self.sql_text:
            return "timescale"
        return "both"

    def statements(self, settings: Settings) -> list[str]:
        """The file's statements, with the retention settings filled in."""
        text = self.sql_text.replace("{retention_days}", str(settings.retention_days)).replace(
            "{compress_after_days}", str(settings.compress_after_days)
        )
        chunks = _STATEMENT_END.split(text)
        return [chunk.strip() for chunk in chunks if _has_code(chunk)]


def _has_code(chunk: str) -> bool:
    return any(line.strip() and not line.strip().startswith("--") for line in chunk.splitlines())


def load_migrations() -> list[Migration]:
    """Every migration file shipped with the hub, in version order."""
    folder = resources.files("hub.storage") / "migrations"
    files = sorted(
        (entry for entry in folder.iterdir() if entry.name.endswith(".sql")),
        key=lambda entry: entry.name,
    )
    return [Migration(entry.name.removesuffix(".sql"), entry.read_text("utf-8")) for entry in files]


async def timescale_available(conn: psycopg.AsyncConnection[object]) -> bool:
    """True when the timescaledb extension is installed or can be."""
    cur = await conn.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'")
    return await cur.fetchone() is not None


async def _timescale_preloaded(conn: psycopg.AsyncConnection[object]) -> bool:
    """True when the server preloads timescaledb (shared_preload_libraries) and lets it load.

    Without the preload, CREATE EXTENSION timescaledb fails with FATAL, which ends the
    connection; so ask first. The loader defines timescaledb.disable_load only when it is
    preloaded, and pg_settings (unlike current_setting) never lists a mere placeholder.
    """
    cur = await conn.execute(
        "SELECT setting FROM pg_settings WHERE name = 'timescaledb.disable_load'"
    )
    row = await cur.fetchone()
    return row is not None and row[0] == "off"  # type: ignore[index]


async def migrate(settings: Settings) -> list[str]:
    """Create the schema and apply every migration not yet applied; return their versions."""
    try:
        conn = await psycopg.AsyncConnection.connect(settings.database_url, autocommit=True)
    except psycopg.OperationalError as exc:
        raise StorageError(f"cannot reach the database: {exc}") from exc
    async with conn:
        return await _migrate(conn, settings)


async def _migrate(conn: psycopg.AsyncConnection[object], settings: Settings) -> list[str]:
    schema = sql.Identifier(settings.database_schema)
    await conn.execute("SELECT pg_advisory_lock(%s)", (_MIGRATION_LOCK,))
    try:
        use_timescale = await _use_timescale(conn, settings)
        await conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(schema))
        await conn.execute(sql.SQL("SET search_path TO {}, public").format(schema))
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version text PRIMARY KEY,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        cur = await conn.execute("SELECT version FROM schema_migrations")
        done = {row[0] for row in await cur.fetchall()}  # type: ignore[index]
        migrations = load_migrations()
        # A schema once set up for TimescaleDB stays so: plain-only files would replace its
        # continuous aggregate with a plain view.
        on_timescale = any(m.flavour == "timescale" and m.version in done for m in migrations)
        if on_timescale and not use_timescale:
            logger.warning(
                "schema %s already uses TimescaleDB; plain-only migrations are skipped",
                settings.database_schema,
            )
        applied: list[str] = []
        for migration in migrations:
            wanted = migration.flavour in ("both", "timescale" if use_timescale else "plain")
            if migration.flavour == "plain" and on_timescale:
                wanted = False
            if migration.version in done or not wanted:
                continue
            await _apply(conn, migration, settings)
            applied.append(migration.version)
            logger.info(
                "applied migration %s to schema %s", migration.version, settings.database_schema
            )
        await apply_retention(conn, settings)
        return applied
    finally:
        await conn.execute("SELECT pg_advisory_unlock(%s)", (_MIGRATION_LOCK,))


# The tables whose rows CAREHUB_RETENTION_DAYS bounds (SPEC §7, PIPL).
RETAINED_TABLES = ("readings", "events")


async def apply_retention(conn: psycopg.AsyncConnection[object], settings: Settings) -> None:
    """Make TimescaleDB's retention policies say CAREHUB_RETENTION_DAYS, at every start.

    The first migration sets them; a setting changed later must reach an existing
    database too. On plain PostgreSQL the timer leader deletes what is older instead
    (hub/timers.py), so there is nothing to store here.
    """
    if await storage_flavour(conn) != "timescale":
        return
    for table in RETAINED_TABLES:
        cur = await conn.execute(
            "SELECT (config->>'drop_after')::interval = make_interval(days => %s)"
            " FROM timescaledb_information.jobs WHERE proc_name = 'policy_retention'"
            " AND hypertable_schema = current_schema() AND hypertable_name = %s",
            (settings.retention_days, table),
        )
        row = await cur.fetchone()
        if row is not None and row[0]:  # type: ignore[index]
            continue
        try:
            async with conn.transaction():
                await conn.execute(
                    "SELECT remove_retention_policy(%s::regclass, if_exists => true)", (table,)
                )
                await conn.execute(
                    "SELECT add_retention_policy(%s::regclass, make_interval(days => %s))",
                    (table, settings.retention_days),
                )
        except psycopg.Error as exc:
            raise StorageError(f"cannot set the retention of {table}: {exc}") from exc
        logger.info(
            "retention of %s in schema %s set to %d days",
            table,
            settings.database_schema,
            settings.retention_days,
        )


async def _use_timescale(conn: psycopg.AsyncConnection[object], settings: Settings) -> bool:
    if settings.timescaledb == "off":
        return False
    available = await timescale_available(conn)
    if not available:
        if settings.timescaledb == "on":
            raise StorageError(
                "CAREHUB_TIMESCALEDB=on but the timescaledb extension is not installed"
            )
        return False
    if not await _timescale_preloaded(conn):
        reason = (
            "the timescaledb library is not preloaded (add 'timescaledb' to"
            " shared_preload_libraries, leave timescaledb.disable_load off, restart PostgreSQL)"
        )
        if settings.timescaledb == "on":
            raise StorageError(f"CAREHUB_TIMESCALEDB=on but {reason}")
        logger.warning("timescaledb is installed but %s; using plain tables", reason)
        return False
    try:
        await conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
    except psycopg.Error as exc:
        if conn.broken or conn.closed:
            raise StorageError(f"cannot enable timescaledb: {exc}") from exc
        # No privilege to create it, most likely.
        if settings.timescaledb == "on":
            raise StorageError(f"cannot enable timescaledb: {exc}") from exc
        logger.warning(
            "timescaledb is installed but cannot be enabled (%s); using plain tables", exc
        )
        return False
    return True


async def _apply(
    conn: psycopg.AsyncConnection[object], migration: Migration, settings: Settings
) -> None:
    statements = migration.statements(settings)
    try:
        if migration.flavour == "timescale":
            # Continuous aggregates cannot be created inside a transaction block, so
            # these statements run one by one; every one of them is idempotent.
            for statement in statements:
                await conn.execute(statement.encode())
        else:
            async with conn.transaction():
                for statement in statements:
                    await conn.execute(statement.encode())
        await conn.execute(
            "INSERT INTO schema_migrations (version) VALUES (%s) ON CONFLICT DO NOTHING",
            (migration.version,),
        )
    except psycopg.Error as exc:
        raise StorageError(f"migration {migration.version} failed: {exc}") from exc


async def storage_flavour(conn: psycopg.AsyncConnection[object]) -> str:
    """'timescale' when readings is a hypertable in the current schema, else 'plain'."""
    cur = await conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'")
    if await cur.fetchone() is None:
        return "plain"
    cur = await conn.execute(
        "SELECT 1 FROM timescaledb_information.hypertables"
        " WHERE hypertable_schema = current_schema() AND hypertable_name = 'readings'"
    )
    return "timescale" if await cur.fetchone() is not None else "plain"
