"""The audit trail (SPEC §4 "every change is an audit row"): a hash chain per facility.

Each row's hash covers its content and the previous row's hash, and `audit_heads` holds
the last one, so a changed, removed or reordered row shows on `verify_audit`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from psycopg import AsyncConnection

from hub.models import AlertChange, AuditStep
from hub.storage import audit as audit_rows
from hub.storage.audit import AuditEntry

GENESIS_HASH = "0" * 64


def audit_entry(change: AlertChange) -> AuditEntry:
    """The audit row of one alert change."""
    alert = change.alert
    step = AuditStep(
        change.at, change.actor, change.action, change.previous, alert.state, change.note
    )
    return AuditEntry(alert.facility_id, alert.id, step)


def audit_hash(entry: AuditEntry, prev_hash: str) -> str:
    """The hash of one audit row over its content and the previous row's hash.

    The content is a JSON array of the entry's fields in order, its time in UTC to the
    microsecond, then `prev_hash`.
    """
    canonical = json.dumps(
        [*entry.as_row(), prev_hash], ensure_ascii=False, separators=(",", ":"), default=_utc
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


def _utc(value: object) -> str:
    """The canonical text of the one non-JSON field of an entry: its time."""
    if not isinstance(value, datetime):
        raise TypeError(f"an audit entry holds no {type(value).__name__}")
    return value.astimezone(UTC).isoformat(timespec="microseconds")


def chained(entries: Iterable[AuditEntry], prev_hash: str) -> Iterator[tuple[AuditEntry, str, str]]:
    """(entry, prev_hash, hash) for each entry in order, the chain continuing from `prev_hash`."""
    for entry in entries:
        digest = audit_hash(entry, prev_hash)
        yield entry, prev_hash, digest
        prev_hash = digest


async def write_audit(
    conn: AsyncConnection[Any], entry: AuditEntry, *, locked_hash: str | None = None
) -> None:
    """Append one audit row to the facility's chain (inside the caller's transaction).

    `locked_hash`: the caller locked the facility's head already and read this hash.
    """
    prev_hash = (
        locked_hash
        if locked_hash is not None
        else await audit_rows.lock_head(conn, entry.facility_id, GENESIS_HASH)
    )
    await audit_rows.append(conn, entry, prev_hash, audit_hash(entry, prev_hash))


@dataclass(frozen=True, slots=True)
class AuditProblem:
    """The first row where a facility's audit chain does not hold, and why."""

    facility_id: str
    row_id: int | None
    why: str


async def verify_audit(
    conn: AsyncConnection[Any], facility_id: str | None = None
) -> list[AuditProblem]:
    """Check each facility's chain; one AuditProblem per broken facility, at its first row."""
    problems: list[AuditProblem] = []
    if facility_id is None:
        facilities = await audit_rows.audited_facilities(conn)
    else:
        facilities = [facility_id]
    for facility in facilities:
        problem = await _verify_facility(conn, facility)
        if problem is not None:
            problems.append(problem)
    return problems


async def _verify_facility(conn: AsyncConnection[Any], facility_id: str) -> AuditProblem | None:
    prev_hash = GENESIS_HASH
    last_id: int | None = None
    for row in await audit_rows.chain(conn, facility_id):
        if row.prev_hash != prev_hash:
            return AuditProblem(
                facility_id,
                row.id,
                "does not follow the row before it (a row was removed or reordered)",
            )
        if audit_hash(row.entry, row.prev_hash) != row.hash:
            return AuditProblem(facility_id, row.id, "its content was changed")
        prev_hash = row.hash
        last_id = row.id
    head = await audit_rows.head(conn, facility_id)
    if head is None:
        if last_id is not None:
            return AuditProblem(facility_id, None, "the chain's head record is missing")
        return None
    if head[1] != prev_hash or (last_id is not None and head[0] != last_id):
        return AuditProblem(
            facility_id, last_id, "rows after this one were removed (the head points past it)"
        )
    return None
