"""Registry import into a real PostgreSQL: good rows stored, bad rows named, idempotent."""

from __future__ import annotations

import asyncio
import csv
import io
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from openpyxl import Workbook

from devices import topic
from hub.cli import main
from hub.errors import ImportFileError, RegistryError, StorageError
from hub.importer import COLUMNS, RegistryKind, import_file
from hub.settings import Settings, load_settings
from hub.storage.migrate import migrate
from hub.storage.pool import connect
from hub.storage.registry import (
    NOTIFY_CHANNEL,
    RegistryWriter,
    list_pending,
    register_pending,
)
from tests.fix_hub import DB, rows

pytestmark = pytest.mark.db

DATA = Path(__file__).parent.parent / "data"
KINDS: tuple[RegistryKind, ...] = ("facilities", "zones", "devices")


@pytest.fixture
async def settings(database_url: str, db_schema: str) -> Settings:
    """Settings for this test's own schema, migrated."""
    settings = load_settings(
        database_url=database_url, database_schema=db_schema, timescaledb="off"
    )
    await migrate(settings)
    return settings


@pytest.fixture
async def db(settings: Settings) -> AsyncIterator[DB]:
    """A connection to the test's schema, for assertions."""
    async with await connect(settings) as conn:
        yield conn


def read_csv(path: Path) -> list[list[str]]:
    """A CSV file's rows, the header first."""
    with path.open(encoding="utf-8-sig", newline="") as handle:
        return list(csv.reader(handle))


def write_csv(path: Path, table: list[list[str]]) -> Path:
    """Write rows (the header first) as a UTF-8 CSV."""
    with path.open("w", encoding="utf-8", newline="") as handle:
        csv.writer(handle).writerows(table)
    return path


def write_xlsx(path: Path, table: list[list[str]]) -> Path:
    """Write rows to a workbook as a spreadsheet user would: numbers as numbers, blanks empty."""

    def typed(cell: str) -> object:
        for parse in (int, float):
            try:
                return parse(cell)
            except ValueError:
                pass
        return cell or None

    workbook = Workbook()
    sheet = workbook.active
    sheet.append(table[0])
    for row in table[1:]:
        sheet.append([typed(cell) for cell in row])
    workbook.save(path)
    return path


def write(path: Path, table: list[list[str]], suffix: str) -> Path:
    """Write rows as CSV or XLSX."""
    target = path.with_suffix(f".{suffix}")
    return write_csv(target, table) if suffix == "csv" else write_xlsx(target, table)


async def import_samples(settings: Settings, folder: Path, suffix: str) -> None:
    """Import tests/data's facilities, zones and devices, written as CSV or XLSX."""
    for kind in KINDS:
        path = write(folder / kind, read_csv(DATA / f"{kind}.csv"), suffix)
        report = await import_file(settings, kind, path, progress=False)
        assert report.errors == []
        assert report.imported == len(read_csv(DATA / f"{kind}.csv")) - 1


