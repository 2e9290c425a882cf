"""KPIs of a facility and a district, from rows with known times, and `carehub kpis`."""

from __future__ import annotations

import asyncio
import json
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from psycopg.types.json import Jsonb

from hub.errors import QueryError
from hub.settings import Settings
from hub.storage.kpis import FalseAlarms, Percentiles, district_kpis, facility_kpis
from tests.child_process import database_env, run_carehub
from tests.fix_hub import DB, FACILITY, OTHER_FACILITY, connect_db

pytestmark = [pytest.mark.db]


# Real time, not a fixed date: devices registered by the fixture exist before `END`.
NOW = datetime.now(UTC).replace(microsecond=0) + timedelta(minutes=1)
END = NOW
START = END - timedelta(days=7)
T0 = START + timedelta(days=1)


def _s(seconds: float) -> timedelta:
    return timedelta(seconds=seconds)


@dataclass(frozen=True, slots=True)
class _Alert:
    """One alert row to seed, with its lifecycle times given as seconds after raising."""

    device: str | None
    kind: str
    priority: str
    raised: datetime
    ack_after: float | None = None
    attend_after: float | None = None
    overdue: bool = False
    disposition: str | None = None
    facility: str = FACILITY


# f-sun: four high alerts answered after 30 s, 90 s, 200 s and never, then medium ones.
_SUN = (
    _Alert("eb-1", "sos", "high", T0, ack_after=30, attend_after=120, disposition="false_alarm"),
    _Alert(
        "fs-1", "fall", "high", T0 + _s(3600), ack_after=90, attend_after=300, disposition="real"
    ),
    _Alert(
        "eb-2",
        "sos",
        "high",
        T0 + _s(7200),
        ack_after=200,
        attend_after=600,
        overdue=True,
        disposition="real",
    ),
    _Alert("fs-1", "dwell", "high", T0 + _s(10800), overdue=True),
    _Alert(None, "staff_ratio", "medium", T0 + _s(14400), disposition="other"),
    _Alert("oc-1", "device_offline", "medium", T0 + _s(18000), disposition="false_alarm"),
    _Alert("oc-1", "device_offline", "medium", T0 + _s(21600), disposition="other"),
)
# Outside the period (which is half-open): before its start, and at its end.
_OUTSIDE = (
    _Alert("eb-1", "sos", "high", START - _s(1), ack_after=5, disposition="false_alarm"),
    _Alert("eb-3", "sos", "high", END, ack_after=5, disposition="real"),
)
# f-moon, same district: one more high alert, acknowledged after 45 s; f-far, another
# district: never counted here.
_ELSEWHERE = (
    _Alert(
        "em-1",
        "sos",
        "high",
        T0,
        ack_after=45,
        attend_after=150,
        disposition="false_alarm",
        facility=OTHER_FACILITY,
    ),
    _Alert("far-1", "sos", "high", T0, overdue=True, facility="f-far"),
)


async def _insert_alert(conn: DB, alert: _Alert) -> None:
    """Insert one seeded alert, its state following from the lifecycle times it has."""

    def after(seconds: float | None) -> datetime | None:
        return None if seconds is None else alert.raised + _s(seconds)

    resolved_at = alert.raised + _s(3600) if alert.disposition is not None else None
    state = (
        "resolved"
        if alert.disposition is not None
        else "attended"
        if alert.attend_after is not None
        else "acknowledged"
        if alert.ack_after is not None
        else "active"
    )
    await conn.execute(
        "INSERT INTO alerts (facility_id, device_id, subject, kind, priority, latched, state,"
        " raised_at, last_raised_at, acknowledged_at, acknowledged_by, attended_at, attended_by,"
        " resolved_at, resolved_by, disposition, overdue_at)"
        " VALUES (%s, %s, %s, %s, %s, true, %s, %s, %s, %s, 'nurse', %s, 'nurse', %s, 'nurse',"
        " %s, %s)",
        (
            alert.facility,
            alert.device,
            alert.device or f"zone:{alert.facility}/class-a",
            alert.kind,
            alert.priority,
            state,
            alert.raised,
            alert.raised,
            after(alert.ack_after),
            after(alert.attend_after),
            resolved_at,
            alert.disposition,
            after(180) if alert.overdue else None,
        ),
    )


