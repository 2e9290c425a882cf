"""Staff notifications: new, escalated and overdue alerts to each facility's webhooks.

A notice is queued as rows of the `notifications` outbox inside the alert's own
transaction (`enqueue_notices`), one row per enabled webhook of the facility, so a stored
alert always has its notices and queuing never waits on the network. The `Notifier`
sends them: it claims due rows with SKIP LOCKED (any number of hub processes can share the
outbox), releases the connection, POSTs, then records the outcome. A failed POST is tried
again with exponential backoff; after `notify_max_attempts` the row is marked failed. A
dead endpoint shows on `health()` and costs one try per backoff step, never a crash loop.

Formats: `json` (the generic notice below), `wecom` (企业微信 group robot, markdown) and
`dingtalk` (钉钉 custom robot, markdown, signed when the robot has a SEC... secret). Every
message text contains "告警", so a DingTalk robot's keyword check can use that word.

Floods (SPEC §4): while more than `notify_flood_threshold` alerts were raised at a facility
within `notify_flood_window_s`, its medium and low notices are added to one pending summary
per webhook ("10 分钟内共 37 条告警 … 设备离线 27 条"), sent after FLOOD_HOLD_S so it collects
more. High alerts (sos, fall, long_lie, dwell) are always notified one by one.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import logging
import random
import time
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

import httpx
import psycopg
from psycopg import AsyncConnection
from psycopg.rows import tuple_row
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from devices import ALERT_LABELS
from hub.clock import Clock
from hub.errors import NotifyError, raise_if_cancelled
from hub.models import AlertChange
from hub.settings import Settings

logger = logging.getLogger(__name__)

FORMATS = ("json", "wecom", "dingtalk")
EVENTS = ("new", "escalated", "overdue", "flood")
# Alert change action -> notice event; other actions (repeat, ack, resolve ...) send nothing.
ACTION_EVENTS = {"raise": "new", "renotify": "escalated", "overdue": "overdue"}

# Retry backoff: 1, 2, 4 ... s per attempt, ±20 % jitter so rows that failed together
# (an endpoint that was down) do not all come back in the same second; capped at 5 min
# so a recovered endpoint gets its backlog within minutes.
BACKOFF_FIRST_S = 1.0
BACKOFF_MAX_S = 300.0
BACKOFF_JITTER = 0.2
# A flood summary waits this long after its first alert before it is sent, collecting the
# rest of the burst; short enough that staff hear of a flood within seconds.
FLOOD_HOLD_S = 10.0
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
# Message size limits of the robots (WeCom markdown: 4096 bytes; DingTalk: 20000).
WECOM_MAX_BYTES = 4096
DINGTALK_MAX_BYTES = 18000
# Robot errcodes that mean "too many messages": the endpoint, not this message, is the
# problem (WeCom 45009 api freq out of limit; DingTalk 130101 send too fast).
RATE_LIMIT_ERRCODES = frozenset({45009, 130101})
# Statuses that say something about this one message rather than about the endpoint.
MESSAGE_STATUSES = frozenset({400, 413, 422})
# Facilities are in China (UTC+8, no daylight saving); staff read times in it.
CHINA = timezone(timedelta(hours=8))

KIND_TEXT = ALERT_LABELS
# What happened, as a sentence about the place or device.
KIND_SENTENCE = {
    "sos": "求助",
    "fall": "检测到跌倒",
    "long_lie": "跌倒后长时间未起身",
    "dwell": "长时间无活动",
    "over_capacity": "人数超过核定容量",
    "staff_ratio": "师幼比超过规定",
    "device_offline": "离线",
    "low_battery": "电量低",
}
PRIORITY_TEXT = {"high": "高", "medium": "中", "low": "低"}

_jitter = random.SystemRandom()


# -- notices: pure --------------------------------------------------------------------------


def notice_body(
    change: AlertChange, facility_name: str, event: str, *, zone_name: str | None = None
) -> dict[str, Any]:
    """The generic notice of one alert change: what a `json` webhook receives."""
    if event not in ("new", "escalated", "overdue"):
        raise ValueError(f"not an alert notice event: {event!r}")
    alert = change.alert
    kind_text = KIND_TEXT.get(alert.kind, alert.kind)
    where = " ".join(
        part
        for part in (
            facility_name,
            zone_name or alert.zone_id,
            f"设备 {alert.device_id}" if alert.device_id else None,
        )
        if part
    )
    sentence = f"{where} {KIND_SENTENCE.get(alert.kind, kind_text)}"
    if event == "new":
        label = kind_text
        urge = "请立即处理" if alert.priority == "high" else "请及时处理"
        text = f"【{label}】{sentence}，{urge}"
    elif event == "escalated":
        label = f"再次提醒·{kind_text}"
        waited = _duration_text(change.at - alert.raised_at)
        text = f"【{label}】{sentence}，已 {waited}无人确认，请立即处理"
    else:
        label = f"超时未处理·{kind_text}"
        waited = _duration_text(change.at - alert.raised_at)
        text = f"【{label}】{sentence}，已 {waited}无人确认，已标记为超时呼叫"
    return {
        "event": event,
        "alert_id": str(alert.id),
        "facility_id": alert.facility_id,
        "facility_name": facility_name,
        "zone_id": alert.zone_id,
        "zone_name": zone_name,
        "device_id": alert.device_id,
        "kind": alert.kind,
        "kind_text": kind_text,
        "priority": alert.priority,
        "state": alert.state,
        "count": alert.count,
        "raised_at": alert.raised_at.isoformat(),
        "at": change.at.isoformat(),
        "title": f"【{label}】{facility_name}",
        "text": text,
    }


def flood_body(
    *,
    facility_id: str,
    facility_name: str,
    kinds: Mapping[str, int],
    escalated: int,
    window_count: int,
    window_s: int,
    first_at: datetime,
    last_at: datetime,
) -> dict[str, Any]:
    """The summary notice of a facility's flood: grouped alerts counted per kind."""
    grouped = sum(kinds.values()) + escalated
    window = f"{window_s // 60} 分钟" if window_s % 60 == 0 else f"{window_s} 秒"
    ordered = sorted(kinds.items(), key=lambda item: (-item[1], item[0]))
    parts = [f"{KIND_TEXT.get(kind, kind)} ×{count}" for kind, count in ordered]
    if escalated:
        parts.append(f"仍无人确认 ×{escalated}")
    title = f"【告警汇总】{facility_name}"
    summary = "，".join(parts)
    text = f"{title} {window}内共 {window_count} 条告警，以下 {grouped} 条合并通知：{summary}"
    return {
        "event": "flood",
        "facility_id": facility_id,
        "facility_name": facility_name,
        "priority": "medium",
        "count": grouped,
        "kinds": dict(ordered),
        "escalated": escalated,
        "window_s": window_s,
        "window_count": window_count,
        "first_at": first_at.isoformat(),
        "last_at": last_at.isoformat(),
        "title": title,
        "text": text,
    }


