"""What the database says of its own settings and jobs, for `carehub doctor`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from psycopg import AsyncConnection

# The server settings that decide whether a commit is durable and how often it stalls.
DURABILITY_SETTINGS = (
    "fsync",
    "synchronous_commit",
    "full_page_writes",
    "max_wal_size",
    "checkpoint_timeout",
    "checkpoint_completion_target",
)
# With TimescaleDB: whether it reports usage to Timescale, and the worker pools its jobs
# start from (they exist in pg_settings only while the library is loaded).
TIMESCALEDB_SETTINGS = (
    "timescaledb.telemetry_level",
    "timescaledb.max_background_workers",
    "max_worker_processes",
    "max_parallel_workers",
)


@dataclass(frozen=True, slots=True)
class FailedJob:
    """A TimescaleDB background job whose last run is marked failed."""

    job_id: int
    proc_name: str
    hypertable: str | None  # schema.name; a continuous aggregate's view for its refresh
    total_failures: int
    last_error: str | None
    # job_errors shows a job's errors only to its owner and the database's owner.
    error_visible: bool = True


async def server_settings(conn: AsyncConnection[Any], names: Sequence[str]) -> dict[str, str]:
    """`names` as this session sees them, in their base units (pg_settings.setting)."""
    cur = await conn.execute(
        "SELECT name, setting FROM pg_settings WHERE name = ANY(%s)", (list(names),)
    )
    return {str(name): str(setting) for name, setting in await cur.fetchall()}


async def server_version(conn: AsyncConnection[Any]) -> str:
    cur = await conn.execute("SELECT current_setting('server_version')")
    row = await cur.fetchone()
    return str(row[0]) if row else "unknown"


async def timescaledb_version(conn: AsyncConnection[Any]) -> str | None:
    """The installed extension's version in this database, or None."""
    cur = await conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'")
    row = await cur.fetchone()
    return str(row[0]) if row else None


async def failed_jobs(conn: AsyncConnection[Any]) -> list[FailedJob]:
    """TimescaleDB jobs whose last run failed, with the last error message when recorded."""
    cur = await conn.execute(
        """
        SELECT s.job_id, j.proc_name,
               CASE WHEN s.hypertable_name IS NULL THEN NULL
                    WHEN c.view_name IS NOT NULL THEN c.view_schema || '.' || c.view_name
                    ELSE s.hypertable_schema || '.' || s.hypertable_name END,
               s.total_failures,
               (SELECT e.err_message FROM timescaledb_information.job_errors e
                 WHERE e.job_id = s.job_id ORDER BY e.finish_time DESC NULLS LAST LIMIT 1),
               pg_has_role(current_user, j.owner, 'MEMBER')
               OR pg_has_role(current_user, (SELECT d.datdba FROM pg_database d
                                             WHERE d.datname = current_database()), 'MEMBER')
        FROM timescaledb_information.job_stats s
        JOIN timescaledb_information.jobs j USING (job_id)
        -- An aggregate's refresh job names its materialization table
        -- (_timescaledb_internal._materialized_hypertable_N): name the view instead.
        LEFT JOIN timescaledb_information.continuous_aggregates c
          ON c.materialization_hypertable_schema = s.hypertable_schema
         AND c.materialization_hypertable_name = s.hypertable_name
        WHERE s.last_run_status = 'Failed'
        ORDER BY s.job_id
        """
    )
    return [FailedJob(*row) for row in await cur.fetchall()]
