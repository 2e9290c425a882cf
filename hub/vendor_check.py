"""The vendor's conformance check (SPEC §1, §3): one device's real traffic, judged clause by clause.

The check connects to the broker as a client of its own, with the hub's settings, and
listens under `{root}/v1/+/{device}/#`: everything the device publishes on its own
topics (or under a wrong facility), and the hub's `ack` and `rejected` answers to it.
Payloads are judged by the hub's own decoder, so the check and the hub never disagree
on what is valid. Then it asks the vendor for two things it cannot see by itself: a
test press, and a power cut that makes the broker send the device's last will.

`Judge` is the pure part (messages in, verdicts out); `run_vendor_check` the MQTT part.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any, Final, Literal

import aiomqtt

from devices import MAX_FUTURE_S, topics
from hub.decode import decode
from hub.errors import HubError
from hub.ingest import make_client
from hub.models import DeviceInfo, Event, Reading, Rejection, StatusChange
from hub.settings import Settings
from hub.storage.credentials import CredentialsState, device_credentials
from hub.storage.pool import connect
from hub.storage.registry import find_device

logger = logging.getLogger(__name__)

Clause = Literal[
    "credentials", "topics", "status", "heartbeat", "seq", "ts", "payload", "test_press"
]
# The clauses of SPEC §1 in the order the report lists them, with the words it uses.
CLAUSES: Final[dict[Clause, str]] = {
    "credentials": "credentials and client id",
    "topics": "topics",
    "status": "retained status and last will",
    "heartbeat": "telemetry within heartbeat_s",
    "seq": "seq increasing",
    "ts": "ts within the allowed skew",
    "payload": "every payload valid for the device's type",
    "test_press": "a test press answered on ack",
}
# The clauses judged on the whole run rather than on each message as it comes.
FINISH_CLAUSES: Final[tuple[Clause, ...]] = ("credentials", "status", "heartbeat", "test_press")
Verdict = Literal["pass", "fail", "not_checked", "not_applicable"]

# A heartbeat may come a little late: the firmware's timer, the network and a broker's
# queue all add their share. A quarter of heartbeat_s is generous to those, and far from
# the 2 x heartbeat_s after which the hub raises device_offline.
HEARTBEAT_GRACE: Final = 1.25
# A live device's clock may be this far off the check's, either way: the hub refuses a
# `ts` further ahead (bad_time), and one as far behind misdates every alert it raises.
MAX_SKEW_S: Final = MAX_FUTURE_S
# The hub answers a press at once; this covers a busy broker and a database commit.
ACK_WAIT_S: Final = 15.0
# How long a new subscriber waits for the broker to hand it the retained status.
RETAINED_WAIT_S: Final = 3.0
# Each clause keeps this many failing messages as evidence (the count says how many more).
MAX_EVIDENCE: Final = 5
# Payloads are quoted this long at most in the report.
QUOTE_CHARS: Final = 240
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


class VendorCheckError(HubError):
    """The check cannot run: an unregistered device, an unreachable broker."""


@dataclass(frozen=True, slots=True)
class Evidence:
    """One message behind a verdict, and why it counts."""

    topic: str
    payload: str
    received_at: datetime
    why: str

    def as_json(self) -> dict[str, Any]:
        """The evidence as a JSON object."""
        return {
            "topic": self.topic,
            "payload": self.payload,
            "received_at": self.received_at.isoformat(timespec="milliseconds"),
            "why": self.why,
        }


@dataclass(slots=True)
class ClauseResult:
    """The verdict on one clause: a summary, and the failing messages (at most MAX_EVIDENCE)."""

    clause: Clause
    verdict: Verdict = "pass"
    summary: str = ""
    failures: int = 0
    evidence: list[Evidence] = field(default_factory=list)

    @property
    def title(self) -> str:
        """The clause in the report's words."""
        return CLAUSES[self.clause]

    def fail(self, evidence: Evidence) -> None:
        """Count one failing message, keeping the first few as evidence."""
        self.verdict = "fail"
        self.failures += 1
        if len(self.evidence) < MAX_EVIDENCE:
            self.evidence.append(evidence)

    def conclude(self, *, broken: str, judged: int, unjudged: str, ok: str) -> None:
        """Say `broken` if a message failed; else not checked (`unjudged`) if `judged` is 0;
        else `ok`."""
        if self.verdict == "fail":
            self.summary = broken
        elif judged == 0:
            self.verdict = "not_checked"
            self.summary = unjudged
        else:
            self.summary = ok

    def as_json(self) -> dict[str, Any]:
        """The verdict as a JSON object."""
        return {
            "clause": self.clause,
            "title": self.title,
            "verdict": self.verdict,
            "summary": self.summary,
            "failures": self.failures,
            "evidence": [item.as_json() for item in self.evidence],
        }


