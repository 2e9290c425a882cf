"""Registry SQL: the facilities, zones and devices tables, imported, checked and read.

Batched upserts of imported rows, reference checks, pending-device registration, the
pipeline's device lookups, and the docs/api.md Device and Facility columns.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import class_row

import devices
from hub.errors import ImportRowError, RegistryError, StorageError
from hub.models import DeviceInfo
from hub.settings import Settings
from hub.storage.kpis import online_sql
from hub.storage.pool import connect

logger = logging.getLogger(__name__)

# Running hubs LISTEN here and reload their device cache; the payload names the registry.
NOTIFY_CHANNEL = "carehub_registry"
_ID = re.compile(devices.ID_PATTERN)

Connection = psycopg.AsyncConnection[tuple[Any, ...]]
# A validated row as the import hands it over: its row number in the file, then its values
# in the order of the table's columns below.
Record = tuple[int, tuple[object, ...]]

# The registry fields of docs/api.md `Facility`, over the facilities table `f`.
FACILITY_COLUMNS = (
    "f.id, f.name, f.kind, f.district, f.address, f.latitude, f.longitude,"
    " f.registration_no, f.beds, f.childcare_places"
)
# docs/api.md `Device` (hub.wire.device_json), over `DEVICES_WITH_STATE`: the REST API
# and the live feed read the same columns, online as the KPIs count it.
DEVICE_COLUMNS = (
    "d.id, d.facility_id, d.zone_id, d.type, d.vendor, d.model, d.heartbeat_s,"
    f" {online_sql('now()')} AS online, s.battery, s.last_seen, s.presence, s.count, s.staff"
)
DEVICES_WITH_STATE = "devices d LEFT JOIN device_state s ON s.device_id = d.id"
# What the pipeline keeps of each device (models.DeviceInfo).
_DEVICE_INFO_COLUMNS = "id, facility_id, type, zone_id, heartbeat_s"


async def facility_exists(conn: psycopg.AsyncConnection[Any], facility_id: str) -> bool:
    """Whether the facility is registered."""
    cur = await conn.execute("SELECT 1 FROM facilities WHERE id = %s", (facility_id,))
    return await cur.fetchone() is not None


async def zone_exists(conn: psycopg.AsyncConnection[Any], facility_id: str, zone_id: str) -> bool:
    """Whether the facility has this zone."""
    cur = await conn.execute(
        "SELECT 1 FROM zones WHERE facility_id = %s AND zone_id = %s", (facility_id, zone_id)
    )
    return await cur.fetchone() is not None


async def load_devices(conn: psycopg.AsyncConnection[object]) -> dict[str, DeviceInfo]:
    """Every registered device, by id."""
    async with conn.cursor(row_factory=class_row(DeviceInfo)) as cur:
        await cur.execute(f"SELECT {_DEVICE_INFO_COLUMNS} FROM devices")
        return {device.id: device for device in await cur.fetchall()}


async def find_device(conn: psycopg.AsyncConnection[object], device_id: str) -> DeviceInfo | None:
    """One registered device, or None."""
    async with conn.cursor(row_factory=class_row(DeviceInfo)) as cur:
        await cur.execute(f"SELECT {_DEVICE_INFO_COLUMNS} FROM devices WHERE id = %s", (device_id,))
        return await cur.fetchone()


@dataclass(frozen=True, slots=True)
class _Table:
    """A registry table as the import writes it: columns in record order, the key, the types."""

    name: str
    columns: tuple[tuple[str, str], ...]
    key: tuple[str, ...]
    # Set on update besides the columns themselves.
    touch: str = ""

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.columns)

    @property
    def staging(self) -> str:
        return f"_import_{self.name}"


TABLES: dict[str, _Table] = {
    "facilities": _Table(
        "facilities",
        (
            ("id", "text"),
            ("name", "text"),
            ("kind", "text"),
            ("district", "text"),
            ("address", "text"),
            ("latitude", "double precision"),
            ("longitude", "double precision"),
            ("registration_no", "text"),
            ("beds", "integer"),
            ("childcare_places", "integer"),
        ),
        ("id",),
        touch="updated_at = now()",
    ),
    "zones": _Table(
        "zones",
        (
            ("facility_id", "text"),
            ("zone_id", "text"),
            ("name", "text"),
            ("kind", "text"),
            ("capacity", "integer"),
            ("class_type", "text"),
        ),
        ("facility_id", "zone_id"),
    ),
    "devices": _Table(
        "devices",
        (
            ("id", "text"),
            ("facility_id", "text"),
            ("type", "text"),
            ("zone_id", "text"),
            ("heartbeat_s", "integer"),
            ("vendor", "text"),
            ("model", "text"),
        ),
        ("id",),
    ),
}

# Which column a database constraint is about, for the row error an operator reads.
_CONSTRAINT_COLUMNS = {
    "zones_facility_id_fkey": "facility_id",
    "devices_facility_id_fkey": "facility_id",
    "devices_facility_id_zone_id_fkey": "zone_id",
    "zones_check": "class_type",
}

# Rows whose facility is not registered, taken out of the staging table before the upsert.
_MISSING_FACILITY = """
DELETE FROM {staging} AS s
WHERE NOT EXISTS (SELECT 1 FROM facilities AS f WHERE f.id = s.facility_id)
RETURNING s.row_no, s.facility_id
"""
_MISSING_ZONE = """
DELETE FROM {staging} AS s
WHERE s.zone_id IS NOT NULL AND NOT EXISTS (
    SELECT 1 FROM zones AS z WHERE z.facility_id = s.facility_id AND z.zone_id = s.zone_id)
