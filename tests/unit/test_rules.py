"""Pure alert rules: parameters and overrides, event decisions, capacity and ratio conditions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from devices import ALERT_KINDS
from hub.errors import RuleError
from hub.models import AlertDecision, DeviceInfo, Event
from hub.rules import (
    Clear,
    DeviceSnapshot,
    RuleParams,
    ScheduledTestCall,
    ZoneSnapshot,
    battery_verdict,
    capacity_breaches,
    decide_event,
    is_offline,
    parse_overrides_toml,
    ratio_breaches,
    validate_override,
)

NOW = datetime(2026, 11, 22, 8, 0, tzinfo=UTC)


def test_every_kind_of_the_spec_is_in_the_catalogue_with_its_priority_and_latching() -> None:
    """SPEC §4's table, row by row."""
    table = {
        "sos": ("high", True),
        "fall": ("high", True),
        "long_lie": ("high", True),
        "dwell": ("high", True),
        "over_capacity": ("medium", False),
        "staff_ratio": ("medium", False),
        "device_offline": ("medium", False),
        "low_battery": ("low", False),
    }
    assert {k: (v.priority, v.latched) for k, v in ALERT_KINDS.items()} == table


def test_zone_overrides_beat_facility_overrides_which_beat_defaults() -> None:
    """Parameters resolve default -> facility -> zone."""
    params = RuleParams(
        [
            validate_override("f-1", "", "fall", {"min_confidence": 0.7}),
            validate_override("f-1", "room-2", "fall", {"min_confidence": 0.9}),
        ]
    )
    assert params.get("fall", "f-2", "room-2") == {"min_confidence": 0.6}
    assert params.get("fall", "f-1", "room-1") == {"min_confidence": 0.7}
    assert params.get("fall", "f-1", "room-2") == {"min_confidence": 0.9}


@pytest.mark.parametrize(
    ("kind", "params", "message"),
    [
        ("fall", {"min_confidence": 1.5}, "facility f-1: fall.min_confidence: must be between 0"),
        ("fall", {"min_confidence": "high"}, "fall.min_confidence: must be a number"),
        ("fall", {"min_confidence": True}, "fall.min_confidence: must be a number"),
        ("fall", {"confidence": 0.5}, "fall.confidence: unknown parameter (known: min_confidence)"),
        ("long_lie", {"limit_min": 2.5}, "long_lie.limit_min: must be a whole number"),
        ("tornado", {"x": 1}, "unknown alert kind 'tornado'"),
        ("sos", {"x": 1}, "sos.x: unknown parameter (known: none)"),
        ("fall", {}, "fall: no parameters given"),
        ("low_battery", {"clear_percent": 10}, "low_battery.clear_percent: must be above"),
        ("escalation", {"overdue_after_s": 45}, "escalation.overdue_after_s: must be above"),
    ],
)
def test_a_bad_override_is_refused_naming_the_field(
    kind: str, params: dict[str, Any], message: str
) -> None:
    """Every refusal says where and which field."""
    with pytest.raises(RuleError) as refused:
        validate_override("f-1", "", kind, params)
    assert message in str(refused.value)


def test_overrides_are_read_from_toml_and_a_bad_one_is_named() -> None:
    """The TOML file format of `carehub rules import`."""
    overrides = parse_overrides_toml(
        """
        [facilities.f-sun.fall]
        min_confidence = 0.7
        [facilities.f-sun.escalation]
        renotify_after_s = 30
        [facilities.f-sun.zones.room-101.long_lie]
        limit_min = 5
        """
    )
    assert [(o.facility_id, o.zone_id, o.kind, dict(o.params)) for o in overrides] == [
        ("f-sun", "", "fall", {"min_confidence": 0.7}),
        ("f-sun", "", "escalation", {"renotify_after_s": 30.0}),
        ("f-sun", "room-101", "long_lie", {"limit_min": 5.0}),
    ]
    for text, message in [
        ("[facilities.f-sun.zones.room-101.long_lie]\nlimit_min = 0", "zone room-101: long_lie"),
        ("[facilities.f-sun]\nfall = 3", "facilities.f-sun.fall: expected a table"),
        ("[rules]\nx = 1", "unknown top-level table 'rules'"),
        ("[facilities.f-sun.fall\n", "not valid TOML"),
    ]:
        with pytest.raises(RuleError) as refused:
            parse_overrides_toml(text)
        assert message in str(refused.value)