def render(format: str, notice: Mapping[str, Any]) -> dict[str, Any]:
    """The POST body of `notice` for a webhook of `format` (json, wecom or dingtalk)."""
    if format == "json":
        return dict(notice)
    if format == "wecom":
        return {"msgtype": "markdown", "markdown": {"content": _wecom_markdown(notice)}}
    if format == "dingtalk":
        return {
            "msgtype": "markdown",
            "markdown": {"title": str(notice["title"]), "text": _dingtalk_markdown(notice)},
            # A high alert rings everyone in the group.
            "at": {"isAtAll": notice.get("priority") == "high"},
        }
    raise NotifyError(f"unknown webhook format {format!r}; use one of {', '.join(FORMATS)}")


def _facts(notice: Mapping[str, Any]) -> list[str]:
    """The detail lines under a notice's headline."""
    if notice.get("event") == "flood":
        facts = [
            f"{KIND_TEXT.get(kind, kind)}：{count} 条" for kind, count in notice["kinds"].items()
        ]
        if notice.get("escalated"):
            facts.append(f"仍无人确认：{notice['escalated']} 条")
        facts.append(f"时间：{_local_time(notice['first_at'])} 至 {_local_time(notice['last_at'])}")
        facts.append("每条告警均已保存，详见监管屏")
        return facts
    facts = []
    if notice.get("zone_name") or notice.get("zone_id"):
        facts.append(f"位置：{notice.get('zone_name') or notice.get('zone_id')}")
    if notice.get("device_id"):
        facts.append(f"设备：{notice['device_id']}")
    facts.append(f"级别：{PRIORITY_TEXT.get(str(notice.get('priority')), notice.get('priority'))}")
    facts.append(f"发生时间：{_local_time(notice['raised_at'])}")
    if int(notice.get("count", 1)) > 1:
        facts.append(f"次数：{notice['count']}")
    facts.append(f"告警编号：{notice['alert_id']}")
    return facts


