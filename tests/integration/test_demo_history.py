"""The demo's month of history: written once with COPY, sensible KPIs, a chain that holds."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from hub.alerts.audit import GENESIS_HASH, verify_audit, write_audit
from hub.cli.demo_history import ensure_history
from hub.cli.simulate import register_district
from hub.models import AuditStep
from hub.settings import Settings
from hub.storage.audit import AuditEntry
from hub.storage.kpis import district_kpis
from simulators import build_district
from simulators.response import duty_username
from tests.fix_hub import DB, connect_db, rows

pytestmark = [pytest.mark.db, pytest.mark.slow]

FACILITIES = 8
DISTRICT = "鹿城区"


@pytest.fixture
async def registered(hub_settings: Settings, tmp_path: Path) -> Settings:
    """A migrated schema with an eight-facility simulated district registered."""
    await register_district(hub_settings, build_district(FACILITIES), tmp_path / "district")
    return hub_settings


@contextlib.asynccontextmanager
async def _chains_verified(settings: Settings) -> AsyncIterator[DB]:
    """A connection to the test's database, once every facility's audit chain verified."""
    async with await connect_db(settings) as db:
        assert await verify_audit(db) == []
        yield db


async def _counts(settings: Settings) -> dict[str, int]:
    async with await connect_db(settings) as db:
        return {
            table: (await rows(db, f"SELECT count(*) FROM {table}"))[0][0]
            for table in ("readings", "events", "alerts", "alert_audit")
        }


async def test_the_month_is_written_once_and_its_counts_are_what_it_says(
    registered: Settings,
) -> None:
    """First start writes readings, events, alerts and audit rows; a second writes nothing."""
    district = build_district(FACILITIES)
    first = await ensure_history(registered, district)
    assert first.written
    seeded = first.history
    counts = await _counts(registered)
    assert counts == {
        "readings": seeded.readings,
        "events": seeded.events,
        "alerts": seeded.alerts,
        "alert_audit": seeded.audit_rows,
    }
    # 30 days of counters every 15 min, battery devices every hour, less a flood's gap.
    counters = sum(1 for d in district.devices if d.type == "occupancy_counter")
    others = len(district.devices) - counters
    expected = counters * 30 * 96 + others * 30 * 24
    assert 0.97 * expected <= seeded.readings <= expected + len(district.devices)
    assert seeded.alerts > 200
    assert seeded.audit_rows > 3 * seeded.alerts
    assert seeded.seconds > 0

    second = await ensure_history(registered, district)
    assert not second.written
    assert second.history.readings == seeded.readings
    assert second.history.written_at is not None
    assert await _counts(registered) == counts

    async with await connect_db(registered) as db:
        states = await rows(db, "SELECT state, count(*) FROM alerts GROUP BY 1")
        assert states == [("resolved", seeded.alerts)]
        # Every alert's trail starts with its raise and ends with its resolve.
        ends = await rows(
            db,
            "SELECT count(*) FILTER (WHERE first <> 'raise'), count(*) FILTER (WHERE last"
            " <> 'resolve') FROM (SELECT alert_id, (array_agg(action ORDER BY id))[1] AS first,"
            " (array_agg(action ORDER BY id DESC))[1] AS last FROM alert_audit GROUP BY 1) t",
        )
        assert ends == [(0, 0)]
        # Staff of the facility took the calls over: the live accounts' names.
        takers = await rows(
            db,
            "SELECT DISTINCT facility_id, acknowledged_by FROM alerts"
            " WHERE priority = 'high' AND acknowledged_by IS NOT NULL",
        )
        assert takers
        assert all(who == duty_username(facility) for facility, who in takers)
        # The month ends before now, and a live hub finds nothing of it open.
        latest = await rows(db, "SELECT max(resolved_at), max(ts) FROM alerts, readings")
        assert latest[0][0] < datetime.now(UTC)


async def test_the_kpis_show_a_month_of_sensible_figures(registered: Settings) -> None:
    """Most calls taken over within 60 s, some late, a few overdue; false alarms; breaches."""
    await ensure_history(registered, build_district(FACILITIES))
    now = datetime.now(UTC)
    async with await connect_db(registered) as db:
        kpis = await district_kpis(db, DISTRICT, now - timedelta(days=31), now, now)
        assert kpis.high_alerts > 150
        assert kpis.ack_within_60s_share is not None
        assert kpis.ack_within_180s_share is not None
        assert 0.84 <= kpis.ack_within_60s_share <= 0.95
        assert 0.94 <= kpis.ack_within_180s_share <= 0.995
        assert kpis.ack_within_60s_share < kpis.ack_within_180s_share
        assert kpis.overdue_calls >= 1
        assert kpis.time_to_ack.median_s is not None
        assert kpis.time_to_ack.p90_s is not None
        assert 10 <= kpis.time_to_ack.median_s <= 30
        assert kpis.time_to_ack.p90_s <= 180
        assert kpis.time_to_attend.median_s is not None
        assert 40 <= kpis.time_to_attend.median_s <= 240
        assert kpis.staff_ratio_breaches >= 1
        by_kind = {row.subject: row for row in kpis.false_alarms_by_kind}
        assert 0.25 <= by_kind["sos"].share <= 0.6
        assert 0.08 <= by_kind["fall"].share <= 0.45
        # Alerts that ended by themselves were judged by no one: in no false-alarm share.
        assert "device_offline" not in by_kind
        assert "staff_ratio" not in by_kind
        buttons = (await rows(db, "SELECT count(*) FROM devices WHERE type = 'emergency_button'"))[
            0
        ][0]
        assert 1 <= len(kpis.buttons_untested) <= 0.35 * buttons

        # The same figures by independent SQL over the rows written.
        fast, overdue, high = (
            await rows(
                db,
                "SELECT count(*) FILTER (WHERE acknowledged_at - raised_at <= interval '60 s'),"
                " count(*) FILTER (WHERE overdue_at IS NOT NULL), count(*) FROM alerts"
                " WHERE priority = 'high'",
            )
        )[0]
        assert (fast, overdue, high) == (
            kpis.ack_within_60s,
            kpis.overdue_calls,
            kpis.high_alerts,
        )
        # Overdue means nobody took it over for 180 s, and its trail says so.
        late = await rows(
            db,
            "SELECT count(*) FROM alerts a WHERE overdue_at IS NOT NULL AND"
            " (acknowledged_at - raised_at <= interval '180 s' OR NOT EXISTS (SELECT 1 FROM"
            " alert_audit u WHERE u.alert_id = a.id AND u.action = 'overdue'))",
        )
        assert late == [(0,)]
        # Today has figures too: the screen's band is not empty on the first start.
        today = await district_kpis(db, DISTRICT, now - timedelta(hours=20), now, now)
        assert today.high_alerts > 0


async def test_the_audit_chain_holds_and_live_changes_chain_on(registered: Settings) -> None:
    """verify finds nothing wrong; the heads point at the last rows; a live row follows them."""
    await ensure_history(registered, build_district(FACILITIES))
    async with _chains_verified(registered) as db:
        mismatched = await rows(
            db,
            "SELECT h.facility_id FROM audit_heads h JOIN (SELECT facility_id, max(id) AS id"
            " FROM alert_audit GROUP BY 1) a USING (facility_id) WHERE h.last_id <> a.id",
        )
        assert mismatched == []
        facility, alert_id = (await rows(db, "SELECT facility_id, max(id) FROM alerts GROUP BY 1"))[
            0
        ]
        async with db.transaction():
            step = AuditStep(
                datetime.now(UTC), "admin", "comment", "resolved", "resolved", "reviewed"
            )
            entry = AuditEntry(facility, alert_id, step)
            await write_audit(db, entry)
        assert await verify_audit(db) == []
        # And an edited history row is caught, as any other.
        await db.execute(
            "UPDATE alert_audit SET note = 'edited' WHERE id = (SELECT min(id) FROM alert_audit"
            " WHERE facility_id = %s)",
            (facility,),
        )
        problems = await verify_audit(db)
        assert [p.facility_id for p in problems] == [facility]


async def test_a_facility_with_live_rows_keeps_them_and_the_month_follows(
    registered: Settings,
) -> None:
    """History written into a database whose hub already ran continues each existing chain."""
    district = build_district(FACILITIES)
    facility = district.facilities[0].id
    async with await connect_db(registered) as db:
        (alert_id,) = (
            await rows(
                db,
                "INSERT INTO alerts (facility_id, subject, kind, priority, latched, raised_at,"
                " last_raised_at) VALUES (%s, %s, 'sos', 'high', true, now(), now()) RETURNING id",
                facility,
                f"{facility}-eb-01",
            )
        )[0]
        async with db.transaction():
            await write_audit(
                db,
                AuditEntry(
                    facility,
                    alert_id,
                    AuditStep(datetime.now(UTC), "system", "raise", None, "active", ""),
                ),
            )
    outcome = await ensure_history(registered, district)
    assert outcome.written
    async with _chains_verified(registered) as db:
        chain = await rows(
            db,
            "SELECT alert_id, prev_hash FROM alert_audit WHERE facility_id = %s"
            " ORDER BY id LIMIT 2",
            facility,
        )
        assert chain[0] == (alert_id, GENESIS_HASH)
        assert chain[1][1] != GENESIS_HASH


async def test_two_demos_starting_at_once_write_the_month_once(registered: Settings) -> None:
    """The seeding lock lets one writer through; the other finds its history."""
    district = build_district(FACILITIES)
    outcomes = await asyncio.gather(
        ensure_history(registered, district), ensure_history(registered, district)
    )
    assert sorted(o.written for o in outcomes) == [False, True]
    counts = await _counts(registered)
    assert counts["alerts"] == outcomes[0].history.alerts == outcomes[1].history.alerts
    async with _chains_verified(registered):
        pass


async def test_a_district_that_is_not_registered_is_refused_and_nothing_is_kept(
    hub_settings: Settings,
) -> None:
    """Alerts of unknown facilities cannot be stored: a StorageError says which, no row stays."""
    from hub.errors import StorageError
    from hub.storage.migrate import migrate

    await migrate(hub_settings)
    with pytest.raises(StorageError, match="alerts") as refused:
        await ensure_history(hub_settings, build_district(2))
    assert "facilities" in str(refused.value)
    assert await _counts(hub_settings) == dict.fromkeys(
        ("readings", "events", "alerts", "alert_audit"), 0
    )
    async with await connect_db(hub_settings) as db:
        assert await rows(db, "SELECT count(*) FROM seeded_history") == [(0,)]


async def test_the_devices_existed_all_month_and_a_hub_starting_after_it_raises_no_flood(
    registered: Settings,
) -> None:
    """Registered at the month's start, heard at its end: a hub right after finds them fresh."""
    from hub.runtime import run_hub

    district = build_district(FACILITIES)
    seeded = (await ensure_history(registered, district)).history
    async with await connect_db(registered) as db:
        registered_at = await rows(db, "SELECT DISTINCT registered_at FROM devices")
        assert registered_at == [(seeded.period_start,)]
        states = await rows(
            db,
            "SELECT count(*), count(*) FILTER (WHERE last_seen = %s),"
            " count(*) FILTER (WHERE d.type = 'occupancy_counter' AND s.count IS NOT NULL"
            "  AND s.count_ts IS NOT NULL)"
            " FROM device_state s JOIN devices d ON d.id = s.device_id",
            seeded.period_end,
        )
        counters = sum(1 for d in district.devices if d.type == "occupancy_counter")
        assert states == [(len(district.devices), len(district.devices), counters)]
        # A month ago to yesterday, as a monthly report reads it: the buttons count.
        kpis = await district_kpis(
            db,
            DISTRICT,
            seeded.period_start,
            seeded.period_end - timedelta(days=1),
            seeded.period_end,
        )
        assert kpis.devices_online == kpis.devices_total == len(district.devices)
        assert kpis.buttons_untested

    async with run_hub(registered) as hub:
        await asyncio.wait_for(hub.timers.leader.wait(), 15)
        await asyncio.sleep(3)  # a few sweeps of the timers
        async with await connect_db(registered) as db:
            offline = await rows(
                db,
                "SELECT count(*) FROM alerts WHERE kind = 'device_offline' AND state <> 'resolved'",
            )
    assert offline == [(0,)]