@dataclass(frozen=True, slots=True)
class Report:
    """The whole conformance report of one run."""

    device: DeviceInfo
    watched: str
    started_at: datetime
    duration_s: float
    messages: int
    clauses: tuple[ClauseResult, ...]
    hub_rejections: tuple[Evidence, ...]

    @property
    def passed(self) -> bool:
        """True when no clause failed."""
        return not self.failed

    @property
    def failed(self) -> list[Clause]:
        """The clauses that failed, in report order."""
        return [result.clause for result in self.clauses if result.verdict == "fail"]

    def clause(self, name: Clause) -> ClauseResult:
        """The verdict on one clause."""
        return next(result for result in self.clauses if result.clause == name)

    def as_json(self) -> dict[str, Any]:
        """The report as one JSON object (`carehub vendor-check --json`)."""
        return {
            # The registry's DeviceInfo, field for field.
            "device": asdict(self.device),
            "passed": self.passed,
            "failed": self.failed,
            "watched": self.watched,
            "started_at": self.started_at.isoformat(timespec="seconds"),
            "duration_s": round(self.duration_s, 1),
            "messages": self.messages,
            "clauses": [result.as_json() for result in self.clauses],
            "hub_rejections": [item.as_json() for item in self.hub_rejections],
        }


def quote(payload: bytes) -> str:
    """A payload as the report shows it: text, cut to QUOTE_CHARS."""
    text = payload.decode("utf-8", "replace")
    return text if len(text) <= QUOTE_CHARS else text[: QUOTE_CHARS - 1] + "…"


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
            online = _online(payload)
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


def _online(payload: bytes) -> bool | None:
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


PromptKind = Literal["info", "test_press", "cut_power", "restore_power"]


@dataclass(frozen=True, slots=True)
class Prompt:
    """Something the check tells the vendor, or asks them to do now."""

    kind: PromptKind
    text: str


OnPrompt = Callable[[Prompt], Awaitable[None] | None]