def _wecom_markdown(notice: Mapping[str, Any]) -> str:
    headline = str(notice["text"])
    if notice.get("priority") == "high":
        headline = f'<font color="warning">{headline}</font>'
    lines = [f"### {notice['title']}", headline, *(f"> {fact}" for fact in _facts(notice))]
    return _clip("\n".join(lines), WECOM_MAX_BYTES)


def _dingtalk_markdown(notice: Mapping[str, Any]) -> str:
    # DingTalk's markdown needs a blank line between paragraphs; list items need none.
    body = "\n".join(f"- {fact}" for fact in _facts(notice))
    text = f"#### {notice['title']}\n\n**{notice['text']}**\n\n{body}"
    return _clip(text, DINGTALK_MAX_BYTES)


def _clip(text: str, max_bytes: int) -> str:
    data = text.encode()
    if len(data) <= max_bytes:
        return text
    return data[: max_bytes - 3].decode(errors="ignore") + "…"


def _local_time(iso: str) -> str:
    return datetime.fromisoformat(iso).astimezone(CHINA).strftime("%Y-%m-%d %H:%M:%S")


def _duration_text(delta: timedelta) -> str:
    seconds = max(0, int(delta.total_seconds()))
    if seconds < 60:
        return f"{seconds} 秒"
    if seconds < 3600:
        return f"{seconds // 60} 分钟"
    return f"{seconds // 3600} 小时 {seconds % 3600 // 60} 分钟"


def dingtalk_sign(secret: str, timestamp_ms: int) -> str:
    """DingTalk's signature: base64(HMAC-SHA256(key=secret, f"{timestamp}\\n{secret}"))."""
    digest = hmac.new(
        secret.encode(), f"{timestamp_ms}\n{secret}".encode(), hashlib.sha256
    ).digest()
    return base64.b64encode(digest).decode()


def dingtalk_signed_url(url: str, secret: str, timestamp_ms: int) -> str:
    """The robot URL with `&timestamp=...&sign=...` appended, as DingTalk's 加签 requires."""
    query = urlencode({"timestamp": timestamp_ms, "sign": dingtalk_sign(secret, timestamp_ms)})
    return f"{url}{'&' if '?' in url else '?'}{query}"


def json_signature(secret: str, timestamp_ms: int, content: bytes) -> str:
    """The X-Carehub-Signature of a json webhook: sha256=hex(HMAC(secret, "{ts}." + body))."""
    digest = hmac.new(secret.encode(), f"{timestamp_ms}.".encode() + content, hashlib.sha256)
    return f"sha256={digest.hexdigest()}"


