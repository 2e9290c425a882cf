"""The demo's month of history and the staff response model, without a database."""

from __future__ import annotations

import itertools
import random
import statistics
from collections import Counter
from datetime import datetime, timedelta

import pytest

from devices import ALERT_KINDS
from simulators import SHANGHAI, Fleet, build_district
from simulators.behaviour import CounterBehaviour, hour_of_day
from simulators.history import History, build_history, history_batches
from simulators.response import duty_username, plan_response

END = datetime(2026, 11, 30, 21, 0, tzinfo=SHANGHAI)


@pytest.fixture(scope="module")
def month() -> History:
    """Thirty days of a six-facility district, ending on a Monday evening."""
    return build_history(build_district(6), end=END, days=30)


def test_most_calls_are_taken_over_within_a_minute_some_late_a_few_overdue() -> None:
    """Over many draws the take-over delays hit the shares the model promises."""
    rng = random.Random(1)
    delays = [plan_response("sos", rng).ack_after_s or 0.0 for _ in range(20_000)]
    within_60 = sum(d <= 60 for d in delays) / len(delays)
    within_180 = sum(d <= 180 for d in delays) / len(delays)
    assert 0.88 <= within_60 <= 0.92
    assert 0.96 <= within_180 <= 0.985
    assert 12 <= statistics.median(delays) <= 25
    assert min(delays) >= 4
    assert max(delays) <= 600


def test_staff_judge_a_realistic_share_of_false_alarms_and_leave_medium_alerts_to_end() -> None:
    """High alerts always end with staff's disposition; medium ones are only looked at."""
    rng = random.Random(2)
    sos = [plan_response("sos", rng) for _ in range(5000)]
    assert {plan.disposition for plan in sos} == {"real", "false_alarm"}
    share = sum(plan.disposition == "false_alarm" for plan in sos) / len(sos)
    assert 0.15 <= share <= 0.25
    cancelled = [plan_response("sos", rng, cancelled=True) for _ in range(2000)]
    assert sum(plan.disposition == "false_alarm" for plan in cancelled) / 2000 >= 0.85
    for plan in sos:
        assert plan.ack_after_s is not None
        assert plan.attend_after_s is not None
        assert plan.resolve_after_s is not None
        assert plan.ack_after_s < plan.attend_after_s < plan.resolve_after_s
    offline = [plan_response("device_offline", rng) for _ in range(2000)]
    assert all(plan.disposition is None and plan.attend_after_s is None for plan in offline)
    looked_at = sum(plan.ack_after_s is not None for plan in offline) / len(offline)
    assert 0.5 <= looked_at <= 0.7


def test_every_alert_of_the_month_ends_resolved_with_a_consistent_trail(month: History) -> None:
    """Each trail starts raised, moves state by state, and ends resolved before the month ends."""
    assert len(month.alerts) > 100
    for alert in month.alerts:
        steps = alert.steps
        assert steps[0].action == "raise"
        assert steps[0].from_state is None
        assert steps[0].at == alert.raised_at
        assert steps[-1].action == "resolve"
        assert steps[-1].to_state == "resolved"
        assert [s.at for s in steps] == sorted(s.at for s in steps)
        for before, after in itertools.pairwise(steps):
            assert after.from_state == before.to_state, (alert.kind, steps)
        assert month.start <= alert.raised_at
        assert steps[-1].at < month.end
        if ALERT_KINDS[alert.kind].priority == "high":
            assert alert.disposition in ("real", "false_alarm")
            assert steps[-1].actor == duty_username(alert.facility_id)
        else:
            assert alert.disposition == "self_resolved"
            assert steps[-1].actor == "system"
            assert steps[-1].note == "condition ended"
    overdue = [a for a in month.alerts if a.first("overdue")]
    assert overdue
    for alert in overdue:
        ack = alert.first("acknowledge")
        assert ack is None or (ack.at - alert.raised_at).total_seconds() > 180