@pytest.mark.parametrize("suffix", ["csv", "xlsx"])
async def test_sample_files_fill_the_registry(
    settings: Settings, db: DB, suffix: str, tmp_path: Path
) -> None:
    """Facilities, zones and devices from CSV or XLSX land in their tables with every column."""
    await import_samples(settings, tmp_path, suffix)
    assert await rows(
        db,
        "SELECT id, name, kind, district, latitude, longitude, registration_no, beds,"
        " childcare_places FROM facilities ORDER BY id",
    ) == [
        ("f-kangle", "康乐颐养院", "elderly", "瓯海区", 27.9905, 120.6371, "", 120, 0),
        ("f-nomap", "新桥托育点", "childcare", "瓯海区", None, None, "", 0, 25),
        (
            "f-sunshine",
            "阳光托育中心",
            "childcare",
            "瓯海区",
            27.9712,
            120.6133,
            "瓯托备 2024-017",
            0,
            80,
        ),
        (
            "f-yilao",
            "一老一小幸福家",
            "integrated",
            "鹿城区",
            28.0154,
            120.6553,
            "鹿民养 0042",
            40,
            30,
        ),
    ]
    assert await rows(
        db,
        "SELECT zone_id, kind, capacity, class_type FROM zones WHERE facility_id = 'f-sunshine'"
        " ORDER BY zone_id",
    ) == [
        ("hall", "common", 60, None),
        ("infant-1", "class", 10, "乳儿班"),
        ("older-1", "class", 20, "托大班"),
        ("toddler-1", "class", 15, "托小班"),
    ]
    assert await rows(
        db,
        "SELECT id, facility_id, type, zone_id, heartbeat_s, vendor, model FROM devices"
        " ORDER BY id",
    ) == [
        ("eb-101", "f-kangle", "emergency_button", "room-101", 120, "", ""),
        ("eb-yilao", "f-yilao", "emergency_button", None, 300, "", ""),
        ("fs-101", "f-kangle", "fall_sensor", "room-101", 300, "Aqara", "FP2"),
        ("oc-hall", "f-sunshine", "occupancy_counter", "hall", 60, "Hikvision", "DS-2CD"),
        ("oc-infant-1", "f-sunshine", "occupancy_counter", "infant-1", 30, "Hikvision", "DS-2CD"),
    ]


BAD_FACILITIES = [
    list(COLUMNS["facilities"]),
    ["f-a", "甲", "elderly", "瓯海区", "", "28", "120.6", "", "10", "0"],
    ["f b", "bad id", "elderly", "瓯海区", "", "", "", "", "", ""],  # row 3
    ["f-c", "bad kind", "hotel", "瓯海区", "", "", "", "", "", ""],  # row 4
    ["f-d", "lat", "elderly", "瓯海区", "", "95", "120", "", "", ""],  # row 5
    ["f-e", "beds", "elderly", "瓯海区", "", "", "", "", "-4", ""],  # row 6
    ["f-f", "", "elderly", "瓯海区", "", "", "", "", "", ""],  # row 7: empty name
    ["f-b", "乙", "childcare", "鹿城区", "", "", "", "", "0", "40"],
]
BAD_ZONES = [
    list(COLUMNS["zones"]),
    ["f-a", "room-1", "一号房", "room", "2", ""],
    ["f-a", "room-2", "class type", "room", "2", "托小班"],  # row 3
    ["f-b", "big", "over max", "class", "21", "托大班"],  # row 4
    ["f-x", "room-1", "unknown facility", "room", "2", ""],  # row 5
    ["f-b", "hall", "capacity", "common", "many", ""],  # row 6
    ["f-b", "class-1", "托小一班", "class", "15", "托小班"],
]
BAD_DEVICES = [
    list(COLUMNS["devices"]),
    ["fs-1", "f-a", "fall_sensor", "room-1", "", "", ""],
    ["xx-1", "f-a", "toaster", "", "", "", ""],  # row 3
    ["fs-2", "f-a", "fall_sensor", "room-9", "", "", ""],  # row 4: unknown zone
    ["fs-3", "f-x", "fall_sensor", "", "", "", ""],  # row 5: unknown facility
    ["fs-4", "f-a", "fall_sensor", "class-1", "", "", ""],  # row 6: f-b's zone
    ["oc-1", "f-b", "occupancy_counter", "class-1", "", "", ""],
]