def retry_delay(attempts: int, *, jitter: float = 0.5) -> float:
    """Seconds before try `attempts + 1`; `jitter` in [0, 1) spreads it by ±20 %."""
    base = min(BACKOFF_MAX_S, BACKOFF_FIRST_S * 2.0 ** max(0, attempts - 1))
    return min(BACKOFF_MAX_S, base * (1 - BACKOFF_JITTER + 2 * BACKOFF_JITTER * jitter))


def redact_url(url: str) -> str:
    """The URL without credentials, query or fragment (robot keys and tokens live there)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    with contextlib.suppress(ValueError):
        if parts.port is not None:
            host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


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


# -- queuing: inside the alert's transaction ------------------------------------------------


async def enqueue_notices(
    conn: AsyncConnection[Any],
    change: AlertChange,
    *,
    now: datetime,
    flood_threshold: int,
    flood_window_s: int,
) -> int:
    """Queue the notices of one alert change on the facility's webhooks; the rows written.

    Call it inside the change's transaction. It runs in a savepoint: should queuing fail,
    the failure is logged and the alert is still stored.
    """
    event = ACTION_EVENTS.get(change.action)
    # A shelved alert (its zone snoozed for maintenance or a drill) is stored, not announced.
    if event is None or change.alert.shelved:
        return 0
    try:
        async with conn.transaction():
            return await _enqueue(
                conn,
                change,
                event=event,
                now=now,
                flood_threshold=flood_threshold,
                flood_window_s=flood_window_s,
            )
    except psycopg.Error:
        raise_if_cancelled()
        logger.exception(
            "cannot queue notifications of alert %s",
            change.alert.id,
            extra={"alert_id": change.alert.id, "facility_id": change.alert.facility_id},
        )
        return 0


async def _enqueue(
    conn: AsyncConnection[Any],
    change: AlertChange,
    *,
    event: str,
    now: datetime,
    flood_threshold: int,
    flood_window_s: int,
) -> int:
    alert = change.alert
    async with conn.cursor(row_factory=tuple_row) as cur:
        await cur.execute(
            "SELECT w.id, f.name, z.name FROM webhooks w"
            " JOIN facilities f ON f.id = w.facility_id"
            " LEFT JOIN zones z ON z.facility_id = w.facility_id AND z.zone_id = %s"
            " WHERE w.facility_id = %s AND w.enabled ORDER BY w.id",
            (alert.zone_id, alert.facility_id),
        )
        targets = await cur.fetchall()
        if not targets:
            return 0
        facility_name, zone_name = str(targets[0][1]), targets[0][2]
        webhook_ids = [int(row[0]) for row in targets]
        if alert.priority != "high" and event in ("new", "escalated"):
            await cur.execute(
                "SELECT count(*) FROM alerts WHERE facility_id = %s AND raised_at > %s",
                (alert.facility_id, now - timedelta(seconds=flood_window_s)),
            )
            window_count = int(_one(await cur.fetchone())[0])
            if window_count > flood_threshold:
                for webhook_id in webhook_ids:
                    await _add_to_flood(
                        cur,
                        webhook_id,
                        kind=alert.kind,
                        event=event,
                        facility_id=alert.facility_id,
                        facility_name=facility_name,
                        window_count=window_count,
                        window_s=flood_window_s,
                        now=now,
                    )
                return len(webhook_ids)
        notice = Jsonb(notice_body(change, facility_name, event, zone_name=zone_name))
        await cur.executemany(
            "INSERT INTO notifications"
            " (webhook_id, facility_id, alert_id, event, body, next_attempt_at, created_at)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s)",
            [(wid, alert.facility_id, alert.id, event, notice, now, now) for wid in webhook_ids],
        )
        return len(webhook_ids)


async def _add_to_flood(
    cur: psycopg.AsyncCursor[tuple[Any, ...]],
    webhook_id: int,
    *,
    kind: str,
    event: str,
    facility_id: str,
    facility_name: str,
    window_count: int,
    window_s: int,
    now: datetime,
) -> None:
    """Count one notice into the webhook's pending flood summary, opening one if none is."""
    kinds = Counter({kind: 1} if event == "new" else {})
    escalated = 0 if event == "new" else 1

    def body(first_at: datetime) -> Jsonb:
        return Jsonb(
            flood_body(
                facility_id=facility_id,
                facility_name=facility_name,
                kinds=kinds,
                escalated=escalated,
                window_count=window_count,
                window_s=window_s,
                first_at=first_at,
                last_at=now,
            )
        )

    # The conflict locks the pending summary until this transaction ends, so concurrent
    # alerts of the facility add to it one after the other.
    await cur.execute(
        "INSERT INTO notifications (webhook_id, facility_id, event, body, group_count,"
        " next_attempt_at, created_at) VALUES (%s, %s, 'flood', %s, 1, %s, %s)"
        " ON CONFLICT (webhook_id) WHERE event = 'flood' AND state = 'pending' AND attempts = 0"
        " DO UPDATE SET group_count = notifications.group_count + 1"
        " RETURNING id, group_count, body",
        (webhook_id, facility_id, body(now), now + timedelta(seconds=FLOOD_HOLD_S), now),
    )
    flood_id, group_count, old = _one(await cur.fetchone())
    if group_count == 1:
        return
    kinds.update({str(k): int(v) for k, v in dict(old.get("kinds", {})).items()})
    escalated += int(old.get("escalated", 0))
    window_count = max(window_count, int(old.get("window_count", 0)))
    first_at = datetime.fromisoformat(str(old.get("first_at", now.isoformat())))
    await cur.execute(
        "UPDATE notifications SET body = %s WHERE id = %s", (body(first_at), flood_id)
    )


