"""Pure decoding: every reason code, and what a valid message becomes."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from devices import topics
from hub.decode import decode
from hub.models import DeviceInfo, Event, Reading, Rejection, StatusChange

ROOT = "carehub"
NOW = datetime(2026, 11, 22, 0, 15, tzinfo=UTC)
CHINA = timezone(timedelta(hours=8))
DEVICES = {
    "fs-1": DeviceInfo("fs-1", "f1", "fall_sensor", "room-1", 300),
    "eb-1": DeviceInfo("eb-1", "f1", "emergency_button", None, 300),
    "oc-1": DeviceInfo("oc-1", "f1", "occupancy_counter", "class-a", 60),
}


def run(device: str, channel: str, body: object, facility: str = "f1") -> object:
    """Decode a JSON body sent by `device` on `channel`."""
    payload = body if isinstance(body, bytes) else json.dumps(body).encode()
    return decode(topics.topic(ROOT, facility, device, channel), payload, NOW, ROOT, DEVICES)


def ts(delta: timedelta = timedelta()) -> str:
    """The hub's clock as a device in UTC+8 would write it."""
    return (NOW + delta).astimezone(CHINA).isoformat(timespec="milliseconds")


def test_fall_event_decodes_with_its_fields() -> None:
    """A valid fall_detected event becomes an Event with the device's facility and zone."""
    event = run(
        "fs-1",
        "event",
        {
            "ts": ts(),
            "seq": 3,
            "event": "fall_detected",
            "confidence": 0.8,
            "posture": "lying",
            "extra": [1],
        },
    )
    assert isinstance(event, Event)
    assert (event.facility_id, event.zone_id, event.event, event.seq) == (
        "f1",
        "room-1",
        "fall_detected",
        3,
    )
    assert event.payload["extra"] == [1]
    assert event.ts == NOW


def test_telemetry_decodes_state_fields() -> None:
    """Occupancy telemetry carries count and staff; missing optional fields are None."""
    reading = run("oc-1", "telemetry", {"ts": ts(), "seq": 0, "count": 7, "staff": 2})
    assert isinstance(reading, Reading)
    assert (reading.count, reading.staff, reading.battery, reading.presence) == (7, 2, None, None)


def test_status_needs_no_ts_or_seq() -> None:
    """A status message is just {"online": bool}."""
    status = run("eb-1", "status", {"online": False})
    assert isinstance(status, StatusChange)
    assert status.online is False


@pytest.mark.parametrize(
    ("device", "channel", "body", "reason", "field"),
    [
        ("eb-1", "event", b"{oops", "not_json", None),
        ("eb-1", "event", b"\xc3\x28", "not_json", None),
        ("eb-1", "event", b'"text"', "not_object", None),
        ("eb-1", "event", b"null", "not_object", None),
        (
            "eb-1",
            "event",
            {"ts": ts(), "seq": 1, "event": "pressed", "button": "red", "pad": "x" * 20000},
            "too_large",
            None,
        ),
        ("nobody", "event", {"ts": ts(), "seq": 1}, "unknown_device", None),
        ("eb-1", "event", {"seq": 1, "event": "cancelled"}, "bad_field", "ts"),
        (
            "eb-1",
            "event",
            {"ts": "2026-11-22T08:15:00", "seq": 1, "event": "cancelled"},
            "bad_field",
            "ts",
        ),
        ("eb-1", "event", {"ts": 1700000000, "seq": 1, "event": "cancelled"}, "bad_field", "ts"),
        (
            "eb-1",
            "event",
            {"ts": "2026-13-45T99:00:00+08:00", "seq": 1, "event": "cancelled"},
            "bad_field",
            "ts",
        ),
        ("eb-1", "event", {"ts": ts(), "event": "cancelled"}, "bad_field", "seq"),
        ("eb-1", "event", {"ts": ts(), "seq": True, "event": "cancelled"}, "bad_field", "seq"),
        ("eb-1", "event", {"ts": ts(), "seq": 1.5, "event": "cancelled"}, "bad_field", "seq"),
        ("eb-1", "event", {"ts": ts(), "seq": 2**64, "event": "cancelled"}, "bad_field", "seq"),
        ("eb-1", "event", {"ts": ts(), "seq": 1}, "bad_field", "event"),
        ("eb-1", "event", {"ts": ts(), "seq": 1, "event": "pressed"}, "bad_field", "button"),
        (
            "eb-1",
            "event",
            {"ts": ts(), "seq": 1, "event": "pressed", "button": "blue"},
            "bad_field",
            "button",
        ),
        (
            "eb-1",
            "event",
            {"ts": ts(), "seq": 1, "event": "pressed", "button": "red", "test": "yes"},
            "bad_field",
            "test",
        ),
        (
            "fs-1",
            "event",
            {"ts": ts(), "seq": 1, "event": "fall_detected", "confidence": -0.1},
            "bad_field",
            "confidence",
        ),
        (
            "fs-1",
            "event",
            {"ts": ts(), "seq": 1, "event": "dwell", "seconds": "long"},
            "bad_field",
            "seconds",
        ),
        ("fs-1", "telemetry", {"ts": ts(), "seq": 1, "battery": 101}, "bad_field", "battery"),
        ("fs-1", "telemetry", {"ts": ts(), "seq": 1, "presence": "yes"}, "bad_field", "presence"),
        ("oc-1", "telemetry", {"ts": ts(), "seq": 1, "count": -1}, "bad_field", "count"),
        ("oc-1", "telemetry", {"ts": ts(), "seq": 1, "count": 2.5}, "bad_field", "count"),
        ("eb-1", "status", {"online": "yes"}, "bad_field", "online"),
        (
            "eb-1",
            "event",
            {"ts": ts(), "seq": 1, "event": "cancelled", "note": "a\u0000b"},
            "bad_field",
            "note",
        ),
        ("eb-1", "event", b'{"ts":"x","a":' + b"[" * 40 + b"]" * 40 + b"}", "bad_field", "payload"),
        (
            "eb-1",
            "event",
            {"ts": ts(timedelta(hours=-24, seconds=-1)), "seq": 1, "event": "cancelled"},
            "bad_time",
            None,
        ),
        (
            "eb-1",
            "event",
            {"ts": ts(timedelta(minutes=5, seconds=1)), "seq": 1, "event": "cancelled"},
            "bad_time",
            None,
        ),
        ("eb-1", "event", {"ts": ts(), "seq": 1, "event": "fall_detected"}, "unknown_event", None),
        ("oc-1", "event", {"ts": ts(), "seq": 1, "event": "anything"}, "unknown_event", None),
    ],
)
def test_bad_messages_get_their_reason_code(
    device: str, channel: str, body: object, reason: str, field: str | None
) -> None:
    """Each kind of bad message maps to its SPEC §3 reason code, and bad_field names the field."""
    result = run(device, channel, body)
    assert isinstance(result, Rejection)
    assert result.reason == reason, result.detail
    if field is not None:
        assert result.detail.split(":")[0] == field


