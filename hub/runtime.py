"""Composition root: builds the hub's objects once and owns every task they run."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import sys
from collections.abc import AsyncIterator, Coroutine
from dataclasses import dataclass, field
from typing import Any

from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from hub.alerts import AlertStore
from hub.auth import SignInGuard
from hub.clock import Clock, SystemClock
from hub.credentials import BrokerAccounts, DeviceAuthority
from hub.credentials.dynsec import keep_in_step, site_brokers
from hub.ingest import Ingest
from hub.live import LiveFeed
from hub.live_status import StatusWatcher
from hub.metrics import Metrics
from hub.models import Inbound
from hub.notify import Notifier
from hub.outbound import DeviceReplies, Dispatcher
from hub.pipeline import EVENTS, TELEMETRY, Pipeline
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
    """A running hub: the objects its stages are made of, built once by `run_hub`."""

    settings: Settings
    pool: AsyncConnectionPool[AsyncConnection[object]]
    # The telemetry lane (telemetry, status): the bulk of the traffic.
    ingest: Ingest
    pipeline: Pipeline
    # The events lane (falls, presses): its own connection, batches and commits.
    event_ingest: Ingest
    event_pipeline: Pipeline
    metrics: Metrics
    alerts: AlertStore
    timers: Timers
    live: LiveFeed
    clock: Clock
    notifier: Notifier
    # Facility, zone and device deltas for the live websocket (one per process).
    status: StatusWatcher
    # Device replies, the live feed and webhooks, behind one dispatcher.
    outbound: Dispatcher
    # Who a broker that asks the hub (EMQX) is talking to, and what they may do.
    authority: DeviceAuthority | None = None
    # Brokers with device accounts of their own, told of every issue and revocation.
    brokers: tuple[BrokerAccounts, ...] = ()
    # Locks of sign-in already seen by this process (the counts are in the database).
    sign_in: SignInGuard = field(default_factory=SignInGuard)
    # The stages' tasks, owned by run_hub's TaskGroup.
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    @property
    def mqtt_connected(self) -> bool:
        """Both lanes are connected to the broker and subscribed."""
        return self.ingest.connected.is_set() and self.event_ingest.connected.is_set()

    async def wait_connected(self, timeout_s: float) -> None:
        """Wait until both lanes are subscribed; TimeoutError after `timeout_s`."""
        async with asyncio.timeout(timeout_s):
            await self.ingest.connected.wait()
            await self.event_ingest.connected.wait()


@contextlib.asynccontextmanager
async def run_hub(
    settings: Settings,
    *,
    apply_migrations: bool = True,
    clock: Clock | None = None,
    settle_gc: bool = False,
) -> AsyncIterator[Hub]:
    """Build the hub and run its stages in one TaskGroup; on exit stop them and the pool.

    `settle_gc`: the hub is the whole process, so once it runs, freeze what start-up built
    and raise the collector's thresholds (settle_garbage_collector). A process that starts
    and stops hubs (the tests) must not: what it froze would never be collected.

    Every object is built and handed its peers here: ingest fills the pipeline's queue,
    the pipeline drives the alert store, and the store's committed changes go to outbound.
    What happens to one message on that way is pipeline.py's.
    """
    clock = clock or SystemClock()
    if apply_migrations:
        await migrate(settings)
    metrics = Metrics()
    # Bounded: when storage falls behind, reading from the socket pauses; the broker keeps
    # the rest (at most Receive Maximum unacked messages are ever in flight to us).
    inbound: asyncio.Queue[Inbound] = asyncio.Queue(maxsize=max(settings.batch_max * 2, 1000))
    event_inbound: asyncio.Queue[Inbound] = asyncio.Queue(maxsize=max(settings.batch_max, 1000))
    pool = create_pool(settings)
    await pool.open(wait=False)
    try:
        ingest, event_ingest = (
            Ingest(
                settings,
                queue,
                clock,
                channels=lane.channels,
                client_id=lane.client_id(settings),
                # One connection is enough to hear the broker's drop counter.
                broker_stats=metrics if lane is TELEMETRY else None,
                # The alerts' acks leave on the events lane.
                emergency=metrics.emergency if lane is EVENTS else None,
            )
            for lane, queue in ((TELEMETRY, inbound), (EVENTS, event_inbound))
        )
        live = LiveFeed(settings, pool)
        notifier = Notifier(settings, pool, clock)
        # Acks (a resident waits for the light) leave on the events lane's connection.
        replies = DeviceReplies(
            settings.topic_root,
            lambda topic, payload, urgent: (event_ingest if urgent else ingest).reply(
                topic, payload, urgent=urgent
            ),
            metrics,
        )
        outbound = Dispatcher(replies, (live, notifier))
        alerts = AlertStore(pool, settings.database_schema)
        # Notices are queued in each alert's own transaction and sent by their own task,
        # so a slow or dead webhook never holds up ingest or the alert's commit.
        alerts.add_transaction_hook(notifier.enqueue)
        alerts.add_listener(outbound.alert_changed)
        pipeline = Pipeline(
            settings, pool, ingest, inbound, metrics, alerts=alerts, outbound=outbound
        )
        event_pipeline = Pipeline(
            settings,
            pool,
            event_ingest,
            event_inbound,
            metrics,
            alerts=alerts,
            outbound=outbound,
            lane=EVENTS,
            peer=pipeline,
        )
        timers = Timers(settings, pool, alerts, clock, lambda: pipeline.rule_params)
        status = StatusWatcher(pool, live.broadcast)
        hub = Hub(
            settings,
            pool,
            ingest,
            pipeline,
            event_ingest,
            event_pipeline,
            metrics,
            alerts,
            timers,
            live,
            clock,
            notifier,
            status,
            outbound,
            authority=DeviceAuthority(settings, pool=pool),
            brokers=site_brokers(settings),
        )
        async with asyncio.TaskGroup() as group:
            tasks = hub.tasks
            for name, lane in (("carehub-pipeline", pipeline), ("carehub-events", event_pipeline)):
                tasks.append(group.create_task(_supervised(lane.run()), name=name))
            try:
                # The registry is loaded before the first message is read off the broker.
                await pipeline.ready.wait()
                await event_pipeline.ready.wait()
                for name, stage in (
                    ("carehub-ingest", ingest.run()),
                    ("carehub-ingest-events", event_ingest.run()),
                    ("carehub-live", live.run()),
                    ("carehub-live-status", status.run()),
                    ("carehub-timers", timers.run()),
                    ("carehub-notifier", notifier.run()),
                    ("carehub-broker-accounts", keep_in_step(settings)),
                ):
                    tasks.append(group.create_task(_supervised(stage), name=name))
                if settle_gc:
                    settle_garbage_collector()
                yield hub
            finally:
                await _stop_tasks(tasks)
                if hub.authority is not None:
                    await hub.authority.close()
    finally:
        await pool.close(timeout=POOL_CLOSE_S)


# The garbage collector's generation thresholds once the hub runs (CPython's are 700, 10,
# 10). A message's objects live until its batch commits, a few thousand allocations later:
# at the default thresholds they outlive two young collections, reach the old generation
# and make its full collections frequent, and a full collection stopped the event loop for
# 130-220 ms (press->hub receive p99 in `carehub bench latency`). Young collections of
# 50,000 objects take a few milliseconds, and what a message leaves dies young.
GC_THRESHOLDS = (50_000, 20, 100)


def settle_garbage_collector() -> None:
    """Freeze what start-up built (never garbage, never scanned again), then raise the
    thresholds: the collector's pauses stay in milliseconds, not a tenth of a second."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