def _one(row: tuple[Any, ...] | None) -> tuple[Any, ...]:
    if row is None:
        raise psycopg.DataError("the database returned no row where one was certain")
    return row


# -- configuration --------------------------------------------------------------------------


async def add_webhook(
    conn: AsyncConnection[Any],
    facility_id: str,
    url: str,
    format: str,
    secret: str = "",
) -> int:
    """Register a webhook for a facility; its id. NotifyError names what is wrong."""
    url = url.strip()
    secret = secret.strip()
    if format not in FORMATS:
        raise NotifyError(f"webhook format must be one of {', '.join(FORMATS)}, not {format!r}")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise NotifyError(f"webhook URL must be http:// or https:// with a host, not {url!r}")
    if len(url) > 2000 or any(ch.isspace() for ch in url):
        raise NotifyError("webhook URL must be at most 2000 characters, without spaces")
    if format == "wecom" and secret:
        raise NotifyError("a 企业微信 robot has no signing secret: its key is part of the URL")
    if len(secret) > 500:
        raise NotifyError("webhook secret must be at most 500 characters")
    async with conn.cursor(row_factory=tuple_row) as cur:
        await cur.execute("SELECT 1 FROM facilities WHERE id = %s", (facility_id,))
        if await cur.fetchone() is None:
            raise NotifyError(f"there is no facility {facility_id!r}")
        await cur.execute(
            "INSERT INTO webhooks (facility_id, url, format, secret) VALUES (%s, %s, %s, %s)"
            " RETURNING id",
            (facility_id, url, format, secret),
        )
        return int(_one(await cur.fetchone())[0])


# -- sending --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Webhook:
    id: int
    facility_id: str
    url: str
    format: str
    secret: str
    enabled: bool


@dataclass(frozen=True, slots=True)
class _Row:
    id: int
    event: str
    body: dict[str, Any]
    attempts: int