@pytest.mark.parametrize("suffix", ["csv", "xlsx"])
async def test_bad_rows_are_named_and_every_good_row_is_stored(
    settings: Settings, db: DB, suffix: str, tmp_path: Path
) -> None:
    """Each bad row, in the file or in the database, is one error with its row and column."""
    expected = {
        "facilities": [(3, "id"), (4, "kind"), (5, "latitude"), (6, "beds"), (7, "name")],
        "zones": [(3, "class_type"), (4, "capacity"), (5, "facility_id"), (6, "capacity")],
        "devices": [(3, "type"), (4, "zone_id"), (5, "facility_id"), (6, "zone_id")],
    }
    for kind, table in zip(KINDS, (BAD_FACILITIES, BAD_ZONES, BAD_DEVICES), strict=True):
        report = await import_file(
            settings, kind, write(tmp_path / kind, table, suffix), progress=False
        )
        assert [(error.row, error.column) for error in report.errors] == expected[kind]
        assert report.imported == 2
        assert report.refused == len(expected[kind])
    assert await rows(db, "SELECT id FROM facilities ORDER BY id") == [("f-a",), ("f-b",)]
    assert await rows(db, "SELECT facility_id, zone_id FROM zones ORDER BY 1, 2") == [
        ("f-a", "room-1"),
        ("f-b", "class-1"),
    ]
    assert await rows(db, "SELECT id, zone_id FROM devices ORDER BY id") == [
        ("fs-1", "room-1"),
        ("oc-1", "class-1"),
    ]


async def test_database_refusals_say_what_is_missing(settings: Settings, tmp_path: Path) -> None:
    """A reference error names the facility or zone that is not registered."""
    for kind, table in zip(KINDS, (BAD_FACILITIES, BAD_ZONES, BAD_DEVICES), strict=True):
        path = write_csv(tmp_path / f"{kind}.csv", table)
        report = await import_file(settings, kind, path, progress=False)
    # The last report is the devices file's.
    messages = {error.row: str(error) for error in report.errors}
    assert (
        messages[4] == "row 4, column 'zone_id': zone 'room-9' is not registered at facility 'f-a'"
    )
    assert messages[5] == "row 5, column 'facility_id': facility 'f-x' is not registered"


async def test_reimport_updates_rows_without_duplicating_them(
    settings: Settings, db: DB, tmp_path: Path
) -> None:
    """Importing a file again changes what changed, adds nothing twice, leaves the rest alone."""
    await import_samples(settings, tmp_path, "csv")
    before = dict(await rows(db, "SELECT id, updated_at FROM facilities"))
    facilities = read_csv(DATA / "facilities.csv")
    facilities[1][1] = "阳光托育中心（新址）"
    facilities[1][9] = "96"
    zones = read_csv(DATA / "zones.csv")
    zones[2][4] = "12"
    await asyncio.sleep(0.01)
    for kind, table in (("facilities", facilities), ("zones", zones)):
        report = await import_file(settings, kind, write_csv(tmp_path / f"{kind}.csv", table))
        assert (report.imported, report.errors) == (len(table) - 1, [])
    devices = await import_file(settings, "devices", DATA / "devices.csv", progress=False)
    assert devices.imported == 5
    assert await rows(db, "SELECT count(*) FROM facilities") == [(4,)]
    assert await rows(db, "SELECT count(*) FROM zones") == [(8,)]
    assert await rows(db, "SELECT count(*) FROM devices") == [(5,)]
    assert await rows(
        db, "SELECT name, childcare_places FROM facilities WHERE id = 'f-sunshine'"
    ) == [
        ("阳光托育中心（新址）", 96),
    ]
    assert await rows(db, "SELECT capacity FROM zones WHERE zone_id = 'toddler-1'") == [(12,)]
    after = dict(await rows(db, "SELECT id, updated_at FROM facilities"))
    assert after["f-sunshine"] > before["f-sunshine"]
    assert after["f-kangle"] == before["f-kangle"]


async def test_a_wrong_header_refuses_the_file_and_stores_nothing(
    settings: Settings, db: DB, tmp_path: Path
) -> None:
    """A file whose header is not SPEC §5's is refused whole, naming the columns."""
    table = read_csv(DATA / "facilities.csv")
    table[0][5:7] = ["lat", "lng"]
    with pytest.raises(ImportFileError, match=r"missing column\(s\) latitude, longitude"):
        await import_file(settings, "facilities", write_csv(tmp_path / "f.csv", table))
    assert await rows(db, "SELECT count(*) FROM facilities") == [(0,)]


