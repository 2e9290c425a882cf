"""Batched writes: one transaction per batch, COPY into staging tables, idempotent inserts."""

from __future__ import annotations

import asyncio
import logging
import struct
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from operator import attrgetter
from typing import Any

import msgspec
import psycopg
from psycopg import AsyncConnection
from psycopg.types.json import set_json_dumps
from psycopg_pool import AsyncConnectionPool

from devices import topic
from hub.errors import StorageError
from hub.models import Decoded, Event, Reading, Rejection, StatusChange

logger = logging.getLogger(__name__)

# Errors that one bad row causes, as opposed to an unreachable database.
_ROW_ERRORS = (
    psycopg.errors.DataError,
    psycopg.errors.ProgramLimitExceeded,
    psycopg.errors.IntegrityError,
)

# Rows a COPY writes between two turns of the event loop (see _copy_rows).
COPY_YIELD_ROWS = 128

# After a batch meets a reading already stored (a redelivery: a reconnect, a hub restart,
# another hub's copy), batches go through the staging table for this long. Until then
# readings are copied straight in, which spares the database a second pass over every row.
STAGED_AFTER_REDELIVERY_S = 30.0

# A dead letter keeps at most this much of a payload; its full size is recorded beside it.
DEAD_LETTER_KEEP_BYTES = 64 * 1024

_encode_json = msgspec.json.Encoder().encode

_STAGING = """
CREATE TEMP TABLE IF NOT EXISTS stage_readings (LIKE readings INCLUDING DEFAULTS)
    ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS stage_events (LIKE events INCLUDING DEFAULTS)
    ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS stage_state (LIKE device_state INCLUDING DEFAULTS)
    ON COMMIT DELETE ROWS;
"""

# The columns of readings and events before `payload`, named as the models' fields, so
# one list gives both the COPY column order and the values copied.
_READING_FIELDS = (
    "ts",
    "device_id",
    "seq",
    "facility_id",
    "zone_id",
    "received_at",
    "battery",
    "presence",
    "count",
    "staff",
    "rssi",
)
_EVENT_FIELDS = ("ts", "device_id", "seq", "facility_id", "zone_id", "event", "received_at")

# The measured fields of device_state. Each keeps the (ts, seq) of the message its value
# came from, so the newest message by the device's own order wins, whichever hub
# commits first (migration 011).
STATE_FIELDS = ("battery", "presence", "count", "staff", "rssi")


def _newer(ts: str, seq: str, than_ts: str, than_seq: str) -> str:
    """SQL: whether the message (ts, seq) comes after (than_ts, than_seq), or nothing came yet.

    A row comparison, so that a tie in ts is settled by seq; NULL means no message yet.
    """
    return f"({than_ts} IS NULL OR ({ts}, {seq}) > ({than_ts}, coalesce({than_seq}, -1)))"


def _upsert_state_sql() -> str:
    """The device_state upsert: every field, and the state's order, kept newest-first."""
    ordered = [(f, f"{f}_ts", f"{f}_seq") for f in STATE_FIELDS]
    columns = ", ".join(c for triple in ordered for c in triple)
    updates = []
    for field_name, ts, seq in ordered:
        newer = _newer(f"EXCLUDED.{ts}", f"EXCLUDED.{seq}", f"d.{ts}", f"d.{seq}")
        # A batch row without the field has a NULL ts: the comparison is NULL, so not newer.
        for column in (field_name, ts, seq):
            updates.append(
                f"{column} = CASE WHEN EXCLUDED.{ts} IS NOT NULL AND {newer}"
                f" THEN EXCLUDED.{column} ELSE d.{column} END"
            )
    state_newer = _newer("EXCLUDED.state_ts", "EXCLUDED.last_seq", "d.state_ts", "d.last_seq")
    for column in ("last_seq", "state_ts"):
        updates.append(
            f"{column} = CASE WHEN EXCLUDED.state_ts IS NOT NULL AND {state_newer}"
            f" THEN EXCLUDED.{column} ELSE d.{column} END"
        )
    return (
        "INSERT INTO device_state AS d (device_id, last_seen, online, last_seq, state_ts, "
        f"{columns}) SELECT s.device_id, s.last_seen, s.online, s.last_seq, s.state_ts, "
        + ", ".join(f"s.{c}" for triple in ordered for c in triple)
        + " FROM stage_state s JOIN devices registered ON registered.id = s.device_id"
        # Batches are written side by side (and the event lane beside telemetry): rows
        # locked in one order everywhere cannot deadlock.
        " ORDER BY s.device_id"
        " ON CONFLICT (device_id) DO UPDATE SET"
        " last_seen = GREATEST(d.last_seen, EXCLUDED.last_seen),"
        " online = COALESCE(EXCLUDED.online, d.online), "
        # Every SET expression reads the row as it was, so a field and its order move together.
         + ", ".join(updates)
    )