async def _supervised(stage: Coroutine[Any, Any, None]) -> None:
    """Run one stage; one that stops on its own is a bug, logged, and the others go on."""
    try:
        await stage
    except Exception:
        logger.critical("%s stopped", _task_name(), exc_info=True)


def _task_name() -> str:
    task = asyncio.current_task()
    return task.get_name() if task is not None else "a stage"


async def _stop_tasks(tasks: list[asyncio.Task[None]]) -> None:
    """Cancel the stages and wait for them; name any that has not stopped within STOP_S."""
    for task in tasks:
        task.cancel()
    _, pending = await asyncio.wait(tasks, timeout=STOP_S)
    if not pending:
        return
    # A stage that ignores its cancellation is a bug: say where it hangs. A stage waits on
    # its own child tasks too, so every unfinished task is shown, down to the await.
    for task in pending:
        logger.critical("%s did not stop within %g s", task.get_name(), STOP_S)
    for task in asyncio.all_tasks():
        if not task.done() and task is not asyncio.current_task():
            print(f"{task.get_name()} waits at:", *_awaiting(task), sep="\n  ", file=sys.stderr)
    # A cancellation lost in a race (Python 3.11's wait_for drops one that lands in the tick
    # its future completes) is answered by a second request: the hub still stops.
    for task in pending:
        task.cancel()
    _, pending = await asyncio.wait(pending, timeout=STOP_S)
    for task in pending:
        logger.critical("%s did not stop when asked again", task.get_name())


def _awaiting(task: asyncio.Task[Any]) -> list[str]:
    """Where a suspended task waits: one line per coroutine, outermost first.

    Task.print_stack shows only the task's own coroutine, which says nothing of a hang
    that sits deep inside a library.
    """
    lines = []
    awaited: Any = task.get_coro()
    while awaited is not None:
        frame = getattr(awaited, "cr_frame", None) or getattr(awaited, "ag_frame", None)
        if frame is None:
            break  # a future: the line above is the await
        lines.append(f"{frame.f_code.co_filename}:{frame.f_lineno} in {frame.f_code.co_name}")
        awaited = getattr(awaited, "cr_await", None) or getattr(awaited, "ag_await", None)
    return lines
