"""The psycopg connection pool: every connection lands in the hub's schema."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Final

import psycopg
from psycopg import AsyncConnection
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from hub.errors import HubError, StorageError, raise_if_cancelled
from hub.settings import Settings


class HubPool(AsyncConnectionPool[AsyncConnection[object]]):
    """psycopg's pool, except that a checkout never swallows a cancellation.

    A task waiting for a connection waits in `asyncio.wait_for`. On Python 3.11, when the
    connection is handed over in the same tick as the task is cancelled, `wait_for` returns
    it and the cancellation is lost: the stage takes its next round, sleeps, and never
    stops, so the hub's shutdown hung (seen in CI: the notifier, 300 s). The task still
    counts the request (`cancelling()`), so a checkout that ends with more requests than it
    began with hands the connection back and raises what it swallowed. The same holds for
    an `asyncio.timeout` that expired at that tick: its exit turns this into TimeoutError.
    """

    # The signature is psycopg_pool's, timeout included.
    async def getconn(self, timeout: float | None = None) -> AsyncConnection[object]:  # noqa: ASYNC109
        task = asyncio.current_task()
        asked = task.cancelling() if task is not None else 0
        conn = await super().getconn(timeout)
        if task is not None and task.cancelling() > asked:
            await self.putconn(conn)
            raise asyncio.CancelledError
        return conn


def create_pool(settings: Settings, *, min_size: int = 2) -> HubPool:
    """A closed pool for the configured database; the lifespan opens it."""
    return HubPool(
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


# What a task on a connection of its own meets when the database goes away (or the hub's own
# error for it): the task reconnects; anything else is a bug.
CONNECTION_LOST: Final = (psycopg.Error, OSError, HubError)


async def keep_connected(
    settings: Settings,
    session: Callable[[AsyncConnection[Any]], Awaitable[None]],
    *,
    ready: asyncio.Event,
    retry_s: float,
    log: logging.Logger,
    failed: str,
    lost: Callable[[Exception], None] | None = None,
) -> None:
    """Run `session` on a connection of its own until cancelled; each time it ends or
    fails, clear `ready`, wait `retry_s` and connect again.

    For a task that holds a connection rather than borrowing one from the pool (a LISTEN, a
    session's advisory lock). A lost database, or one of the hub's own errors, is handed to
    `lost` (if given; else the session says it); anything else is a bug, logged as `failed`
    with its traceback: it must not end the task for good.
    """
    while True:
        try:
            conn = await connect(settings)
            async with conn:
                await session(conn)
        except CONNECTION_LOST as exc:
            raise_if_cancelled()
            if lost is not None:
                lost(exc)
        except Exception:
            raise_if_cancelled()
            log.exception(failed)
        ready.clear()
        await asyncio.sleep(retry_s)


async def dict_rows(
    conn: AsyncConnection[Any], query: str, params: Mapping[str, Any] | Sequence[Any]
) -> list[dict[str, Any]]:
    """Every row of one query, each a dict by column name."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query.encode(), params)
        return await cur.fetchall()