_STATE_COLUMNS = (
    "device_id",
    "last_seen",
    "online",
    "last_seq",
    "state_ts",
    *(c for f in STATE_FIELDS for c in (f, f"{f}_ts", f"{f}_seq")),
)
_UPSERT_STATE = _upsert_state_sql()

_UPSERT_PENDING = """
INSERT INTO pending_devices (device_id, facility_id, first_seen, last_seen, messages, last_topic,
                             last_payload)
VALUES (%s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (device_id) DO UPDATE SET
    facility_id = EXCLUDED.facility_id,
    last_seen = GREATEST(pending_devices.last_seen, EXCLUDED.last_seen),
    messages = pending_devices.messages + EXCLUDED.messages,
    last_topic = EXCLUDED.last_topic,
    last_payload = EXCLUDED.last_payload
"""


# A device's stage_state row is built as a list in _STATE_COLUMNS order: its id, last_seen,
# online, then the order (last_seq, state_ts) of its newest message, then each measured
# field as (value, ts, seq) of the newest message that carried it, or three NULLs. A batch
# folds thousands of them; a list indexed in place costs a fraction of an object per device.
_SEEN, _ONLINE, _SEQ, _TS = 1, 2, 3, 4
_FIRST_FIELD = 5
_NO_FIELD = (None, None, None)
_NO_FIELDS = _NO_FIELD * len(STATE_FIELDS)
_state_values = attrgetter(*STATE_FIELDS)


def _first_row(item: Reading | Event | StatusChange) -> list[Any]:
    """The device's row from its first message in the batch."""
    if isinstance(item, StatusChange):
        return [item.device_id, item.received_at, item.online, None, None, *_NO_FIELDS]
    ts, seq = item.ts, item.seq
    # Any message on event or telemetry proves the device is connected.
    row: list[Any] = [item.device_id, item.received_at, True, seq, ts]
    if isinstance(item, Reading):
        for value in _state_values(item):
            row += _NO_FIELD if value is None else (value, ts, seq)
    else:
        row += _NO_FIELDS
    return row


def _fold_into(row: list[Any], item: Reading | Event | StatusChange) -> None:
    """Fold another message of the device from the same batch into its row, newest first."""
    row[_SEEN] = max(row[_SEEN], item.received_at)
    if isinstance(item, StatusChange):
        row[_ONLINE] = item.online
        return
    if row[_ONLINE] is None:
        row[_ONLINE] = True
    order = item.order
    if row[_TS] is None or order > (row[_TS], row[_SEQ]):
        row[_SEQ], row[_TS] = item.seq, item.ts
    if isinstance(item, Reading):
        for index, value in enumerate(_state_values(item)):
            at = _FIRST_FIELD + 3 * index
            if value is not None and (row[at + 1] is None or order > (row[at + 1], row[at + 2])):
                row[at : at + 3] = (value, item.ts, item.seq)


@dataclass(slots=True)
class _Pending:
    facility_id: str
    first_seen: datetime
    last_seen: datetime
    messages: int
    topic: str
    payload: bytes


@dataclass(slots=True)
class BatchResult:
    """What a batch wrote: new rows (duplicates are not counted) by table."""

    readings: int = 0
    events: int = 0
    dead_letters: int = 0
    statuses: int = 0
    # Messages the database refused (e.g. a string jsonb cannot hold), turned into rejections.
    refused: list[Rejection] = field(default_factory=list)


