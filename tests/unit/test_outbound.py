"""Outbound: device replies' topics and payloads, and one dispatcher for every path."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime

import pytest

from hub.metrics import Metrics
from hub.models import AlertChange, AlertDecision, Rejection
from hub.outbound import DeviceReplies, Dispatcher
from hub.rules import ScheduledTestCall
from tests.samples import sample_alert, sos_decision

NOW = datetime(2026, 11, 22, 0, 15, tzinfo=UTC)


class Outbox:
    """What DeviceReplies handed to the MQTT client, or refuses when `full`."""

    def __init__(self, *, full: bool = False) -> None:
        self.sent: list[tuple[str, dict[str, object], bool]] = []
        self.full = full

    def send(self, topic: str, payload: bytes, urgent: bool) -> bool:
        if self.full:
            return False
        self.sent.append((topic, json.loads(payload), urgent))
        return True


def _decision() -> AlertDecision:
    """A fall decision about lc-001-fs-01 at NOW, as the fall rule makes it."""
    return sos_decision(device_id="lc-001-fs-01", kind="fall", seq=7, at=NOW, detail={})


@pytest.mark.parametrize(
    ("state", "said"),
    [("active", "received"), ("acknowledged", "acknowledged"), ("resolved", "resolved")],
)
def test_an_alert_change_is_acked_on_the_devices_own_topic(state: str, said: str) -> None:
    """The device hears its alert's state, urgently, on {root}/v1/{facility}/{device}/ack."""
    outbox = Outbox()
    replies = DeviceReplies("carehub", outbox.send, Metrics())
    replies.alert_changed(
        AlertChange(sample_alert(state=state), "acknowledge", None, "li", NOW, "")
    )
    assert outbox.sent == [
        (
            "carehub/v1/lc-001/lc-001-eb-01/ack",
            {"seq": 1001, "alert_id": "17", "state": said},
            True,
        )
    ]


def test_staff_only_changes_and_deviceless_alerts_are_not_acked() -> None:
    """An escalation or a comment is for staff; an alert with no device has no one to ack."""
    outbox = Outbox()
    replies = DeviceReplies("carehub", outbox.send, Metrics())
    replies.alert_changed(AlertChange(sample_alert(), "renotify", "active", "hub", NOW, ""))
    replies.alert_changed(AlertChange(sample_alert(), "comment", "active", "li", NOW, "ok"))
    replies.alert_changed(AlertChange(sample_alert(device_id=None), "raise", None, "hub", NOW, ""))
    assert outbox.sent == []


def test_provisional_and_test_calls_are_received_without_an_alert_id() -> None:
    """While the database is down, and for a scheduled test, the device still hears `received`."""
    outbox = Outbox()
    replies = DeviceReplies("carehub", outbox.send, Metrics())
    replies.alert_provisional(_decision())
    replies.test_call(ScheduledTestCall("lc-001-eb-01", "lc-001", 9))
    assert outbox.sent == [
        (
            "carehub/v1/lc-001/lc-001-fs-01/ack",
            {"seq": 7, "alert_id": None, "state": "received", "provisional": True},
            True,
        ),
        (
            "carehub/v1/lc-001/lc-001-eb-01/ack",
            {"seq": 9, "alert_id": None, "state": "received", "test": True},
            True,
        ),
    ]


