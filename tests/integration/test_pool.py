"""The hub's connection pool: a task cancelled while it waits for a connection stops."""

from __future__ import annotations

import asyncio

import pytest

from hub.settings import Settings
from hub.storage.pool import create_pool


async def test_a_cancel_in_the_tick_a_connection_is_handed_over_still_stops_the_task(
    hub_settings: Settings,
) -> None:
    """psycopg_pool waits in wait_for, which on 3.11 returns the connection and drops a
    cancel that lands in the same tick: a stage's loop then went on, and shutdown hung."""
    async with create_pool(hub_settings, min_size=1) as pool:
        await pool.resize(1, 1)
        held = await pool.getconn()
        rounds_after_cancel = 0

        async def stage() -> None:
            nonlocal rounds_after_cancel
            while True:
                async with pool.connection() as conn:
                    await conn.execute("SELECT 1")
                rounds_after_cancel += 1
                await asyncio.sleep(0.05)

        task = asyncio.create_task(stage())
        await asyncio.sleep(0.2)  # the stage waits for the one connection
        await pool.putconn(held)  # handed to the waiter...
        task.cancel()  # ...in the same tick as the stop
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, 5)
        assert task.cancelled()
        assert rounds_after_cancel == 0
        # The connection it was handed went back: the pool's only one is free again.
        async with asyncio.timeout(2), pool.connection() as conn:
            assert await (await conn.execute("SELECT 1")).fetchone() == (1,)


async def test_a_checkout_without_a_cancel_is_not_disturbed(hub_settings: Settings) -> None:
    async with create_pool(hub_settings, min_size=1) as pool:
        await pool.resize(1, 1)
        held = await pool.getconn()

        async def borrow() -> tuple[int, ...] | None:
            async with pool.connection() as conn:
                return await (await conn.execute("SELECT 2")).fetchone()

        waiter = asyncio.create_task(borrow())
        await asyncio.sleep(0.2)
        await pool.putconn(held)
        assert await asyncio.wait_for(waiter, 5) == (2,)