def _fold_state(items: Sequence[Decoded]) -> dict[str, list[Any]]:
    """One latest-state row per device for the whole batch, newest by (ts, seq) per field."""
    states: dict[str, list[Any]] = {}
    for item in items:
        if isinstance(item, Rejection):
            continue
        row = states.get(item.device_id)
        if row is None:
            states[item.device_id] = _first_row(item)
        else:
            _fold_into(row, item)
    return states


def _fold_pending(rejections: Sequence[Rejection]) -> dict[str, _Pending]:
    pending: dict[str, _Pending] = {}
    for rejection in rejections:
        if not rejection.pending or rejection.device_id is None or rejection.facility_id is None:
            continue
        entry = pending.get(rejection.device_id)
        if entry is None:
            pending[rejection.device_id] = _Pending(
                rejection.facility_id,
                rejection.received_at,
                rejection.received_at,
                1,
                rejection.topic,
                rejection.payload[:DEAD_LETTER_KEEP_BYTES],
            )
        else:
            entry.last_seen = rejection.received_at
            entry.messages += 1
            entry.topic = rejection.topic
            entry.payload = rejection.payload[:DEAD_LETTER_KEEP_BYTES]
    return pending


class _StageInsteadError(Exception):
    """The direct path cannot take this batch: write it again, staged and as text.

    `redelivered`: a reading in it is stored already (so more redeliveries may follow);
    otherwise a value could not be put in binary form, and PostgreSQL's own text parsing
    gives the row the error that the batch writer isolates.
    """

    def __init__(self, *, redelivered: bool) -> None:
        super().__init__("redelivered" if redelivered else "not binary-copyable")
        self.redelivered = redelivered


