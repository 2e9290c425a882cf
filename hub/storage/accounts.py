"""Account SQL: users, hashed API tokens, and the regulators' access log (SPEC §7)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg import AsyncConnection
from psycopg.rows import dict_row

from hub.errors import AuthError, StorageError
from hub.storage.registry import facility_exists

# Used as `WHERE ... AND {SCOPE_SQL}` with `f` the facilities table and the parameters of
# Principal.scope_params(); one definition, so every list agrees on what a caller sees.
SCOPE_SQL = "(%(scope_all)s OR f.district = %(scope_district)s OR f.id = %(scope_facility)s)"

# The NOTIFY that a sign-in ended (an account disabled, a token revoked), with the account
# name as payload: every hub process's live feed rechecks that account's websockets at
# once. Named by the schema in force (search_path), as hub/storage/live.py names its own.
_ACCOUNT_NOTIFY = "SELECT pg_notify(left('carehub_accounts_' || current_schema(), 63), %s)"

_USER_COLUMNS = "username, display_name, role, facility_id, district, disabled, created_at"


@dataclass(frozen=True, slots=True)
class UserRow:
    """One account as stored, without its password hash."""

    username: str
    display_name: str
    role: str
    facility_id: str | None
    district: str | None
    disabled: bool
    created_at: datetime


async def insert_user(
    conn: AsyncConnection[Any],
    *,
    username: str,
    display_name: str,
    role: str,
    facility_id: str | None,
    district: str | None,
    password_hash: str,
) -> UserRow:
    """Store a new account; AuthError conflict when the name is taken."""
    try:
        async with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
            if facility_id is not None and not await facility_exists(conn, facility_id):
                raise AuthError(
                    "invalid", f"facility {facility_id!r} is not registered", "facility"
                )
            await cur.execute(
                "INSERT INTO users (username, display_name, role, facility_id, district,"
                " password_hash) VALUES (%s, %s, %s, %s, %s, %s)"
                f" ON CONFLICT (username) DO NOTHING RETURNING {_USER_COLUMNS}",
                (username, display_name, role, facility_id, district, password_hash),
            )
            row = await cur.fetchone()
    except psycopg.Error as exc:
        raise StorageError(f"cannot store account {username!r}: {exc}") from exc
    if row is None:
        raise AuthError("conflict", f"an account named {username!r} already exists", "username")
    return UserRow(**row)


async def select_users(conn: AsyncConnection[Any]) -> list[UserRow]:
    """Every account, by name."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(f"SELECT {_USER_COLUMNS} FROM users ORDER BY username")
        return [UserRow(**row) for row in await cur.fetchall()]


async def select_password_hash(
    conn: AsyncConnection[Any], username: str
) -> tuple[UserRow, str] | None:
    """An account and its password hash, or None."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            f"SELECT {_USER_COLUMNS}, password_hash FROM users WHERE username = %s", (username,)
        )
        row = await cur.fetchone()
    if row is None:
        return None
    password_hash = str(row.pop("password_hash"))
    return UserRow(**row), password_hash


async def update_password_hash(conn: AsyncConnection[Any], username: str, new_hash: str) -> None:
    """Replace an account's hash (argon2 parameters were raised since it was written)."""
    await conn.execute(
        "UPDATE users SET password_hash = %s WHERE username = %s", (new_hash, username)
    )


def account_channel(schema: str) -> str:
    """The NOTIFY channel on which this schema's ended sign-ins are announced."""
    return f"carehub_accounts_{schema}"[:63]


async def set_disabled(conn: AsyncConnection[Any], username: str, disabled: bool) -> bool:
    """Disable or enable an account and, when disabling, revoke its tokens and tell every
    hub process (its websockets close); False if unknown."""
    async with conn.transaction():
        cur = await conn.execute(
            "UPDATE users SET disabled = %s WHERE username = %s RETURNING 1", (disabled, username)
        )
        found = await cur.fetchone() is not None
        if found and disabled:
            await conn.execute(
                "UPDATE api_tokens SET revoked_at = now()"
                " WHERE username = %s AND revoked_at IS NULL",
                (username,),
            )
            await conn.execute(_ACCOUNT_NOTIFY, (username,))
    return found


async def insert_token(
    conn: AsyncConnection[Any], token_sha256: str, username: str, ttl_s: int
) -> datetime:
    """Store a new token's hash; returns when it expires (the database's clock)."""
    async with conn.transaction():
        cur = await conn.execute(
            "INSERT INTO api_tokens (token_sha256, username, expires_at)"
            " VALUES (%s, %s, now() + make_interval(secs => %s)) RETURNING expires_at",
            (token_sha256, username, ttl_s),
        )
        row = await cur.fetchone()
        # Expired tokens go when new ones come, so the table stays the size of its users.
        await conn.execute("DELETE FROM api_tokens WHERE expires_at < now() - interval '7 days'")
    if row is None:
        raise StorageError("the database returned no row where one was certain")
    expires_at: datetime = row[0]
    return expires_at


async def select_token_user(
    conn: AsyncConnection[Any], token_sha256: str
) -> tuple[UserRow, datetime] | None:
    """The enabled account of a live (unexpired, unrevoked) token and when the token
    expires, or None."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            "SELECT u.username, u.display_name, u.role, u.facility_id, u.district, u.disabled,"
            " u.created_at, t.expires_at FROM api_tokens t"
            " JOIN users u ON u.username = t.username"
            " WHERE t.token_sha256 = %s AND t.revoked_at IS NULL AND t.expires_at > now()"
            " AND NOT u.disabled",
            (token_sha256,),
        )
        row = await cur.fetchone()
    if row is None:
        return None
    expires_at: datetime = row.pop("expires_at")
    return UserRow(**row), expires_at


async def revoke_token(conn: AsyncConnection[Any], token_sha256: str) -> bool:
    """Revoke one token and tell every hub process (its websockets close); False when it
    was not live."""
    async with conn.transaction():
        cur = await conn.execute(
            "UPDATE api_tokens SET revoked_at = now()"
            " WHERE token_sha256 = %s AND revoked_at IS NULL RETURNING username",
            (token_sha256,),
        )
        row = await cur.fetchone()
        if row is not None:
            await conn.execute(_ACCOUNT_NOTIFY, (row[0],))
    return row is not None


async def select_access_log(
    conn: AsyncConnection[Any],
    *,
    facility_id: str | None,
    username: str | None,
    before: int | None,
    limit: int,
) -> list[dict[str, Any]]:
    """Access log rows, newest first, below id `before`, of one facility or user if given;
    `limit` + 1 rows, so the caller can tell whether there are more."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            "SELECT id, at, username, role, route, facility_id FROM access_log"
            " WHERE (%(facility)s::text IS NULL OR facility_id = %(facility)s::text)"
            " AND (%(username)s::text IS NULL OR username = %(username)s::text)"
            " AND (%(before)s::bigint IS NULL OR id < %(before)s::bigint)"
            " ORDER BY id DESC LIMIT %(limit)s",
            {"facility": facility_id, "username": username, "before": before, "limit": limit + 1},
        )
        return list(await cur.fetchall())


async def log_access(
    conn: AsyncConnection[Any], *, username: str, role: str, route: str, facility_id: str
) -> None:
    """Record one read of a facility's detail (SPEC §7, PIPL)."""
    await conn.execute(
        "INSERT INTO access_log (username, role, route, facility_id) VALUES (%s, %s, %s, %s)",
        (username, role, route, facility_id),
    )
