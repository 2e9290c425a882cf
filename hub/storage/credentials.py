"""Whether a device has live MQTT credentials in the hub's store, as far as this site keeps one.

The hub issues a device's MQTT username (its device id, which is also its client id) and
password into `device_credentials`; the broker then admits the device only with those.
A site whose schema has no such store leaves authentication to its broker, and this
module says so instead of guessing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from psycopg import AsyncConnection

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