async def test_a_csv_with_a_utf8_bom_imports(settings: Settings, db: DB, tmp_path: Path) -> None:
    """A CSV that Excel saved with a byte order mark imports its first column as `id`."""
    path = tmp_path / "f.csv"
    path.write_bytes(b"\xef\xbb\xbf" + (DATA / "facilities.csv").read_bytes())
    report = await import_file(settings, "facilities", path, progress=False)
    assert (report.imported, report.errors) == (4, [])
    assert await rows(db, "SELECT count(*) FROM facilities") == [(4,)]


async def test_a_5000_row_file_imports_and_a_bad_row_loses_no_other(
    settings: Settings, db: DB, tmp_path: Path
) -> None:
    """5,000 devices across several batches import; bad rows in two batches cost only themselves."""
    await import_samples(settings, tmp_path, "csv")
    table = [list(COLUMNS["devices"])]
    for index in range(5000):
        table.append([f"dev-{index:05d}", "f-kangle", "fall_sensor", "room-101", "", "v", "m"])
    table[1199][3] = "room-999"  # row 1200: refused by the database check
    table[3499][2] = "toaster"  # row 3500: refused by validation
    report = await import_file(
        settings, "devices", write_csv(tmp_path / "many.csv", table), progress=False
    )
    assert [(error.row, error.column) for error in report.errors] == [
        (1200, "zone_id"),
        (3500, "type"),
    ]
    assert report.imported == 4998
    assert await rows(db, "SELECT count(*) FROM devices WHERE id LIKE 'dev-%'") == [(4998,)]
    assert await rows(db, "SELECT id FROM devices WHERE id IN ('dev-01198', 'dev-03498')") == []


class Terminal(io.StringIO):
    """A stderr that says it is a terminal, so the progress bar draws."""

    def isatty(self) -> bool:
        """Always a terminal."""
        return True


