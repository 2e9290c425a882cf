"""Registry file parsing and validation (SPEC §5): CSV and XLSX, row errors, header checks."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import pytest
from openpyxl import Workbook

from hub.errors import ImportFileError, ImportRowError
from hub.importer import (
    COLUMNS,
    DeviceRow,
    FacilityRow,
    RegistryKind,
    ZoneRow,
    parse_rows,
)

DATA = Path(__file__).parent.parent / "data"

GOOD_FACILITY = {
    "id": "f-1",
    "name": "阳光托育中心",
    "kind": "childcare",
    "district": "瓯海区",
    "address": "古岸路 18 号",
    "latitude": "27.97",
    "longitude": "120.61",
    "registration_no": "R-1",
    "beds": "0",
    "childcare_places": "80",
}
GOOD_ZONE = {
    "facility_id": "f-1",
    "zone_id": "toddler-1",
    "name": "托小一班",
    "kind": "class",
    "capacity": "15",
    "class_type": "托小班",
}
GOOD_DEVICE = {
    "id": "fs-1",
    "facility_id": "f-1",
    "type": "fall_sensor",
    "zone_id": "room-101",
    "heartbeat_s": "",
    "vendor": "",
    "model": "",
}
GOOD: dict[RegistryKind, dict[str, str]] = {
    "facilities": GOOD_FACILITY,
    "zones": GOOD_ZONE,
    "devices": GOOD_DEVICE,
}


def write_csv(path: Path, rows: list[list[str]], *, encoding: str = "utf-8") -> Path:
    """Write rows (the header first) as a CSV file."""
    with path.open("w", encoding=encoding, newline="") as handle:
        csv.writer(handle).writerows(rows)
    return path


def write_xlsx(path: Path, rows: list[list[object]]) -> Path:
    """Write rows (the header first) to the first sheet of a new workbook."""
    workbook = Workbook()
    sheet = workbook.active
    for row in rows:
        sheet.append(row)
    workbook.save(path)
    return path


def table(kind: RegistryKind, *records: dict[str, str]) -> list[list[str]]:
    """A header row of `kind` and one row per record, in SPEC column order."""
    return [list(COLUMNS[kind]), *([record[name] for name in COLUMNS[kind]] for record in records)]


def with_id(kind: RegistryKind, record: dict[str, str], suffix: str) -> dict[str, str]:
    """A copy of record with its key made unique by suffix."""
    key = "zone_id" if kind == "zones" else "id"
    return {**record, key: record[key] + suffix}


def split(items: list[Any]) -> tuple[list[Any], list[ImportRowError]]:
    """The rows and the errors parse_rows produced."""
    rows = [item for item in items if not isinstance(item, ImportRowError)]
    errors = [item for item in items if isinstance(item, ImportRowError)]
    return rows, errors


def sample_rows(kind: RegistryKind) -> list[Any]:
    """The rows of the sample CSV file of `kind`, which parses without a single error."""
    rows, errors = split(list(parse_rows(kind, DATA / f"{kind}.csv")))
    assert errors == []
    return rows


def test_sample_facilities_csv_parses_into_rows() -> None:
    """The sample facilities file parses, with empty numbers as 0 and no map position as None."""
    rows = sample_rows("facilities")
    assert [row.id for row in rows] == ["f-sunshine", "f-kangle", "f-yilao", "f-nomap"]
    assert rows[0] == FacilityRow(
        row=2,
        id="f-sunshine",
        name="阳光托育中心",
        kind="childcare",
        district="瓯海区",
        address="温州市瓯海区娄桥街道古岸路 18 号",
        latitude=27.9712,
        longitude=120.6133,
        registration_no="瓯托备 2024-017",
        beds=0,
        childcare_places=80,
    )
    assert rows[2].address == "温州市鹿城区五马街道, 解放街 3 号"
    assert (rows[3].latitude, rows[3].longitude) == (None, None)


def test_sample_zones_csv_parses_into_rows() -> None:
    """Zones parse with class types on classes only, and an empty capacity as None."""
    rows = sample_rows("zones")
    assert rows[0] == ZoneRow(
        row=2,
        facility_id="f-sunshine",
        zone_id="infant-1",
        name="乳儿一班",
        kind="class",
        capacity=10,
        class_type="乳儿班",
    )
    by_id = {row.zone_id: row for row in rows}
    assert by_id["hall"].class_type is None
    assert by_id["dining"].capacity is None


def test_device_heartbeat_defaults_to_its_type_in_the_catalogue() -> None:
    """An empty heartbeat_s takes the device type's catalogue default; a given one is kept."""
    by_id = {row.id: row for row in sample_rows("devices")}
    assert by_id["fs-101"] == DeviceRow(
        row=2,
        id="fs-101",
        facility_id="f-kangle",
        type="fall_sensor",
        zone_id="room-101",
        heartbeat_s=300,
        vendor="Aqara",
        model="FP2",
    )
    assert by_id["oc-hall"].heartbeat_s == 60
    assert by_id["eb-101"].heartbeat_s == 120
    assert by_id["eb-yilao"].zone_id is None


