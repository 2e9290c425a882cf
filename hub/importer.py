"""The registry importer: facilities, zones and devices from CSV or XLSX files (SPEC §5)."""

from __future__ import annotations

import asyncio
import codecs
import csv
import math
import re
import sys
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass, field, fields
from datetime import date, datetime
from datetime import time as clock_time
from itertools import islice
from pathlib import Path
from typing import IO, Any, TypeAlias

from openpyxl import load_workbook

import devices
from devices import registry_files
from hub.errors import ImportFileError, ImportRowError
from hub.settings import Settings
from hub.storage import registry as store
from hub.storage.pool import connect

RegistryKind: TypeAlias = registry_files.RegistryKind
# The header rows of SPEC §5, exactly; the order in a file may differ.
COLUMNS = registry_files.IMPORT_HEADERS
FACILITY_KINDS = registry_files.FACILITY_KINDS
ZONE_KINDS = registry_files.ZONE_KINDS
# National limits of a childcare class (SPEC §5): most children a class of the type may take.
CLASS_MAX_CHILDREN: dict[str, int] = {
    class_type: limits[0] for class_type, limits in devices.CLASS_LIMITS.items()
}
# The devices table's CHECK: a heartbeat of more than a day would hide an offline device.
HEARTBEAT_RANGE = (1, 86400)
# One transaction per batch: small enough that a failed batch is cheap to redo row by row,
# large enough that COPY and the upsert dominate the round trips.
BATCH_ROWS = 1000
# The database stores counts as integer; a larger number is a typo, not a facility.
_INT4_MAX = 2**31 - 1
_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_WHOLE = re.compile(r"[+-]?\d+(\.0*)?")
_XLSX_MAGIC = b"PK\x03\x04"
_XLS_MAGIC = b"\xd0\xcf\x11\xe0"


@dataclass(frozen=True, slots=True)
class FacilityRow:
    """One valid row of a facilities file."""

    row: int
    id: str
    name: str
    kind: str
    district: str
    address: str
    latitude: float | None
    longitude: float | None
    registration_no: str
    beds: int
    childcare_places: int


@dataclass(frozen=True, slots=True)
class ZoneRow(registry_files.Zone):
    """One valid row of a zones file, and its row number there."""

    row: int


@dataclass(frozen=True, slots=True)
class DeviceRow:
    """One valid row of a devices file; heartbeat_s already holds the type's default if empty."""

    row: int
    id: str
    facility_id: str
    type: str
    zone_id: str | None
    heartbeat_s: int
    vendor: str
    model: str


RegistryRow: TypeAlias = FacilityRow | ZoneRow | DeviceRow
# Each row type's fields but `row` are its file's SPEC §5 columns, in the order the
# registry tables take them.
_RECORD_FIELDS: dict[type, tuple[str, ...]] = {
    row_type: tuple(field.name for field in fields(row_type) if field.name != "row")
    for row_type in (FacilityRow, ZoneRow, DeviceRow)
}


@dataclass(frozen=True)
class ImportReport:
    """What an import did: rows stored, and every row error with its row and column."""

    imported: int
    errors: list[ImportRowError] = field(default_factory=list)

    @property
    def refused(self) -> int:
        """How many rows were refused (a row may carry several errors)."""
        return len({error.row for error in self.errors})


# --- reading -----------------------------------------------------------------------------


# (row number, cells) of each non-empty row of a file.
_Records: TypeAlias = Generator[tuple[int, tuple[str, ...]], None, None]


@dataclass(frozen=True, slots=True)
class _Sheet:
    """A file opened for reading: its header, its data rows, and how many rows it says it has."""

    header: tuple[str, ...]
    header_row: int
    rows: _Records
    total: int | None


def _cell_text(value: object) -> str:
    """An XLSX cell as the text a CSV would hold, so both formats validate the same way."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        # Excel stores every number as a float; 120.0 beds is 120 beds.
        return str(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, datetime | date | clock_time):
        return value.isoformat()
    return str(value).strip()


def _open(path: Path) -> _Sheet:
    try:
        with path.open("rb") as probe:
            magic = probe.read(4)
    except OSError as exc:
        raise ImportFileError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    if magic == _XLS_MAGIC:
        raise ImportFileError(f"{path}: old .xls format; save it as .xlsx or as CSV UTF-8")
    if magic == _XLSX_MAGIC:
        return _open_xlsx(path)
    return _open_csv(path)


def _check_utf8(path: Path) -> int:
    """Refuse a non-UTF-8 file before any row is imported; return its line count."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    lines = 1
    offset = 0
    last = b"\n"
    with path.open("rb") as raw:
        while chunk := raw.read(1 << 20):
            last = chunk[-1:]
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError as exc:
                line = lines + chunk[: exc.start].count(b"\n")
                raise ImportFileError(
                    f"{path}: line {line} (byte {offset + exc.start}) is not UTF-8; Chinese Excel "
                    "often saves CSV as GBK: choose 'CSV UTF-8' when saving"
                ) from exc
            lines += chunk.count(b"\n")
            offset += len(chunk)
        try:
            decoder.decode(b"", final=True)
        except UnicodeDecodeError as exc:
            raise ImportFileError(f"{path}: ends inside a UTF-8 character") from exc
    # The last line has no newline of its own unless the file ends with one.
    return lines - 1 if last == b"\n" else lines