async def test_a_large_import_draws_a_progress_bar_on_a_terminal(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a terminal stderr shows rows done, the total and the rate; without progress, nothing."""
    table = [list(COLUMNS["facilities"])]
    table += [[f"f-{i}", "名", "elderly", "区", "", "", "", "", "1", "0"] for i in range(2500)]
    path = write_csv(tmp_path / "f.csv", table)
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    await import_file(settings, "facilities", path, progress=False)
    assert terminal.getvalue() == ""
    await import_file(settings, "facilities", path)
    drawn = terminal.getvalue()
    assert drawn.endswith("\n")
    assert "2500/2500" in drawn.rsplit("\r", 1)[-1]
    assert "rows/s" in drawn


async def test_a_batch_the_database_refuses_is_redone_row_by_row(
    settings: Settings, db: DB, tmp_path: Path
) -> None:
    """When the upsert itself fails, only the offending row is refused and the batch is kept."""
    await import_samples(settings, tmp_path, "csv")
    async with await connect(settings) as conn:
        writer = RegistryWriter(conn, "devices")
        await writer.prepare()
        stored, errors = await writer.upsert(
            [
                (2, ("r-1", "f-kangle", "fall_sensor", None, 300, "", "")),
                # Past the parser, a heartbeat the table's CHECK refuses.
                (3, ("r-2", "f-kangle", "fall_sensor", None, 0, "", "")),
                (4, ("r-3", "f-kangle", "fall_sensor", None, 300, "", "")),
            ]
        )
    assert stored == 2
    assert [(error.row, error.column) for error in errors] == [(3, "heartbeat_s")]
    assert await rows(db, "SELECT id FROM devices WHERE id LIKE 'r-%' ORDER BY id") == [
        ("r-1",),
        ("r-3",),
    ]


async def import_sites(settings: Settings) -> None:
    """The sample facilities and their zones, so that devices have somewhere to belong."""
    for kind in ("facilities", "zones"):
        await import_file(settings, kind, DATA / f"{kind}.csv", progress=False)


async def add_pending(db: DB, device_id: str, facility_id: str) -> None:
    """A device heard on MQTT but not registered, as the ingest stage records it."""
    await db.execute(
        "INSERT INTO pending_devices (device_id, facility_id, first_seen, last_seen, last_topic,"
        " last_payload) VALUES (%s, %s, now(), now(), %s, %s)",
        (device_id, facility_id, topic("carehub", facility_id, device_id, "telemetry"), b"{}"),
    )


async def test_imported_devices_leave_pending_and_hubs_are_notified(
    settings: Settings, db: DB
) -> None:
    """A device imported after it was heard is no longer pending, and LISTENing hubs hear of it."""
    await import_sites(settings)
    await add_pending(db, "fs-101", "f-kangle")
    await add_pending(db, "stranger", "f-kangle")
    await db.execute(f"LISTEN {NOTIFY_CHANNEL}")
    await import_file(settings, "devices", DATA / "devices.csv", progress=False)
    assert await rows(db, "SELECT device_id FROM pending_devices") == [("stranger",)]
    notices = [notice async for notice in db.notifies(timeout=5, stop_after=1)]
    assert [(notice.channel, notice.payload) for notice in notices] == [(NOTIFY_CHANNEL, "devices")]


async def test_register_pending_moves_a_device_into_the_registry(
    settings: Settings, db: DB
) -> None:
    """One call registers a pending device at the facility its topic named, with type defaults."""
    await import_sites(settings)
    await add_pending(db, "oc-new", "f-sunshine")
    assert [p.device_id for p in await list_pending(settings)] == ["oc-new"]
    await register_pending(settings, "oc-new", "occupancy_counter", zone_id="toddler-1")
    assert await rows(
        db, "SELECT facility_id, type, zone_id, heartbeat_s FROM devices WHERE id = 'oc-new'"
    ) == [
        ("f-sunshine", "occupancy_counter", "toddler-1", 60),
    ]
    assert await list_pending(settings) == []


async def test_register_pending_refuses_what_it_cannot_register(settings: Settings, db: DB) -> None:
    """An unknown pending id, zone, facility or type is refused and the device stays pending."""
    await import_sites(settings)
    await add_pending(db, "eb-new", "f-kangle")
    await add_pending(db, "eb-far", "f-elsewhere")
    with pytest.raises(RegistryError, match="no pending device 'nobody'"):
        await register_pending(settings, "nobody", "emergency_button")
    with pytest.raises(
        RegistryError, match="zone 'toddler-1' is not registered at facility 'f-kangle'"
    ):
        await register_pending(settings, "eb-new", "emergency_button", zone_id="toddler-1")
    with pytest.raises(RegistryError, match="facility 'f-elsewhere', which is not registered"):
        await register_pending(settings, "eb-far", "emergency_button")
    with pytest.raises(RegistryError, match="unknown device type"):
        await register_pending(settings, "eb-new", "toaster")
    assert await rows(db, "SELECT count(*) FROM devices") == [(0,)]
    assert {p.device_id for p in await list_pending(settings)} == {"eb-new", "eb-far"}


async def test_import_into_an_unmigrated_schema_says_to_migrate(
    database_url: str, db_schema: str
) -> None:
    """Without the schema the import fails with a StorageError that names `carehub migrate`."""
    settings = load_settings(database_url=database_url, database_schema=db_schema)
    with pytest.raises(StorageError, match="carehub migrate"):
        await import_file(settings, "facilities", DATA / "facilities.csv", progress=False)


# --- the command, end to end -------------------------------------------------------------


@pytest.fixture
def cli_env(database_url: str, db_schema: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """CAREHUB_* variables pointing `carehub` at this test's schema, migrated."""
    monkeypatch.setenv("CAREHUB_DATABASE_URL", database_url)
    monkeypatch.setenv("CAREHUB_DATABASE_SCHEMA", db_schema)
    monkeypatch.setenv("CAREHUB_TIMESCALEDB", "off")
    assert main(["migrate"]) == 0
    return db_schema


def query(database_url: str, schema: str, sql: str) -> list[tuple[Any, ...]]:
    """Rows of a query in the given schema (sync: the command runs its own event loop)."""
    with psycopg.connect(database_url, options=f"-c search_path={schema}") as conn:
        return conn.execute(sql.encode()).fetchall()


def test_cli_imports_each_registry_and_exits_zero(
    cli_env: str, database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """`carehub {facilities,zones,devices} import FILE` stores every row and says how many."""
    for kind in KINDS:
        assert main([kind, "import", str(DATA / f"{kind}.csv"), "--quiet"]) == 0
    out = capsys.readouterr()
    assert "facilities: 4 rows imported, 0 rows refused" in out.out
    assert "devices: 5 rows imported, 0 rows refused" in out.out
    assert out.err == ""
    assert query(database_url, cli_env, "SELECT count(*) FROM devices") == [(5,)]


def test_cli_exits_one_and_prints_row_errors_when_a_row_is_bad(
    cli_env: str, database_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A bad row makes the command exit 1, its row and column on stderr; good rows are stored."""
    path = write_csv(tmp_path / "facilities.csv", BAD_FACILITIES)
    assert main(["facilities", "import", str(path), "--quiet"]) == 1
    out = capsys.readouterr()
    assert f"{path}: row 4, column 'kind': 'hotel' is not one of" in out.err
    assert f"{path}: row 7, column 'name': is empty" in out.err
    assert "facilities: 2 rows imported, 5 rows refused" in out.out
    assert query(database_url, cli_env, "SELECT id FROM facilities ORDER BY id") == [
        ("f-a",),
        ("f-b",),
    ]


def test_cli_refuses_a_file_with_a_wrong_header(
    cli_env: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A zones file given to `devices import` exits 1 naming the unexpected columns."""
    assert main(["devices", "import", str(DATA / "zones.csv")]) == 1
    err = capsys.readouterr().err
    assert "not a devices file" in err
    assert "unknown column(s) 'zone_id'" not in err  # zone_id is a devices column too
    assert "unknown column(s) 'name', 'kind', 'capacity', 'class_type'" in err


def test_cli_lists_and_registers_a_pending_device(
    cli_env: str, database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """`carehub devices pending` lists it; `devices register` moves it into devices at once."""
    for kind in ("facilities", "zones"):
        assert main([kind, "import", str(DATA / f"{kind}.csv"), "--quiet"]) == 0
    with psycopg.connect(
        database_url, options=f"-c search_path={cli_env}", autocommit=True
    ) as conn:
        conn.execute(
            "INSERT INTO pending_devices (device_id, facility_id, first_seen, last_seen,"
            " last_topic, last_payload)"
            " VALUES ('fs-new', 'f-kangle', now(), now(), 't', '\\x7b7d')"
        )
    capsys.readouterr()
    assert main(["devices", "pending"]) == 0
    listing = capsys.readouterr().out.splitlines()
    assert listing[0].split()[:2] == ["device_id", "facility_id"]
    assert listing[1].split()[:2] == ["fs-new", "f-kangle"]
    assert (
        main(
            [
                "devices",
                "register",
                "fs-new",
                "--type",
                "fall_sensor",
                "--zone",
                "room-101",
                "--heartbeat-s",
                "90",
            ]
        )
        == 0
    )
    assert query(
        database_url, cli_env, "SELECT facility_id, type, zone_id, heartbeat_s FROM devices"
    ) == [
        ("f-kangle", "fall_sensor", "room-101", 90),
    ]
    assert query(database_url, cli_env, "SELECT count(*) FROM pending_devices") == [(0,)]
    assert main(["devices", "register", "fs-new", "--type", "fall_sensor"]) == 1
    assert "no pending device 'fs-new'" in capsys.readouterr().err