@pytest.mark.parametrize("kind", ["facilities", "zones", "devices"])
def test_xlsx_parses_like_the_same_csv(kind: RegistryKind, tmp_path: Path) -> None:
    """An XLSX file with the same header row gives the same rows as its CSV, numbers included."""
    with (DATA / f"{kind}.csv").open(encoding="utf-8") as handle:
        rows = list(csv.reader(handle))

    def typed(cell: str) -> object:
        # Excel stores numbers as numbers: write them that way, as a spreadsheet user would.
        try:
            return int(cell)
        except ValueError:
            pass
        try:
            return float(cell)
        except ValueError:
            return cell or None

    typed_rows = [rows[0], *([typed(cell) for cell in row] for row in rows[1:])]
    xlsx = write_xlsx(tmp_path / f"{kind}.xlsx", typed_rows)
    assert list(parse_rows(kind, xlsx)) == list(parse_rows(kind, DATA / f"{kind}.csv"))


def test_xlsx_numbers_become_the_text_a_csv_would_hold(tmp_path: Path) -> None:
    """A numeric id cell is an id and a capacity stored as 15.0 is 15."""
    xlsx = write_xlsx(
        tmp_path / "zones.xlsx",
        [list(COLUMNS["zones"]), ["f-1", 101, "101 室", "room", 2.0, None]],
    )
    assert list(parse_rows("zones", xlsx)) == [
        ZoneRow(
            row=2,
            facility_id="f-1",
            zone_id="101",
            name="101 室",
            kind="room",
            capacity=2,
            class_type=None,
        )
    ]


# (registry, cells changed from a good row, the column the error must name, words it must say)
BAD_CELLS: dict[str, tuple[RegistryKind, dict[str, str], str, str]] = {
    "bad-id": ("facilities", {"id": "bad id"}, "id", "not an id"),
    "id-too-long": ("facilities", {"id": "x" * 65}, "id", "not an id"),
    "bad-facility-kind": ("facilities", {"kind": "hotel"}, "kind", "not one of"),
    "latitude-range": ("facilities", {"latitude": "91"}, "latitude", "outside -90..90"),
    "longitude-range": ("facilities", {"longitude": "-180.5"}, "longitude", "outside"),
    "latitude-text": ("facilities", {"latitude": "north"}, "latitude", "not a number"),
    "half-position": ("facilities", {"longitude": ""}, "longitude", "both or neither"),
    "negative-beds": ("facilities", {"beds": "-1"}, "beds", "below 0"),
    "fraction": ("facilities", {"childcare_places": "2.5"}, "childcare_places", "whole"),
    "empty-name": ("facilities", {"name": ""}, "name", "is empty"),
    "empty-district": ("facilities", {"district": ""}, "district", "is empty"),
    "class-type-on-room": (
        "zones",
        {"kind": "room", "capacity": "2"},
        "class_type",
        "only for zones of kind 'class'",
    ),
    "class-without-type": ("zones", {"class_type": ""}, "class_type", "a class needs"),
    "unknown-class-type": ("zones", {"class_type": "大班"}, "class_type", "not one of"),
    "over-national-max": ("zones", {"capacity": "16"}, "capacity", "national limit of 15"),
    "capacity-text": ("zones", {"capacity": "abc"}, "capacity", "not a whole number"),
    "empty-facility": ("zones", {"facility_id": ""}, "facility_id", "is empty"),
    "bad-zone-kind": ("zones", {"kind": "ward"}, "kind", "not one of room, class, common"),
    "unknown-device-type": ("devices", {"type": "toaster"}, "type", "not one of"),
    "heartbeat-zero": ("devices", {"heartbeat_s": "0"}, "heartbeat_s", "below 1"),
    "heartbeat-day": ("devices", {"heartbeat_s": "90000"}, "heartbeat_s", "above 86400"),
    "bad-zone-id": ("devices", {"zone_id": "room 101"}, "zone_id", "not an id"),
}


