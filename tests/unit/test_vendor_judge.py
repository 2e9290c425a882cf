"""The vendor check's judge: hostile messages land on the clause they break, with evidence."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from hub.models import DeviceInfo
from hub.storage.credentials import CredentialsState
from hub.vendor_check import (
    MAX_EVIDENCE,
    QUOTE_CHARS,
    Clause,
    Judge,
    Report,
    WillOutcome,
    opening_notes,
    render,
)

CHINA = timezone(timedelta(hours=8))
START = datetime(2026, 12, 2, 9, 0, tzinfo=CHINA)
ROOT = "carehub"
BUTTON = DeviceInfo("eb-1", "f-sun", "emergency_button", "room-101", 60)
NOT_MANAGED = CredentialsState("not_managed", "this site's broker authentication is not checked")
OWN = "carehub/v1/f-sun/eb-1"


def body(seq: int, at: datetime, **fields: Any) -> bytes:
    """A payload as the device sends it, stamped `at`."""
    return json.dumps({"ts": at.isoformat(timespec="milliseconds"), "seq": seq, **fields}).encode()


def judge() -> Judge:
    return Judge(BUTTON, ROOT, NOT_MANAGED)


def see(j: Judge, topic: str, payload: bytes, at: datetime, *, retained: bool = False) -> None:
    j.observe(topic, payload, at, retained=retained, live=True)


def finish(j: Judge, end: datetime, retained: bytes | None = b'{"online": true}') -> Report:
    clauses = j.finish(
        watch_start=START,
        watch_end=end,
        retained_status=None if retained is None else (retained, end),
        will=WillOutcome(notes=("the last will came 0.1 s after the cut",)),
    )
    return Report(
        BUTTON,
        f"{ROOT}/v1/+/eb-1/#",
        START,
        (end - START).total_seconds(),
        j.messages,
        clauses,
        tuple(j.hub_rejections),
    )


def good_minute(j: Judge, first_seq: int = 100) -> datetime:
    """A retained status, a telemetry every 50 s for 2 minutes and an answered test call."""
    see(j, f"{OWN}/status", b'{"online": true}', START, retained=True)
    at = START
    seq = first_seq
    for _ in range(3):
        at += timedelta(seconds=50)
        see(j, f"{OWN}/telemetry", body(seq, at, battery=80, rssi=-60), at)
        seq += 1
    see(j, f"{OWN}/event", body(seq, at, event="pressed", button="red", test=True), at)
    answer = {"seq": seq, "alert_id": None, "state": "received", "test": True}
    see(j, f"{OWN}/ack", json.dumps(answer).encode(), at + timedelta(seconds=0.2))
    return at + timedelta(seconds=10)


def test_a_good_run_passes_and_renders_every_clause() -> None:
    j = judge()
    report = finish(j, good_minute(j))
    assert report.passed, report.as_json()
    assert report.clause("credentials").verdict == "not_checked"
    text = render(report)
    assert text.splitlines()[-1] == "result: PASS; not checked: credentials and client id"
    json.dumps(report.as_json())  # one JSON object, every value serialisable


HOSTILE = [
    ("telemetry", b"\xff\xfe not utf-8", "payload", "not_json"),
    ("telemetry", b"[1, 2, 3]", "payload", "not_object"),
    ("telemetry", b"{" + b" " * 17_000 + b"}", "payload", "too_large"),
    ("telemetry", b'{"ts": "yesterday", "seq": 5}', "ts", "ts: must be an RFC 3339"),
    ("telemetry", b'{"ts": "2026-12-02T09:01:00+08:00", "seq": -1}', "seq", "seq: must be"),
    ("telemetry", b'{"ts": "2026-12-02T09:01:00+08:00", "seq": true}', "seq", "seq: must be"),
    (
        "telemetry",
        b'{"ts": "2026-12-02T09:01:00+08:00", "seq": 5, "battery": 101}',
        "payload",
        "battery: must be ≤ 100",
    ),
    (
        "event",
        b'{"ts": "2026-12-02T09:01:00+08:00", "seq": 5, "event": "fall_detected"}',
        "payload",
        "unknown_event",
    ),
    ("status", b'{"online": "yes"}', "payload", "online: must be true or false"),
    ("telemetry/extra", b"{}", "topics", "bad_topic"),
    ("events", b"{}", "topics", "bad_topic"),
]


@pytest.mark.parametrize(("channel", "payload", "clause", "why"), HOSTILE)
def test_a_hostile_message_fails_its_clause_with_the_message_as_evidence(
    channel: str, payload: bytes, clause: Clause, why: str
) -> None:
    j = judge()
    end = good_minute(j, first_seq=1)
    see(j, f"{OWN}/{channel}", payload, START + timedelta(minutes=1))
    report = finish(j, end)
    assert clause in report.failed, report.as_json()
    evidence = report.clause(clause).evidence[0]
    assert why in evidence.why
    assert evidence.topic == f"{OWN}/{channel}"
    assert len(evidence.payload) <= QUOTE_CHARS


def test_a_message_under_another_facility_fails_the_topics() -> None:
    j = judge()
    end = good_minute(j)
    at = START + timedelta(minutes=1)
    see(j, "carehub/v1/f-moon/eb-1/telemetry", body(500, at, battery=50), at)
    report = finish(j, end)
    assert report.failed == ["topics"]
    assert "wrong_facility" in report.clause("topics").evidence[0].why


def test_a_redelivery_is_allowed_but_a_reused_or_lower_seq_is_not() -> None:
    j = judge()
    end = good_minute(j, first_seq=100)
    at = START + timedelta(seconds=150)
    last = body(103, at, event="pressed", button="red", test=True)
    see(j, f"{OWN}/event", last, at)  # the same message again: a QoS 1 redelivery
    assert finish(j, end).passed
    see(j, f"{OWN}/telemetry", body(103, at, battery=70), at)  # same seq, other message
    see(j, f"{OWN}/telemetry", body(50, at, battery=70), at)
    report = finish(j, end)
    assert report.failed == ["seq"]
    whys = [item.why for item in report.clause("seq").evidence]
    assert whys[0].startswith("seq 103 after seq 103")
    assert whys[1].startswith("seq 50 after seq 103")


def test_a_retained_telemetry_fails_the_topics_and_is_not_judged_for_its_old_ts() -> None:
    j = judge()
    end = good_minute(j)
    old = START - timedelta(days=3)
    see(j, f"{OWN}/telemetry", body(1, old, battery=50), START, retained=True)
    report = finish(j, end)
    assert report.failed == ["topics"]
    assert "only status may be retained" in report.clause("topics").evidence[0].why


def test_evidence_is_capped_but_every_failure_is_counted() -> None:
    j = judge()
    end = good_minute(j)
    for n in range(MAX_EVIDENCE + 7):
        see(j, f"{OWN}/telemetry", b"not json %d" % n, START)
    result = finish(j, end).clause("payload")
    assert (result.failures, len(result.evidence)) == (MAX_EVIDENCE + 7, MAX_EVIDENCE)
    assert "... and 7 more" in render(finish(j, end))


def test_answers_that_are_not_the_presses_are_ignored_and_rejections_are_listed() -> None:
    j = judge()
    see(j, f"{OWN}/status", b'{"online": true}', START, retained=True)
    at = START + timedelta(seconds=30)
    see(j, f"{OWN}/telemetry", body(1, at, battery=80), at)
    see(j, f"{OWN}/event", body(2, at, event="pressed", button="red", test=True), at)
    for junk in (b"\xff", b"[]", b'{"seq": 99, "state": "received"}', b'"received"'):
        see(j, f"{OWN}/ack", junk, at)
    see(j, f"{OWN}/rejected", b'{"reason": "bad_field", "detail": "x", "topic": "t"}', at)
    see(j, f"{OWN}/rejected", b"[1]", at)
    report = finish(j, at + timedelta(seconds=20))
    assert report.failed == ["test_press"]
    assert "no answer for seq 2" in report.clause("test_press").evidence[0].why
    assert [item.why for item in report.hub_rejections] == ["bad_field: x (for t)"]
    assert report.messages == 3  # the hub's answers are not the device's messages


def test_a_device_that_sends_nothing_fails_the_heartbeat_and_the_press_only() -> None:
    j = judge()
    report = finish(j, START + timedelta(minutes=10), retained=None)
    assert report.failed == ["status", "heartbeat", "test_press"]
    assert {report.clause(c).verdict for c in ("topics", "seq", "ts", "payload")} == {"not_checked"}
    short = judge()
    assert finish(short, START + timedelta(seconds=30)).clause("heartbeat").verdict == (
        "not_checked"
    )


def test_a_late_heartbeat_names_the_gap() -> None:
    j = judge()
    see(j, f"{OWN}/telemetry", body(1, START, battery=80), START)
    late = START + timedelta(seconds=200)
    see(j, f"{OWN}/telemetry", body(2, late, battery=80), late)
    result = finish(j, late + timedelta(seconds=10)).clause("heartbeat")
    assert result.verdict == "fail"
    assert result.evidence[0].why == (
        "200 s after the one before; heartbeat_s is 60 s (at most 75 s allowed)"
    )


def test_credentials_missing_from_the_hubs_store_fail_the_first_clause() -> None:
    j = Judge(BUTTON, ROOT, CredentialsState("none", "no live MQTT credentials"))
    report = finish(j, good_minute(j))
    assert report.failed == ["credentials"]


def test_one_good_test_call_passes_after_a_real_call_made_by_mistake() -> None:
    j = judge()
    see(j, f"{OWN}/status", b'{"online": true}', START, retained=True)
    at = START + timedelta(seconds=30)
    see(j, f"{OWN}/telemetry", body(1, at, battery=80), at)
    see(j, f"{OWN}/event", body(2, at, event="pressed", button="red"), at)
    see(j, f"{OWN}/ack", b'{"seq": 2, "alert_id": "7", "state": "received"}', at)
    assert finish(j, at).failed == ["test_press"]
    assert "not a test call" in finish(j, at).clause("test_press").evidence[0].why
    see(j, f"{OWN}/event", body(3, at, event="pressed", button="red", test=True), at)
    see(j, f"{OWN}/ack", b'{"seq": 3, "alert_id": null, "state": "received", "test": true}', at)
    report = finish(j, at)
    assert report.passed, report.as_json()
    assert report.clause("test_press").summary.startswith("seq 3 answered")


def test_an_event_or_status_at_qos_0_fails_the_topics_but_telemetry_may_be_qos_0() -> None:
    j = judge()
    end = good_minute(j)
    at = START + timedelta(seconds=160)
    j.observe(f"{OWN}/telemetry", body(200, at, battery=80), at, retained=False, live=True, qos=0)
    assert finish(j, end).passed
    j.observe(
        f"{OWN}/event", body(201, at, event="cancelled"), at, retained=False, live=True, qos=0
    )
    j.observe(f"{OWN}/status", b'{"online": true}', at, retained=False, live=True, qos=1)
    report = finish(j, end)
    assert report.failed == ["topics"]
    assert report.clause("topics").evidence[0].why.startswith("event published at QoS 0")


def test_the_vendor_hears_before_the_watch_that_the_device_is_down_or_the_watch_short() -> None:
    j = judge()
    assert opening_notes(j, 600) == [
        "Note: the broker holds no status for eb-1: power it up now, or it will fail most clauses."
    ]
    see(j, f"{OWN}/status", b'{"online": false}', START, retained=True)
    assert "the broker says offline for eb-1" in opening_notes(j, 600)[0]
    see(j, f"{OWN}/status", b'{"online": true}', START)
    assert opening_notes(j, 600) == []
    assert opening_notes(j, 90) == [
        "Note: 90 s is less than two heartbeats (heartbeat_s 60): run with --duration 120"
        " or more to judge the heartbeat fully."
    ]
