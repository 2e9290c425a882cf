"""Replies to devices on MQTT (SPEC §3): `ack` after each alert change, `rejected` with a reason.

The payloads and topics of both channels are written here and nowhere else. Messages
are handed to the MQTT client's outbound queues through `send`; an ack is urgent (a
resident waits for the light on the button), a rejection is not.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import msgspec

from devices import topics
from hub.metrics import Metrics
from hub.models import AlertAction, AlertChange, AlertDecision, Rejection
from hub.rules import ScheduledTestCall

# What the device's `ack` says after each kind of change (SPEC §3); other changes
# (escalation, comments) are for staff, not for the resident at the button.
ACK_STATES = {
    "active": "received",
    "acknowledged": "acknowledged",
    "attended": "attended",
    "resolved": "resolved",
}
ACK_ACTIONS: frozenset[AlertAction] = frozenset(
    {"raise", "repeat", "acknowledge", "attend", "resolve"}
)

# (topic, payload, urgent) -> False when the message had to be dropped.
Send = Callable[[str, bytes, bool], bool]

_encode = msgspec.json.Encoder().encode


def ack_payload(change: AlertChange) -> bytes:
    """The JSON body of an `ack` message for one alert change."""
    alert = change.alert
    return _encode({"seq": alert.seq, "alert_id": str(alert.id), "state": ACK_STATES[alert.state]})


def rejection_payload(rejection: Rejection) -> bytes:
    """The JSON body of a `rejected` message."""
    return _encode(
        {
            "topic": rejection.topic,
            "reason": rejection.reason,
            "detail": rejection.detail,
            "received_at": rejection.received_at.isoformat(timespec="milliseconds"),
        }
    )


class DeviceReplies:
    """The device path of outbound: acks and rejections on the device's own topics."""

    def __init__(self, root: str, send: Send, metrics: Metrics) -> None:
        self._root = root
        self._send = send
        self._metrics = metrics

    def alert_changed(self, change: AlertChange) -> None:
        """Tell the device what became of its alert."""
        alert = change.alert
        if alert.device_id is None or change.action not in ACK_ACTIONS:
            return
        self._reply(alert.facility_id, alert.device_id, ack_payload(change))
        if change.action in ("raise", "repeat"):
            # A raise or a repeat is stamped with its message's hub receive time.
            self._metrics.emergency.record("ack_queued", time.time() - change.at.timestamp())

    def alert_provisional(self, decision: AlertDecision) -> None:
        """`received`, with no alert id yet: help is coming although the database is down."""
        if decision.device_id is None or decision.seq is None:
            return
        body = {"seq": decision.seq, "alert_id": None, "state": "received", "provisional": True}
        self._reply(decision.facility_id, decision.device_id, _encode(body))

    def test_call(self, call: ScheduledTestCall) -> None:
        """`received` for a scheduled test call: recorded, answered, no alarm to staff."""
        body = {"seq": call.seq, "alert_id": None, "state": "received", "test": True}
        self._reply(call.facility_id, call.device_id, _encode(body))

    def rejected(self, rejection: Rejection) -> None:
        """Tell the sender why its message was refused, on the `rejected` of its topic."""
        target = topics.rejection_topic(rejection.topic, self._root)
        if target is not None and not self._send(target, rejection_payload(rejection), False):
            self._metrics.replies_dropped += 1

    def _reply(self, facility_id: str, device_id: str, payload: bytes) -> None:
        target = topics.topic(self._root, facility_id, device_id, "ack")
        if not self._send(target, payload, True):
            self._metrics.replies_dropped += 1