@pytest.mark.parametrize("case", BAD_CELLS.values(), ids=BAD_CELLS.keys())
@pytest.mark.parametrize("suffix", ["csv", "xlsx"])
def test_bad_cell_is_reported_with_its_row_and_column_and_other_rows_kept(
    case: tuple[RegistryKind, dict[str, str], str, str], suffix: str, tmp_path: Path
) -> None:
    """A bad cell yields one error naming its sheet row and column; the rows around it parse."""
    kind, change, column, message = case
    good = GOOD[kind]
    bad = {**with_id(kind, good, "b"), **change}
    rows = table(kind, with_id(kind, good, "a"), bad, with_id(kind, good, "c"))
    path = tmp_path / f"{kind}.{suffix}"
    if suffix == "csv":
        write_csv(path, rows)
    else:
        write_xlsx(path, rows)
    parsed, errors = split(list(parse_rows(kind, path)))
    assert [(error.row, error.column) for error in errors] == [(3, column)]
    assert message in errors[0].message
    assert [row.row for row in parsed] == [2, 4]


def test_every_bad_cell_of_a_row_is_reported_in_column_order(tmp_path: Path) -> None:
    """A row with several bad cells reports each, so the file can be fixed in one pass."""
    bad = {**GOOD_FACILITY, "id": "no good", "kind": "hotel", "latitude": "95", "beds": "-3"}
    path = write_csv(tmp_path / "f.csv", table("facilities", bad))
    errors = list(parse_rows("facilities", path))
    assert [(e.row, e.column) for e in errors] == [
        (2, "id"),
        (2, "kind"),
        (2, "latitude"),
        (2, "beds"),
    ]


def test_a_key_repeated_in_one_file_is_refused_on_the_later_row(tmp_path: Path) -> None:
    """Two rows for one zone: the first is kept, the second names the row it repeats."""
    path = write_csv(tmp_path / "z.csv", table("zones", GOOD_ZONE, {**GOOD_ZONE, "name": "again"}))
    rows, errors = split(list(parse_rows("zones", path)))
    assert [row.row for row in rows] == [2]
    assert [(e.row, e.column) for e in errors] == [(3, "zone_id")]
    assert "already on row 2" in errors[0].message


def test_blank_rows_are_skipped_and_row_numbers_stay_the_sheets(tmp_path: Path) -> None:
    """Blank lines are not rows to import, and the next error still names the sheet's row."""
    rows = table("facilities", GOOD_FACILITY)
    rows += [["", "", ""], {**GOOD_FACILITY, "id": "f-2", "kind": "?"}.values()]
    path = write_csv(tmp_path / "f.csv", rows)
    parsed, errors = split(list(parse_rows("facilities", path)))
    assert len(parsed) == 1
    assert [(e.row, e.column) for e in errors] == [(4, "kind")]


def test_cells_beyond_the_header_are_refused(tmp_path: Path) -> None:
    """A value in a column with no header is an error of that row, not silently dropped."""
    rows = table("devices", GOOD_DEVICE)
    rows[1].append("stray")
    path = write_csv(tmp_path / "d.csv", rows)
    assert [(e.row, e.column) for e in parse_rows("devices", path)] == [(2, "#8")]


