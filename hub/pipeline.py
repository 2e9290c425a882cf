"""The one place that chains the stages: ingest -> decode -> store (+ rules) -> outbound."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from hub.alerts import AlertStore
from hub.decode import decode
from hub.errors import HubError, StorageError, raise_if_cancelled
from hub.ingest import Ingest
from hub.metrics import Metrics
from hub.models import (
    AlertDecision,
    Decoded,
    DeviceInfo,
    Event,
    Inbound,
    Reading,
    Rejection,
)
from hub.outbound import Dispatcher
from hub.rules import Clear, RuleParams, ScheduledTestCall, decide_event
from hub.settings import Settings
from hub.spool import Spool
from hub.storage.registry import find_device, load_devices
from hub.storage.rules import load_rule_params
from hub.storage.writer import BatchResult, BatchWriter

logger = logging.getLogger(__name__)

# How long "not registered" is believed before the database is asked again: short, so a
# device registered by an import in another process is accepted within seconds.
UNKNOWN_DEVICE_TTL_S = 5.0
UNKNOWN_DEVICE_CACHE_MAX = 100_000
REGISTRY_RELOAD_S = 30.0
# Batches decoded but not yet written; beyond this, ingest waits (and the broker holds
# the rest, up to our Receive Maximum).
BATCH_QUEUE = 4
# Messages decoded between two turns of the event loop while a batch is cut: a few
# milliseconds' work on a slow core, what an alert's round trip may wait for.
DECODE_YIELD_MESSAGES = 64
# A failed batch is retried this many times, this far apart, before it is spooled.
WRITE_RETRIES = (0.1, 0.4)
SPOOL_REPLAY_S = 1.0
# Events are few and urgent: their batch closes almost at once, and a burst of presses
# (a fire alarm in a home) still shares one commit.
EVENT_BATCH_INTERVAL_MS = 2


@dataclass(frozen=True, slots=True)
class Lane:
    """Which device channels one MQTT connection carries, and how its batches are cut.

    Device events (a fall, a press) have a lane of their own. On a connection shared with
    telemetry they would wait behind it three times: for the broker's in-flight window,
    which telemetry awaiting its commit fills; in the intake queue; and behind the batch
    writer. Each lane has its own session, queue, batches, commits and acks.
    """

    name: str
    channels: tuple[str, ...]
    # How long a batch waits for more messages; None: the batch_interval_ms setting.
    batch_interval_ms: int | None = None

    def client_id(self, settings: Settings) -> str:
        """The lane's MQTT client id: the telemetry lane keeps the hub's own id."""
        base = settings.mqtt_client_id
        return base if self is TELEMETRY else f"{base}-{self.name}"

    def spool_dir(self, settings: Settings) -> Path:
        """Where the lane spools during an outage: each replays only its own batches."""
        return settings.spool_dir if self is TELEMETRY else settings.spool_dir / self.name


TELEMETRY = Lane("telemetry", ("telemetry", "status"))
EVENTS = Lane("events", ("event",), batch_interval_ms=EVENT_BATCH_INTERVAL_MS)
LANES = (TELEMETRY, EVENTS)


class DeviceCache:
    """The device registry in memory, with a short negative cache for unknown ids."""

    def __init__(self, pool: AsyncConnectionPool[AsyncConnection[object]]) -> None:
        self._pool = pool
        self._devices: dict[str, DeviceInfo] = {}
        self._unknown: dict[str, float] = {}
        self.loaded = False

    @property
    def devices(self) -> Mapping[str, DeviceInfo]:
        """The devices known now."""
        return self._devices

    async def reload(self) -> None:
        """Replace the cache with the registry as the database has it."""
        async with self._pool.connection() as conn:
            self._devices = await load_devices(conn)
        self._unknown.clear()
        self.loaded = True

    async def refresh(self, device_id: str) -> bool:
        """Ask the database about one device missing from the cache; True if it is registered."""
        now = time.monotonic()
        asked_at = self._unknown.get(device_id)
        if asked_at is not None and now - asked_at < UNKNOWN_DEVICE_TTL_S:
            return False
        try:
            async with self._pool.connection() as conn:
                device = await find_device(conn, device_id)
        except Exception:  # noqa: BLE001 - any database trouble means "not known now"
            logger.warning("cannot look up device %s; treating it as unknown for now", device_id)
            device = None
        if device is None:
            if len(self._unknown) >= UNKNOWN_DEVICE_CACHE_MAX:
                self._unknown.clear()
            self._unknown[device_id] = now
            return False
        self._devices[device_id] = device
        return True


class _DatabaseState:
    """Whether the database is taken for down: one for all lanes, so that an outage one
    lane finds sends every lane to the spool at once, not after its own timeouts."""

    def __init__(self) -> None:
        self.down = False


class Pipeline:
    """Decodes what ingest receives, writes it in batches, and acks it once durable."""

    def __init__(
        self,
        settings: Settings,
        pool: AsyncConnectionPool[AsyncConnection[object]],
        ingest: Ingest,
        inbound: asyncio.Queue[Inbound],
        metrics: Metrics,
        *,
        alerts: AlertStore,
        outbound: Dispatcher,
        lane: Lane = TELEMETRY,
        peer: Pipeline | None = None,
    ) -> None:
        """`peer`: the lane whose registry and view of the database this one shares."""
        self._settings = settings
        self.lane = lane
        self._pool = pool
        self._alerts = alerts
        self._outbound = outbound
        self.rule_params = RuleParams()
        # Alert work started for messages of the batch being built; the batch is acked
        # only once that work is committed too, so a crash cannot lose an alert.
        self._alert_work: list[tuple[Inbound, asyncio.Task[None]]] = []
        self._ingest = ingest
        self._inbound = inbound
        self._metrics = metrics
        self._writer = BatchWriter(pool, settings.topic_root)
        self._spool = Spool(
            settings.spool_dir if lane is TELEMETRY else settings.spool_dir / lane.name
        )
        self._batches: asyncio.Queue[
            tuple[list[tuple[Inbound, Decoded]], list[tuple[Inbound, asyncio.Task[None]]]]
        ] = asyncio.Queue(BATCH_QUEUE)
        # One registry in memory for all lanes; the lane that builds it keeps it loaded.
        self._owns_devices = peer is None
        self.devices: DeviceCache = peer.devices if peer is not None else DeviceCache(pool)
        self._database: _DatabaseState = peer._database if peer is not None else _DatabaseState()
        self.ready = asyncio.Event()

    async def run(self) -> None:
        """Run every stage until cancelled."""
        try:
            if self._owns_devices or not self.devices.loaded:
                await self.devices.reload()
            await self._reload_rule_params()
            self._metrics.database_up = True
        except Exception as exc:  # noqa: BLE001 - start anyway; the spool covers the outage
            logger.error("cannot load the device registry (%s); starting with an empty one", exc)
            self._database.down = True
        self.ready.set()
        async with asyncio.TaskGroup() as group:
            lane = self.lane.name
            group.create_task(self._batch_loop(), name=f"carehub-{lane}-batch")
            group.create_task(self._write_loop(), name=f"carehub-{lane}-write")
            group.create_task(self._replay_loop(), name=f"carehub-{lane}-replay")
            group.create_task(self._reload_loop(), name=f"carehub-{lane}-registry")

    async def _decode(self, message: Inbound) -> Decoded:
        root = self._settings.topic_root
        decoded = decode(
            message.topic, message.payload, message.received_at, root, self.devices.devices
        )
        if (
            isinstance(decoded, Rejection)
            and decoded.pending
            and decoded.device_id is not None
            and await self.devices.refresh(decoded.device_id)
        ):
            decoded = decode(
                message.topic, message.payload, message.received_at, root, self.devices.devices
            )
        return decoded

    def _reject(self, rejection: Rejection) -> None:
        self._metrics.rejected[rejection.reason] += 1
        logger.info(
            "rejected %s: %s (%s)",
            rejection.topic[:200],
            rejection.reason,
            rejection.detail,
            extra={"device_id": rejection.device_id, "facility_id": rejection.facility_id},
        )
        self._outbound.device.rejected(rejection)

    async def _batch_loop(self) -> None:
        interval = (self.lane.batch_interval_ms or self._settings.batch_interval_ms) / 1000
        limit = self._settings.batch_max
        loop = asyncio.get_running_loop()
        while True:
            first = await self._inbound.get()
            batch = [self._process_now(first) or await self._process(first)]
            deadline = loop.time() + interval
            while len(batch) < limit:
                try:
                    message = self._inbound.get_nowait()
                except asyncio.QueueEmpty:
                    remaining = deadline - loop.time()
                    if remaining <= 0:
                        break
                    # asyncio.timeout, not wait_for: on 3.11 wait_for swallows a
                    # cancellation that lands as a message arrives (see raise_if_cancelled).
                    try:
                        async with asyncio.timeout(remaining):
                            message = await self._inbound.get()
                    except TimeoutError:
                        break
                # No coroutine per message: only an unknown device needs to await.
                batch.append(self._process_now(message) or await self._process(message))
                if len(batch) % DECODE_YIELD_MESSAGES == 0:
                    # A backlog is decoded in slices: an alert's transaction, on this same
                    # event loop, waits at most one slice for each of its round trips.
                    await asyncio.sleep(0)
            work, self._alert_work = self._alert_work, []
            await self._batches.put((batch, work))

    def _process_now(self, message: Inbound) -> tuple[Inbound, Decoded] | None:
        """`_process` without waiting; None when the device must be looked up first."""
        decoded = decode(
            message.topic,
            message.payload,
            message.received_at,
            self._settings.topic_root,
            self.devices.devices,
        )
        if isinstance(decoded, Rejection):
            if decoded.pending:
                return None
            self._reject(decoded)
        elif isinstance(decoded, Event):
            self._start_rules(message, decoded)
        self._metrics.received += 1
        return message, decoded

    async def _process(self, message: Inbound) -> tuple[Inbound, Decoded]:
        self._metrics.received += 1
        decoded = await self._decode(message)
        # Until the registry is loaded every device looks unknown: spool, don't tell vendors.
        if isinstance(decoded, Rejection) and (self.devices.loaded or not decoded.pending):
            self._reject(decoded)
        elif isinstance(decoded, Event):
            self._start_rules(message, decoded)
        return message, decoded

    def _start_rules(self, message: Inbound, event: Event) -> None:
        """Run the event's rule now, beside the batch: a fall never waits for a batch."""
        outcome = decide_event(event, self.rule_params)
        if isinstance(outcome, AlertDecision):
            self._metrics.emergency.record("decide", time.time() - message.received_at.timestamp())
        if self._database.down:
            # The batch is spooled and its replay stores the alert; until then the screens
            # and the device hear of it from this process, so an outage silences no call.
            if isinstance(outcome, AlertDecision):
                self._outbound.alert_provisional(outcome)
            elif isinstance(outcome, ScheduledTestCall):
                self._outbound.device.test_call(outcome)
            return
        if outcome is None:
            return
        task = asyncio.create_task(self._apply_rule(outcome), name="carehub-alert")
        self._alert_work.append((message, task))

    async def _apply_rule(self, outcome: object, *, announce: bool = True) -> None:
        """Persist what a rule decided; StorageError leaves the message to the spool.

        `announce`: when the alert cannot be stored, announce it provisionally (the fast
        path does; a replay of the spool, which already did, does not).
        """
        if isinstance(outcome, ScheduledTestCall):
            self._outbound.device.test_call(outcome)
        elif isinstance(outcome, Clear):
            await self._alerts.clear(
                outcome.kind, outcome.device_id, outcome.at, order=outcome.order
            )
        elif isinstance(outcome, AlertDecision):
            started = time.perf_counter()
            try:
                await self._alerts.raise_alert(outcome)
                self._metrics.emergency.record("commit", time.perf_counter() - started)
            except HubError:
                if announce:
                    self._outbound.alert_provisional(outcome)
                raise

    async def _settle_alerts(
        self, work: Sequence[tuple[Inbound, asyncio.Task[None]]]
    ) -> list[Inbound]:
        """Wait for the batch's alert work; the messages whose alert could not be stored."""
        failed: list[Inbound] = []
        for message, task in work:
            try:
                await task
            except HubError as exc:
                logger.error("alert not stored (%s); its message goes to the spool", exc)
                failed.append(message)
            except Exception:
                logger.exception("alert rule failed on %s", message.topic[:200])
                failed.append(message)
        return failed

    async def _reload_rule_params(self) -> None:
        async with self._pool.connection() as conn:
            self.rule_params = await load_rule_params(conn)

    async def _write_loop(self) -> None:
        """Write up to `batch_writers` batches at once; ack them in the order received.

        One writer leaves the hub idle while each commit makes its round trips: the next
        batch waits although its rows are ready. Writes overlap, acks do not: MQTT wants
        PUBACKs in the order of the PUBLISHes, and a batch is acked only once every batch
        before it is stored or spooled.
        """
        writers = asyncio.Semaphore(max(1, self._settings.batch_writers))
        in_order: asyncio.Queue[tuple[list[Inbound], asyncio.Task[None]]] = asyncio.Queue()
        async with asyncio.TaskGroup() as group:
            group.create_task(self._ack_loop(in_order), name=f"carehub-{self.lane.name}-ack")
            while True:
                batch, work = await self._batches.get()
                await writers.acquire()
                task = group.create_task(self._store(batch, work))
                task.add_done_callback(lambda _: writers.release())
                await in_order.put(([message for message, _ in batch], task))

    async def _ack_loop(
        self, in_order: asyncio.Queue[tuple[list[Inbound], asyncio.Task[None]]]
    ) -> None:
        while True:
            messages, stored = await in_order.get()
            await stored
            self._metrics.acked += self._ingest.ack(messages)

    async def _store(
        self,
        batch: list[tuple[Inbound, Decoded]],
        work: list[tuple[Inbound, asyncio.Task[None]]],
    ) -> None:
        """Write one batch, or spool it; afterwards it may be acked."""
        items = [decoded for _, decoded in batch]
        started = time.perf_counter()
        result = None if self._database.down else await self._write_with_retry(items)
        failed = await self._settle_alerts(work)
        if result is None:
            self._spool_batch([message for message, _ in batch])
        else:
            self._account(items, result)
            self._metrics.last_batch_seconds = time.perf_counter() - started
            if failed:
                # Stored, but their alert is not: the replay raises it (idempotently).
                self._spool_batch(failed)

    async def _write_with_retry(self, items: Sequence[Decoded]) -> BatchResult | None:
        for delay in (*WRITE_RETRIES, None):
            try:
                result = await self._writer.write(items)
            except StorageError as exc:
                self._metrics.batch_failures += 1
                if delay is None:
                    logger.error("database unavailable (%s); spooling until it is back", exc)
                    self._database.down = True
                    self._metrics.database_up = False
                    return None
                await asyncio.sleep(delay)
            else:
                self._metrics.database_up = True
                return result
        return None

    def _spool_batch(self, messages: Sequence[Inbound]) -> None:
        path = self._spool.write(messages)
        self._metrics.spooled_batches += 1
        self._metrics.spooled_messages += len(messages)
        self._metrics.spool_pending = len(self._spool.files())
        logger.warning("spooled %d messages to %s", len(messages), path)

    def _account(self, items: Sequence[Decoded], result: BatchResult) -> None:
        self._metrics.batches += 1
        self._metrics.stored.update(
            readings=result.readings, events=result.events, status_changes=result.statuses
        )
        offered = sum(1 for item in items if isinstance(item, Reading | Event))
        fresh = result.readings + result.events + len(result.refused)
        self._metrics.duplicates += max(offered - fresh, 0)
        for refused in result.refused:
            self._reject(refused)

    async def _replay_loop(self) -> None:
        while True:
            await asyncio.sleep(SPOOL_REPLAY_S)
            if not self._database.down and not self._spool.files():
                continue
            try:
                await self._replay()
            except (HubError, psycopg.Error, OSError) as exc:
                # PoolTimeout and connection errors come from reading the registry, which
                # the replay does first; the spool stays until a replay gets through.
                raise_if_cancelled()
                self._metrics.replay_failures += 1
                logger.info(
                    "database still unavailable (%s); %d spooled batches wait",
                    exc,
                    len(self._spool.files()),
                )
                continue
            except Exception:
                # Never the end of the pipeline: ingest and the fast path must go on.
                raise_if_cancelled()
                self._metrics.replay_failures += 1
                logger.exception("replaying the spool failed; trying again")
                continue
            if self._database.down:
                logger.info("database is back; spool replayed")
            self._database.down = False
            self._metrics.database_up = True

    async def _replay(self) -> None:
        if self._database.down:
            await self.devices.reload()
        for path in self._spool.files():
            items = [await self._decode(message) for message in self._spool.read(path)]
            for item in items:
                if isinstance(item, Event):
                    await self._apply_rule(decide_event(item, self.rule_params), announce=False)
            result = await self._writer.write(items)
            self._account(items, result)
            self._metrics.replayed_messages += len(items)
            self._spool.remove(path)
            self._metrics.spool_pending = len(self._spool.files())

    async def _reload_loop(self) -> None:
        while True:
            await asyncio.sleep(REGISTRY_RELOAD_S)
            if self._database.down:
                continue
            try:
                if self._owns_devices:
                    await self.devices.reload()
                await self._reload_rule_params()
            except Exception as exc:  # noqa: BLE001 - keep the cache we have
                logger.warning("registry reload failed: %s", exc)
