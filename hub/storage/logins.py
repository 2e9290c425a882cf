"""Sign-in limit SQL: failed sign-ins per account name and per client address, and the
audit of account actions (locks, unlocks, disables).

The counting is done in the database, in one statement per key, so that every hub
process of a site sees the same guesses and two processes cannot both miss a lock. The
policy (how many failures, how long) is hub/auth.py's and arrives as parameters.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from psycopg import AsyncConnection
from psycopg.rows import dict_row

from hub.errors import StorageError
from hub.storage.pool import dict_rows

KeyKind = Literal["account", "address"]
# Quiet rows are pruned a few at a time, beside each new failure: enough to keep up with a
# spray of made-up names, never a long statement on the sign-in path.
_PRUNE_BATCH = 100


@dataclass(frozen=True, slots=True)
class LimitPolicy:
    """How failures of one kind of key turn into a backoff, then a lock (hub/auth.py)."""

    free_failures: int
    lock_failures: int
    lock_s: int
    backoff_base_s: float
    backoff_max_s: float
    forget_s: int


@dataclass(frozen=True, slots=True)
class LimitRow:
    """One key's state as the database has it, with the database's clock."""

    kind: KeyKind
    key: str
    failures: int
    backoff_until: datetime | None
    locked_until: datetime | None
    now: datetime
    # True when the failure just recorded is the one that locked the key.
    locked_now: bool = False


@dataclass(frozen=True, slots=True)
class AccountAuditRow:
    """One account action: who did it, to which account or address, when."""

    id: int
    at: datetime
    actor: str
    action: str
    username: str | None
    address: str | None
    detail: str


async def select_limits(
    conn: AsyncConnection[Any], username: str, address: str, known_for_s: int
) -> tuple[list[LimitRow], bool]:
    """The stored state of the account and address keys (those with recent failures), and
    whether the account signed in from the address within `known_for_s`; one round trip."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            "SELECT f.kind, f.key, f.failures, f.backoff_until, f.locked_until, now() AS now,"
            " EXISTS (SELECT 1 FROM known_sign_ins WHERE username = %(username)s"
            " AND address = %(address)s"
            " AND last_at > now() - make_interval(secs => %(known_s)s)) AS known"
            " FROM (VALUES (1)) AS one LEFT JOIN login_failures f"
            " ON (f.kind = 'account' AND f.key = %(username)s)"
            " OR (f.kind = 'address' AND f.key = %(address)s)",
            {"username": username, "address": address, "known_s": known_for_s},
        )
        found = await cur.fetchall()
    known = bool(found and found[0]["known"])
    rows = [row for row in found if row["kind"] is not None]
    for row in rows:
        del row["known"]
    return [LimitRow(**row) for row in rows], known


async def record_sign_in(
    conn: AsyncConnection[Any], username: str, address: str, known_for_s: int
) -> None:
    """Remember that `username` signed in from `address` (and forget the long quiet)."""
    await conn.execute(
        "INSERT INTO known_sign_ins (username, address) VALUES (%s, %s)"
        " ON CONFLICT (username, address) DO UPDATE SET last_at = now()",
        (username, address),
    )
    await conn.execute(
        "DELETE FROM known_sign_ins WHERE ctid = ANY(ARRAY(SELECT ctid FROM known_sign_ins"
        " WHERE last_at < now() - make_interval(secs => %s) LIMIT %s))",
        (known_for_s, _PRUNE_BATCH),
    )


def _failures_after(old: str) -> str:
    """The count after one more failure: the old one, unless it was quiet long enough."""
    return (
        f"CASE WHEN {old}.last_failed_at < now() - make_interval(secs => %(forget_s)s)"
        f" THEN 1 ELSE {old}.failures + 1 END"
    )


def _backoff(count: str) -> str:
    """No check before this once the free failures are spent: base * 2^(failures beyond
    them), capped."""
    return (
        f"CASE WHEN {count} >= %(free)s THEN now() + make_interval(secs => LEAST("
        f"%(base_s)s * power(2, LEAST({count} - %(free)s, 30)), %(max_s)s)) END"
    )


def _lock(count: str, old_lock: str) -> str:
    """Locked from the failure that reaches the limit, for lock_s; a running lock stays."""
    return (
        f"CASE WHEN {count} >= %(lock_after)s AND ({old_lock} IS NULL OR {old_lock} <= now())"
        f" THEN now() + make_interval(secs => %(lock_s)s) ELSE {old_lock} END"
    )