def test_the_month_has_every_kind_and_a_flood(month: History) -> None:
    """Calls, falls, capacity, ratio and a facility-wide outage: more than 10 alerts at once."""
    kinds = Counter(alert.kind for alert in month.alerts)
    for kind in ("sos", "fall", "dwell", "over_capacity", "staff_ratio", "device_offline"):
        assert kinds[kind] > 0, kinds
    offline = sorted(a.raised_at for a in month.alerts if a.kind == "device_offline")
    assert any(
        sum(1 for t in offline if start <= t < start + timedelta(minutes=10)) > 10
        for start in offline
    )


def test_occupancy_follows_the_day(month: History) -> None:
    """Classes are empty at night and full on weekday mornings; counters read every 15 min."""
    night = [r for r in month.readings if r.head_count is not None and r.ts.hour in (1, 2, 3)]
    assert night
    classes = [r for r in night if "-c" in (r.zone_id or "")]
    assert classes
    assert all(r.head_count == 0 for r in classes)
    mornings = [
        r.head_count
        for r in month.readings
        if "-c" in (r.zone_id or "") and r.head_count is not None and 10 <= r.ts.hour < 11
    ]
    assert statistics.mean(mornings) > 5
    devices = Counter(r.device_id for r in month.readings if r.head_count is not None)
    assert all(2600 <= n <= 2880 for n in devices.values())


def test_most_buttons_had_their_monthly_test_call(month: History) -> None:
    """Scheduled test presses are in the events, and some buttons have none."""
    district = build_district(6)
    buttons = {d.id for d in district.devices if d.type == "emergency_button"}
    tested = {e.device_id for e in month.events if e.payload.get("test") is True}
    assert tested <= buttons
    assert 0.6 <= len(tested) / len(buttons) < 1.0


def test_a_bad_period_is_refused() -> None:
    """A naive end or a silly number of days is a clear ValueError."""
    district = build_district(1)
    with pytest.raises(ValueError, match="time zone"):
        build_history(district, end=datetime(2026, 11, 30))
    for days in (0, -1, 401, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="days"):
            build_history(district, end=END, days=days)


def test_the_live_fleets_day_follows_the_wall_clock_while_heartbeats_run_fast() -> None:
    """At time x60 an hour of simulated time is a minute of the day, not an hour."""
    district = build_district(2)
    fleet = Fleet(district, mqtt_url="mqtt://127.0.0.1:1", time_scale=60.0)
    counter = next(
        sim.behaviour
        for sim in fleet.devices.values()
        if isinstance(sim.behaviour, CounterBehaviour)
        and sim.behaviour.profile == "childcare_class"
    )
    later = fleet.clock.now() + timedelta(hours=6)
    wall = fleet.clock.wall(later)
    assert timedelta(minutes=5) < wall - datetime.now(SHANGHAI) < timedelta(minutes=7)
    assert counter.hour(later) == pytest.approx(hour_of_day(wall), abs=1e-6)
    # Without a wall clock (the history) the day is the simulated time itself.
    alone = CounterBehaviour(counter.device, counter.zone, random.Random(1), later)
    assert alone.hour(later) == pytest.approx(hour_of_day(later), abs=1e-6)


def test_a_large_district_is_built_a_few_facilities_at_a_time() -> None:
    """Batches cover every facility once, each holding only its own facilities' rows."""
    district = build_district(23)
    batches = list(history_batches(district, end=END, days=2, facilities=10))
    assert [len({r.facility_id for r in b.readings}) for b in batches] == [10, 10, 3]
    seen: set[str] = set()
    for batch in batches:
        mine = {r.facility_id for r in batch.readings}
        assert not mine & seen
        seen |= mine
        assert {a.facility_id for a in batch.alerts} <= mine
        assert {e.facility_id for e in batch.events} <= mine
        assert (batch.start, batch.end) == (END - timedelta(days=2), END)
    assert seen == {f.id for f in district.facilities}
    with pytest.raises(ValueError, match="at least one"):
        next(history_batches(district, end=END, facilities=0))
