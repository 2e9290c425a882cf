"""The psycopg connection pool: every connection lands in the hub's schema."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import psycopg
from psycopg import AsyncConnection
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from hub.errors import StorageError
from hub.settings import Settings


def create_pool(
    settings: Settings, *, min_size: int = 2
) -> AsyncConnectionPool[AsyncConnection[object]]:
    """A closed pool for the configured database; the lifespan opens it."""
    return AsyncConnectionPool(
        settings.database_url,
        min_size=min_size,
        max_size=max(min_size, settings.database_pool_max),
        # The schema is a setting, not input; search_path keeps every query unqualified.
        kwargs={"options": f"-c search_path={settings.database_schema},public"},
        open=False,
        name="carehub",
        # Fail a checkout quickly so ingest can spool instead of hanging on a dead database.
        timeout=5.0,
    )


async def connect(settings: Settings) -> AsyncConnection[tuple[Any, ...]]:
    """One autocommit connection in the hub's schema, for a command; StorageError if none."""
    try:
        return await psycopg.AsyncConnection.connect(
            settings.database_url,
            autocommit=True,
            # The schema is a setting, not input; search_path keeps every query unqualified.
            options=f"-c search_path={settings.database_schema},public",
        )
    except psycopg.OperationalError as exc:
        raise StorageError(f"cannot reach the database: {exc}") from exc


async def dict_rows(
    conn: AsyncConnection[Any], query: str, params: Mapping[str, Any] | Sequence[Any]
) -> list[dict[str, Any]]:
    """Every row of one query, each a dict by column name."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query.encode(), params)
        return await cur.fetchall()