RETURNING s.row_no, s.facility_id, s.zone_id
"""


def _upsert(table: _Table, source: sql.Composable) -> sql.Composed:
    """INSERT ... ON CONFLICT DO UPDATE that leaves unchanged rows (and updated_at) alone."""
    values = [name for name in table.names if name not in table.key]
    assignments: list[sql.Composable] = [
        sql.SQL("{} = EXCLUDED.{}").format(sql.Identifier(name), sql.Identifier(name))
        for name in values
    ]
    if table.touch:
        assignments.append(sql.SQL(table.touch))
    return sql.SQL(
        "INSERT INTO {table} ({columns}) {source} ON CONFLICT ({key}) DO UPDATE SET {assign}"
        " WHERE ({current}) IS DISTINCT FROM ({incoming})"
    ).format(
        table=sql.Identifier(table.name),
        columns=sql.SQL(", ").join(map(sql.Identifier, table.names)),
        source=source,
        key=sql.SQL(", ").join(map(sql.Identifier, table.key)),
        assign=sql.SQL(", ").join(assignments),
        current=sql.SQL(", ").join(sql.Identifier(table.name, name) for name in values),
        incoming=sql.SQL(", ").join(sql.Identifier("excluded", name) for name in values),
    )


def _zone_missing(zone: object, facility: object) -> str:
    return f"zone {zone!r} is not registered at facility {facility!r}"


def _storage_error(exc: psycopg.Error) -> StorageError:
    if isinstance(exc, psycopg.errors.UndefinedTable):
        return StorageError(f"the registry tables are missing ({exc}); run `carehub migrate` first")
    return StorageError(f"the database refused the registry change: {exc}")


class RegistryWriter:
    """Upserts validated registry rows batch by batch, through a staging table and COPY."""

    def __init__(self, conn: Connection, kind: str) -> None:
        self._conn = conn
        self._table = TABLES[kind]
        self._kind = kind
        staging = sql.Identifier(self._table.staging)
        self._copy = sql.SQL("COPY {} (row_no, {}) FROM STDIN").format(
            staging, sql.SQL(", ").join(map(sql.Identifier, self._table.names))
        )
        order = sql.SQL(", ").join(map(sql.Identifier, self._table.key))
        # Key order, so two imports running at once lock rows in the same order.
        self._from_staging = _upsert(
            self._table,
            sql.SQL("SELECT {} FROM {} ORDER BY {}").format(
                sql.SQL(", ").join(map(sql.Identifier, self._table.names)), staging, order
            ),
        )
        self._one_row = _upsert(
            self._table,
            sql.SQL("VALUES ({})").format(
                sql.SQL(", ").join(sql.Placeholder() * len(self._table.names))
            ),
        )

    async def prepare(self) -> None:
        """Create this session's staging table; COMMIT empties it, so batches never mix."""
        columns = sql.SQL(", ").join(
            sql.SQL("{} {}").format(sql.Identifier(name), sql.SQL(kind))
            for name, kind in self._table.columns
        )
        try:
            await self._conn.execute(
                sql.SQL(
                    "CREATE TEMP TABLE IF NOT EXISTS {} (row_no integer NOT NULL, {})"
                    " ON COMMIT DELETE ROWS"
                ).format(sql.Identifier(self._table.staging), columns)
            )
        except psycopg.Error as exc:
            raise _storage_error(exc) from exc

    async def upsert(self, records: Sequence[Record]) -> tuple[int, list[ImportRowError]]:
        """Store one batch; return how many rows were stored, and the row errors."""
        try:
            try:
                async with self._conn.transaction():
                    return await self._upsert_batch(records)
            except (psycopg.errors.IntegrityError, psycopg.errors.DataError) as exc:
                # Something the checks did not foresee (or a facility deleted meanwhile):
                # redo this batch one row at a time so only the offending rows are refused.
                logger.info("registry batch refused (%s); retrying row by row", exc.sqlstate)
                return await self._upsert_rows(records)
        except psycopg.Error as exc:
            raise _storage_error(exc) from exc

    async def announce(self) -> None:
        """Tell running hubs the registry changed, so they reload it."""
        try:
            await self._conn.execute("SELECT pg_notify(%s, %s)", (NOTIFY_CHANNEL, self._kind))
        except psycopg.Error as exc:
            raise _storage_error(exc) from exc

    async def _upsert_batch(self, records: Sequence[Record]) -> tuple[int, list[ImportRowError]]:
        staging = sql.Identifier(self._table.staging)
        async with self._conn.cursor() as cur:
            async with cur.copy(self._copy) as copy:
                for row, values in records:
                    await copy.write_row((row, *values))
            errors: list[ImportRowError] = []
            if self._kind in ("zones", "devices"):
                await cur.execute(sql.SQL(_MISSING_FACILITY).format(staging=staging))
                errors += [
                    ImportRowError(row, "facility_id", f"facility {facility!r} is not registered")
                    for row, facility in await cur.fetchall()
                ]
            if self._kind == "devices":
                await cur.execute(sql.SQL(_MISSING_ZONE).format(staging=staging))
                errors += [
                    ImportRowError(row, "zone_id", _zone_missing(zone, facility))
                    for row, facility, zone in await cur.fetchall()
                ]
            await cur.execute(self._from_staging)
            if self._kind == "devices":
                # Registered now, so no longer waiting for an admin.
                await cur.execute(
                    sql.SQL(
                        "DELETE FROM pending_devices AS p USING {} AS s WHERE p.device_id = s.id"
                    ).format(staging)
                )
        return len(records) - len(errors), errors

    async def _upsert_rows(self, records: Sequence[Record]) -> tuple[int, list[ImportRowError]]:
        errors: list[ImportRowError] = []
        stored: list[object] = []
        async with self._conn.transaction(), self._conn.cursor() as cur:
            for row, values in records:
                try:
                    async with self._conn.transaction():
                        await cur.execute(self._one_row, values)
                except (psycopg.errors.IntegrityError, psycopg.errors.DataError) as exc:
                    errors.append(self._row_error(row, values, exc))
                else:
                    stored.append(values[0])
            if self._kind == "devices" and stored:
                await cur.execute(
                    "DELETE FROM pending_devices WHERE device_id = ANY(%s)", (stored,)
                )
        return len(stored), errors

    def _row_error(
        self, row: int, values: tuple[object, ...], exc: psycopg.Error
    ) -> ImportRowError:
        diag = exc.diag
        constraint = diag.constraint_name or ""
        column = diag.column_name or _CONSTRAINT_COLUMNS.get(constraint)
        if column is None:
            stem = constraint.removeprefix(f"{self._table.name}_").removesuffix("_check")
            column = stem if stem in self._table.names else self._table.key[-1]
        if constraint.endswith("_fkey"):
            given = dict(zip(self._table.names, values, strict=True))
            if column == "facility_id":
                return ImportRowError(row, column, f"facility {given[column]!r} is not registered")
            return ImportRowError(row, column, _zone_missing(given[column], given["facility_id"]))
        return ImportRowError(row, column, diag.message_primary or str(exc))


