"""Live fan-out: every committed alert change, from any hub process, to local subscribers.

Changes are rows of `live_changes`, announced with NOTIFY in their own transaction; each
process LISTENs, reads the rows after the last one it saw (so nothing is skipped after a
reconnect) and hands them to its subscribers. Each subscriber has a bounded queue: one
that falls behind is marked lagging and gets nothing more, never slowing the others.

Floods: when a facility raises more than `flood_threshold` alerts within the window, its
new medium and low alerts reach subscribers as one summary per facility and second
("37 devices offline"); each alert is still stored. High alerts always come singly.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter, deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from hub.alerts import live_channel
from hub.errors import raise_if_cancelled
from hub.settings import Settings

logger = logging.getLogger(__name__)

SUBSCRIBER_QUEUE = 1000
RECONNECT_S = 1.0
NOTIFY_WAIT_S = 1.0
# A flood's summary is refreshed at most this often per facility.
GROUP_EMIT_S = 1.0
# Catching up reads at most this many rows per query.
CATCH_UP_ROWS = 1000
KIND_TEXT = {
    "sos": "紧急呼叫",
    "fall": "跌倒",
    "long_lie": "跌倒后长时间未起",
    "dwell": "长时间无活动",
    "over_capacity": "超员",
    "staff_ratio": "师幼比超标",
    "device_offline": "设备离线",
    "low_battery": "电量低",
}


@dataclass(eq=False)
class Subscription:
    """One subscriber's bounded queue of live messages."""

    queue: asyncio.Queue[dict[str, Any]] = field(
        default_factory=lambda: asyncio.Queue(SUBSCRIBER_QUEUE)
    )
    lagging: bool = False

    def offer(self, message: dict[str, Any]) -> None:
        """Queue `message`, or mark this subscriber as fallen behind."""
        if self.lagging:
            return
        try:
            self.queue.put_nowait(message)
        except asyncio.QueueFull:
            self.lagging = True


@dataclass
class _Flood:
    raised: deque[float] = field(default_factory=deque)
    grouped: Counter[str] = field(default_factory=Counter)
    dirty: bool = False
    last_emit: float = 0.0


class LiveFeed:
    """Reads committed changes and fans them out, grouping floods per facility."""

    def __init__(
        self,
        settings: Settings,
        pool: AsyncConnectionPool[AsyncConnection[object]],
        *,
        flood_threshold: int = 10,
        flood_window_s: float = 600.0,
    ) -> None:
        self._settings = settings
        self._pool = pool
        self._channel = live_channel(settings.database_schema)
        self._subscribers: set[Subscription] = set()
        self._floods: dict[str, _Flood] = {}
        self._threshold = flood_threshold
        self._window = flood_window_s
        self._last_id: int | None = None
        self.listening = asyncio.Event()
        self.delivered = 0

    @contextlib.contextmanager
    def subscribe(self) -> Iterator[Subscription]:
        """A Subscription for the duration of a `with` block."""
        subscription = Subscription()
        self._subscribers.add(subscription)
        try:
            yield subscription
        finally:
            self._subscribers.discard(subscription)

    def publish_local(self, message: dict[str, Any]) -> None:
        """Hand `message` to this process's subscribers now, without the database.

        For what cannot wait for it: an alert decided while the database is down.
        """
        self._send(message)

    async def run(self) -> None:
        """LISTEN and dispatch until cancelled; reconnect (and catch up) on errors."""
        async with asyncio.TaskGroup() as group:
            group.create_task(self._flush_groups())
            while True:
                try:
                    await self._listen()
                except (psycopg.Error, OSError) as exc:
                    raise_if_cancelled()
                    logger.warning("live feed lost its database connection: %s", exc)
                self.listening.clear()
                await asyncio.sleep(RECONNECT_S)

    async def _listen(self) -> None:
        conn = await AsyncConnection.connect(
            self._settings.database_url,
            autocommit=True,
            options=f"-c search_path={self._settings.database_schema},public",
        )
        async with conn:
            await conn.execute(f'LISTEN "{self._channel}"')
            if self._last_id is None:
                cur = await conn.execute("SELECT coalesce(max(id), 0) FROM live_changes")
                row = await cur.fetchone()
                self._last_id = int(row[0]) if row else 0
            await self._catch_up(conn)
            self.listening.set()
            while True:
                # The generator holds the connection: leave it at the first notification
                # (or after a quiet second, as a safety net), then read what is new.
                async for _notify in conn.notifies(timeout=NOTIFY_WAIT_S, stop_after=1):
                    pass
                await self._catch_up(conn)

    async def _catch_up(self, conn: AsyncConnection[Any]) -> None:
        while True:
            cur = await conn.execute(
                "SELECT id, facility_id, change FROM live_changes WHERE id > %s"
                " ORDER BY id LIMIT %s",
                (self._last_id, CATCH_UP_ROWS),
            )
            rows = await cur.fetchall()
            for change_id, facility_id, change in rows:
                self._last_id = int(change_id)
                self._dispatch(int(change_id), str(facility_id), dict(change))
            if len(rows) < CATCH_UP_ROWS:
                return

    def _dispatch(self, change_id: int, facility_id: str, change: dict[str, Any]) -> None:
        message = {**change, "change_id": change_id}
        alert = change.get("alert", {})
        if change.get("action") == "raise":
            flood = self._floods.setdefault(facility_id, _Flood())
            now = time.monotonic()
            flood.raised.append(now)
            while flood.raised and flood.raised[0] < now - self._window:
                flood.raised.popleft()
            if not flood.raised:
                flood.grouped.clear()
            if len(flood.raised) > self._threshold and alert.get("priority") != "high":
                flood.grouped[str(alert.get("kind"))] += 1
                flood.dirty = True
                return
        self._send(message)

    def _send(self, message: dict[str, Any]) -> None:
        self.delivered += 1
        for subscription in list(self._subscribers):
            subscription.offer(message)

    async def _flush_groups(self) -> None:
        while True:
            await asyncio.sleep(GROUP_EMIT_S / 4)
            now = time.monotonic()
            for facility_id, flood in self._floods.items():
                if flood.dirty and now - flood.last_emit >= GROUP_EMIT_S:
                    flood.dirty = False
                    flood.last_emit = now
                    self._send(group_message(facility_id, flood.grouped))


def group_message(facility_id: str, grouped: Counter[str]) -> dict[str, Any]:
    """The summary of a facility's flood: counts per kind, and a line a person reads."""
    parts = [f"{KIND_TEXT.get(kind, kind)} {count} 条" for kind, count in grouped.most_common()]
    return {
        "type": "alert_group",
        "facility_id": facility_id,
        "count": sum(grouped.values()),
        "kinds": dict(grouped),
        "text": "，".join(parts),
    }