def test_columns_may_come_in_any_order(tmp_path: Path) -> None:
    """The header names matter, not their order."""
    names = list(reversed(COLUMNS["zones"]))
    path = write_csv(tmp_path / "z.csv", [names, [GOOD_ZONE[name] for name in names]])
    assert [row.zone_id for row in parse_rows("zones", path)] == ["toddler-1"]


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        pytest.param(list(COLUMNS["zones"][:-1]), "missing column(s) class_type", id="missing"),
        pytest.param(
            ["facility_id", "zone", "name", "kind", "capacity", "class_type"],
            "missing column(s) zone_id; unknown column(s) 'zone'",
            id="renamed",
        ),
        pytest.param([*COLUMNS["zones"], "notes"], "unknown column(s) 'notes'", id="extra"),
        pytest.param([*COLUMNS["zones"], "name"], "column 'name' appears twice", id="twice"),
        pytest.param(
            ["Facility_ID", *COLUMNS["zones"][1:]], "unknown column(s) 'Facility_ID'", id="case"
        ),
    ],
)
def test_a_wrong_header_refuses_the_file_naming_the_columns(
    header: list[str], expected: str, tmp_path: Path
) -> None:
    """A header not exactly SPEC §5's is refused before any row, naming the wrong columns."""
    path = write_csv(tmp_path / "z.csv", [header, ["f-1"] * len(header)])
    with pytest.raises(ImportFileError) as caught:
        parse_rows("zones", path)
    assert expected in str(caught.value)
    assert ",".join(COLUMNS["zones"]) in str(caught.value)


def test_a_facilities_file_given_as_devices_is_refused(tmp_path: Path) -> None:
    """Importing a file of another registry fails on its header, not on every row."""
    with pytest.raises(ImportFileError, match="not a devices file"):
        parse_rows("devices", DATA / "facilities.csv")


def test_utf8_bom_is_accepted(tmp_path: Path) -> None:
    """A CSV saved by Excel as 'CSV UTF-8' (with a byte order mark) parses like one without."""
    path = write_csv(tmp_path / "f.csv", table("facilities", GOOD_FACILITY), encoding="utf-8-sig")
    assert path.read_bytes().startswith(b"\xef\xbb\xbf")
    assert [row.id for row in parse_rows("facilities", path)] == ["f-1"]


def test_a_gbk_csv_is_refused_with_a_hint(tmp_path: Path) -> None:
    """A CSV in GBK (what Chinese Excel saves by default) is refused naming the line and the fix."""
    path = write_csv(tmp_path / "f.csv", table("facilities", GOOD_FACILITY), encoding="gbk")
    with pytest.raises(ImportFileError, match=r"line 2 .* not UTF-8.*CSV UTF-8"):
        parse_rows("facilities", path)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        pytest.param(b"", "empty", id="empty"),
        pytest.param(b"\n\n", "empty", id="blank"),
        pytest.param(b"\xd0\xcf\x11\xe0rest-of-an-old-xls", "old .xls format", id="xls"),
        pytest.param(b"PK\x03\x04not-really-a-zip", "not a readable XLSX", id="broken-xlsx"),
    ],
)
def test_unreadable_files_are_refused(content: bytes, expected: str, tmp_path: Path) -> None:
    """An empty, old-format or broken file is refused as a whole with a reason."""
    path = tmp_path / "f.csv"
    path.write_bytes(content)
    with pytest.raises(ImportFileError, match=expected):
        parse_rows("facilities", path)


def test_a_missing_file_is_refused(tmp_path: Path) -> None:
    """A path that does not exist is an ImportFileError, not a traceback."""
    with pytest.raises(ImportFileError, match="cannot read"):
        parse_rows("facilities", tmp_path / "nope.csv")


def test_xlsx_reads_the_first_sheet_and_skips_its_blank_rows(tmp_path: Path) -> None:
    """Only the first sheet is read; a bad row after a blank one names its sheet row."""
    workbook = Workbook()
    first = workbook.active
    first.append(list(COLUMNS["devices"]))
    first.append([GOOD_DEVICE[name] or None for name in COLUMNS["devices"]])
    first.append([])
    first.append(["d-2", "f-1", "toaster"])
    workbook.create_sheet("notes").append(["ignored"])
    path = tmp_path / "d.xlsx"
    workbook.save(path)
    rows, errors = split(list(parse_rows("devices", path)))
    assert [row.id for row in rows] == ["fs-1"]
    assert [(e.row, e.column) for e in errors] == [(4, "type")]