def test_wrong_facility_does_not_reveal_the_registered_one() -> None:
    """A device publishing under another facility is refused without naming its real facility."""
    result = run("eb-1", "event", {"ts": ts(), "seq": 1, "event": "cancelled"}, facility="f2")
    assert isinstance(result, Rejection)
    assert result.reason == "wrong_facility"
    assert "f1" not in result.detail.replace("f-", "")


@pytest.mark.parametrize(
    "topic",
    [
        "other/v1/f1/eb-1/event",
        "carehub/v2/f1/eb-1/event",
        "carehub/v1/f1/eb-1",
        "carehub/v1/f1/eb 1/event",
        "carehub/v1/f1/eb-1/ack",
        "carehub/v1//eb-1/event",
        "carehub/v1/f1/eb-1/event/x",
    ],
)
def test_bad_topics(topic: str) -> None:
    """Topics outside the contract are bad_topic."""
    result = decode(topic, b"{}", NOW, ROOT, DEVICES)
    assert isinstance(result, Rejection)
    assert result.reason == "bad_topic"


def test_the_edges_of_the_time_window_are_accepted() -> None:
    """Exactly 24 h old and exactly 5 min ahead are still accepted."""
    for delta in (timedelta(hours=-24), timedelta(minutes=5)):
        assert isinstance(
            run("eb-1", "event", {"ts": ts(delta), "seq": 1, "event": "cancelled"}), Event
        )


@settings(max_examples=400, deadline=None)
@given(
    topic=st.text(max_size=80)
    | st.sampled_from(["carehub/v1/f1/eb-1/event", "carehub/v1/f1/fs-1/telemetry"]),
    payload=st.binary(max_size=300)
    | st.recursive(
        st.none()
        | st.booleans()
        | st.floats(allow_nan=False)
        | st.integers()
        | st.text(max_size=20),
        lambda inner: (
            st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
        ),
        max_leaves=20,
    ).map(lambda v: json.dumps(v).encode()),
)
def test_decode_never_raises(topic: str, payload: bytes) -> None:
    """Any topic and any bytes decode to a typed message or a rejection, never an exception."""
    result = decode(topic, payload, NOW, ROOT, DEVICES)
    assert isinstance(result, Event | Reading | StatusChange | Rejection)


@pytest.mark.parametrize("opener", [b"[", b'{"a":'])
def test_nesting_beyond_the_json_parser_s_limit_is_refused_not_raised(opener: bytes) -> None:
    closer = b"]" if opener == b"[" else b"}"
    levels = 2000  # msgspec raises RecursionError past ~1,000; still under MAX_PAYLOAD_BYTES
    nested = opener * levels + b"1" + closer * levels
    payload = b'{"ts":"2026-11-22T08:15:00+08:00","seq":1,"x":' + nested + b"}"
    decoded = run("fs-1", "telemetry", payload)
    assert isinstance(decoded, Rejection)
    assert decoded.reason == "bad_field"
    assert "nested deeper" in decoded.detail