async def _device(
    conn: DB,
    device: str,
    device_type: str,
    *,
    facility: str = FACILITY,
    zone: str | None = "room-101",
    registered: datetime = START - timedelta(days=90),
) -> None:
    await conn.execute(
        "INSERT INTO devices (id, facility_id, type, zone_id, heartbeat_s, registered_at)"
        " VALUES (%s, %s, %s, %s, 60, %s)",
        (device, facility, device_type, zone, registered),
    )


async def _state(
    conn: DB, device: str, *, seen_ago: float, online: bool | None = True, count: int | None = None
) -> None:
    await conn.execute(
        "INSERT INTO device_state (device_id, last_seen, online, count) VALUES (%s, %s, %s, %s)",
        (device, NOW - _s(seen_ago), online, count),
    )


async def _press(conn: DB, device: str, seq: int, at: datetime, *, test: bool) -> None:
    payload: dict[str, Any] = {"ts": at.isoformat(), "seq": seq}
    if test:
        payload["test"] = True
    await conn.execute(
        "INSERT INTO events (ts, device_id, seq, facility_id, event, received_at, payload)"
        " SELECT %s, id, %s, facility_id, 'pressed', %s, %s FROM devices WHERE id = %s",
        (at, seq, at, Jsonb(payload), device),
    )


async def _seed(settings: Settings) -> None:
    """Two facilities in 鹿城区 (alerts, devices, counters, button tests) and one elsewhere."""
    async with await connect_db(settings) as conn:
        # The fixture's devices were registered just now; date them before the period.
        await conn.execute("UPDATE devices SET registered_at = %s", (START - timedelta(days=90),))
        await conn.execute(
            "INSERT INTO facilities (id, name, kind, district, beds) VALUES"
            " ('f-far', '远方养老院', 'elderly', '瓯海区', 10)"
        )
        for device in ("eb-2", "eb-3", "eb-4"):
            await _device(conn, device, "emergency_button")
        await _device(conn, "eb-new", "emergency_button", registered=END + timedelta(days=1))
        await _device(conn, "oc-2", "occupancy_counter")
        await _device(conn, "oc-3", "occupancy_counter", zone="class-a")
        await _device(conn, "em-1", "emergency_button", facility=OTHER_FACILITY, zone=None)
        await _device(conn, "far-1", "emergency_button", facility="f-far", zone=None)

        for alert in (*_SUN, *_OUTSIDE, *_ELSEWHERE):
            await _insert_alert(conn, alert)

        await _state(conn, "fs-1", seen_ago=30)  # online
        await _state(conn, "eb-1", seen_ago=200)  # silent for more than 2 heartbeats
        await _state(conn, "eb-2", seen_ago=5, online=False)  # its will said offline
        await _state(conn, "eb-3", seen_ago=10, online=None)  # heard, no status yet: online
        await _state(conn, "oc-1", seen_ago=10, count=12)  # class-a, capacity 15
        await _state(conn, "oc-2", seen_ago=20, count=2)  # room-101, capacity 2
        await _state(conn, "oc-3", seen_ago=3600, count=50)  # stale: counts nobody
        await _state(conn, "em-1", seen_ago=5)
        # eb-4 was never heard: offline.

        await _press(conn, "eb-2", 1, END - timedelta(days=10), test=True)
        await _press(conn, "eb-3", 1, END - timedelta(days=40), test=True)
        await _press(conn, "eb-4", 1, END - timedelta(days=2), test=False)
        await _press(conn, "eb-4", 2, END + timedelta(hours=1), test=True)
        await _press(conn, "em-1", 1, END - timedelta(days=1), test=True)


