"""Live fan-out: every committed alert change, from any hub process, to local subscribers.

Changes are rows of `live_changes`, announced with NOTIFY in their own transaction; each
process LISTENs, reads the rows after the last one it saw (so nothing is skipped after a
reconnect) and hands them to its subscribers. Each subscriber has a bounded queue: one
that falls behind is marked lagging and gets nothing more, never slowing the others.

Floods (hub/rules.py FloodRule, the notifications' rule too): while a facility floods, its
new medium and low alerts reach subscribers as one summary per facility and second
("37 devices offline"); each alert is still stored. High alerts always come singly.

Websocket clients (`LiveClient`) get each message serialised to JSON once, whoever many
they are, and only the messages of the facilities they may see. Change ids are handed out
when a transaction inserts its row, not when it commits, so a row may appear after a
higher one was read: such gaps are looked up again for a while, never skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from devices import ALERT_LABELS
from hub.models import AlertChange, AlertDecision
from hub.rules import FloodRule
from hub.settings import Settings
from hub.storage.accounts import account_channel
from hub.storage.live import (
    changes_after,
    changes_with_ids,
    last_change_id,
    listen,
    live_channel,
)
from hub.storage.pool import keep_connected

logger = logging.getLogger(__name__)

SUBSCRIBER_QUEUE = 1000
RECONNECT_S = 1.0
NOTIFY_WAIT_S = 1.0
# A flood's summary is refreshed at most this often per facility.
GROUP_EMIT_S = 1.0
# Catching up reads at most this many rows per query.
CATCH_UP_ROWS = 1000
# A client's writer writes at most this many messages before handing the loop back, and a
# burst (a catch-up after a reconnect) is handed out this many changes at a time with the
# writers let run in between: a burst never outruns a client that keeps up, and never
# looks like a slow one.
WRITE_BURST = 8
# What waits in a client's queue when its writer comes round goes out in one frame (a JSON
# array), at most this many messages: at hundreds of screens, the cost of a frame, not of
# its bytes, is what limits the fan-out (docs/api.md).
FRAME_MAX_MESSAGES = 64
# A change id skipped over (its transaction had not committed yet) is looked for this long;
# a rolled-back transaction leaves a gap for good, so the wait must end.
GAP_WAIT_S = 10.0
# A jump larger than this is a sequence cache or a rollback spree, not in-flight commits.
GAP_MAX = 1000
# Websocket clients hear from the hub at least this often, so idle proxies keep the
# connection and a client can tell a dead link from a quiet district (docs/api.md).
PING_S = 20.0
KIND_TEXT = ALERT_LABELS


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


@dataclass(frozen=True, slots=True)
class EncodedMessage:
    """A message for websocket clients, serialised once: its facility and its JSON text."""

    # None: for every client (ping).
    facility_id: str | None
    text: str
    # The live_changes id of an `alert` message, so a client's snapshot can skip it.
    change_id: int | None = None
    # Device-level (device_status): only for clients of one facility, not district screens.
    device_level: bool = False
    # The ASGI event that sends it, built once too: uvicorn only reads it.
    event: dict[str, Any] = field(default_factory=dict)
    # Alerts (and their floods and provisional calls) are written before statuses.
    urgent: bool = False


def encode_message(
    message: dict[str, Any], facility_id: str | None, *, device_level: bool = False
) -> EncodedMessage:
    """Serialise `message` for every client that sees `facility_id`."""
    change_id = message.get("change_id")
    text = json.dumps(message, ensure_ascii=False, separators=(",", ":"))
    return EncodedMessage(
        facility_id,
        text,
        change_id if isinstance(change_id, int) else None,
        device_level,
        {"type": "websocket.send", "text": text},
        str(message.get("type", "")).startswith("alert"),
    )


class LiveClient:
    """One websocket client: the facilities it sees and its bounded backlog of messages.

    Alert messages go ahead of status ones: a second's burst of facility statuses must
    not hold up a fall. A client whose backlog is full is marked lagging and gets nothing
    more: the server tells it so and closes, and it comes back with `since`. It never
    slows anyone else.
    """

    def __init__(
        self,
        facilities: frozenset[str] | None,
        size: int,
        *,
        device_level: bool = False,
        username: str | None = None,
    ) -> None:
        # None: every facility (an admin).
        self.facilities = facilities
        self.device_level = device_level
        self.size = size
        self.username = username
        self.lagging = asyncio.Event()
        # Set when the account's sign-in may have ended (disabled, a token revoked, or the
        # announcements were missed): the endpoint checks its token again at once.
        self.recheck = asyncio.Event()
        self._alerts: deque[EncodedMessage] = deque()
        self._statuses: deque[EncodedMessage] = deque()
        self._waiting = asyncio.Event()

    def sees(self, facility_id: str | None) -> bool:
        """True when a message about `facility_id` is for this client."""
        return facility_id is None or self.facilities is None or facility_id in self.facilities

    @property
    def backlog(self) -> int:
        """How many messages wait to be written."""
        return len(self._alerts) + len(self._statuses)

    def offer(self, message: EncodedMessage) -> None:
        """Queue `message` if it is in scope, or mark this client as fallen behind."""
        if self.lagging.is_set() or not self.sees(message.facility_id):
            return
        if message.device_level and not self.device_level:
            return
        if len(self._alerts) + len(self._statuses) >= self.size:
            self.lagging.set()
            return
        (self._alerts if message.urgent else self._statuses).append(message)
        self._waiting.set()

    async def next(self) -> EncodedMessage:
        """The next message to write: alerts first, then statuses, each in order."""
        return (await self.take(1))[0]

    async def take(self, limit: int) -> list[EncodedMessage]:
        """Wait for a message, then every waiting one up to `limit`: alerts first, in order."""
        while not (self._alerts or self._statuses):
            self._waiting.clear()
            await self._waiting.wait()
        taken: list[EncodedMessage] = []
        for source in (self._alerts, self._statuses):
            while source and len(taken) < limit:
                taken.append(source.popleft())
        return taken


_Member = TypeVar("_Member")


@contextlib.contextmanager
def _member(members: set[_Member], member: _Member) -> Iterator[_Member]:
    """`member` in `members` for the duration of a `with` block, however it ends."""
    members.add(member)
    try:
        yield member
    finally:
        members.discard(member)


@dataclass
class _Flood:
    raised: deque[float] = field(default_factory=deque)
    grouped: Counter[str] = field(default_factory=Counter)
    dirty: bool = False
    last_emit: float = 0.0


# How many signed-in tokens a process remembers for reconnects during a database outage:
# one a screen, for a city's worth of screens on one process.
TRUSTED_TOKENS_MAX = 10_000

_Vouched = TypeVar("_Vouched")


@dataclass(frozen=True, slots=True)
class _Trusted(Generic[_Vouched]):
    username: str
    value: _Vouched
    expires_at: datetime


class TrustedTokens(Generic[_Vouched]):
    """The tokens this process's websockets were opened with, for a reconnect while the
    database is unreachable (SPEC §8): a phone whose link dropped must still hear the next
    call, and the database that would vouch for its token is the thing that is down.

    Only what the database vouched for is kept (the endpoint's principal and scope), by
    the token's digest and until the token expires. An account change announced on the
    feed (disabled, a token revoked) forgets that account's tokens, and every token when
    announcements may have been missed. Bounded: the least recently vouched goes first.
    """

    def __init__(self, size: int = TRUSTED_TOKENS_MAX) -> None:
        self._size = size
        self._entries: OrderedDict[str, _Trusted[_Vouched]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def trust(self, digest: str, username: str, value: _Vouched, expires_at: datetime) -> None:
        """The database has just vouched for this token."""
        self._entries[digest] = _Trusted(username, value, expires_at)
        self._entries.move_to_end(digest)
        while len(self._entries) > self._size:
            self._entries.popitem(last=False)

    def vouched(self, digest: str, now: datetime) -> _Vouched | None:
        """What the database last said of this token, unless it has expired since."""
        entry = self._entries.get(digest)
        if entry is None:
            return None
        if entry.expires_at <= now:
            del self._entries[digest]
            return None
        return entry.value

    def discard(self, digest: str) -> None:
        """The database says this token is no good (expired, revoked): forget it."""
        self._entries.pop(digest, None)

    def forget(self, username: str | None) -> None:
        """Forget the tokens of `username` (of everyone: None)."""
        if username is None:
            self._entries.clear()
            return
        for digest in [d for d, e in self._entries.items() if e.username == username]:
            del self._entries[digest]


class LiveFeed:
    """Reads committed changes and fans them out, grouping floods per facility."""

    def __init__(
        self,
        settings: Settings,
        pool: AsyncConnectionPool[AsyncConnection[object]],
    ) -> None:
        self._settings = settings
        self._pool = pool
        self._channel = live_channel(settings.database_schema)
        self._account_channel = account_channel(settings.database_schema)
        self._subscribers: set[Subscription] = set()
        self._clients: set[LiveClient] = set()
        # Change ids skipped over while their transaction was still open, and until when
        # (monotonic) they are looked for.
        self._gaps: dict[int, float] = {}
        self._floods: dict[str, _Flood] = {}
        # The notifications group by the same rule, so the screen and the phone agree.
        self._flood = FloodRule.of(settings)
        self._last_id: int | None = None
        self.listening = asyncio.Event()
        self.delivered = 0
        # Filled and read by the websocket endpoint (hub/api/live.py).
        self.trusted: TrustedTokens[Any] = TrustedTokens()

    def subscribe(self) -> contextlib.AbstractContextManager[Subscription]:
        """A Subscription for the duration of a `with` block."""
        return _member(self._subscribers, Subscription())

    def connect(self, client: LiveClient) -> contextlib.AbstractContextManager[LiveClient]:
        """A websocket client's LiveClient, fed for the duration of a `with` block."""
        return _member(self._clients, client)

    @property
    def clients(self) -> int:
        """How many websocket clients are connected to this process."""
        return len(self._clients)

    @property
    def lagging(self) -> int:
        """How many connected websocket clients have fallen behind (and are being closed)."""
        return sum(1 for client in self._clients if client.lagging.is_set())

    @property
    def last_change_id(self) -> int | None:
        """The newest change handed out so far (None before the first connection)."""
        return self._last_id

    def recheck(self, username: str | None) -> None:
        """Have the websockets of `username` (of everyone: None) check their tokens now, and
        trust none of its tokens through an outage until the database vouches again."""
        self.trusted.forget(username)
        for client in list(self._clients):
            if username is None or client.username == username:
                client.recheck.set()

    def alert_changed(self, change: AlertChange) -> None:
        """Nothing to do: committed changes reach every process's screens through NOTIFY."""
        del change

    def alert_provisional(self, decision: AlertDecision) -> None:
        """Show an alert the database could not take on this process's screens now."""
        self.publish_local(provisional_json(decision))

    def publish_local(self, message: dict[str, Any]) -> None:
        """Hand `message` to this process's subscribers now, without the database.

        For what cannot wait for it: an alert decided while the database is down.
        """
        facility_id = message.get("facility_id")
        self._send(message, facility_id if isinstance(facility_id, str) else None)

    def broadcast(
        self, message: dict[str, Any], facility_id: str | None, *, device_level: bool = False
    ) -> None:
        """Hand a status message (not an alert change) to the websocket clients that see it."""
        if self._clients:
            encoded = encode_message(message, facility_id, device_level=device_level)
            for client in list(self._clients):
                client.offer(encoded)

    async def run(self) -> None:
        """LISTEN and dispatch until cancelled; reconnect (and catch up) on errors."""
        async with asyncio.TaskGroup() as group:
            group.create_task(self._flush_groups())
            group.create_task(self._ping())
            # A bad row or a bug must not end the feed either: screens would go quiet.
            await keep_connected(
                self._settings,
                self._listen,
                ready=self.listening,
                retry_s=RECONNECT_S,
                lost=lambda exc: logger.warning("live feed lost its database connection: %s", exc),
                log=logger,
                failed="live feed failed; reconnecting",
            )

    async def _listen(self, conn: AsyncConnection[Any]) -> None:
        await listen(conn, self._channel)
        await listen(conn, self._account_channel)
        # An account disabled while this process was not listening went unheard.
        self.recheck(None)
        if self._last_id is None:
            self._last_id = await last_change_id(conn)
        await self._catch_up(conn)
        self.listening.set()
        while True:
            # The generator holds the connection: leave it at the first notification (or
            # after a quiet second, as a safety net), then read what is new.
            async for notify in conn.notifies(timeout=NOTIFY_WAIT_S, stop_after=1):
                if notify.channel == self._account_channel:
                    self.recheck(notify.payload)
            await self._catch_up(conn)

    async def _catch_up(self, conn: AsyncConnection[Any]) -> None:
        while True:
            rows = await changes_after(conn, self._last_id, CATCH_UP_ROWS)
            for n, (change_id, facility_id, change) in enumerate(rows, 1):
                self._note_gap(change_id)
                self._last_id = change_id
                self._dispatch(change_id, facility_id, change)
                if n % WRITE_BURST == 0:
                    await asyncio.sleep(0)
            if len(rows) < CATCH_UP_ROWS:
                break
        if self._gaps:
            await self._fill_gaps(conn)

    def _note_gap(self, change_id: int) -> None:
        """Remember the ids between the last one read and `change_id`, if any."""
        last = self._last_id
        if last is None or change_id <= last + 1:
            return
        if change_id - last - 1 > GAP_MAX:
            logger.warning(
                "live changes jumped from %d to %d; not waiting for the gap", last, change_id
            )
            return
        deadline = time.monotonic() + GAP_WAIT_S
        for missing in range(last + 1, change_id):
            self._gaps[missing] = deadline

    async def _fill_gaps(self, conn: AsyncConnection[Any]) -> None:
        """Dispatch the skipped-over changes that have committed since; forget old gaps."""
        for change_id, facility_id, change in await changes_with_ids(conn, list(self._gaps)):
            del self._gaps[change_id]
            self._dispatch(change_id, facility_id, change)
        now = time.monotonic()
        for expired in [gap for gap, deadline in self._gaps.items() if deadline < now]:
            del self._gaps[expired]

    def _dispatch(self, change_id: int, facility_id: str, change: dict[str, Any]) -> None:
        message = {**change, "change_id": change_id}
        alert = change.get("alert", {})
        if change.get("action") == "raise":
            flood = self._floods.setdefault(facility_id, _Flood())
            now = time.monotonic()
            flood.raised.append(now)
            while flood.raised and flood.raised[0] < now - self._flood.window_s:
                flood.raised.popleft()
            if not flood.raised:
                flood.grouped.clear()
            if self._flood.groups(str(alert.get("priority")), len(flood.raised)):
                flood.grouped[str(alert.get("kind"))] += 1
                flood.dirty = True
                return
        self._send(message, facility_id)

    def _send(self, message: dict[str, Any], facility_id: str | None) -> None:
        self.delivered += 1
        for subscription in list(self._subscribers):
            subscription.offer(message)
        if self._clients:
            encoded = encode_message(message, facility_id)
            for client in list(self._clients):
                client.offer(encoded)

    async def _ping(self) -> None:
        while True:
            await asyncio.sleep(PING_S)
            self.broadcast({"type": "ping", "at": datetime.now(UTC).isoformat()}, None)

    async def _flush_groups(self) -> None:
        while True:
            await asyncio.sleep(GROUP_EMIT_S / 4)
            now = time.monotonic()
            for facility_id, flood in self._floods.items():
                if flood.dirty and now - flood.last_emit >= GROUP_EMIT_S:
                    flood.dirty = False
                    flood.last_emit = now
                    self._send(group_message(facility_id, flood.grouped), facility_id)


def provisional_json(decision: AlertDecision) -> dict[str, Any]:
    """A live message for an alert decided while the database is down (SPEC §8).

    It carries no alert id: the alert is stored when the database is back (the spooled
    message's replay raises it) and then arrives as an ordinary `alert` message.
    """
    return {
        "type": "alert_provisional",
        "facility_id": decision.facility_id,
        "zone_id": decision.zone_id,
        "device_id": decision.device_id,
        "kind": decision.kind,
        "priority": decision.priority,
        "seq": decision.seq,
        "at": decision.at.isoformat(),
        "reason": "database_unavailable",
    }


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