def _open_csv(path: Path) -> _Sheet:
    lines = _check_utf8(path)
    handle = path.open(encoding="utf-8-sig", newline="")
    records = _csv_records(handle)
    header = next(records, None)
    if header is None:
        handle.close()
        raise ImportFileError(f"{path}: the file is empty; the first row must be the header")
    # Lines, not records: a quoted cell may span lines, so this is an upper bound for the bar.
    return _Sheet(header[1], header[0], records, max(0, lines - header[0]) or None)


def _csv_records(handle: IO[str]) -> _Records:
    """(row number, cells) per record; a record is a spreadsheet row even if a cell spans lines."""
    with handle:
        try:
            for number, cells in enumerate(csv.reader(handle), start=1):
                if any(cell.strip() for cell in cells):
                    yield number, tuple(cell.strip() for cell in cells)
        except csv.Error as exc:
            raise ImportFileError(f"{handle.name}: not a readable CSV file ({exc})") from exc


def _open_xlsx(path: Path) -> _Sheet:
    try:
        # data_only: a formula cell imports as the value Excel last computed, not as "=A1".
        workbook = load_workbook(path, read_only=True, data_only=True)
    # openpyxl raises many kinds of error for a broken zip or sheet.
    except Exception as exc:
        raise ImportFileError(f"{path}: not a readable XLSX workbook ({exc})") from exc
    if not workbook.worksheets:
        workbook.close()
        raise ImportFileError(f"{path}: the workbook has no sheet")
    sheet = workbook.worksheets[0]
    declared = sheet.max_row
    # Some writers store a wrong dimension; without this, rows past it would be dropped.
    sheet.reset_dimensions()
    records = _xlsx_records(workbook, sheet)
    header = next(records, None)
    if header is None:
        workbook.close()
        raise ImportFileError(f"{path}: the first sheet is empty; its first row must be the header")
    total = declared - header[0] if isinstance(declared, int) and declared > header[0] else None
    return _Sheet(header[1], header[0], records, total)


def _xlsx_records(workbook: Any, sheet: Any) -> _Records:
    try:
        # Gaps are filled with empty rows, so the count is the sheet's own row number.
        for number, values in enumerate(sheet.iter_rows(values_only=True), start=1):
            cells = tuple(_cell_text(value) for value in values)
            if any(cells):
                yield number, cells
    finally:
        workbook.close()


def _column_map(kind: RegistryKind, path: Path, header: tuple[str, ...]) -> dict[str, int]:
    """Where each SPEC column is in the file; refuses a header that is not exactly SPEC §5's."""
    expected = COLUMNS[kind]
    names = list(header)
    # Trailing empty header cells are formatting, not columns.
    while names and not names[-1]:
        names.pop()
    positions: dict[str, int] = {}
    problems: list[str] = []
    for index, name in enumerate(names):
        if not name:
            problems.append(f"column {index + 1} has no header name")
        elif name in positions:
            problems.append(f"column {name!r} appears twice")
        else:
            positions[name] = index
    missing = [name for name in expected if name not in positions]
    unknown = [name for name in positions if name not in expected]
    if missing:
        problems.append("missing column(s) " + ", ".join(missing))
    if unknown:
        problems.append("unknown column(s) " + ", ".join(repr(name) for name in unknown))
    if problems:
        raise ImportFileError(
            f"{path}: not a {kind} file: {'; '.join(problems)}. "
            f"The header row must be exactly: {','.join(expected)}"
        )
    return positions


# --- validation --------------------------------------------------------------------------