def _rates(rates: tuple[FalseAlarms, ...]) -> dict[str, tuple[int, int, float]]:
    return {rate.subject: (rate.resolved, rate.false_alarms, rate.share) for rate in rates}


async def test_facility_kpis_from_known_alerts_devices_and_presses(migrated: Settings) -> None:
    """A facility's KPIs count only its own rows of the period, to the exact values."""
    await _seed(migrated)
    async with await connect_db(migrated) as conn:
        kpis = await facility_kpis(conn, FACILITY, START, END, NOW)

    assert kpis.scope.kind == "facility"
    assert kpis.scope.facility_ids == (FACILITY,)
    assert (kpis.start, kpis.end, kpis.now) == (START, END, NOW)
    assert kpis.high_alerts == 4
    assert (kpis.ack_within_60s, kpis.ack_within_180s) == (1, 2)
    assert kpis.ack_within_60s_share == 0.25
    assert kpis.ack_within_180s_share == 0.5
    # percentile_cont over [30, 90, 200] and [120, 300, 600]: p90 sits 80 % of the way
    # from the second value to the third.
    assert kpis.time_to_ack == Percentiles(90.0, pytest.approx(178.0))
    assert kpis.time_to_attend == Percentiles(300.0, pytest.approx(540.0))
    assert kpis.overdue_calls == 2
    assert kpis.staff_ratio_breaches == 1
    assert _rates(kpis.false_alarms_by_kind) == {
        "device_offline": (2, 1, 0.5),
        "fall": (1, 0, 0.0),
        "sos": (2, 1, 0.5),
        "staff_ratio": (1, 0, 0.0),
    }
    # Highest share first; the zone's staff_ratio alert has no device.
    assert [rate.subject for rate in kpis.false_alarms_by_device] == [
        "eb-1",
        "oc-1",
        "eb-2",
        "fs-1",
    ]
    assert _rates(kpis.false_alarms_by_device) == {
        "eb-1": (1, 1, 1.0),
        "oc-1": (2, 1, 0.5),
        "eb-2": (1, 0, 0.0),
        "fs-1": (1, 0, 0.0),
    }
    assert (kpis.devices_online, kpis.devices_total) == (4, 9)
    assert [(z.zone_id, z.present, z.capacity) for z in kpis.zones] == [
        ("class-a", 12, 15),
        ("room-101", 2, 2),
    ]
    assert (kpis.people_present, kpis.capacity) == (14, 70)
    assert kpis.buttons_untested == ("eb-1", "eb-3", "eb-4")


async def test_district_kpis_add_up_its_facilities_only(migrated: Settings) -> None:
    """A district's KPIs cover every facility in it and none from another district."""
    await _seed(migrated)
    async with await connect_db(migrated) as conn:
        kpis = await district_kpis(conn, "鹿城区", START, END, NOW)

    assert kpis.scope.kind == "district"
    assert kpis.scope.name == "鹿城区"
    assert kpis.scope.facility_ids == (OTHER_FACILITY, FACILITY)
    assert kpis.high_alerts == 5
    assert (kpis.ack_within_60s, kpis.ack_within_180s) == (2, 3)
    assert kpis.ack_within_60s_share == pytest.approx(0.4)
    assert kpis.ack_within_180s_share == pytest.approx(0.6)
    # [30, 45, 90, 200] and [120, 150, 300, 600]: p90 at 70 % from the third to the fourth.
    assert kpis.time_to_ack == Percentiles(67.5, pytest.approx(167.0))
    assert kpis.time_to_attend == Percentiles(225.0, pytest.approx(510.0))
    assert kpis.overdue_calls == 2
    assert kpis.staff_ratio_breaches == 1
    assert _rates(kpis.false_alarms_by_kind)["sos"] == (3, 2, pytest.approx(2 / 3))
    assert _rates(kpis.false_alarms_by_device)["em-1"] == (1, 1, 1.0)
    assert (kpis.devices_online, kpis.devices_total) == (5, 10)
    assert (kpis.people_present, kpis.capacity) == (14, 130)
    assert kpis.buttons_untested == ("eb-1", "eb-3", "eb-4")


