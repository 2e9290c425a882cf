"""Delivery: the Notifier sends the outbox, retries failed notices, and reports health.

The `Notifier` claims due rows with SKIP LOCKED (any number of hub processes can share the
outbox), releases the connection, POSTs, then records the outcome. A failed POST is tried
again with exponential backoff; after `notify_max_attempts` the row is marked failed. A
dead endpoint shows on `health()` and costs one try per backoff step, never a crash loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import random
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx
import psycopg
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from hub.clock import Clock
from hub.errors import raise_if_cancelled
from hub.models import AlertChange, AlertDecision
from hub.notify.formats import dingtalk_signed_url, json_signature, redact_url, render
from hub.notify.outbox import enqueue_notices
from hub.rules import FloodRule
from hub.settings import Settings
from hub.storage import notifications as outbox
from hub.storage.notifications import ClaimedNotice, Webhook, WebhookStatus

logger = logging.getLogger(__name__)

# Retry backoff: 1, 2, 4 ... s per attempt, ±20 % jitter so rows that failed together
# (an endpoint that was down) do not all come back in the same second; capped at 5 min
# so a recovered endpoint gets its backlog within minutes.
BACKOFF_FIRST_S = 1.0
BACKOFF_MAX_S = 300.0
BACKOFF_JITTER = 0.2
# Due rows are looked for this often; `wake()` (after a commit in this process) is sooner.
POLL_S = 1.0
# Rows claimed per query, and webhooks sent to at once: one slow endpoint holds one worker.
CLAIM_BATCH = 50
MAX_WORKERS = 16
# A claimed row is leased for the longest its worker can take; a process that dies
# mid-send leaves its rows to be claimed again after that (at-least-once delivery).
LEASE_MARGIN_S = 60.0
# Waiting for the database after a failure: doubling, capped.
DB_RETRY_MIN_S = 1.0
DB_RETRY_MAX_S = 30.0
# The health snapshot is reread from the database this often (other processes send too).
HEALTH_REFRESH_S = 5.0
HEALTH_LIST_MAX = 50
# Consecutive failed tries before an endpoint makes the notifier's health "degraded".
DEGRADED_AFTER = 3
# Sent and failed rows are kept this long, then pruned, a bounded batch at a time.
RETAIN = timedelta(days=30)
PRUNE_EVERY_S = 60.0
PRUNE_BATCH = 1000
# What is read of a reply, and kept of an error.
REPLY_MAX_BYTES = 64 * 1024
ERROR_MAX_CHARS = 500
# Robot errcodes that mean "too many messages": the endpoint, not this message, is the
# problem (WeCom 45009 api freq out of limit; DingTalk 130101 send too fast).
RATE_LIMIT_ERRCODES = frozenset({45009, 130101})
# Statuses that say something about this one message rather than about the endpoint.
MESSAGE_STATUSES = frozenset({400, 413, 422})

_jitter = random.SystemRandom()


def retry_delay(attempts: int, *, jitter: float = 0.5) -> float:
    """Seconds before try `attempts + 1`; `jitter` in [0, 1) spreads it by ±20 %."""
    base = min(BACKOFF_MAX_S, BACKOFF_FIRST_S * 2.0 ** max(0, attempts - 1))
    return min(BACKOFF_MAX_S, base * (1 - BACKOFF_JITTER + 2 * BACKOFF_JITTER * jitter))


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one POST achieved; `endpoint_down` when the endpoint, not the message, failed."""

    ok: bool
    error: str = ""
    endpoint_down: bool = False


def judge(format: str, status: int, reply: bytes) -> Outcome:
    """Whether a reply means delivered: 2xx, and for the robots also errcode 0."""
    if not 200 <= status < 300:
        snippet = reply[:200].decode(errors="replace").strip()
        error = f"HTTP {status}" + (f": {snippet}" if snippet else "")
        return Outcome(False, error, endpoint_down=status not in MESSAGE_STATUSES)
    if format == "json":
        return Outcome(True)
    try:
        answer = json.loads(reply)
        errcode = int(answer["errcode"])
    except (ValueError, TypeError, KeyError):
        # Not the robot at all (a proxy's page, a wrong URL): every message would fail so.
        return Outcome(False, f"HTTP {status} but no robot errcode in the reply", True)
    if errcode == 0:
        return Outcome(True)
    message = str(answer.get("errmsg", ""))[:200]
    return Outcome(
        False, f"errcode {errcode}: {message}", endpoint_down=errcode in RATE_LIMIT_ERRCODES
    )