@dataclass(slots=True)
class _EndpointHealth:
    id: int
    facility_id: str
    url: str
    format: str
    consecutive_failures: int
    last_error: str | None
    last_success_at: datetime | None
    last_failure_at: datetime | None

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "facility_id": self.facility_id,
            "url": self.url,
            "format": self.format,
            "consecutive_failures": self.consecutive_failures,
            "last_error": self.last_error,
            "last_success_at": _iso(self.last_success_at),
            "last_failure_at": _iso(self.last_failure_at),
        }


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


_CLAIM = """
WITH due AS (
    SELECT id FROM notifications
    WHERE state IN ('pending', 'sending') AND next_attempt_at <= %(now)s
      AND NOT (webhook_id = ANY(%(busy)s::bigint[]))
    ORDER BY next_attempt_at, id
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
UPDATE notifications n SET state = 'sending', next_attempt_at = %(lease)s
FROM due, webhooks w
WHERE n.id = due.id AND w.id = n.webhook_id
RETURNING n.id, n.event, n.body, n.attempts,
          w.id, w.facility_id, w.url, w.format, w.secret, w.enabled
"""


class Notifier:
    """Sends the outbox: claims due rows, POSTs them, records each outcome."""

    def __init__(
        self,
        settings: Settings,
        pool: AsyncConnectionPool[AsyncConnection[Any]],
        clock: Clock,
    ) -> None:
        self._settings = settings
        self._pool = pool
        self._clock = clock
        self._timeout = settings.notify_timeout_s
        self._max_attempts = settings.notify_max_attempts
        self._lease = timedelta(seconds=CLAIM_BATCH * 2 * self._timeout + LEASE_MARGIN_S)
        self._wake = asyncio.Event()
        self._busy: set[int] = set()
        self._endpoints: dict[int, _EndpointHealth] = {}
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
        """`enqueue_notices` with this hub's clock and flood settings (a transaction hook)."""
        return await enqueue_notices(
            conn,
            change,
            now=self._clock.now(),
            flood_threshold=self._settings.notify_flood_threshold,
            flood_window_s=self._settings.notify_flood_window_s,
        )

    def wake(self, change: AlertChange | None = None) -> None:
        """Look for due rows now (an after-commit listener); otherwise every POLL_S."""
        del change
        self._wake.set()

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

    async def _claim(self) -> list[tuple[_Webhook, list[_Row]]]:
        """Lease due rows to this process, grouped by webhook (in the order they are due)."""
        if len(self._busy) >= MAX_WORKERS:
            return []
        now = self._clock.now()
        params = {
            "now": now,
            "busy": sorted(self._busy),
            "limit": CLAIM_BATCH,
            "lease": now + self._lease,
        }
        async with self._pool.connection() as conn, conn.cursor(row_factory=tuple_row) as cur:
            await cur.execute(_CLAIM, params)
            claimed = await cur.fetchall()
        webhooks: dict[int, _Webhook] = {}
        rows: defaultdict[int, list[_Row]] = defaultdict(list)
        for row_id, event, body, attempts, wid, facility_id, url, fmt, secret, enabled in claimed:
            webhook = _Webhook(int(wid), str(facility_id), str(url), str(fmt), str(secret), enabled)
            webhooks[webhook.id] = webhook
            rows[webhook.id].append(_Row(int(row_id), str(event), dict(body), int(attempts)))
        return [(webhooks[wid], sorted(rows[wid], key=lambda r: r.id)) for wid in webhooks]

    async def _deliver(
        self, client: httpx.AsyncClient, webhook: _Webhook, rows: Sequence[_Row]
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

    async def _send(self, client: httpx.AsyncClient, webhook: _Webhook, row: _Row) -> Outcome:
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
        webhook: _Webhook,
        rows: Sequence[_Row],
        outcome: Outcome,
        *,
        final: bool = False,
    ) -> None:
        """Store one try's outcome on `rows` and on the webhook's health, in one transaction."""
        now = self._clock.now()
        async with self._pool.connection() as conn, conn.cursor(row_factory=tuple_row) as cur:
            for row in rows:
                attempts = row.attempts + 1
                if outcome.ok:
                    await cur.execute(
                        "UPDATE notifications SET state = 'sent', attempts = %s, sent_at = %s,"
                        " next_attempt_at = %s, last_error = NULL WHERE id = %s",
                        (attempts, now, now, row.id),
                    )
                    continue
                give_up = final or attempts >= self._max_attempts
                retry_at = now + timedelta(seconds=retry_delay(attempts, jitter=_jitter.random()))
                await cur.execute(
                    "UPDATE notifications SET state = %s, attempts = %s, next_attempt_at = %s,"
                    " last_error = %s WHERE id = %s",
                    (
                        "failed" if give_up else "pending",
                        attempts,
                        now if give_up else retry_at,
                        outcome.error[:ERROR_MAX_CHARS],
                        row.id,
                    ),
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
            if outcome.ok:
                await cur.execute(
                    "UPDATE webhooks SET consecutive_failures = 0, last_success_at = %s"
                    " WHERE id = %s RETURNING consecutive_failures, last_error,"
                    " last_success_at, last_failure_at",
                    (now, webhook.id),
                )
            else:
                await cur.execute(
                    "UPDATE webhooks SET consecutive_failures = consecutive_failures + 1,"
                    " last_error = %s, last_failure_at = %s WHERE id = %s"
                    " RETURNING consecutive_failures, last_error, last_success_at, last_failure_at",
                    (outcome.error[:ERROR_MAX_CHARS], now, webhook.id),
                )
            status = await cur.fetchone()
        if outcome.ok:
            self.sent += len(rows)
        else:
            self.failed_tries += 1
        if status is not None:
            self._endpoints[webhook.id] = _EndpointHealth(
                webhook.id,
                webhook.facility_id,
                redact_url(webhook.url),
                webhook.format,
                int(status[0]),
                status[1],
                status[2],
                status[3],
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
        async with self._pool.connection() as conn, conn.cursor(row_factory=tuple_row) as cur:
            await cur.execute(
                "SELECT id, facility_id, url, format, consecutive_failures, last_error,"
                " last_success_at, last_failure_at FROM webhooks WHERE enabled"
                " ORDER BY consecutive_failures DESC, id LIMIT %s",
                (HEALTH_LIST_MAX,),
            )
            listed = await cur.fetchall()
            await cur.execute(
                "SELECT count(*), count(*) FILTER (WHERE consecutive_failures >= %s)"
                " FROM webhooks WHERE enabled",
                (DEGRADED_AFTER,),
            )
            total, failing = _one(await cur.fetchone())
            await cur.execute(
                "SELECT count(*), min(created_at) FROM notifications"
                " WHERE state IN ('pending', 'sending')"
            )
            pending, oldest = _one(await cur.fetchone())
            await cur.execute(
                "SELECT count(*) FROM notifications WHERE created_at > %s AND state = 'failed'",
                (now - timedelta(hours=1),),
            )
            failed = _one(await cur.fetchone())[0]
        self._endpoints = {
            int(row[0]): _EndpointHealth(
                int(row[0]),
                str(row[1]),
                redact_url(str(row[2])),
                str(row[3]),
                int(row[4]),
                row[5],
                row[6],
                row[7],
            )
            for row in listed
        }
        self._webhooks_total = int(total)
        self._webhooks_failing = int(failing)
        self._pending = int(pending)
        self._oldest_pending = oldest
        self._failed_last_hour = int(failed)
        self._database_error = None

    async def _prune(self) -> None:
        async with self._pool.connection() as conn:
            await conn.execute(
                "DELETE FROM notifications WHERE id IN (SELECT id FROM notifications"
                " WHERE created_at < %s AND state IN ('sent', 'failed') LIMIT %s)",
                (self._clock.now() - RETAIN, PRUNE_BATCH),
            )

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
            "endpoints": [endpoint.as_json() for endpoint in endpoints],
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