@dataclass(frozen=True, slots=True)
class PendingDevice:
    """A device heard but not registered."""

    # The API's pending-device list shows this row as it is (hub/api/models.py), and the
    # docstring above is its OpenAPI description: a device heard on MQTT, waiting for an
    # admin to register it.

    device_id: str
    facility_id: str
    first_seen: datetime
    last_seen: datetime
    messages: int
    last_topic: str


async def list_pending(settings: Settings) -> list[PendingDevice]:
    """Every pending device, most recently heard first."""
    try:
        async with (
            await connect(settings) as conn,
            conn.cursor(row_factory=class_row(PendingDevice)) as cur,
        ):
            await cur.execute(
                "SELECT device_id, facility_id, first_seen, last_seen, messages, last_topic"
                " FROM pending_devices ORDER BY last_seen DESC, device_id"
            )
            return await cur.fetchall()
    except psycopg.Error as exc:
        raise _storage_error(exc) from exc


async def register_pending(
    settings: Settings,
    device_id: str,
    type: str,
    zone_id: str | None = None,
    heartbeat_s: int | None = None,
) -> None:
    """Register a pending device in one action; its facility is the one its topic named."""
    catalogued = devices.CATALOGUE.get(type)
    if catalogued is None:
        known = ", ".join(sorted(devices.CATALOGUE))
        raise RegistryError(f"unknown device type {type!r}; one of {known}")
    if zone_id is not None and not _ID.fullmatch(zone_id):
        raise RegistryError(f"{zone_id!r} is not a zone id")
    if heartbeat_s is not None and not 1 <= heartbeat_s <= 86400:
        raise RegistryError(f"heartbeat_s {heartbeat_s} is outside 1..86400")
    try:
        async with await connect(settings) as conn, conn.transaction(), conn.cursor() as cur:
            await cur.execute(
                "SELECT facility_id FROM pending_devices WHERE device_id = %s FOR UPDATE",
                (device_id,),
            )
            pending = await cur.fetchone()
            if pending is None:
                raise RegistryError(
                    f"no pending device {device_id!r}; see `carehub devices pending`"
                )
            facility_id = pending[0]
            if not await facility_exists(conn, facility_id):
                raise RegistryError(
                    f"device {device_id!r} names facility {facility_id!r}, which is not registered;"
                    " import the facility first"
                )
            if zone_id is not None and not await zone_exists(conn, facility_id, zone_id):
                raise RegistryError(_zone_missing(zone_id, facility_id))
            await cur.execute(
                _upsert(TABLES["devices"], sql.SQL("VALUES (%s, %s, %s, %s, %s, '', '')")),
                (device_id, facility_id, type, zone_id, heartbeat_s or catalogued.heartbeat_s),
            )
            await cur.execute("DELETE FROM pending_devices WHERE device_id = %s", (device_id,))
            await cur.execute("SELECT pg_notify(%s, 'devices')", (NOTIFY_CHANNEL,))
    except psycopg.Error as exc:
        raise _storage_error(exc) from exc
    logger.info(
        "registered pending device %s at facility %s as %s",
        device_id,
        facility_id,
        type,
        extra={"device_id": device_id, "facility_id": facility_id},
    )