class _Watch:
    """The check's MQTT connection: every message goes to the judge, and wakes the waiters."""

    def __init__(self, judge: Judge) -> None:
        self.judge = judge
        self.live = True
        self._changed = asyncio.Condition()

    async def listen(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            payload = message.payload if isinstance(message.payload, bytes) else b""
            self.judge.observe(
                str(message.topic),
                payload,
                datetime.now().astimezone(),
                retained=bool(message.retain),
                live=self.live,
                qos=message.qos,
            )
            async with self._changed:
                self._changed.notify_all()

    async def until(self, condition: Callable[[], bool], timeout_s: float) -> bool:
        """Wait until `condition` holds (True) or `timeout_s` passes (False)."""
        try:
            async with asyncio.timeout(max(0.0, timeout_s)), self._changed:
                await self._changed.wait_for(condition)
        except TimeoutError:
            return condition()
        return True


async def _say(on_prompt: OnPrompt, kind: PromptKind, text: str) -> None:
    outcome = on_prompt(Prompt(kind, text))
    if outcome is not None:
        await outcome


async def read_retained(settings: Settings, topic: str) -> tuple[bytes, datetime] | None:
    """What the broker hands a new subscriber of `topic` as retained, or None."""
    client = make_client(
        settings, identifier=f"carehub-vendor-check-{uuid.uuid4().hex[:8]}", persistent=False
    )
    async with client:
        await client.subscribe(topic, qos=1)
        try:
            async with asyncio.timeout(RETAINED_WAIT_S):
                async for message in client.messages:
                    if message.retain:
                        payload = message.payload if isinstance(message.payload, bytes) else b""
                        return payload, datetime.now().astimezone()
        except TimeoutError:
            return None
    return None


async def _will_phase(
    settings: Settings, watch: _Watch, on_prompt: OnPrompt, will_wait_s: float
) -> WillOutcome:
    """Ask for a power cut; the broker must publish the will, and the device come back."""
    judge = watch.judge
    device = judge.device
    status_topic = topics.topic(settings.topic_root, device.facility_id, device.id, "status")
    problems: list[Evidence] = []
    notes: list[str] = []
    seen = len(judge.statuses)
    watch.live = False
    cut_at = datetime.now().astimezone()
    await _say(
        on_prompt,
        "cut_power",
        f"Now cut {device.id}'s power (or pull its network cable): do not switch it off"
        f" cleanly. Waiting up to {will_wait_s:.0f} s for its last will on {status_topic}"
        " (a broker sends it at once when the connection drops, or after 1.5 x the"
        " device's keepalive when the network just goes quiet).",
    )

    def said(online: bool, after: int) -> Callable[[], bool]:
        return lambda: any(s[1] is online for s in judge.statuses[after:])

    def problem(payload: str, why: str) -> None:
        problems.append(Evidence(status_topic, payload, datetime.now().astimezone(), why))

    if not await watch.until(said(False, seen), will_wait_s):
        problem(
            "",
            f"no offline status within {will_wait_s:.0f} s of the power cut: connect with"
            ' a last will of {"online": false} on status, qos 1, retained',
        )
        return WillOutcome(tuple(problems), tuple(notes))
    offline_at = next(at for at, online, _ in judge.statuses[seen:] if online is False)
    notes.append(f"the last will came {(offline_at - cut_at).total_seconds():.1f} s after the cut")
    back = len(judge.statuses)
    retained = await read_retained(settings, status_topic)
    if retained is None or _online(retained[0]) is None:
        problem(
            quote(retained[0]) if retained else "",
            "the last will is not retained: a screen that connects later still cannot"
            " tell the device is offline (set the will's retain flag)",
        )
    elif _online(retained[0]) is False:
        notes.append("the will is retained")
    await _say(
        on_prompt,
        "restore_power",
        f"Power {device.id} up again. Waiting up to {will_wait_s:.0f} s for it to say online.",
    )
    if not await watch.until(said(True, back), will_wait_s):
        problem(
            "",
            f"no online status within {will_wait_s:.0f} s of power coming back: publish"
            ' {"online": true}, retained, on every connection',
        )
    else:
        notes.append("it said online again when it came back")
    return WillOutcome(tuple(problems), tuple(notes))


def opening_notes(judge: Judge, duration_s: float) -> list[str]:
    """Notes for the vendor before the watch: a device that is not up, a watch too short."""
    device = judge.device
    notes: list[str] = []
    if not any(online for _, online, _ in judge.statuses):
        said = "says offline" if judge.statuses else "holds no status"
        notes.append(
            f"Note: the broker {said} for {device.id}: power it up now, or it will fail"
            " most clauses."
        )
    if duration_s < 2 * device.heartbeat_s:
        notes.append(
            f"Note: {duration_s:.0f} s is less than two heartbeats (heartbeat_s"
            f" {device.heartbeat_s}): run with --duration {2 * device.heartbeat_s} or more"
            " to judge the heartbeat fully."
        )
    return notes


async def load_device(settings: Settings, device_id: str) -> tuple[DeviceInfo, CredentialsState]:
    """The registered device and its credentials; VendorCheckError when it is not registered."""
    async with await connect(settings) as conn:
        device = await find_device(conn, device_id)
        if device is None:
            raise VendorCheckError(
                f"device {device_id!r} is not registered: the hub would answer everything it"
                " sends with unknown_device. Register it first (carehub devices import FILE,"
                f" or carehub devices register {device_id} --type TYPE --zone ZONE)"
            )
        return device, await device_credentials(conn, device_id)


async def run_vendor_check(
    settings: Settings,
    device_id: str,
    *,
    duration_s: float,
    will_wait_s: float,
    on_prompt: OnPrompt,
) -> Report:
    """Watch the device for `duration_s`, ask for a test press and a power cut; the report."""
    if not all(math.isfinite(s) and s > 0 for s in (duration_s, will_wait_s)):
        raise VendorCheckError("--duration and --will-wait must be positive numbers of seconds")
    device, credentials = await load_device(settings, device_id)
    judge = Judge(device, settings.topic_root, credentials)
    watch = _Watch(judge)
    watched = f"{topics.prefix(settings.topic_root)}+/{device.id}/#"
    status_topic = topics.topic(settings.topic_root, device.facility_id, device.id, "status")
    client = make_client(
        settings, identifier=f"carehub-vendor-check-{uuid.uuid4().hex[:8]}", persistent=False
    )
    try:
        async with client, asyncio.TaskGroup() as tasks:
            # QoS 2, so that each message comes at the QoS its publisher chose. (amqtt, the
            # embedded broker, raises every delivery to the subscription's QoS: there a
            # QoS 0 call looks like QoS 2, and only this part of the check is blind.)
            await client.subscribe(watched, qos=2)
            listener = tasks.create_task(watch.listen(client))
            started_at = datetime.now().astimezone()
            started = time.monotonic()
            await _say(
                on_prompt,
                "info",
                f"Watching {watched} for {duration_s:.0f} s ({device.type} at"
                f" {device.facility_id}, heartbeat_s {device.heartbeat_s}).",
            )
            # The broker hands over the retained status at once, if it holds one.
            await watch.until(lambda: bool(judge.statuses), RETAINED_WAIT_S)
            for note in opening_notes(judge, duration_s):
                await _say(on_prompt, "info", note)
            if device.type in TEST_PRESSES:
                await _say(
                    on_prompt,
                    "test_press",
                    f"Within the next {duration_s:.0f} s, {TEST_PRESSES[device.type]}.",
                )
            await asyncio.sleep(duration_s)
            watch_end = datetime.now().astimezone()
            await watch.until(lambda: judge.presses_answered, ACK_WAIT_S)
            retained = await read_retained(settings, status_topic)
            will = await _will_phase(settings, watch, on_prompt, will_wait_s)
            listener.cancel()
    except (aiomqtt.MqttError, ExceptionGroup) as exc:
        # The listener's lost connection comes wrapped by the task group; anything else
        # that went wrong is a bug, and is raised as it is.
        if isinstance(exc, ExceptionGroup) and exc.split(aiomqtt.MqttError)[1] is not None:
            raise
        raise VendorCheckError(
            f"lost or refused by the broker at {settings.mqtt.host}:{settings.mqtt.port}: {exc}"
        ) from exc
    clauses = judge.finish(
        watch_start=started_at, watch_end=watch_end, retained_status=retained, will=will
    )
    return Report(
        device,
        watched,
        started_at,
        time.monotonic() - started,
        judge.messages,
        clauses,
        tuple(judge.hub_rejections),
    )


VERDICT_WORDS: Final[dict[Verdict, str]] = {
    "pass": "PASS",
    "fail": "FAIL",
    "not_checked": "NOT CHECKED",
    "not_applicable": "N/A",
}


def render(report: Report) -> str:
    """The report as text, clause by clause, each failure with its message and why."""
    device = report.device
    lines = [
        f"carehub vendor-check {device.id}: {device.type} at {device.facility_id}"
        f" (zone {device.zone_id or '-'}), heartbeat_s {device.heartbeat_s}",
        f"watched {report.watched} from {report.started_at:%Y-%m-%d %H:%M:%S%z}"
        f" for {report.duration_s:.0f} s: {report.messages} message(s) from the device",
        "",
    ]
    for result in report.clauses:
        lines.append(f"{VERDICT_WORDS[result.verdict]:11}  {result.title}: {result.summary}")
        for item in result.evidence:
            lines.append(f"             {item.received_at:%H:%M:%S} {item.topic}")
            if item.payload:
                lines.append(f"               {item.payload}")
            lines.append(f"               -> {item.why}")
        if result.failures > len(result.evidence):
            lines.append(f"             ... and {result.failures - len(result.evidence)} more")
    if report.hub_rejections:
        lines.extend(["", "the hub answered on rejected:"])
        lines.extend(
            f"  {item.received_at:%H:%M:%S} {item.topic}: {item.why}"
            for item in report.hub_rejections[:MAX_EVIDENCE]
        )
    failed = report.failed
    lines.append("")
    if failed:
        names = ", ".join(CLAUSES[name] for name in failed)
        lines.append(f"result: FAIL ({len(failed)} of {len(CLAUSES)} clauses: {names})")
    else:
        unchecked = [r.title for r in report.clauses if r.verdict == "not_checked"]
        suffix = f"; not checked: {', '.join(unchecked)}" if unchecked else ""
        lines.append(f"result: PASS{suffix}")
    return "\n".join(lines)


__all__ = [
    "CLAUSES",
    "Judge",
    "Prompt",
    "Report",
    "VendorCheckError",
    "render",
    "run_vendor_check",
]