class BatchWriter:
    """Writes batches of decoded messages; one transaction each, all or nothing.

    Readings are copied straight into `readings` while no redelivery is seen: a copy of a
    stored message fails the COPY on its unique index, and the batch is written again
    through the staging table, whose insert drops what is stored already. The direct
    path copies in PostgreSQL's binary format, which spares formatting every timestamp
    and number as text (a fifth of the hub's CPU at ten thousand messages a second).
    """

    def __init__(self, pool: AsyncConnectionPool[AsyncConnection[object]], topic_root: str) -> None:
        self._pool = pool
        self._topic_root = topic_root
        # monotonic time until which batches are staged (see STAGED_AFTER_REDELIVERY_S).
        self._staged_until = 0.0

    async def write(self, items: Sequence[Decoded]) -> BatchResult:
        """Store a batch; raise StorageError when the database cannot take it now."""
        try:
            async with self._pool.connection() as conn:
                try:
                    direct = time.monotonic() >= self._staged_until
                    try:
                        return await self._write(conn, items, direct=direct)
                    except _StageInsteadError as why:
                        if why.redelivered:
                            self._staged_until = time.monotonic() + STAGED_AFTER_REDELIVERY_S
                        return await self._write(conn, items, direct=False)
                except _ROW_ERRORS:
                    # One hostile row (say, a \\u0000 that jsonb refuses) must not sink the
                    # batch: find it, turn it into a rejection, store the rest.
                    await conn.rollback()
                    return await self._write_isolating(conn, items)
        except psycopg.OperationalError as exc:
            raise StorageError(f"database unavailable: {exc}") from exc
        except psycopg.errors.UndefinedTable as exc:
            raise StorageError(f"schema missing (run `carehub migrate`): {exc}") from exc
        except psycopg.Error as exc:
            raise StorageError(f"batch write failed: {exc}") from exc

    async def _write_isolating(
        self, conn: AsyncConnection[object], items: Sequence[Decoded]
    ) -> BatchResult:
        total = BatchResult()
        for item in items:
            try:
                result = await self._write(conn, [item], direct=False)
            except _ROW_ERRORS as exc:
                await conn.rollback()
                if isinstance(item, Rejection):
                    raise
                refused = _refusal(item, self._topic_root, str(exc).splitlines()[0])
                result = await self._write(conn, [refused], direct=False)
                result.refused.append(refused)
            total.readings += result.readings
            total.events += result.events
            total.dead_letters += result.dead_letters
            total.statuses += result.statuses
            total.refused.extend(result.refused)
        return total

    async def _write(
        self, conn: AsyncConnection[object], items: Sequence[Decoded], *, direct: bool
    ) -> BatchResult:
        """One batch in one transaction; `direct`: readings copied straight in, or raise."""
        readings = [i for i in items if isinstance(i, Reading)]
        events = [i for i in items if isinstance(i, Event)]
        statuses = [i for i in items if isinstance(i, StatusChange)]
        rejections = [i for i in items if isinstance(i, Rejection)]
        result = BatchResult()
        async with conn.transaction():
            await conn.execute(_STAGING)
            async with conn.cursor() as cur:
                if readings and direct:
                    result.readings = await _copy_new(cur, "readings", _READING_FIELDS, readings)
                elif readings:
                    result.readings = await _stage_then_insert(
                        cur, "readings", _READING_FIELDS, readings
                    )
                if events:
                    result.events = await _stage_then_insert(cur, "events", _EVENT_FIELDS, events)
                if statuses:
                    async with cur.copy(
                        "COPY status_changes (device_id, facility_id, online, received_at)"
                        " FROM STDIN"
                    ) as copy:
                        await _copy_rows(
                            copy,
                            (
                                (s.device_id, s.facility_id, s.online, s.received_at)
                                for s in statuses
                            ),
                        )
                    result.statuses = len(statuses)
                states = _fold_state(items)
                if states:
                    await _copy_state(cur, states.values(), binary=direct)
                    await cur.execute(_UPSERT_STATE)
                if rejections:
                    async with cur.copy(
                        "COPY dead_letters (received_at, topic, reason, detail, facility_id,"
                        " device_id, payload, payload_size) FROM STDIN"
                    ) as copy:
                        for j in rejections:
                            await copy.write_row(
                                (
                                    j.received_at,
                                    _storable(j.topic[:1024]),
                                    j.reason,
                                    _storable(j.detail),
                                    j.facility_id,
                                    j.device_id,
                                    j.payload[:DEAD_LETTER_KEEP_BYTES],
                                    len(j.payload),
                                )
                            )
                    result.dead_letters = len(rejections)
                    pending = _fold_pending(rejections)
                    if pending:
                        await cur.executemany(
                            _UPSERT_PENDING,
                            [
                                (
                                    device_id,
                                    p.facility_id,
                                    p.first_seen,
                                    p.last_seen,
                                    p.messages,
                                    p.topic[:1024],
                                    p.payload,
                                )
                                for device_id, p in sorted(pending.items())
                            ],
                        )
        return result


# The PostgreSQL types of the columns copied in binary, in _READING_FIELDS and
# _STATE_COLUMNS order: a binary COPY must name them exactly (migrations 001, 002, 011).
_READING_TYPES = (
    "timestamptz",
    "text",
    "bigint",
    "text",
    "text",
    "timestamptz",
    "real",
    "boolean",
    "integer",
    "integer",
    "real",
    "jsonb",
)
_FIELD_TYPES = {"battery": "real", "presence": "boolean", "count": "integer", "staff": "integer"}
_STATE_TYPES = (
    "text",
    "timestamptz",
    "boolean",
    "bigint",
    "timestamptz",
    *(t for f in STATE_FIELDS for t in (_FIELD_TYPES.get(f, "real"), "timestamptz", "bigint")),
)
# What a value that cannot be put in binary form raises (a string for a number, say).
# A number out of its column's range is not refused in binary (an `integer` wraps, a
# `real` turns to infinity): the contract's limits keep them out of every Reading
# (tests/unit/test_binary_copy_limits.py checks that each has limits that fit).
_DUMP_ERRORS = (struct.error, OverflowError, TypeError, ValueError)