async def test_a_quiet_period_has_no_shares_and_no_percentiles(migrated: Settings) -> None:
    """With no alerts in the period, shares and times are None, not zero."""
    await _seed(migrated)
    async with await connect_db(migrated) as conn:
        kpis = await facility_kpis(
            conn, FACILITY, START - timedelta(days=30), START - timedelta(days=20), NOW
        )
    assert kpis.high_alerts == 0
    assert kpis.ack_within_60s_share is None
    assert kpis.ack_within_180s_share is None
    assert kpis.time_to_ack == Percentiles(None, None)
    assert kpis.time_to_attend == Percentiles(None, None)
    assert kpis.false_alarms_by_kind == ()
    assert kpis.false_alarms_by_device == ()
    assert (kpis.overdue_calls, kpis.staff_ratio_breaches) == (0, 0)
    # The 30 days before that period's end hold eb-3's test press, not yet eb-2's.
    assert kpis.buttons_untested == ("eb-1", "eb-2", "eb-4")


async def test_unknown_scopes_and_bad_periods_are_refused(migrated: Settings) -> None:
    """An unknown facility or district, or a period that ends first, is a QueryError."""
    async with await connect_db(migrated) as conn:
        with pytest.raises(QueryError, match="no facility 'f-nowhere'") as missing:
            await facility_kpis(conn, "f-nowhere", START, END, NOW)
        assert missing.value.code == "not_found"
        with pytest.raises(QueryError, match="district '龙湾区'") as empty:
            await district_kpis(conn, "龙湾区", START, END, NOW)
        assert empty.value.code == "not_found"
        with pytest.raises(QueryError, match="must start before it ends") as backwards:
            await facility_kpis(conn, FACILITY, END, START, NOW)
        assert backwards.value.code == "invalid"
        with pytest.raises(QueryError, match="UTC offset"):
            await facility_kpis(conn, FACILITY, START.replace(tzinfo=None), END, NOW)
        # The connection is still usable after a refusal.
        kpis = await facility_kpis(conn, FACILITY, START, END, NOW)
        assert kpis.high_alerts == 0


def _cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return run_carehub("kpis", *args, **database_env(settings))


async def test_kpis_command_prints_a_table_json_and_refusals(migrated: Settings) -> None:
    """`carehub kpis` prints the figures, or JSON, and exits 1 naming what it refused."""
    await _seed(migrated)
    # The command reads "online now" on the wall clock, which has moved on from NOW (taken
    # when this module was imported, perhaps minutes ago): re-base when devices were heard.
    async with await connect_db(migrated) as conn:
        await conn.execute(
            "UPDATE device_state SET last_seen = last_seen + %s",
            (datetime.now(UTC) + timedelta(minutes=1) - NOW,),
        )
    period = ("--from", START.isoformat(), "--to", END.isoformat())

    table = await asyncio.to_thread(_cli, migrated, "--facility", FACILITY, *period)
    assert table.returncode == 0, table.stderr

    def row(label: str) -> str:
        return next(line for line in table.stdout.splitlines() if line.startswith(f"  {label} "))

    assert table.stdout.startswith(f"KPIs of facility {FACILITY}, ")
    assert row("high-priority alerts").endswith(" 4")
    assert "25.0% (1 of 4" in row("acknowledged within 60 s")
    assert "50.0% (2 of 4" in row("acknowledged within 180 s")
    assert "median 90 s, p90 178 s" in row("time to acknowledge")
    assert "median 300 s, p90 540 s" in row("time to attend")
    assert row("overdue calls").endswith(" 2")
    assert row("devices online now").endswith(" 4 of 9")
    assert "3: eb-1, eb-3, eb-4" in table.stdout
    assert "14 of 70 licensed" in table.stdout
    assert "false alarms by device" in table.stdout

    as_json = await asyncio.to_thread(_cli, migrated, "--district", "鹿城区", *period, "--json")
    assert as_json.returncode == 0, as_json.stderr
    document = json.loads(as_json.stdout)
    assert document["scope"] == {
        "kind": "district",
        "name": "鹿城区",
        "facility_ids": [OTHER_FACILITY, FACILITY],
    }
    assert document["high_alerts"] == 5
    assert document["time_to_ack"]["median_s"] == 67.5
    assert document["buttons_untested"] == ["eb-1", "eb-3", "eb-4"]
    assert datetime.fromisoformat(document["end"]) == END

    unknown = await asyncio.to_thread(_cli, migrated, "--facility", "f-nowhere")
    assert unknown.returncode == 1
    assert "carehub: no facility 'f-nowhere' is registered" in unknown.stderr
    assert unknown.stdout == ""

    backwards = await asyncio.to_thread(
        _cli, migrated, "--facility", FACILITY, "--from", END.isoformat(), "--to", START.isoformat()
    )
    assert backwards.returncode == 1
    assert "must start before it ends" in backwards.stderr

    garbled = await asyncio.to_thread(_cli, migrated, "--facility", FACILITY, "--to", "yesterday")
    assert garbled.returncode == 1
    assert "--to: not an ISO 8601 time: 'yesterday'" in garbled.stderr

    neither = await asyncio.to_thread(_cli, migrated)
    assert neither.returncode == 2
    assert "one of the arguments --facility --district is required" in neither.stderr