def _event(device_type: str, name: str, **payload: Any) -> Event:
    return Event(
        device_id="d-1",
        facility_id="f-1",
        zone_id="room-1",
        device_type=device_type,
        seq=7,
        ts=NOW,
        received_at=NOW,
        event=name,
        payload={"event": name, **payload},
    )


def test_events_decide_at_once_against_the_zone_threshold() -> None:
    """Press -> sos; test press -> answered only; fall over the threshold -> fall; clears."""
    params = RuleParams([validate_override("f-1", "room-1", "fall", {"min_confidence": 0.8})])
    sos = decide_event(_event("emergency_button", "pressed", button="red"), params)
    assert isinstance(sos, AlertDecision)
    assert (sos.kind, sos.priority, sos.latched, sos.subject, sos.order) == (
        "sos",
        "high",
        True,
        "d-1",
        (NOW, 7),
    )
    assert decide_event(
        _event("emergency_button", "pressed", button="red", test=True), params
    ) == ScheduledTestCall("d-1", "f-1", 7)
    assert decide_event(_event("emergency_button", "cancelled"), params) == Clear(
        "sos", "d-1", NOW, (NOW, 7)
    )
    assert decide_event(_event("fall_sensor", "fall_detected", confidence=0.7), params) is None
    fall = decide_event(_event("fall_sensor", "fall_detected", confidence=0.8), params)
    assert isinstance(fall, AlertDecision)
    assert fall.kind == "fall"
    assert decide_event(_event("fall_sensor", "fall_cleared"), params) == Clear(
        "fall", "d-1", NOW, (NOW, 7)
    )
    dwell = decide_event(_event("fall_sensor", "dwell", seconds=900), params)
    assert isinstance(dwell, AlertDecision)
    assert dwell.kind == "dwell"


def _snapshot(**state: Any) -> DeviceSnapshot:
    values: dict[str, Any] = {
        "last_seen": NOW,
        "online": True,
        "battery": None,
        "count": None,
        "staff": None,
    }
    values.update(state)
    return DeviceSnapshot(
        device=DeviceInfo("d-1", "f-1", "fall_sensor", "room-1", 300),
        registered_at=NOW - timedelta(days=1),
        **values,
    )


def test_offline_after_twice_the_heartbeat_or_when_the_will_says_so() -> None:
    """device_offline holds after 2 x heartbeat_s of silence, or on status offline."""
    params = RuleParams()
    assert not is_offline(_snapshot(), params, NOW + timedelta(seconds=600))
    assert is_offline(_snapshot(), params, NOW + timedelta(seconds=601))
    assert is_offline(_snapshot(online=False), params, NOW)
    never_heard = _snapshot(last_seen=None, online=None)
    assert is_offline(never_heard, params, NOW)


def test_battery_has_a_dead_band_so_it_does_not_flap() -> None:
    """Low at or below 15, fine again above 20, unchanged in between."""
    params = RuleParams()
    assert battery_verdict(_snapshot(battery=15), params) is True
    assert battery_verdict(_snapshot(battery=18), params) is None
    assert battery_verdict(_snapshot(battery=21), params) is False
    assert battery_verdict(_snapshot(), params) is None


def test_capacity_is_checked_per_zone_and_per_facility() -> None:
    """A zone over its capacity, and a facility over beds + places."""
    zones = [
        ZoneSnapshot("f-1", "room-1", 2, None, 3, None),
        ZoneSnapshot("f-1", "hall", None, None, 40, None),
        ZoneSnapshot("f-2", "room-1", 10, None, 10, None),
    ]
    found = capacity_breaches(zones, {"f-1": 40, "f-2": 50})
    assert [(c.subject, c.detail) for c in found] == [
        ("zone:f-1/room-1", {"count": 3, "capacity": 2}),
        ("facility:f-1", {"count": 43, "capacity": 40}),
    ]


def test_staff_ratio_follows_the_national_class_limits() -> None:
    """托小班 1:5, 乳儿班 1:3; staff are counted apart from the children."""
    zones = [
        ZoneSnapshot("f-1", "a", 15, "托小班", 12, 2),  # 10 children, 2 staff: fine
        ZoneSnapshot("f-1", "b", 15, "托小班", 13, 2),  # 11 children, 2 staff: over 1:5
        ZoneSnapshot("f-1", "c", 10, "乳儿班", 4, 0),  # children with no staff at all
        ZoneSnapshot("f-1", "d", None, None, 30, 0),  # not a class
    ]
    assert [(c.zone_id, c.detail["ratio"]) for c in ratio_breaches(zones)] == [
        ("b", "1:5"),
        ("c", "1:3"),
    ]