@dataclass(frozen=True, slots=True)
class UnplacedDevice:
    """A registered device with credentials but no zone yet: waiting for its manager to place it."""

    device_id: str
    facility_id: str
    type: str
    # When the device was last heard, if ever (it may be connected and quiet).
    last_seen: datetime | None
    credentials_issued_at: datetime


async def list_unplaced(
    conn: psycopg.AsyncConnection[Any], facility_id: str | None = None
) -> list[UnplacedDevice]:
    """Devices with credentials in force and no zone, at one facility or everywhere."""
    try:
        async with conn.cursor(row_factory=class_row(UnplacedDevice)) as cur:
            await cur.execute(
                "SELECT d.id AS device_id, d.facility_id, d.type, s.last_seen,"
                " c.issued_at AS credentials_issued_at"
                " FROM devices d JOIN device_credentials c ON c.device_id = d.id"
                " LEFT JOIN device_state s ON s.device_id = d.id"
                " WHERE d.zone_id IS NULL AND c.secret_hash IS NOT NULL"
                " AND (%(facility)s::text IS NULL OR d.facility_id = %(facility)s)"
                " ORDER BY s.last_seen DESC NULLS LAST, d.id",
                {"facility": facility_id},
            )
            return await cur.fetchall()
    except psycopg.Error as exc:
        raise _storage_error(exc) from exc


async def place_device(
    conn: psycopg.AsyncConnection[Any], device_id: str, zone_id: str
) -> DeviceInfo:
    """Put a registered device in a zone of its facility; running hubs reload the registry."""
    if not _ID.fullmatch(zone_id):
        raise RegistryError(f"{zone_id[:80]!r} is not a zone id")
    try:
        async with conn.transaction():
            device = await find_device(conn, device_id)
            if device is None:
                raise RegistryError(f"no device {device_id!r}")
            if not await zone_exists(conn, device.facility_id, zone_id):
                raise RegistryError(_zone_missing(zone_id, device.facility_id))
            await conn.execute(
                "UPDATE devices SET zone_id = %s WHERE id = %s", (zone_id, device_id)
            )
            await conn.execute("SELECT pg_notify(%s, 'devices')", (NOTIFY_CHANNEL,))
    except psycopg.Error as exc:
        raise _storage_error(exc) from exc
    return device


async def without_credentials(
    conn: psycopg.AsyncConnection[Any], device_ids: Sequence[str]
) -> list[str]:
    """Which of these registered devices have no credentials in force, in the order given."""
    try:
        cur = await conn.execute(
            "SELECT d.id FROM devices d LEFT JOIN device_credentials c ON c.device_id = d.id"
            " WHERE d.id = ANY(%s) AND c.secret_hash IS NULL",
            (list(device_ids),),
        )
        found = {row[0] for row in await cur.fetchall()}
    except psycopg.Error as exc:
        raise _storage_error(exc) from exc
    return [device_id for device_id in device_ids if device_id in found]