async def _copy_new(
    cur: psycopg.AsyncCursor[Any],
    table: str,
    fields: tuple[str, ...],
    messages: Sequence[Reading | Event],
) -> int:
    """COPY messages straight into `table`, in binary; all of them new, or _StageInsteadError.

    The unique index on (device_id, seq, ts) refuses a message stored already, and the
    refusal aborts the transaction: the caller writes the batch again, staged.
    """
    columns = ", ".join((*fields, "payload"))
    values = attrgetter(*fields)
    # The payload goes as jsonb, encoded by msgspec (json.dumps is several times slower).
    set_json_dumps(_encode_json, cur)
    try:
        async with cur.copy(f"COPY {table} ({columns}) FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types(list(_READING_TYPES))
            await _copy_rows(copy, ((*values(m), m.payload) for m in messages))
    except psycopg.errors.UniqueViolation as exc:
        raise _StageInsteadError(redelivered=True) from exc
    except _DUMP_ERRORS as exc:
        raise _StageInsteadError(redelivered=False) from exc
    return len(messages)


async def _copy_state(
    cur: psycopg.AsyncCursor[Any], rows: Iterable[list[Any]], *, binary: bool
) -> None:
    """COPY the batch's device states into stage_state, in binary when the batch is direct."""
    columns = ", ".join(_STATE_COLUMNS)
    if not binary:
        async with cur.copy(f"COPY stage_state ({columns}) FROM STDIN") as copy:
            await _copy_rows(copy, rows)
        return
    try:
        async with cur.copy(f"COPY stage_state ({columns}) FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types(list(_STATE_TYPES))
            await _copy_rows(copy, rows)
    except _DUMP_ERRORS as exc:
        raise _StageInsteadError(redelivered=False) from exc


def _message_rows(
    values: attrgetter[Any], messages: Sequence[Reading | Event]
) -> Iterable[tuple[Any, ...]]:
    """Each message's `values`, then its payload as JSON text: a row of readings or events."""
    return ((*values(message), _encode_json(message.payload).decode()) for message in messages)


async def _stage_then_insert(
    cur: psycopg.AsyncCursor[Any],
    table: str,
    fields: tuple[str, ...],
    messages: Sequence[Reading | Event],
) -> int:
    """COPY messages into `table`'s staging table, then insert the new ones; how many were new.

    Each row is the messages' `fields`, then the payload as JSON. A redelivered
    (device_id, seq) is already in `table`: ON CONFLICT drops it there.
    """
    columns = ", ".join((*fields, "payload"))
    values = attrgetter(*fields)
    async with cur.copy(f"COPY stage_{table} ({columns}) FROM STDIN") as copy:
        await _copy_rows(copy, _message_rows(values, messages))
    await cur.execute(
        f"INSERT INTO {table} ({columns}) "
        f"SELECT {columns} FROM stage_{table} ON CONFLICT DO NOTHING"
    )
    return max(cur.rowcount, 0)


async def _copy_rows(copy: psycopg.AsyncCopy, rows: Iterable[Sequence[Any]]) -> None:
    """Write `rows` to a COPY, letting the event loop run every COPY_YIELD_ROWS rows.

    Formatting a row takes microseconds, but a batch's thousands of them in one go would
    hold up an alert's transaction, which shares this event loop, for as many milliseconds.
    """
    for count, row in enumerate(rows, 1):
        await copy.write_row(row)
        if count % COPY_YIELD_ROWS == 0:
            await asyncio.sleep(0)


def _storable(text: str) -> str:
    """`text` without U+0000, which PostgreSQL text refuses.

    A broker that forwards such a topic (amqtt does; MQTT forbids it) must get a dead letter
    like any other bad topic: a row the batch cannot write would be taken for an outage.
    """
    return text.replace("\x00", "\ufffd") if "\x00" in text else text


def _refusal(item: Reading | Event | StatusChange, root: str, why: str) -> Rejection:
    """The rejection for a message the database would not store."""
    channel = (
        "telemetry"
        if isinstance(item, Reading)
        else "event"
        if isinstance(item, Event)
        else "status"
    )
    payload = item.payload if isinstance(item, Reading | Event) else {"online": item.online}
    return Rejection(
        topic=topic(root, item.facility_id, item.device_id, channel),
        reason="bad_field",
        detail=f"payload: cannot be stored ({why})",
        received_at=item.received_at,
        payload=_encode_json(payload),
        facility_id=item.facility_id,
        device_id=item.device_id,
    )
