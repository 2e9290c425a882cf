"""Composition root: builds the hub's objects once and owns every task they run."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from hub.alerts import AlertStore
from hub.clock import Clock, SystemClock
from hub.ingest import Ingest
from hub.live import LiveFeed
from hub.live_status import StatusWatcher
from hub.metrics import Metrics
from hub.models import Inbound
from hub.notify import Notifier
from hub.pipeline import Pipeline
from hub.settings import Settings
from hub.storage.migrate import migrate
from hub.storage.pool import create_pool
from hub.timers import Timers

logger = logging.getLogger(__name__)

# How long each stage may take to stop once cancelled, and the pool to close.
STOP_S = 15.0
POOL_CLOSE_S = 5.0


@dataclass(slots=True)
class Hub:
    """A running hub: pool, ingest and pipeline, and the tasks that drive them."""

    settings: Settings
    pool: AsyncConnectionPool[AsyncConnection[object]]
    ingest: Ingest
    pipeline: Pipeline
    metrics: Metrics
    alerts: AlertStore
    timers: Timers
    live: LiveFeed
    clock: Clock
    notifier: Notifier
    # Facility, zone and device deltas for the live websocket (one per process).
    status: StatusWatcher
    # The stages' tasks, owned by run_hub: cancelled and awaited on exit.
    tasks: list[asyncio.Task[None]] = field(default_factory=list)


@contextlib.asynccontextmanager
async def run_hub(
    settings: Settings, *, apply_migrations: bool = True, clock: Clock | None = None
) -> AsyncIterator[Hub]:
    """Start the hub's stages; on exit cancel every task and close every resource."""
    clock = clock or SystemClock()
    if apply_migrations:
        await migrate(settings)
    metrics = Metrics()
    # Bounded: when storage falls behind, reading from the socket pauses; the broker keeps
    # the rest (at most Receive Maximum unacked messages are ever in flight to us).
    inbound: asyncio.Queue[Inbound] = asyncio.Queue(maxsize=max(settings.batch_max * 2, 1000))
    pool = create_pool(settings)
    await pool.open(wait=False)
    ingest = Ingest(settings, inbound, clock)
    alerts = AlertStore(pool, settings.database_schema)
    pipeline = Pipeline(settings, pool, ingest, inbound, metrics, alerts=alerts)
    alerts.add_listener(pipeline.publish_ack)
    timers = Timers(settings, pool, alerts, clock, lambda: pipeline.rule_params)
    live = LiveFeed(settings, pool)
    pipeline.add_provisional_listener(live.publish_local)
    # Notices are queued in each alert's own transaction and sent by their own task, so a
    # slow or dead webhook never holds up ingest or the alert's commit.
    notifier = Notifier(settings, pool, clock)
    alerts.add_transaction_hook(notifier.enqueue)
    alerts.add_listener(notifier.wake)
    status = StatusWatcher(pool, live.broadcast)
    hub = Hub(
        settings, pool, ingest, pipeline, metrics, alerts, timers, live, clock, notifier, status
    )
    tasks = hub.tasks
    tasks.append(asyncio.create_task(pipeline.run(), name="carehub-pipeline"))
    try:
        await pipeline.ready.wait()
        tasks.append(asyncio.create_task(ingest.run(), name="carehub-ingest"))
        tasks.append(asyncio.create_task(live.run(), name="carehub-live"))
        tasks.append(asyncio.create_task(status.run(), name="carehub-live-status"))
        tasks.append(asyncio.create_task(timers.run(), name="carehub-timers"))
        tasks.append(asyncio.create_task(notifier.run(), name="carehub-notifier"))
        for task in tasks:
            task.add_done_callback(_report_crash)
        yield hub
    finally:
        await _stop_tasks(tasks)
        await pool.close(timeout=POOL_CLOSE_S)


async def _stop_tasks(tasks: list[asyncio.Task[None]]) -> None:
    """Cancel the stages and wait for them, each within STOP_S; name any that hangs."""
    for task in tasks:
        task.cancel()
    _, pending = await asyncio.wait(tasks, timeout=STOP_S)
    for task in pending:
        # A stage that ignores its cancellation is a bug; shutting down must still end.
        logger.critical("%s did not stop within %g s; abandoning it", task.get_name(), STOP_S)
        task.print_stack(limit=12, file=sys.stderr)


def _report_crash(task: asyncio.Task[None]) -> None:
    """Log a stage that stopped on its own: that is a bug, and must not pass silently."""
    if not task.cancelled() and task.exception() is not None:
        logger.critical(
            "%s stopped: %r", task.get_name(), task.exception(), exc_info=task.exception()
        )