async def test_alerts_that_resolved_by_themselves_are_not_judged(migrated: Settings) -> None:
    """self_resolved alerts count in no false-alarm share, of their kind or their device."""
    await _seed(migrated)
    async with await connect_db(migrated) as conn:
        before = await facility_kpis(conn, FACILITY, START, END, NOW)
        for hours in (1, 2, 3):
            await _insert_alert(
                conn,
                _Alert(
                    "oc-1",
                    "device_offline",
                    "medium",
                    T0 + _s(hours * 3600),
                    disposition="self_resolved",
                ),
            )
        await conn.execute(
            "UPDATE alerts SET disposition = 'self_resolved' WHERE disposition = 'x'"
        )
        after = await facility_kpis(conn, FACILITY, START, END, NOW)
    assert after.false_alarms_by_kind == before.false_alarms_by_kind
    assert after.false_alarms_by_device == before.false_alarms_by_device
    assert _rates(after.false_alarms_by_kind)["device_offline"] == (2, 1, 0.5)


async def test_migration_010_refiles_what_the_system_resolved_as_other(migrated: Settings) -> None:
    """Past system resolutions of non-latched alerts become self_resolved; staff's stay."""
    from hub.storage.migrate import load_migrations

    async with await connect_db(migrated) as conn:
        for device, latched, by in (("oc-1", False, "system"), ("oc-2", False, "nurse"),
                                    ("eb-1", True, "system")):  # fmt: skip
            await conn.execute(
                "INSERT INTO alerts (facility_id, device_id, subject, kind, priority, latched,"
                " state, raised_at, last_raised_at, resolved_at, resolved_by, disposition)"
                " VALUES (%s, %s, %s, 'device_offline', 'medium', %s, 'resolved', now(), now(),"
                " now(), %s, 'other')",
                (FACILITY, device, device, latched, by),
            )
        # The file is idempotent: applied again, it re-files the rows just written.
        migration = next(m for m in load_migrations() if m.version.startswith("010"))
        for statement in migration.statements(migrated):
            await conn.execute(statement.encode())
        cur = await conn.execute(
            "SELECT device_id, disposition FROM alerts WHERE kind = 'device_offline' ORDER BY 1"
        )
        assert await cur.fetchall() == [
            ("eb-1", "other"),
            ("oc-1", "self_resolved"),
            ("oc-2", "other"),
        ]
        with pytest.raises(psycopg.errors.CheckViolation):
            await conn.execute("UPDATE alerts SET disposition = 'shrug' WHERE device_id = 'oc-1'")