_COUNT = _failures_after("f")
_RECORD_FAILURE = (
    "INSERT INTO login_failures AS f (kind, key, failures, last_failed_at, backoff_until,"
    f" locked_until) VALUES (%(kind)s, %(key)s, 1, now(), {_backoff('1')}, {_lock('1', 'NULL')})"
    f" ON CONFLICT (kind, key) DO UPDATE SET failures = {_COUNT}, last_failed_at = now(),"
    f" backoff_until = {_backoff(_COUNT)}, locked_until = {_lock(_COUNT, 'f.locked_until')}"
    " RETURNING f.kind, f.key, f.failures, f.backoff_until, f.locked_until, now() AS now,"
    # now() is the transaction's: only this statement can have set exactly this lock.
    " f.locked_until IS NOT DISTINCT FROM now() + make_interval(secs => %(lock_s)s)"
    " AS locked_now"
)


async def record_failure(
    conn: AsyncConnection[Any], kind: KeyKind, key: str, policy: LimitPolicy
) -> LimitRow:
    """Count one failed (or refused) sign-in of `key`; a lock it causes is audited with it."""
    params = {
        "kind": kind,
        "key": key,
        "free": policy.free_failures,
        "lock_after": policy.lock_failures,
        "lock_s": policy.lock_s,
        "base_s": policy.backoff_base_s,
        "max_s": policy.backoff_max_s,
        "forget_s": policy.forget_s,
    }
    async with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(_RECORD_FAILURE, params)
        row = await cur.fetchone()
        if row is None:
            raise StorageError("the database returned no row where one was certain")
        limit = LimitRow(**row)
        if limit.locked_now:
            await insert_account_audit(
                conn,
                actor="hub",
                action="locked",
                username=key if kind == "account" else None,
                address=key if kind == "address" else None,
                detail=f"{limit.failures} failed sign-ins in a row; locked until"
                f" {limit.locked_until:%Y-%m-%dT%H:%M:%S%z}",
            )
        await cur.execute(
            "DELETE FROM login_failures WHERE ctid = ANY(ARRAY(SELECT ctid FROM login_failures"
            " WHERE last_failed_at < now() - make_interval(secs => %(forget_s)s)"
            " AND (locked_until IS NULL OR locked_until < now()) LIMIT %(batch)s))",
            {"forget_s": policy.forget_s, "batch": _PRUNE_BATCH},
        )
    return limit


async def clear_failures(conn: AsyncConnection[Any], kind: KeyKind, key: str) -> bool:
    """Forget a key's failures, backoff and lock (a sign-in that worked, an unlock)."""
    cur = await conn.execute(
        "DELETE FROM login_failures WHERE kind = %s AND key = %s RETURNING locked_until > now()",
        (kind, key),
    )
    row = await cur.fetchone()
    return row is not None and bool(row[0])


async def unlock_account(conn: AsyncConnection[Any], username: str, actor: str) -> bool | None:
    """Lift an account's lock and backoff and audit it; None if there is no such account,
    else whether it was locked."""
    async with conn.transaction():
        cur = await conn.execute("SELECT 1 FROM users WHERE username = %s", (username,))
        if await cur.fetchone() is None:
            return None
        was_locked = await clear_failures(conn, "account", username)
        await insert_account_audit(
            conn,
            actor=actor,
            action="unlocked",
            username=username,
            address=None,
            detail="was locked" if was_locked else "was not locked",
        )
    return was_locked


async def locked_accounts(conn: AsyncConnection[Any]) -> dict[str, datetime]:
    """Account names locked now, and until when."""
    cur = await conn.execute(
        "SELECT key, locked_until FROM login_failures"
        " WHERE kind = 'account' AND locked_until > now()"
    )
    return {str(row[0]): row[1] for row in await cur.fetchall()}


async def insert_account_audit(
    conn: AsyncConnection[Any],
    *,
    actor: str,
    action: str,
    username: str | None,
    address: str | None,
    detail: str = "",
) -> None:
    """Write one account audit row."""
    await conn.execute(
        "INSERT INTO account_audit (actor, action, username, address, detail)"
        " VALUES (%s, %s, %s, %s, %s)",
        (actor, action, username, address, detail),
    )


async def select_account_audit(
    conn: AsyncConnection[Any], *, username: str | None = None, limit: int = 100
) -> list[AccountAuditRow]:
    """The newest account audit rows (of one account, if given), newest first."""
    found = await dict_rows(
        conn,
        "SELECT id, at, actor, action, username, address, detail FROM account_audit"
        " WHERE %(username)s::text IS NULL OR username = %(username)s"
        " ORDER BY id DESC LIMIT %(limit)s",
        {"username": username, "limit": limit},
    )
    return [AccountAuditRow(**row) for row in found]