@pytest.mark.parametrize(
    ("topic", "target"),
    [
        ("carehub/v1/lc-001/eb-1/event", "carehub/v1/lc-001/eb-1/rejected"),
        ("carehub/v1/lc-001/eb-1/firmware", "carehub/v1/lc-001/eb-1/rejected"),
        ("carehub/v1/lc-001/eb-1/event/extra", "carehub/v1/lc-001/eb-1/rejected"),
        # Malformed ids (bad_topic) are answered on the topic as written.
        ("carehub/v1/bad facility/eb-1/event", "carehub/v1/bad facility/eb-1/rejected"),
        ("carehub/v1/F1/FS!1/telemetry", "carehub/v1/F1/FS!1/rejected"),
        ("carehub/v1/设施/🙂/status", "carehub/v1/设施/🙂/rejected"),
        (
            "carehub/v1/lc-001/" + "x" * 256 + "/event",
            "carehub/v1/lc-001/" + "x" * 256 + "/rejected",
        ),
        # Not a topic to publish on, or nobody there to hear it.
        ("carehub/v1/lc-001/" + "x" * 257 + "/event", None),
        ("carehub/v1/lc+001/eb-1/event", None),
        ("carehub/v1/lc-001/eb#1/event", None),
        ("carehub/v1/lc-001/eb-1\u0000/event", None),
        ("carehub/v1/lc-001/eb-\x1b[31m/event", None),
        ("carehub/v1/lc-001/eb-\u0085/event", None),
        ("carehub/v1/lc-001/eb-\ufffd/event", None),
        ("carehub/v1/lc-001/eb-\uffff/event", None),
        ("carehub/v1//eb-1/event", None),
        ("carehub/v1/lc-001//event", None),
        ("carehub/v1/lc-001", None),
        ("carehub/v1/", None),
        ("carehub/v2/lc-001/eb-1/event", None),
        ("carehubx/v1/lc-001/eb-1/event", None),
        ("other/v1/lc-001/eb-1/event", None),
    ],
)
def test_a_rejection_goes_back_to_the_sender(topic: str, target: str | None) -> None:
    """`rejected` goes to the levels the topic named, ids or not, and nowhere when that is
    no topic one can publish to."""
    outbox = Outbox()
    replies = DeviceReplies("carehub", outbox.send, Metrics())
    replies.rejected(Rejection(topic, "bad_topic", "channel", NOW, b"", None, None))
    if target is None:
        assert outbox.sent == []
    else:
        [(sent_to, body, urgent)] = outbox.sent
        assert (sent_to, urgent) == (target, False)
        assert body == {
            "topic": topic,
            "reason": "bad_topic",
            "detail": "channel",
            "received_at": "2026-11-22T00:15:00.000+00:00",
        }


def test_a_full_outbox_is_counted() -> None:
    """A reply the MQTT client could not queue is counted, not lost silently."""
    metrics = Metrics()
    replies = DeviceReplies("carehub", Outbox(full=True).send, metrics)
    replies.alert_changed(AlertChange(sample_alert(), "raise", None, "hub", NOW, ""))
    replies.rejected(Rejection("carehub/v1/f/d/event", "not_json", "", NOW, b"", "f", "d"))
    assert metrics.replies_dropped == 2


class Path:
    """An outbound path that records what it was told, or fails."""

    def __init__(self, *, fails: bool = False) -> None:
        self.told: list[object] = []
        self.fails = fails

    def alert_changed(self, change: AlertChange) -> None:
        if self.fails:
            raise RuntimeError("this path is broken")
        self.told.append(change)

    def alert_provisional(self, decision: AlertDecision) -> None:
        if self.fails:
            raise RuntimeError("this path is broken")
        self.told.append(decision)


def test_one_failing_path_never_stops_another() -> None:
    """A broken webhook path does not keep the device's ack or the screens from a change."""
    outbox = Outbox()
    broken, screens = Path(fails=True), Path()
    dispatcher = Dispatcher(DeviceReplies("carehub", outbox.send, Metrics()), (broken, screens))
    change = AlertChange(sample_alert(state="active"), "raise", None, "hub", NOW, "")
    dispatcher.alert_changed(change)
    decision = replace(_decision(), seq=8)
    dispatcher.alert_provisional(decision)
    assert screens.told == [change, decision]
    assert [topic for topic, _, _ in outbox.sent] == [
        "carehub/v1/lc-001/lc-001-eb-01/ack",
        "carehub/v1/lc-001/lc-001-fs-01/ack",
    ]
