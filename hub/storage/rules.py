"""Rule overrides in the database: per facility and per zone, validated before stored."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg import AsyncConnection
from psycopg.types.json import Jsonb

from hub.errors import RuleError, StorageError
from hub.rules import Override, RuleParams, validate_override
from hub.storage.registry import facility_exists, zone_exists


async def load_rule_params(conn: AsyncConnection[Any]) -> RuleParams:
    """The catalogue defaults with every stored override on top."""
    cur = await conn.execute("SELECT facility_id, zone_id, kind, params FROM rule_overrides")
    return RuleParams(
        Override(str(facility), str(zone), str(kind), dict(params))
        for facility, zone, kind, params in await cur.fetchall()
    )


async def save_overrides(
    conn: AsyncConnection[Any], overrides: Sequence[Override], actor: str
) -> int:
    """Store validated overrides (merged into what a kind already has); all or none."""
    try:
        async with conn.transaction():
            for override in overrides:
                if not await facility_exists(conn, override.facility_id):
                    raise RuleError(f"facility {override.facility_id}: not registered")
                if override.zone_id and not await zone_exists(
                    conn, override.facility_id, override.zone_id
                ):
                    raise RuleError(
                        f"facility {override.facility_id} zone {override.zone_id}: no such zone"
                    )
                cur = await conn.execute(
                    "SELECT params FROM rule_overrides"
                    " WHERE facility_id = %s AND zone_id = %s AND kind = %s FOR UPDATE",
                    (override.facility_id, override.zone_id, override.kind),
                )
                existing = await cur.fetchone()
                # Checked again merged: two fields may only be wrong together.
                merged = validate_override(
                    override.facility_id,
                    override.zone_id,
                    override.kind,
                    {**(existing[0] if existing else {}), **override.params},
                )
                await conn.execute(
                    "INSERT INTO rule_overrides (facility_id, zone_id, kind, params, updated_by)"
                    " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (facility_id, zone_id, kind)"
                    " DO UPDATE SET params = EXCLUDED.params,"
                    " updated_at = now(), updated_by = EXCLUDED.updated_by",
                    (
                        merged.facility_id,
                        merged.zone_id,
                        merged.kind,
                        Jsonb(dict(merged.params)),
                        actor,
                    ),
                )
    except psycopg.Error as exc:
        raise StorageError(f"cannot store rule overrides: {exc}") from exc
    return len(overrides)
