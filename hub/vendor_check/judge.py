"""The pure part of the check: the device's messages in, a verdict on each clause out; no I/O."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from devices import MAX_FUTURE_S, topics
from hub.decode import decode
from hub.models import DeviceInfo, Event, Reading, Rejection, StatusChange
from hub.storage.credentials import CredentialsState
from hub.vendor_check.report import CLAUSES, Clause, ClauseResult, Evidence, Verdict, quote

# The clauses judged on the whole run rather than on each message as it comes.
FINISH_CLAUSES: Final[tuple[Clause, ...]] = ("credentials", "status", "heartbeat", "test_press")

# A heartbeat may come a little late: the firmware's timer, the network and a broker's
# queue all add their share. A quarter of heartbeat_s is generous to those, and far from
# the 2 x heartbeat_s after which the hub raises device_offline.
HEARTBEAT_GRACE: Final = 1.25
# A live device's clock may be this far off the check's, either way: the hub refuses a
# `ts` further ahead (bad_time), and one as far behind misdates every alert it raises.
MAX_SKEW_S: Final = MAX_FUTURE_S
# The hub answers a press at once; this covers a busy broker and a database commit.
ACK_WAIT_S: Final = 15.0
# What a reason code the hub answers with tells about the device (SPEC §3): the clause.
REASON_CLAUSES: Final[dict[str, Clause]] = {
    "bad_topic": "topics",
    "wrong_facility": "topics",
    "unknown_device": "topics",
    "bad_time": "ts",
}
# The least QoS each channel is published with (SPEC §3); telemetry may be QoS 0.
MIN_QOS: Final[dict[str, int]] = {"event": 1, "status": 1}
# The test press each type can make, and what the hub must answer it with.
TEST_PRESSES: Final[dict[str, str]] = {
    "emergency_button": (
        'make a test call: press the button in its test mode, so that it sends "pressed" '
        'with "test": true (recorded and answered, it alarms nobody)'
    ),
    "fall_sensor": (
        "make it detect a fall (its walk test, or a staged fall in front of it) with "
        "confidence of at least 0.6: this raises a real fall alert at the facility, so "
        "tell its staff first"
    ),
}


def rejection_clause(rejection: Rejection) -> Clause:
    """The clause a refused message breaks, from its reason code and the field it names."""
    if rejection.reason in REASON_CLAUSES:
        return REASON_CLAUSES[rejection.reason]
    if rejection.reason == "bad_field":
        if rejection.detail.startswith("ts:"):
            return "ts"
        if rejection.detail.startswith("seq:"):
            return "seq"
    return "payload"


@dataclass(slots=True)
class _Press:
    seq: int
    at: datetime
    evidence: Evidence
    test: bool
    answer: dict[str, Any] | None = None
    answered_at: datetime | None = None


class Judge:
    """Judges one device's messages against the contract as they arrive; no I/O."""

    def __init__(self, device: DeviceInfo, root: str, credentials: CredentialsState) -> None:
        self.device = device
        self.root = root
        self.credentials = credentials
        self.results: dict[Clause, ClauseResult] = {name: ClauseResult(name) for name in CLAUSES}
        self.messages = 0
        self.hub_rejections: list[Evidence] = []
        self.telemetry: list[tuple[datetime, Evidence]] = []
        self.statuses: list[tuple[datetime, bool, bool]] = []  # (at, online, retained)
        self.presses: list[_Press] = []
        self._last_seq: tuple[int, bytes, Evidence] | None = None
        self._accepted = 0
        self._refused_telemetry = 0
        self._own = {
            channel: topics.topic(root, device.facility_id, device.id, channel)
            for channel in ("ack", "rejected")
        }

    def observe(
        self,
        topic: str,
        payload: bytes,
        received_at: datetime,
        *,
        retained: bool,
        live: bool,
        qos: int | None = None,
    ) -> None:
        """Judge one message seen under the device's topics.

        `retained` is the broker's flag on delivery (a message older than the
        subscription); `live` is False once the vendor has been asked to cut the power,
        when buffered messages with an old `ts` are to be expected. `qos` is the QoS it
        was delivered with, on a QoS 2 subscription the QoS it was published with.
        """
        evidence = Evidence(topic, quote(payload), received_at, "")
        channel = topic.rsplit("/", 1)[-1]
        levels = topic.removeprefix(topics.prefix(self.root)).split("/")
        if channel in ("ack", "rejected") and len(levels) == 3:
            self._hub_answer(channel, topic, payload, evidence)
            return
        self.messages += 1
        if retained and channel != "status":
            # Broker-kept telemetry or events reach every new subscriber, the hub included,
            # long after they were true; nothing else about them is news.
            self._fail("topics", evidence, f"a retained {channel}: only status may be retained")
            return
        if qos is not None and qos < MIN_QOS.get(channel, 0):
            self._fail(
                "topics",
                evidence,
                f"{channel} published at QoS {qos}: the contract asks QoS {MIN_QOS[channel]},"
                " or the message is lost whenever the connection drops",
            )
        decoded = decode(topic, payload, received_at, self.root, {self.device.id: self.device})
        if isinstance(decoded, Rejection):
            if channel == "telemetry":
                self._refused_telemetry += 1
            self._fail(
                rejection_clause(decoded),
                evidence,
                f"the hub refuses it ({decoded.reason}): {decoded.detail}",
            )
            return
        self._accepted += 1
        if isinstance(decoded, StatusChange):
            self.statuses.append((received_at, decoded.online, retained))
            return
        assert isinstance(decoded, Reading | Event)  # noqa: S101 - decode's three kinds
        self._judge_seq(decoded.seq, payload, evidence)
        if live:
            self._judge_skew(decoded.ts, received_at, evidence)
        if isinstance(decoded, Reading):
            self.telemetry.append((received_at, evidence))
        elif self._is_test_press(decoded) and all(p.seq != decoded.seq for p in self.presses):
            self.presses.append(
                _Press(decoded.seq, received_at, evidence, test=decoded.payload.get("test") is True)
            )

    def _fail(self, clause: Clause, evidence: Evidence, why: str) -> None:
        self.results[clause].fail(
            Evidence(evidence.topic, evidence.payload, evidence.received_at, why)
        )

    def _hub_answer(self, channel: str, topic: str, payload: bytes, evidence: Evidence) -> None:
        try:
            body = json.loads(payload)
        except ValueError:
            return
        if not isinstance(body, dict):
            return
        if channel == "rejected":
            why = f"{body.get('reason')}: {body.get('detail')} (for {body.get('topic')})"
            self.hub_rejections.append(Evidence(topic, evidence.payload, evidence.received_at, why))
        elif topic == self._own["ack"]:
            for press in self.presses:
                if press.answer is None and body.get("seq") == press.seq:
                    press.answer = body
                    press.answered_at = evidence.received_at

    @property
    def presses_answered(self) -> bool:
        """Whether every press seen so far has had its answer on ack."""
        return all(press.answer is not None for press in self.presses)

    def _good_press(self, press: _Press) -> bool:
        return (
            press.answer is not None
            and press.answer.get("state") == "received"
            and (press.test or self.device.type != "emergency_button")
        )

    def _judge_seq(self, seq: int, payload: bytes, evidence: Evidence) -> None:
        last = self._last_seq
        if last is not None:
            last_seq, last_payload, last_evidence = last
            if seq < last_seq or (seq == last_seq and payload != last_payload):
                self._fail(
                    "seq",
                    evidence,
                    f"seq {seq} after seq {last_seq} (at {last_evidence.received_at:%H:%M:%S}):"
                    " seq must increase with every message, across restarts too; the hub"
                    " keeps one message per (device_id, seq), so a seq sent twice loses a"
                    " message",
                )
                # Judge the next message against the highest seq seen, not this one.
                return
            if seq == last_seq:
                return  # a QoS 1 redelivery of the same message: allowed, stored once
        self._last_seq = (seq, payload, evidence)

    def _judge_skew(self, ts: datetime, received_at: datetime, evidence: Evidence) -> None:
        lag = (received_at - ts).total_seconds()
        if abs(lag) > MAX_SKEW_S:
            direction = "behind" if lag > 0 else "ahead of"
            self._fail(
                "ts",
                evidence,
                f"ts is {abs(lag):.0f} s {direction} the time it arrived; a live device's"
                f" clock must be within {MAX_SKEW_S} s (set it by NTP)",
            )

    def _is_test_press(self, event: Event) -> bool:
        if event.device_type == "emergency_button":
            return event.event == "pressed"
        if event.device_type == "fall_sensor":
            return event.event == "fall_detected"
        return False

    # --- verdicts --------------------------------------------------------------------------

    def finish(
        self,
        *,
        watch_start: datetime,
        watch_end: datetime,
        retained_status: tuple[bytes, datetime] | None,
        will: WillOutcome,
    ) -> tuple[ClauseResult, ...]:
        """Every clause's verdict once the run is over (or so far: it may be asked again)."""
        # These are judged on the whole run, not message by message: afresh each time.
        for name in FINISH_CLAUSES:
            self.results[name] = ClauseResult(name)
        self._credentials()
        self._topics()
        self._status(watch_end, retained_status, will)
        self._heartbeat(watch_start, watch_end)
        self._simple("seq", "every seq higher than the one before")
        self._simple("ts", f"every ts within {MAX_SKEW_S} s of the time it arrived", only_live=True)
        self._simple("payload", f"every message valid for its type ({self.device.type})")
        self._test_press(watch_end)
        return tuple(self.results.values())

    def _credentials(self) -> None:
        result = self.results["credentials"]
        result.summary = self.credentials.detail
        verdicts: dict[str, Verdict] = {
            "live": "pass",
            "none": "fail",
            "not_managed": "not_checked",
        }
        result.verdict = verdicts[self.credentials.verdict]
        if self.credentials.verdict == "none":
            result.failures = 1

    def _topics(self) -> None:
        result = self.results["topics"]
        own = topics.topic(self.root, self.device.facility_id, self.device.id, "…")
        result.conclude(
            broken=f"{result.failures} message(s) on a topic the contract does not have",
            judged=self.messages,
            unjudged="the device sent nothing to judge",
            ok=f"all {self.messages} message(s) on {own} (event, telemetry, status)",
        )

    def _simple(self, clause: Clause, ok: str, *, only_live: bool = False) -> None:
        result = self.results[clause]
        result.conclude(
            broken=f"{result.failures} message(s) break it",
            judged=self._accepted,
            unjudged="no message the hub accepts arrived to judge",
            ok=ok + (" (during the watch)" if only_live else ""),
        )

    def _status(
        self,
        watch_end: datetime,
        retained_status: tuple[bytes, datetime] | None,
        will: WillOutcome,
    ) -> None:
        result = self.results["status"]
        status_topic = topics.topic(self.root, self.device.facility_id, self.device.id, "status")
        parts: list[str] = []
        if retained_status is None:
            result.fail(
                Evidence(
                    status_topic,
                    "",
                    watch_end,
                    "a new subscriber got no retained status: publish"
                    ' {"online": true} on status with the retain flag when connecting',
                )
            )
        else:
            payload, at = retained_status
            text = quote(payload)
            online = said_online(payload)
            if online is True:
                parts.append("the retained status says online")
            else:
                said = "offline" if online is False else "nothing the contract reads"
                result.fail(
                    Evidence(
                        status_topic,
                        text,
                        at,
                        f"the retained status says {said} while the device runs: publish"
                        ' {"online": true} with the retain flag when connecting',
                    )
                )
        for problem in will.problems:
            result.fail(Evidence(status_topic, problem.payload, problem.received_at, problem.why))
        parts.extend(will.notes)
        if result.verdict != "fail":
            result.summary = "; ".join(parts)
        else:
            result.summary = f"{result.failures} problem(s) with status or the last will"

    def _heartbeat(self, watch_start: datetime, watch_end: datetime) -> None:
        result = self.results["heartbeat"]
        heartbeat = self.device.heartbeat_s
        limit = heartbeat * HEARTBEAT_GRACE
        watched = (watch_end - watch_start).total_seconds()
        beats = [(at, item) for at, item in self.telemetry if at <= watch_end]
        # A refused telemetry is a heartbeat the hub never hears: say why the beat is missing.
        refused = (
            f" ({self._refused_telemetry} refused: see the payload clause)"
            if self._refused_telemetry
            else ""
        )
        if not beats:
            if watched < limit:
                result.verdict = "not_checked"
                result.summary = (
                    f"the watch ({watched:.0f} s) was shorter than heartbeat_s ({heartbeat} s)"
                    " and no telemetry came: run longer"
                )
                return
            result.fail(
                Evidence(
                    topics.topic(self.root, self.device.facility_id, self.device.id, "telemetry"),
                    "",
                    watch_end,
                    f"no telemetry the hub accepts in {watched:.0f} s"
                    f"{refused}; heartbeat_s is {heartbeat} s",
                )
            )
            result.summary = "no telemetry the hub accepts"
            return
        previous: tuple[datetime, Evidence | None] = (watch_start, None)
        longest = 0.0
        for at, item in [*beats, (watch_end, None)]:
            gap = (at - previous[0]).total_seconds()
            longest = max(longest, gap)
            if gap > limit:
                since = "the start of the watch" if previous[1] is None else "the one before"
                if item is None:
                    why = f"nothing for the last {gap:.0f} s of the watch{refused}"
                    shown = previous[1] or Evidence("", "", at, "")
                else:
                    why = f"{gap:.0f} s after {since}{refused}"
                    shown = item
                result.fail(
                    Evidence(
                        shown.topic,
                        shown.payload,
                        at,
                        f"{why}; heartbeat_s is {heartbeat} s (at most {limit:.0f} s allowed)",
                    )
                )
            previous = (at, item)
        if result.verdict != "fail":
            result.summary = (
                f"{len(beats)} telemetry message(s), at most {longest:.0f} s apart"
                f" (heartbeat_s {heartbeat} s)"
            )
        else:
            result.summary = f"{result.failures} gap(s) longer than heartbeat_s"

    def _test_press(self, watch_end: datetime) -> None:
        result = self.results["test_press"]
        what = TEST_PRESSES.get(self.device.type)
        if what is None:
            result.verdict = "not_applicable"
            result.summary = f"a {self.device.type} sends no events, so it has nothing to press"
            return
        ack_topic = self._own["ack"]
        if not self.presses:
            result.fail(
                Evidence(
                    topics.topic(self.root, self.device.facility_id, self.device.id, "event"),
                    "",
                    watch_end,
                    f"no test press arrived during the watch (asked: {what})",
                )
            )
            result.summary = "no test press"
            return
        # One good press is enough; otherwise the last one tells what went wrong.
        press = next((p for p in self.presses if self._good_press(p)), self.presses[-1])
        if press.answer is None:
            result.fail(
                Evidence(
                    press.evidence.topic,
                    press.evidence.payload,
                    press.at,
                    f"no answer for seq {press.seq} on {ack_topic} within {ACK_WAIT_S:.0f} s:"
                    " is the hub running on this broker and database?",
                )
            )
            result.summary = "the press was not answered"
            return
        assert press.answered_at is not None  # noqa: S101 - set together with answer
        delay = (press.answered_at - press.at).total_seconds()
        answer = json.dumps(press.answer, ensure_ascii=False)
        if self.device.type == "emergency_button" and not press.test:
            result.fail(
                Evidence(
                    press.evidence.topic,
                    press.evidence.payload,
                    press.at,
                    'a real call, not a test call: it lacks "test": true, so it raised an sos'
                    f" alert at the facility (answered {answer})",
                )
            )
            result.summary = "the test press went out as a real call"
            return
        if press.answer.get("state") != "received":
            result.fail(
                Evidence(
                    ack_topic,
                    answer,
                    press.answered_at,
                    f"the hub answered seq {press.seq} with state {press.answer.get('state')!r},"
                    ' not "received"',
                )
            )
            result.summary = "the press was answered, but not as received"
            return
        result.summary = f"seq {press.seq} answered on {ack_topic} in {delay:.1f} s: {answer}"


def said_online(payload: bytes) -> bool | None:
    """What a status payload says of `online`; None when it says nothing readable."""
    try:
        body = json.loads(payload)
    except ValueError:
        return None
    online = body.get("online") if isinstance(body, dict) else None
    return online if isinstance(online, bool) else None


@dataclass(frozen=True, slots=True)
class WillOutcome:
    """What the power cut showed: problems (as evidence) and notes for a passing clause."""

    problems: tuple[Evidence, ...] = ()
    notes: tuple[str, ...] = ()