class _Cells:
    """One data row's cells by column name; collects every problem instead of stopping at one."""

    def __init__(self, row: int, cells: dict[str, str]) -> None:
        self.row = row
        self.cells = cells
        self.errors: list[ImportRowError] = []

    def fail(self, column: str, message: str) -> None:
        self.errors.append(ImportRowError(self.row, column, message))

    def text(self, column: str, *, required: bool = False, max_length: int = 200) -> str:
        value = self.cells[column]
        if required and not value:
            self.fail(column, "is empty; a value is required")
        elif len(value) > max_length:
            self.fail(column, f"is {len(value)} characters long; at most {max_length} allowed")
        return value

    def ident(self, column: str, *, required: bool = True) -> str:
        value = self.cells[column]
        if not value:
            if required:
                self.fail(column, "is empty; a value is required")
        elif not _ID.fullmatch(value):
            self.fail(column, f"{value!r} is not an id: use 1-64 of A-Z a-z 0-9 _ -")
        return value

    def choice(self, column: str, choices: tuple[str, ...]) -> str:
        value = self.cells[column]
        if not value:
            self.fail(column, "is empty; one of " + ", ".join(choices) + " is required")
        elif value not in choices:
            self.fail(column, f"{value!r} is not one of " + ", ".join(choices))
        return value

    def whole(self, column: str, *, minimum: int = 0, maximum: int = _INT4_MAX) -> int | None:
        value = self.cells[column]
        if not value:
            return None
        if not _WHOLE.fullmatch(value):
            self.fail(column, f"{value!r} is not a whole number")
            return None
        number = int(float(value)) if "." in value else int(value)
        if number < minimum:
            self.fail(column, f"{number} is below {minimum}")
            return None
        if number > maximum:
            self.fail(column, f"{number} is above {maximum}")
            return None
        return number

    def degrees(self, column: str, limit: float) -> float | None:
        value = self.cells[column]
        if not value:
            return None
        try:
            number = float(value)
        except ValueError:
            self.fail(column, f"{value!r} is not a number of degrees")
            return None
        if not math.isfinite(number) or not -limit <= number <= limit:
            self.fail(column, f"{value} is outside -{limit:g}..{limit:g}")
            return None
        return number


def _facility(cells: _Cells) -> FacilityRow:
    latitude = cells.degrees("latitude", 90)
    longitude = cells.degrees("longitude", 180)
    # A facility is either on the map or not; half a position would put it on the equator.
    if (latitude is None) != (longitude is None) and not cells.errors:
        empty = "latitude" if latitude is None else "longitude"
        cells.fail(empty, "is empty while the other coordinate is given; give both or neither")
    return FacilityRow(
        row=cells.row,
        id=cells.ident("id"),
        name=cells.text("name", required=True),
        kind=cells.choice("kind", FACILITY_KINDS),
        district=cells.text("district", required=True),
        address=cells.text("address", max_length=500),
        latitude=latitude,
        longitude=longitude,
        registration_no=cells.text("registration_no", max_length=64),
        beds=cells.whole("beds") or 0,
        childcare_places=cells.whole("childcare_places") or 0,
    )


def _zone(cells: _Cells) -> ZoneRow:
    kind = cells.choice("kind", ZONE_KINDS)
    capacity = cells.whole("capacity")
    class_type: str | None = cells.cells["class_type"] or None
    if class_type is not None and class_type not in CLASS_MAX_CHILDREN:
        cells.fail("class_type", f"{class_type!r} is not one of " + ", ".join(CLASS_MAX_CHILDREN))
    elif kind == "class" and class_type is None:
        # The staff-ratio alert needs the class type to know its ratio.
        cells.fail("class_type", "is empty; a class needs one of " + ", ".join(CLASS_MAX_CHILDREN))
    elif kind in ("room", "common") and class_type is not None:
        cells.fail("class_type", f"is only for zones of kind 'class', not {kind!r}")
    elif class_type is not None and capacity is not None:
        limit = CLASS_MAX_CHILDREN[class_type]
        if capacity > limit:
            cells.fail(
                "capacity", f"{capacity} is above the national limit of {limit} for a {class_type}"
            )
    return ZoneRow(
        row=cells.row,
        facility_id=cells.ident("facility_id"),
        zone_id=cells.ident("zone_id"),
        name=cells.text("name", required=True),
        kind=kind,
        capacity=capacity,
        class_type=class_type,
    )


def _device(cells: _Cells) -> DeviceRow:
    device_type = cells.choice("type", tuple(sorted(devices.CATALOGUE)))
    heartbeat_s = cells.whole("heartbeat_s", minimum=HEARTBEAT_RANGE[0], maximum=HEARTBEAT_RANGE[1])
    if heartbeat_s is None:
        catalogued = devices.CATALOGUE.get(device_type)
        heartbeat_s = catalogued.heartbeat_s if catalogued else devices.DEFAULT_HEARTBEAT_S
    return DeviceRow(
        row=cells.row,
        id=cells.ident("id"),
        facility_id=cells.ident("facility_id"),
        type=device_type,
        zone_id=cells.ident("zone_id", required=False) or None,
        heartbeat_s=heartbeat_s,
        vendor=cells.text("vendor", max_length=100),
        model=cells.text("model", max_length=100),
    )


_VALIDATORS: dict[str, Callable[[_Cells], RegistryRow]] = {
    "facilities": _facility,
    "zones": _zone,
    "devices": _device,
}


def _key(record: RegistryRow) -> tuple[str, ...]:
    if isinstance(record, ZoneRow):
        return (record.facility_id, record.zone_id)
    return (record.id,)


