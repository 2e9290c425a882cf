"""Device credentials SQL: the salted hash of each device's MQTT password, issued and revoked.

Every change is announced on this schema's credentials channel (NOTIFY), so a broker that
asks the hub (the embedded one) drops a revoked or rotated device's connection at once.
`device_credentials` (below) says in words whether a device has live credentials, for
`carehub vendor-check`; a schema without the table (older than migration 009) leaves
authentication to its broker, and it says so instead of guessing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import psycopg
from psycopg import AsyncConnection
from psycopg.rows import class_row

from hub.errors import StorageError

_NOTIFY = "SELECT pg_notify(left('carehub_credentials_' || current_schema(), 63), %s)"


def credentials_channel(schema: str) -> str:
    """The NOTIFY channel on which this schema's rotated and revoked devices are announced."""
    return f"carehub_credentials_{schema}"[:63]


@dataclass(frozen=True, slots=True)
class DeviceAccount:
    """A device as a broker sees it: its ids, where it sits, and its password's hash."""

    device_id: str
    facility_id: str
    zone_id: str | None
    secret_hash: str | None
    issued_at: datetime | None
    revoked_at: datetime | None


_ACCOUNT = (
    "SELECT d.id AS device_id, d.facility_id, d.zone_id, c.secret_hash, c.issued_at,"
    " c.revoked_at FROM devices d LEFT JOIN device_credentials c ON c.device_id = d.id"
)


async def find_account(conn: AsyncConnection[Any], device_id: str) -> DeviceAccount | None:
    """A registered device with its credentials (hash None: never issued, or revoked)."""
    try:
        async with conn.cursor(row_factory=class_row(DeviceAccount)) as cur:
            await cur.execute(f"{_ACCOUNT} WHERE d.id = %s", (device_id,))
            return await cur.fetchone()
    except psycopg.Error as exc:
        raise StorageError(f"cannot read device credentials: {exc}") from exc


async def active_accounts(conn: AsyncConnection[Any]) -> list[DeviceAccount]:
    """Every device whose credentials are in force, by id."""
    try:
        async with conn.cursor(row_factory=class_row(DeviceAccount)) as cur:
            await cur.execute(f"{_ACCOUNT} WHERE c.secret_hash IS NOT NULL ORDER BY d.id")
            return await cur.fetchall()
    except psycopg.Error as exc:
        raise StorageError(f"cannot read device credentials: {exc}") from exc


async def store_secret(
    conn: AsyncConnection[Any], device_id: str, secret_hash: str, actor: str, *, rotate: bool
) -> bool:
    """Store a new hash for the device; False when it has credentials and `rotate` is off.

    With `rotate`, the old password stops working as the transaction commits.
    """
    return await _change_and_notify(
        conn,
        device_id,
        "store",
        "INSERT INTO device_credentials (device_id, secret_hash, issued_by)"
        " VALUES (%s, %s, %s)"
        " ON CONFLICT (device_id) DO UPDATE SET secret_hash = EXCLUDED.secret_hash,"
        "  issued_at = now(), issued_by = EXCLUDED.issued_by,"
        "  rotations = device_credentials.rotations"
        "   + (device_credentials.secret_hash IS NOT NULL)::int,"
        "  revoked_at = NULL, revoked_by = NULL"
        " WHERE %s OR device_credentials.secret_hash IS NULL"
        " RETURNING 1",
        (device_id, secret_hash, actor, rotate),
    )


async def revoke_secret(conn: AsyncConnection[Any], device_id: str, actor: str) -> bool:
    """Revoke the device's credentials; False when it had none in force."""
    return await _change_and_notify(
        conn,
        device_id,
        "revoke",
        "UPDATE device_credentials SET secret_hash = NULL, revoked_at = now(),"
        " revoked_by = %s WHERE device_id = %s AND secret_hash IS NOT NULL RETURNING 1",
        (actor, device_id),
    )


async def _change_and_notify(
    conn: AsyncConnection[Any], device_id: str, verb: str, query: str, params: tuple[object, ...]
) -> bool:
    """Run one credentials change; when it touched a row, tell every hub in the same commit."""
    try:
        async with conn.transaction():
            cur = await conn.execute(query, params)
            changed = await cur.fetchone() is not None
            if changed:
                await conn.execute(_NOTIFY, (device_id,))
            return changed
    except psycopg.Error as exc:
        raise StorageError(f"cannot {verb} device credentials: {exc}") from exc


CREDENTIALS_TABLE = "device_credentials"

CredentialsVerdict = Literal["live", "none", "not_managed"]


@dataclass(frozen=True, slots=True)
class CredentialsState:
    """What the hub's store says about one device's MQTT credentials, and in words."""

    verdict: CredentialsVerdict
    detail: str


async def device_credentials(conn: AsyncConnection[Any], device_id: str) -> CredentialsState:
    """Whether `device_id` has credentials that are issued and not revoked."""
    cur = await conn.execute("SELECT to_regclass(%s) IS NOT NULL", (CREDENTIALS_TABLE,))
    row = await cur.fetchone()
    if row is None or not row[0]:
        return CredentialsState(
            "not_managed",
            "this site's broker authentication is not checked: the hub keeps no device "
            "credentials here, so whoever reaches the broker may publish as this device",
        )
    cur = await conn.execute(
        "SELECT column_name FROM information_schema.columns"
        " WHERE table_name = %s AND table_schema = current_schema()",
        (CREDENTIALS_TABLE,),
    )
    columns = {name for (name,) in await cur.fetchall()}
    # A revoked row may be kept for the record; only an unrevoked one admits the device.
    live = "revoked_at IS NULL" if "revoked_at" in columns else "true"
    cur = await conn.execute(
        f"SELECT 1 FROM {CREDENTIALS_TABLE} WHERE device_id = %s AND {live}", (device_id,)
    )
    if await cur.fetchone() is None:
        return CredentialsState(
            "none",
            f"device {device_id!r} has no live MQTT credentials; issue them with "
            f"`carehub devices credentials {device_id}`",
        )
    return CredentialsState(
        "live",
        f"device {device_id!r} has live MQTT credentials; the broker admits it only as "
        f"username and client id {device_id!r}",
    )