def _endpoint_json(status: WebhookStatus) -> dict[str, Any]:
    """One endpoint's record as the health endpoint shows it."""
    return {
        "id": status.id,
        "facility_id": status.facility_id,
        "url": status.url,
        "format": status.format,
        "consecutive_failures": status.consecutive_failures,
        "last_error": status.last_error,
        "last_success_at": _iso(status.last_success_at),
        "last_failure_at": _iso(status.last_failure_at),
    }


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


class Notifier:
    """Sends the outbox: claims due rows, POSTs them, records each outcome."""

    def __init__(
        self,
        settings: Settings,
        pool: AsyncConnectionPool[AsyncConnection[Any]],
        clock: Clock,
    ) -> None:
        # The live feed groups floods by this same rule (hub/live.py), so screen and phone agree.
        self._flood = FloodRule.of(settings)
        self._pool = pool
        self._clock = clock
        self._timeout = settings.notify_timeout_s
        self._max_attempts = settings.notify_max_attempts
        self._lease = timedelta(seconds=CLAIM_BATCH * 2 * self._timeout + LEASE_MARGIN_S)
        self._wake = asyncio.Event()
        self._busy: set[int] = set()
        self._endpoints: dict[int, WebhookStatus] = {}
        self._webhooks_total = 0
        self._webhooks_failing = 0
        self._pending = 0
        self._oldest_pending: datetime | None = None
        self._failed_last_hour = 0
        self._database_error: str | None = None
        self._refreshed_at = -HEALTH_REFRESH_S
        self._pruned_at = -PRUNE_EVERY_S
        self.sent = 0
        self.failed_tries = 0

    async def enqueue(self, conn: AsyncConnection[Any], change: AlertChange) -> int:
        """`enqueue_notices` with this hub's clock and flood rule (a transaction hook)."""
        return await enqueue_notices(conn, change, now=self._clock.now(), flood=self._flood)

    def wake(self, change: AlertChange | None = None) -> None:
        """Look for due rows now (an after-commit listener); otherwise every POLL_S."""
        del change
        self._wake.set()

    def alert_changed(self, change: AlertChange) -> None:
        """A committed change may have queued notices in its transaction: send them now."""
        self.wake(change)

    def alert_provisional(self, decision: AlertDecision) -> None:
        """Nothing yet: a notice is queued with the stored alert, once the spool replays it."""
        del decision

    async def run(self) -> None:
        """Send due notices until cancelled; HTTP and database failures never end it."""
        limits = httpx.Limits(max_connections=MAX_WORKERS * 2, max_keepalive_connections=8)
        async with (
            httpx.AsyncClient(timeout=self._timeout, limits=limits) as client,
            asyncio.TaskGroup() as workers,
        ):
            backoff = DB_RETRY_MIN_S
            while True:
                try:
                    await self._maintain()
                    batches = await self._claim()
                except psycopg.Error as exc:
                    raise_if_cancelled()
                    self._database_error = _short(exc)
                    logger.warning("notifier cannot reach the database: %s", exc)
                    await asyncio.sleep(backoff)
                    backoff = min(DB_RETRY_MAX_S, backoff * 2)
                    continue
                except Exception:
                    raise_if_cancelled()
                    logger.exception("notifier round failed")
                    await asyncio.sleep(backoff)
                    backoff = min(DB_RETRY_MAX_S, backoff * 2)
                    continue
                backoff = DB_RETRY_MIN_S
                self._database_error = None
                for webhook, rows in batches:
                    self._busy.add(webhook.id)
                    workers.create_task(self._deliver(client, webhook, rows))
                if sum(len(rows) for _, rows in batches) < CLAIM_BATCH:
                    await self._wait()
                else:
                    await asyncio.sleep(0)

    async def _wait(self) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(POLL_S):
                await self._wake.wait()
        self._wake.clear()

    async def _claim(self) -> list[tuple[Webhook, list[ClaimedNotice]]]:
        """Lease due rows to this process, grouped by webhook (in the order they are due)."""
        if len(self._busy) >= MAX_WORKERS:
            return []
        now = self._clock.now()
        async with self._pool.connection() as conn:
            claimed = await outbox.claim_due(
                conn, now=now, busy=sorted(self._busy), limit=CLAIM_BATCH, lease=now + self._lease
            )
        webhooks: dict[int, Webhook] = {}
        rows: defaultdict[int, list[ClaimedNotice]] = defaultdict(list)
        for webhook, row in claimed:
            webhooks[webhook.id] = webhook
            rows[webhook.id].append(row)
        return [(webhooks[wid], sorted(rows[wid], key=lambda r: r.id)) for wid in webhooks]

    async def _deliver(
        self, client: httpx.AsyncClient, webhook: Webhook, rows: Sequence[ClaimedNotice]
    ) -> None:
        """Send one webhook's claimed rows in order; stop early when the endpoint is down."""
        try:
            if not webhook.enabled:
                # Disabled after these were queued: they are dropped, not sent.
                await self._record(webhook, rows, Outcome(False, "webhook disabled"), final=True)
                return
            for index, row in enumerate(rows):
                outcome = await self._send(client, webhook, row)
                if outcome.ok or not outcome.endpoint_down:
                    await self._record(webhook, [row], outcome)
                    continue
                # The endpoint is down: the rows behind this one share its try and backoff.
                await self._record(webhook, rows[index:], outcome)
                return
        except psycopg.Error as exc:
            raise_if_cancelled()
            # Left `sending`: claimed again once the lease ends (a duplicate at worst).
            self._database_error = _short(exc)
            logger.warning(
                "cannot record notifications of webhook %s: %s",
                webhook.id,
                exc,
                extra={"facility_id": webhook.facility_id},
            )
        except Exception:
            raise_if_cancelled()
            logger.exception(
                "notifying webhook %s failed",
                webhook.id,
                extra={"facility_id": webhook.facility_id},
            )
        finally:
            self._busy.discard(webhook.id)
            self._wake.set()

    async def _send(
        self, client: httpx.AsyncClient, webhook: Webhook, row: ClaimedNotice
    ) -> Outcome:
        """POST one notice; never raises for what the network or the endpoint does."""
        content = json.dumps(
            render(webhook.format, row.body), ensure_ascii=False, separators=(",", ":")
        ).encode()
        headers = {
            "Content-Type": "application/json; charset=utf-8",
            "User-Agent": "carehub-notify/1",
            # The same id on every retry, so a receiver can drop a duplicate.
            "X-Carehub-Notification": str(row.id),
            "X-Carehub-Event": row.event,
        }
        url = webhook.url
        timestamp_ms = int(self._clock.now().timestamp() * 1000)
        if webhook.secret and webhook.format == "dingtalk":
            url = dingtalk_signed_url(url, webhook.secret, timestamp_ms)
        elif webhook.secret and webhook.format == "json":
            headers["X-Carehub-Timestamp"] = str(timestamp_ms)
            headers["X-Carehub-Signature"] = json_signature(webhook.secret, timestamp_ms, content)
        try:
            # httpx's timeout is per phase; this bounds the whole exchange.
            async with (
                asyncio.timeout(self._timeout * 2),
                client.stream("POST", url, content=content, headers=headers) as response,
            ):
                reply = await _read_capped(response, REPLY_MAX_BYTES)
        except (httpx.HTTPError, httpx.InvalidURL, TimeoutError, OSError) as exc:
            raise_if_cancelled()
            return Outcome(False, _short(exc), endpoint_down=True)
        return judge(webhook.format, response.status_code, reply)

    async def _record(
        self,
        webhook: Webhook,
        rows: Sequence[ClaimedNotice],
        outcome: Outcome,
        *,
        final: bool = False,
    ) -> None:
        """Store one try's outcome on `rows` and on the webhook's health, in one transaction."""
        now = self._clock.now()
        error = outcome.error[:ERROR_MAX_CHARS]
        async with self._pool.connection() as conn:
            for row in rows:
                attempts = row.attempts + 1
                if outcome.ok:
                    await outbox.mark_sent(conn, row.id, attempts=attempts, now=now)
                    continue
                give_up = final or attempts >= self._max_attempts
                retry_at = now + timedelta(seconds=retry_delay(attempts, jitter=_jitter.random()))
                await outbox.mark_unsent(
                    conn,
                    row.id,
                    attempts=attempts,
                    failed=give_up,
                    next_attempt_at=now if give_up else retry_at,
                    error=error,
                )
                if give_up:
                    logger.warning(
                        "notification %s to %s failed for good after %s tries: %s",
                        row.id,
                        redact_url(webhook.url),
                        attempts,
                        outcome.error,
                        extra={"facility_id": webhook.facility_id},
                    )
            if final:
                # Nothing was tried: the endpoint's record stays as it was.
                return
            status = await outbox.record_webhook_try(
                conn, webhook.id, ok=outcome.ok, error=error, now=now
            )
        if outcome.ok:
            self.sent += len(rows)
        else:
            self.failed_tries += 1
        if status is not None:
            self._endpoints[webhook.id] = WebhookStatus(
                webhook.id, webhook.facility_id, redact_url(webhook.url), webhook.format, *status
            )

    # -- health ---------------------------------------------------------------------------

    async def _maintain(self) -> None:
        """Reread the health snapshot, and prune old rows, when they are due."""
        tick = time.monotonic()
        if tick - self._refreshed_at >= HEALTH_REFRESH_S:
            await self.refresh_health()
            self._refreshed_at = tick
        if tick - self._pruned_at >= PRUNE_EVERY_S:
            await self._prune()
            self._pruned_at = tick

    async def refresh_health(self) -> None:
        """Read every process's view of the webhooks and the outbox into `health()`."""
        now = self._clock.now()
        async with self._pool.connection() as conn:
            listed = await outbox.webhook_statuses(conn, HEALTH_LIST_MAX)
            counts = await outbox.outbox_counts(
                conn, failing_after=DEGRADED_AFTER, failed_since=now - timedelta(hours=1)
            )
        self._endpoints = {
            status.id: dataclasses.replace(status, url=redact_url(status.url)) for status in listed
        }
        self._webhooks_total = counts.webhooks
        self._webhooks_failing = counts.failing
        self._pending = counts.pending
        self._oldest_pending = counts.oldest_pending
        self._failed_last_hour = counts.failed_last_hour
        self._database_error = None

    async def _prune(self) -> None:
        async with self._pool.connection() as conn:
            await outbox.prune_done(conn, before=self._clock.now() - RETAIN, limit=PRUNE_BATCH)

    def health(self) -> dict[str, Any]:
        """Webhook delivery for the health endpoint: "degraded" when an endpoint keeps failing."""
        worst_first = sorted(
            self._endpoints.values(), key=lambda e: (-e.consecutive_failures, e.id)
        )
        endpoints = worst_first[:HEALTH_LIST_MAX]
        failing = max(
            self._webhooks_failing,
            sum(1 for e in endpoints if e.consecutive_failures >= DEGRADED_AFTER),
        )
        degraded = failing > 0 or self._database_error is not None
        oldest_s = (
            max(0.0, (self._clock.now() - self._oldest_pending).total_seconds())
            if self._oldest_pending is not None
            else None
        )
        return {
            "status": "degraded" if degraded else "ok",
            "database_error": self._database_error,
            "webhooks": self._webhooks_total,
            "failing": failing,
            "pending": self._pending,
            "oldest_pending_s": oldest_s,
            "failed_last_hour": self._failed_last_hour,
            "endpoints": [_endpoint_json(endpoint) for endpoint in endpoints],
        }


async def _read_capped(response: httpx.Response, limit: int) -> bytes:
    received = bytearray()
    async for chunk in response.aiter_bytes():
        received += chunk
        if len(received) >= limit:
            break
    return bytes(received[:limit])


def _short(exc: BaseException) -> str:
    text = str(exc).strip()
    described = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return described[:ERROR_MAX_CHARS]