def count_rows(path: Path) -> int | None:
    """About how many data rows a file holds (for a progress bar), or None when unknown."""
    return _open(path).total


def parse_rows(
    kind: RegistryKind, path: Path
) -> Generator[RegistryRow | ImportRowError, None, None]:
    """Each data row of a CSV or XLSX file, validated: a row value, or that row's errors.

    Raises ImportFileError before yielding anything when the file or its header is wrong.
    """
    sheet = _open(path)
    try:
        positions = _column_map(kind, path, sheet.header)
    except ImportFileError:
        sheet.rows.close()
        raise
    return _validated(kind, sheet, positions)


def _validated(
    kind: RegistryKind, sheet: _Sheet, positions: dict[str, int]
) -> Generator[RegistryRow | ImportRowError, None, None]:
    validate = _VALIDATORS[kind]
    width = max(positions.values()) + 1
    key_columns = ("facility_id", "zone_id") if kind == "zones" else ("id",)
    first_seen: dict[tuple[str, ...], int] = {}
    for number, raw in sheet.rows:
        by_name = {name: raw[i] if i < len(raw) else "" for name, i in positions.items()}
        cells = _Cells(number, by_name)
        for index in range(width, len(raw)):
            if raw[index]:
                cells.fail(f"#{index + 1}", f"{raw[index]!r} is beyond the last header column")
        record = validate(cells)
        if not cells.errors:
            key = _key(record)
            earlier = first_seen.setdefault(key, number)
            if earlier != number:
                # Two rows for one key: the file contradicts itself, so the later row is refused.
                cells.fail(key_columns[-1], f"{'/'.join(key)} is already on row {earlier}")
        if cells.errors:
            # In the file's column order, the order an operator reads the row in.
            yield from sorted(cells.errors, key=lambda error: positions.get(error.column, width))
        else:
            yield record


# --- import ------------------------------------------------------------------------------


class _Progress:
    """A one-line progress bar on stderr: rows done of total, and the rate."""

    _WIDTH = 30
    # Redrawing more often than this costs more than it tells anyone.
    _INTERVAL_S = 0.1

    def __init__(self, label: str, total: int | None, stream: IO[str]) -> None:
        self._label = label
        self._total = total
        self._stream = stream
        self._started = time.monotonic()
        self._drawn = 0.0

    def update(self, done: int, *, final: bool = False) -> None:
        now = time.monotonic()
        if not final and now - self._drawn < self._INTERVAL_S:
            return
        self._drawn = now
        rate = done / max(now - self._started, 1e-6)
        if self._total:
            total = max(self._total, done)
            filled = self._WIDTH * done // total
            bar = f"[{'#' * filled}{'.' * (self._WIDTH - filled)}] {done}/{total}"
        else:
            bar = f"{done} rows"
        # \x1b[K clears what a longer previous line left behind.
        self._stream.write(f"\r{self._label} {bar}  {rate:,.0f} rows/s\x1b[K")
        if final:
            self._stream.write("\n")
        self._stream.flush()


def _as_record(record: RegistryRow) -> store.Record:
    """The row number, and the values in the column order of hub.storage.registry."""
    return record.row, tuple(getattr(record, name) for name in _RECORD_FIELDS[type(record)])


async def import_file(
    settings: Settings, kind: RegistryKind, path: Path, *, progress: bool = True
) -> ImportReport:
    """Validate a registry file and upsert its good rows, batch by batch; report the bad ones."""
    if kind not in COLUMNS:
        raise ImportFileError(f"unknown registry {kind!r}; one of {', '.join(COLUMNS)}")
    # Opening and the header check run before any connection, so a wrong file changes nothing.
    rows = await asyncio.to_thread(parse_rows, kind, path)
    bar: _Progress | None = None
    if progress and sys.stderr.isatty():
        bar = _Progress(f"{kind}:", await asyncio.to_thread(count_rows, path), sys.stderr)
    errors: list[ImportRowError] = []
    imported = 0
    done = 0
    try:
        async with await connect(settings) as conn:
            writer = store.RegistryWriter(conn, kind)
            await writer.prepare()
            while batch := await asyncio.to_thread(lambda: list(islice(rows, BATCH_ROWS))):
                records = [_as_record(i) for i in batch if not isinstance(i, ImportRowError)]
                errors.extend(i for i in batch if isinstance(i, ImportRowError))
                if records:
                    stored, refused = await writer.upsert(records)
                    imported += stored
                    errors.extend(refused)
                done += len({item.row for item in batch})
                if bar:
                    bar.update(done)
            if imported:
                await writer.announce()
    finally:
        rows.close()
        if bar:
            bar.update(done, final=True)
    errors.sort(key=lambda error: error.row)
    return ImportReport(imported=imported, errors=errors)
