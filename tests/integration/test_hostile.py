"""Hostile input over real MQTT: generated junk topics and payloads never stop the hub.

Hypothesis draws streams of bad messages (random bytes, oversized, invalid JSON, wrong types
and ranges, deep nesting, U+0000, unknown devices, wrong facilities, events of another device
type, timestamps far off, topics with wrong levels or ids) and interleaves them with valid
messages from registered devices. Every example checks, against SPEC §3 and §8, that:

- each valid message is stored exactly once (published twice at times, as a redelivery);
- each hostile message on a subscribed topic has one dead-letter row with its reason code,
  and, when its topic has facility and device levels one can publish under (ids or not),
  one `rejected` reply with the same code;
- hostile messages on topics the hub does not subscribe to leave no trace;
- the hub is still up: one MQTT connection all along, nothing spooled, every stage running.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import aiomqtt
import pytest
from hypothesis import HealthCheck, Phase, event, example, given, note, settings
from hypothesis import strategies as st

from bench.mqtt import connect_packet, puback_packet, publish_packet
from devices import CATALOGUE, MAX_PAYLOAD_BYTES, topics
from hub.models import Event, Rejection
from hub.runtime import Hub
from hub.settings import Settings
from hub.storage.pool import create_pool
from hub.storage.writer import BatchWriter
from tests.fix_hub import (
    DB,
    DEVICES,
    FACILITY,
    OTHER_FACILITY,
    background_task,
    now_ts,
    raw_client,
    wait_for,
)
from tests.fix_services import MQTT_URL_ENV

pytestmark = [pytest.mark.mqtt, pytest.mark.db, pytest.mark.slow]


# SPEC §3's words, written out here rather than imported: the test holds the hub to the
# contract. One sentence in SPEC's order, so it reads as the vendor's page does.
SPEC_REASON_SENTENCE = (
    "not_json not_object too_large bad_topic unknown_device wrong_facility bad_field"
    " bad_time unknown_event"
)
SPEC_REASONS = frozenset(SPEC_REASON_SENTENCE.split())
CHANNELS = ("event", "telemetry", "status")
ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
# Hostile payloads that slip through would be stored under these seqs, far above the
# valid stream's, so any such row shows up as an extra.
HOSTILE_SEQ = 10**9
# Margins well clear of the 24 h / 5 min window, so test and hub clocks never disagree.
FAR_PAST = timedelta(hours=25)
FAR_FUTURE = timedelta(minutes=10)
SETTLE_S = 20.0


@dataclass(frozen=True)
class Hostile:
    """One bad message: where it goes (after the topic root), its bytes, and the verdict due."""

    kind: str
    tail: str
    payload: bytes
    # The reason codes SPEC §3 allows for it; None: any code (random bytes can be anything).
    reasons: frozenset[str] | None

    def __repr__(self) -> str:  # hypothesis prints falsifying examples with this
        body = self.payload[:120]
        more = f"... ({len(self.payload)} bytes)" if len(self.payload) > 120 else ""
        return f"Hostile({self.kind}, {self.tail!r}, {body!r}{more}, {self.reasons})"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        """Hypothesis prints examples with this: short, where a payload may be 1 MiB."""
        del cycle
        printer.text(repr(self))

    @property
    def levels(self) -> list[str]:
        """The topic levels after the root."""
        return self.tail.split("/")

    @property
    def subscribed(self) -> bool:
        """True when the topic matches `{root}/v1/+/+/{event,telemetry,status}` (SPEC §3)."""
        levels = self.levels
        return len(levels) == 4 and levels[0] == "v1" and levels[3] in CHANNELS

    @property
    def replied(self) -> bool:
        """True when the hub can tell the sender: the topic has a facility and a device
        level it can publish `rejected` under, ids or not (SPEC §3 `bad_topic`)."""
        return self.subscribed and topics.rejection_topic(f"r/{self.tail}", "r") is not None

    @property
    def expected(self) -> frozenset[str]:
        """The reason codes this message may be rejected with."""
        levels = self.levels
        if not (ID.fullmatch(levels[1]) and ID.fullmatch(levels[2])):
            return frozenset({"bad_topic"})
        return self.reasons if self.reasons is not None else SPEC_REASONS


# --- valid messages ---------------------------------------------------------------------

VALID: dict[str, list[tuple[str, dict[str, Any]]]] = {
    "fs-1": [
        (
            "event",
            {"event": "fall_detected", "confidence": 0.9, "zone": "room-101", "posture": "lying"},
        ),
        ("event", {"event": "fall_cleared"}),
        ("event", {"event": "dwell", "seconds": 900}),
        ("telemetry", {"presence": True, "battery": 88.5, "rssi": -61}),
    ],
    "eb-1": [
        ("event", {"event": "pressed", "button": "pull_cord"}),
        ("event", {"event": "pressed", "button": "red", "test": True}),
        ("event", {"event": "cancelled"}),
        ("telemetry", {"battery": 14, "rssi": -70}),
    ],
    "oc-1": [("telemetry", {"count": 12, "staff": 3, "zone": "class-a"})],
}
# Odd but within the contract: unknown fields are kept, whatever they hold (SPEC §3).
ODD_BUT_VALID: list[dict[str, Any]] = [
    {"vendor": {"big": 10**40, "negative": -(10**30), "tiny": 1e-300, "zero": -0.0}},
    {"vendor": {"note": "房间 101 🙂 — ñ", "empty": "", "list": [None, True, 1.5, "x"]}},
    {"vendor": {"deep": json.loads("[" * 30 + "]" * 30)}},
    {"vendor": None, "firmware": "x" * 4000},
]


@dataclass(frozen=True)
class Valid:
    """A valid message from a registered device; its seq is given when it is published."""

    device_id: str
    template: int
    odd: int | None
    twice: bool


valid_messages = st.builds(
    Valid,
    device_id=st.sampled_from(sorted(DEVICES)),
    template=st.integers(0, 3),
    odd=st.none() | st.integers(0, len(ODD_BUT_VALID) - 1),
    twice=st.booleans(),
)


# --- hostile topics ---------------------------------------------------------------------

# Characters a broker forwards in a topic: no wildcards, no level separator, and none that
# MQTT forbids or lets a broker refuse (U+0000, controls, surrogates, non-characters).
_topic_chars = st.characters(exclude_categories=("Cc", "Cs", "Cn"), exclude_characters="/+#\x00")
ids = st.from_regex(r"\A[A-Za-z0-9_-]{1,64}\Z")
unknown_ids = ids.filter(lambda device_id: device_id not in DEVICES)
other_facilities = ids.filter(lambda facility_id: facility_id != FACILITY)
_not_id_chars = st.characters(
    exclude_categories=("Cc", "Cs", "Cn"),
    exclude_characters="/+#\x00-_0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz",
)
bad_ids = st.one_of(
    st.sampled_from(["", "x" * 65, "设施", "🙂", "a b", "é", "f.sun", "f-sun\u200b", "ÆØÅ"]),
    # An id with at least one character SPEC §3 does not allow in it.
    st.builds(
        lambda head, bad, tail: head + bad + tail,
        st.text(_topic_chars, max_size=10),
        _not_id_chars,
        st.text(_topic_chars, max_size=10),
    ),
)
channels = st.sampled_from(CHANNELS)


@st.composite
def bad_topics(draw: st.DrawFn) -> Hostile:
    """A topic the hub subscribes to, whose facility or device level is not an id."""
    facility = draw(st.one_of(st.just(FACILITY), bad_ids))
    device = draw(bad_ids) if ID.fullmatch(facility) else draw(st.one_of(ids, bad_ids))
    payload = draw(st.sampled_from([b"{}", b"", _valid_json("eb-1", "event")]))
    return Hostile("bad_topic", f"v1/{facility}/{device}/{draw(channels)}", payload, None)


@st.composite
def unsubscribed_topics(draw: st.DrawFn) -> Hostile:
    """A topic under the root that the hub does not subscribe to: it must leave no trace."""
    device = draw(st.sampled_from(sorted(DEVICES)))
    level = draw(st.text(_topic_chars, max_size=12).filter(lambda c: c not in CHANNELS))
    # Not `ack`/`rejected`: the hub publishes there itself and the test listens there.
    level = level if level not in ("ack", "rejected") else level + "x"
    tail = draw(
        st.sampled_from(
            [
                f"v1/{FACILITY}/{device}/{level}",
                f"v1/{FACILITY}/{device}/event/{level}",
                f"v1/{FACILITY}/{device}/telemetry/",
                f"v1/{FACILITY}/event",
                f"v1/{device}",
                f"v2/{FACILITY}/{device}/event",
                f"V1/{FACILITY}/{device}/telemetry",
                "v1",
                "",
                f"{level}/{FACILITY}/{device}/event/x",
            ]
        )
    )
    return Hostile("unsubscribed", tail, _valid_json(device, "event"), None)


@st.composite
def unknown_devices(draw: st.DrawFn) -> Hostile:
    """A well-formed topic of a device nobody registered: unknown_device, and pending."""
    device = draw(unknown_ids)
    facility = draw(st.one_of(st.just(FACILITY), ids))
    payload = draw(st.one_of(st.just(_valid_json("eb-1", "event")), st.binary(max_size=64)))
    tail = f"v1/{facility}/{device}/{draw(channels)}"
    return Hostile("unknown_device", tail, payload, frozenset({"unknown_device"}))


@st.composite
def wrong_facilities(draw: st.DrawFn) -> Hostile:
    """A registered device publishing under another facility's id: wrong_facility."""
    device = draw(st.sampled_from(sorted(DEVICES)))
    facility = draw(st.one_of(st.just(OTHER_FACILITY), other_facilities))
    channel = draw(channels)
    tail = f"v1/{facility}/{device}/{channel}"
    return Hostile(
        "wrong_facility", tail, _valid_json(device, channel), frozenset({"wrong_facility"})
    )


# --- hostile payloads on a registered device's own topic --------------------------------


def _base(device: str, channel: str) -> dict[str, Any]:
    """A valid body for this device and channel (with a seq no valid message uses)."""
    if channel == "status":
        return {"online": True}
    # An occupancy counter has no events: its telemetry stands in where the body is not judged.
    fields = next((f for c, f in VALID[device] if c == channel), VALID[device][0][1])
    return {"ts": now_ts(), "seq": HOSTILE_SEQ, **fields}


def _json(body: Any) -> bytes:
    return json.dumps(body).encode()


def _valid_json(device: str, channel: str) -> bytes:
    return _json(_base(device, channel))


device_channels = st.sampled_from(
    [
        ("fs-1", "event"),
        ("fs-1", "telemetry"),
        ("eb-1", "event"),
        ("eb-1", "telemetry"),
        ("oc-1", "telemetry"),
        ("fs-1", "status"),
        ("eb-1", "status"),
        ("oc-1", "status"),
    ]
)
json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
)
not_objects = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=4), max_leaves=8)
NOT_JSON = [
    b"{",
    b"}",
    b"NaN",
    b"Infinity",
    b"{'seq': 1}",
    b'{"seq": 1,}',
    b'{"seq": 01}',
    b"\xef\xbb\xbf{}",
    b'{"ts": "\xff"}',
    b'{"a": "\\ud800"}',
    b'{"a": 1e400}',
    b'{"a": ' + b"9" * 5000 + b"}",
    b"\x00",
    b'{"a": 1} trailing',
    b'{"a" 1}',
    b"[1, 2",
]
# (field, value): values SPEC §3 and the device catalogue refuse, by device and channel.
BAD_FIELDS: dict[tuple[str, str], list[tuple[str, Any]]] = {
    ("fs-1", "event"): [
        ("confidence", 1.0001),
        ("confidence", -0.5),
        ("confidence", "0.9"),
        ("confidence", True),
        ("confidence", None),
        ("confidence", 10**40),
        ("posture", "standing"),
        ("posture", 3),
        ("zone", "z" * 65),
        ("zone", ["room-101"]),
    ],
    ("fs-1", "telemetry"): [
        ("presence", "yes"),
        ("presence", 1),
        ("battery", 100.5),
        ("battery", -1),
        ("battery", "88"),
        ("battery", 1e308),
        ("rssi", 1),
        ("rssi", -151),
        ("rssi", False),
    ],
    ("eb-1", "event"): [("button", "blue"), ("button", None), ("button", 1), ("test", "yes")],
    ("eb-1", "telemetry"): [("battery", 101), ("battery", [50]), ("rssi", "strong")],
    ("oc-1", "telemetry"): [
        ("count", -1),
        ("count", 100_001),
        ("count", 2.5),
        ("count", "7"),
        ("count", True),
        ("count", 10**40),
        ("staff", -3),
        ("staff", {"n": 1}),
        ("zone", 5),
        ("rssi", 0.5),
    ],
}
BAD_SEQ = [-1, -(2**63), 2**63, 2**64, 10**30, 1.5, 1.0, "1", True, None, [], {}]
BAD_TS = [
    123,
    None,
    "",
    "yesterday",
    "2026-11-22T08:15:00",
    "2026-11-22",
    "2026-13-01T00:00:00Z",
    "2026-02-30T00:00:00+08:00",
    "2026-01-01T00:00:60Z",
    "2026-11-22T08:15:00+0800",
    "2026-11-22T08:15:00+99:99",
    "0000-01-01T00:00:00Z",
    "２０２６-01-01T00:00:00Z",
]
FAR_TS = ["0001-01-01T00:00:00+14:00", "1970-01-01T00:00:00Z", "9999-12-31T23:59:59-23:59"]
WRONG_TYPE_EVENTS: dict[str, list[dict[str, Any]]] = {
    "fs-1": [{"event": "pressed", "button": "red"}, {"event": "cancelled"}],
    "eb-1": [{"event": "fall_detected", "confidence": 0.9}, {"event": "dwell", "seconds": 5}],
}


# Each kind of bad payload: (draw, device, channel, valid body) -> (bytes, reasons due).
PayloadKind = Callable[[st.DrawFn, str, str, dict[str, Any]], tuple[bytes, frozenset[str] | None]]
ANY_REASON = None


def _random_bytes(draw: st.DrawFn, _d: str, _c: str, _b: dict[str, Any]) -> tuple[bytes, None]:
    return draw(st.binary(max_size=256)), ANY_REASON


def _random_text(draw: st.DrawFn, _d: str, _c: str, _b: dict[str, Any]) -> tuple[bytes, None]:
    return draw(st.text(max_size=64)).encode(), ANY_REASON


def _not_json(
    draw: st.DrawFn, _d: str, _c: str, _b: dict[str, Any]
) -> tuple[bytes, frozenset[str]]:
    return draw(st.sampled_from(NOT_JSON)), frozenset({"not_json"})


def _not_object(
    draw: st.DrawFn, _d: str, _c: str, _b: dict[str, Any]
) -> tuple[bytes, frozenset[str]]:
    return _json(draw(not_objects)), frozenset({"not_object"})


def _too_large(
    draw: st.DrawFn, _d: str, _c: str, body: dict[str, Any]
) -> tuple[bytes, frozenset[str]]:
    size = draw(
        st.one_of(st.integers(MAX_PAYLOAD_BYTES + 1, 4 * MAX_PAYLOAD_BYTES), st.just(1 << 20))
    )
    if draw(st.booleans()):
        return _json({**body, "pad": "x" * size}), frozenset({"too_large"})
    chunk = draw(st.binary(min_size=1, max_size=16))
    return (chunk * (size // len(chunk) + 1))[:size], frozenset({"too_large"})


def _nesting(
    draw: st.DrawFn, _d: str, _c: str, body: dict[str, Any]
) -> tuple[bytes, frozenset[str]]:
    # The body is level 1, so 32 more levels is one past the hub's limit; thousands make
    # msgspec itself give up.
    depth = draw(st.one_of(st.integers(32, 64), st.integers(65, 5000)))
    lists = draw(st.booleans())
    deep = "[" * depth + "]" * depth if lists else '{"a":' * depth + "1" + "}" * depth
    payload = _json(body)[:-1] + b', "x": ' + deep.encode() + b"}"
    # Size is judged before structure: thousands of levels can be too large first.
    return payload, frozenset({"too_large" if len(payload) > MAX_PAYLOAD_BYTES else "bad_field"})


def _nul(draw: st.DrawFn, _d: str, _c: str, body: dict[str, Any]) -> tuple[bytes, frozenset[str]]:
    extras: list[dict[str, Any]] = [
        {"note": "a\u0000b"},
        {"a\u0000": 1},
        {"vendor": {"list": [1, {"x": "\u0000"}]}},
    ]
    extra = draw(st.sampled_from(extras))
    return _json({**body, **extra}), frozenset({"bad_field"})


def _seq(draw: st.DrawFn, _d: str, _c: str, body: dict[str, Any]) -> tuple[bytes, frozenset[str]]:
    value = draw(st.sampled_from([*BAD_SEQ, "missing"]))
    body = {k: v for k, v in body.items() if k != "seq"}
    if value != "missing":
        body["seq"] = value
    return _json(body), frozenset({"bad_field"})


def _ts(draw: st.DrawFn, _d: str, _c: str, body: dict[str, Any]) -> tuple[bytes, frozenset[str]]:
    return _json({**body, "ts": draw(st.sampled_from(BAD_TS))}), frozenset({"bad_field"})


def _far_ts(
    draw: st.DrawFn, _d: str, _c: str, body: dict[str, Any]
) -> tuple[bytes, frozenset[str]]:
    past = draw(st.timedeltas(min_value=FAR_PAST, max_value=timedelta(days=36500)))
    future = draw(st.timedeltas(min_value=FAR_FUTURE, max_value=timedelta(days=36500)))
    ts = draw(st.sampled_from([now_ts(-past), now_ts(future), *FAR_TS]))
    return _json({**body, "ts": ts}), frozenset({"bad_time"})


def _field(
    draw: st.DrawFn, device: str, channel: str, body: dict[str, Any]
) -> tuple[bytes, frozenset[str]]:
    name, value = draw(st.sampled_from(BAD_FIELDS[(device, channel)]))
    return _json({**body, name: value}), frozenset({"bad_field"})


def _event_name(
    draw: st.DrawFn, device: str, _c: str, body: dict[str, Any]
) -> tuple[bytes, frozenset[str]]:
    if draw(st.booleans()):
        # A string, but not an event this device type sends (SPEC §3 table).
        known = {event.name for event in CATALOGUE[DEVICES[device]].events}
        name = draw(st.text(max_size=80).filter(lambda text: text not in known))
        return _json({"ts": body["ts"], "seq": HOSTILE_SEQ, "event": name}), frozenset(
            {"unknown_event"}
        )
    value = draw(st.sampled_from(["missing", 5, None, ["pressed"], {"e": 1}]))
    body = {k: v for k, v in body.items() if k != "event"}
    if value != "missing":
        body["event"] = value
    return _json(body), frozenset({"bad_field"})


def _wrong_type(
    draw: st.DrawFn, device: str, _c: str, _b: dict[str, Any]
) -> tuple[bytes, frozenset[str]]:
    fields = draw(st.sampled_from(WRONG_TYPE_EVENTS[device]))
    return _json({"ts": now_ts(), "seq": HOSTILE_SEQ, **fields}), frozenset({"unknown_event"})


def _online(draw: st.DrawFn, _d: str, _c: str, _b: dict[str, Any]) -> tuple[bytes, frozenset[str]]:
    body = draw(
        st.sampled_from(
            [
                {},
                {"online": "true"},
                {"online": 1},
                {"online": None},
                {"Online": True},
                {"online": [True]},
            ]
        )
    )
    return _json(body), frozenset({"bad_field"})


ANY_CHANNEL: dict[str, PayloadKind] = {
    "random": _random_bytes,
    "text": _random_text,
    "not_json": _not_json,
    "not_object": _not_object,
    "too_large": _too_large,
    "nesting": _nesting,
    "nul": _nul,
}
BY_CHANNEL: dict[str, dict[str, PayloadKind]] = {
    "event": {
        "seq": _seq,
        "ts": _ts,
        "far_ts": _far_ts,
        "field": _field,
        "event_name": _event_name,
        "wrong_type": _wrong_type,
    },
    "telemetry": {"seq": _seq, "ts": _ts, "far_ts": _far_ts, "field": _field},
    "status": {"online": _online},
}


@st.composite
def bad_payloads(draw: st.DrawFn) -> Hostile:
    """A registered device's own topic with a payload the contract refuses."""
    device, channel = draw(device_channels)
    kinds = {**ANY_CHANNEL, **BY_CHANNEL[channel]}
    kind = draw(st.sampled_from(sorted(kinds)))
    payload, reasons = kinds[kind](draw, device, channel, _base(device, channel))
    return Hostile(kind, f"v1/{FACILITY}/{device}/{channel}", payload, reasons)


@st.composite
def oc_events(draw: st.DrawFn) -> Hostile:
    """An occupancy counter sends no events at all: any well-formed event is unknown_event."""
    fields = draw(st.sampled_from([{"event": "pressed", "button": "red"}, {"event": "count"}]))
    payload = {"ts": now_ts(), "seq": HOSTILE_SEQ, **fields}
    return Hostile(
        "oc_event",
        f"v1/{FACILITY}/oc-1/event",
        json.dumps(payload).encode(),
        frozenset({"unknown_event"}),
    )


hostile_messages = st.one_of(
    # Payloads come in the most shapes, so they get the most draws.
    bad_payloads(),
    bad_payloads(),
    bad_payloads(),
    bad_topics(),
    unsubscribed_topics(),
    unknown_devices(),
    wrong_facilities(),
    oc_events(),
)


def _every_kind() -> list[Hostile]:
    """One message of each kind, so every run covers them all whatever hypothesis draws."""
    any_code = ANY_REASON
    ts = now_ts()
    f = f"v1/{FACILITY}"
    return [
        Hostile("random", f"{f}/eb-1/event", b"\x00\xff\xfe{", any_code),
        Hostile("text", f"{f}/fs-1/telemetry", "ü{ 设".encode(), any_code),
        Hostile("not_json", f"{f}/eb-1/status", b"NaN", frozenset({"not_json"})),
        Hostile("not_object", f"{f}/oc-1/telemetry", b'[1, {"a": 2}]', frozenset({"not_object"})),
        Hostile(
            "too_large",
            f"{f}/eb-1/event",
            _json({**_base("eb-1", "event"), "pad": "x" * MAX_PAYLOAD_BYTES}),
            frozenset({"too_large"}),
        ),
        Hostile(
            "nesting",
            f"{f}/fs-1/telemetry",
            _json(_base("fs-1", "telemetry"))[:-1] + b', "x": ' + b"[" * 5000 + b"]" * 5000 + b"}",
            frozenset({"bad_field"}),
        ),
        Hostile(
            "nul",
            f"{f}/oc-1/telemetry",
            _json({**_base("oc-1", "telemetry"), "a\u0000": 1}),
            frozenset({"bad_field"}),
        ),
        Hostile(
            "seq",
            f"{f}/eb-1/telemetry",
            _json({**_base("eb-1", "telemetry"), "seq": 2**64}),
            frozenset({"bad_field"}),
        ),
        Hostile(
            "ts",
            f"{f}/fs-1/event",
            _json({**_base("fs-1", "event"), "ts": "2026-02-30T00:00:00Z"}),
            frozenset({"bad_field"}),
        ),
        Hostile(
            "far_ts",
            f"{f}/fs-1/event",
            _json({**_base("fs-1", "event"), "ts": FAR_TS[-1]}),
            frozenset({"bad_time"}),
        ),
        Hostile(
            "field",
            f"{f}/oc-1/telemetry",
            _json({**_base("oc-1", "telemetry"), "count": 10**40}),
            frozenset({"bad_field"}),
        ),
        Hostile(
            "event_name",
            f"{f}/fs-1/event",
            _json({"ts": ts, "seq": HOSTILE_SEQ, "event": "exploded"}),
            frozenset({"unknown_event"}),
        ),
        Hostile(
            "wrong_type",
            f"{f}/eb-1/event",
            _json({"ts": ts, "seq": HOSTILE_SEQ, "event": "fall_detected", "confidence": 0.9}),
            frozenset({"unknown_event"}),
        ),
        Hostile("online", f"{f}/eb-1/status", b'{"online": "true"}', frozenset({"bad_field"})),
        Hostile("bad_topic", "v1/设施/eb-1/event", b"{}", any_code),
        Hostile("unsubscribed", f"{f}/eb-1/firmware", b"{}", any_code),
        Hostile("unknown_device", f"{f}/ghost-1/telemetry", b"{}", frozenset({"unknown_device"})),
        Hostile(
            "wrong_facility",
            f"v1/{OTHER_FACILITY}/eb-1/event",
            _valid_json("eb-1", "event"),
            frozenset({"wrong_facility"}),
        ),
        Hostile(
            "oc_event",
            f"{f}/oc-1/event",
            _json({"ts": ts, "seq": HOSTILE_SEQ, "event": "pressed", "button": "red"}),
            frozenset({"unknown_event"}),
        ),
    ]


# --- the harness: one hub, one publisher, one listener on every `rejected` topic ---------


class Harness:
    """What persists across examples: clients, the next seq per device, running totals.

    A plain class, not a dataclass: hypothesis prints a dataclass field by field with every
    failing example, and this one holds the whole hub.
    """

    def __init__(self, hub: Hub, db: DB, publisher: aiomqtt.Client) -> None:
        self.hub = hub
        self.db = db
        self.publisher = publisher
        self.replies: list[dict[str, Any]] = []
        self.seq: Counter[str] = Counter()
        self.stored: set[tuple[str, int]] = set()
        self.dead_letters = 0
        self.last_dead_letter_id = 0
        self.unknown: set[str] = set()

    @property
    def root(self) -> str:
        """The hub's topic root."""
        return self.hub.settings.topic_root

    def __repr__(self) -> str:  # kept short: hypothesis prints it with every failing example
        return f"Harness(root={self.root!r}, valid={len(self.stored)}, replies={len(self.replies)})"


@pytest.fixture
async def harness(running_hub: Hub, db: DB) -> AsyncIterator[Harness]:
    """A publisher for the stream and a listener on `{root}/v1/+/+/rejected`."""
    settings = running_hub.settings
    async with (
        raw_client(settings, "hostile-pub") as publisher,
        raw_client(settings, "hostile-obs") as observer,
    ):
        await observer.subscribe(f"{settings.topic_root}/v1/+/+/rejected", qos=1)
        state = Harness(running_hub, db, publisher)

        async def listen() -> None:
            async for message in observer.messages:
                assert isinstance(message.payload, bytes)
                state.replies.append(json.loads(message.payload))

        async with background_task(listen()):
            yield state


async def _rows(db: DB, query: str, *params: Any) -> list[tuple[Any, ...]]:
    cur = await db.execute(query.encode(), params)
    return await cur.fetchall()


async def _publish_valid(h: Harness, message: Valid) -> None:
    channel, fields = VALID[message.device_id][message.template % len(VALID[message.device_id])]
    h.seq[message.device_id] += 1
    seq = h.seq[message.device_id]
    body = {"ts": now_ts(), "seq": seq, **fields}
    if message.odd is not None:
        body.update(ODD_BUT_VALID[message.odd])
    topic = topics.topic(h.root, FACILITY, message.device_id, channel)
    payload = json.dumps(body).encode()
    for _ in range(2 if message.twice else 1):
        await h.publisher.publish(topic, payload, qos=1)
    h.stored.add((message.device_id, seq))


def _assert_hub_alive(hub: Hub) -> None:
    """The hub's stages run, on the connection it started with, and nothing went to the spool."""
    running = {task.get_name() for task in asyncio.all_tasks() if not task.done()}
    assert {"carehub-pipeline", "carehub-events", "carehub-ingest", "carehub-ingest-events"} <= (
        running
    )
    assert hub.mqtt_connected
    for lane in (hub.ingest, hub.event_ingest):
        assert lane.connections == 1, "hostile input cost the hub a broker connection"
    assert hub.metrics.database_up
    assert hub.metrics.spooled_batches == 0, "hostile input was taken for a database outage"
    assert hub.metrics.replies_dropped == 0


@settings(
    max_examples=50,
    deadline=None,
    database=None,
    # The hub, its schema and the clients are built once and shared by every example.
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
    # Examples share one database, so a shrunk replay would not start from a clean state.
    phases=[Phase.explicit, Phase.generate],
)
@example(stream=[(hostile, []) for hostile in _every_kind()], last=Valid("eb-1", 0, 0, twice=True))
@given(
    stream=st.lists(
        st.tuples(hostile_messages, st.lists(valid_messages, max_size=2)), min_size=1, max_size=8
    ),
    last=valid_messages,
)
async def test_hostile_stream_is_refused_with_reasons_and_valid_traffic_is_stored_once(
    harness: Harness, stream: list[tuple[Hostile, list[Valid]]], last: Valid
) -> None:
    """Each hostile message is refused with its reason; each valid one is stored once."""
    h = harness
    replies_before = len(h.replies)
    for hostile, valids in stream:
        event(hostile.kind)
        await h.publisher.publish(f"{h.root}/{hostile.tail}", hostile.payload, qos=1)
        if hostile.subscribed and hostile.expected == {"unknown_device"}:
            h.unknown.add(hostile.levels[2])
        for message in valids:
            await _publish_valid(h, message)
    await _publish_valid(h, last)

    hostiles = [hostile for hostile, _ in stream]
    dead = [m for m in hostiles if m.subscribed]
    replied = [m for m in hostiles if m.replied]
    h.dead_letters += len(dead)

    seen: dict[str, int] = {}

    async def settled() -> bool:
        rows = await _rows(
            h.db,
            "SELECT (SELECT count(*) FROM events) + (SELECT count(*) FROM readings),"
            " (SELECT count(*) FROM dead_letters)",
        )
        seen.update(stored=rows[0][0], dead_letters=rows[0][1], replies=len(h.replies))
        return (
            seen["stored"] >= len(h.stored)
            and seen["dead_letters"] >= h.dead_letters
            and seen["replies"] >= replies_before + len(replied)
        )

    try:
        await wait_for(settled, timeout=SETTLE_S)
    except pytest.fail.Exception:
        expected = {
            "stored": len(h.stored),
            "dead_letters": h.dead_letters,
            "replies": replies_before + len(replied),
        }
        pytest.fail(f"not settled within {SETTLE_S} s: expected {expected}, saw {seen}")
    # A moment for anything extra (a duplicate row, a second reply) to show itself.
    await asyncio.sleep(0.05)

    stored = await _rows(
        h.db,
        "SELECT device_id, seq FROM events UNION ALL SELECT device_id, seq FROM readings",
    )
    assert len(stored) == len(set(stored)), "a valid message was stored more than once"
    assert set(stored) == h.stored, "stored rows differ from the valid messages published"

    new_dead = await _rows(
        h.db,
        "SELECT id, topic, reason, detail FROM dead_letters WHERE id > %s ORDER BY id",
        h.last_dead_letter_id,
    )
    note(f"dead letters: {[(t, r, d[:80]) for _, t, r, d in new_dead]}")
    assert len(new_dead) == len(dead)
    if new_dead:
        h.last_dead_letter_id = new_dead[-1][0]
    _assert_verdicts(h.root, dead, [(topic, reason) for _, topic, reason, _ in new_dead])
    assert all(detail for *_, detail in new_dead), "every dead letter says why"

    new_replies = h.replies[replies_before:]
    note(f"replies: {[(r['topic'], r['reason'], r['detail'][:80]) for r in new_replies]}")
    assert len(new_replies) == len(replied)
    _assert_verdicts(h.root, replied, [(r["topic"], r["reason"]) for r in new_replies])
    for reply in new_replies:
        assert reply["detail"]
        assert reply["received_at"]

    pending = {row[0] for row in await _rows(h.db, "SELECT device_id FROM pending_devices")}
    assert pending == h.unknown
    _assert_hub_alive(h.hub)


def _assert_verdicts(root: str, sent: list[Hostile], verdicts: list[tuple[str, str]]) -> None:
    """Each message sent got one verdict on its own topic, with a reason SPEC §3 allows for it."""
    by_topic: dict[str, list[str]] = {}
    for topic, reason in verdicts:
        assert reason in SPEC_REASONS, f"{reason!r} is not a SPEC §3 reason code"
        by_topic.setdefault(topic, []).append(reason)
    # The narrowest expectations first: replies on one topic may come in any order, and a
    # message that allows any reason must not take the one another message needs.
    for message in sorted(sent, key=lambda m: len(m.expected)):
        topic = f"{root}/{message.tail}"
        reasons = by_topic.get(topic)
        assert reasons, f"no verdict for {message!r}"
        match = next((r for r in reasons if r in message.expected), None)
        assert match is not None, (
            f"{message!r} got {reasons}, expected one of {set(message.expected)}"
        )
        reasons.remove(match)
    assert not any(by_topic.values()), f"verdicts for messages never sent: {by_topic}"


async def _raw_publish(settings: Settings, topic: bytes, payload: bytes) -> bool:
    """Publish QoS 1 with the benches' hand-made MQTT 3.1.1 packets; True if the broker acked it.

    No client library would send such a topic, which is the point: a broker may still.
    """
    target = settings.mqtt
    reader, writer = await asyncio.open_connection(target.host, target.port)
    try:
        writer.write(
            connect_packet(
                f"raw-{uuid.uuid4().hex[:8]}",
                username=target.username,
                password=target.password,
                keepalive_s=30,
            )
        )
        connack = await asyncio.wait_for(reader.readexactly(4), 5)
        assert connack[0] == 0x20 and connack[3] == 0, f"broker refused the connection: {connack!r}"
        writer.write(publish_packet(topic, payload, qos=1, packet_id=1))
        await writer.drain()
        try:
            puback = await asyncio.wait_for(reader.readexactly(4), 3)
        except (asyncio.IncompleteReadError, ConnectionError, TimeoutError):
            return False  # the broker dropped us instead: a protocol error, as MQTT allows
        return puback == puback_packet(1)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


NUL_LEVEL = b"eb-1\x00"


@pytest.mark.parametrize(
    "level",
    [pytest.param(NUL_LEVEL, id="nul"), pytest.param(b"eb-\xff\xfe", id="not-utf8")],
)
async def test_topic_the_broker_should_refuse_is_dead_lettered_and_storage_carries_on(
    running_hub: Hub, db: DB, level: bytes
) -> None:
    """A forbidden topic that a broker forwards (amqtt does) is a dead letter, not an outage."""
    settings = running_hub.settings
    prefix = f"{settings.topic_root}/v1/{FACILITY}/"
    await _raw_publish(settings, prefix.encode() + level + b"/event", b"{}")

    async with raw_client(settings, "after") as client:
        body = {"ts": now_ts(), "seq": 1, "event": "pressed", "button": "red"}
        await client.publish(f"{prefix}eb-1/event", json.dumps(body).encode(), qos=1)

        async def stored() -> bool:
            rows = await _rows(db, "SELECT count(*) FROM events WHERE device_id = 'eb-1'")
            return bool(rows[0][0] == 1)

        await wait_for(stored, timeout=SETTLE_S)
    # The hub reads its one connection in order: whatever reached it came before the event.
    # A PUBACK proves nothing here (amqtt acks a non-UTF-8 topic and drops it).
    heard = running_hub.metrics.received - 1
    if level == NUL_LEVEL and not os.environ.get(MQTT_URL_ENV):
        assert heard == 1, "amqtt no longer forwards U+0000: this case tests nothing there"
    dead = await _rows(db, "SELECT reason, topic FROM dead_letters")
    assert [reason for reason, _ in dead] == ["bad_topic"] * heard
    for _, topic in dead:
        assert topic.startswith(prefix)
        assert "\u0000" not in topic
    _assert_hub_alive(running_hub)


async def test_dead_letter_with_nul_in_its_topic_is_stored_in_the_same_batch(
    migrated: Settings, db: DB
) -> None:
    """The writer stores a U+0000 topic's dead letter beside valid rows: no batch is lost to it."""
    now = datetime.now(UTC)
    topic = f"{migrated.topic_root}/v1/{FACILITY}/eb-1\u0000/event"
    rejection = Rejection(topic, "bad_topic", "device_id must match", now, b"{}", None, None)
    event = Event(
        device_id="eb-1",
        facility_id=FACILITY,
        zone_id="room-101",
        device_type="emergency_button",
        seq=1,
        ts=now,
        received_at=now,
        event="cancelled",
        payload={"event": "cancelled"},
    )
    pool = create_pool(migrated, min_size=1)
    await pool.open(wait=True, timeout=10)
    try:
        result = await BatchWriter(pool, migrated.topic_root).write([rejection, event])
    finally:
        await pool.close()
    assert (result.events, result.dead_letters, result.refused) == (1, 1, [])
    rows = await _rows(db, "SELECT reason, topic, payload_size FROM dead_letters")
    assert rows == [("bad_topic", topic.replace("\u0000", "\ufffd"), 2)]


# Topics whose facility or device level breaks the id rule, and whether the sender can be
# answered on `rejected` beside them (devices/topics.py rejection_topic).
MALFORMED_IDS: list[tuple[str, str, bool]] = [
    ("F1", "FS!1", True),
    ("设施", "eb-1", True),
    (FACILITY, "x" * 65, True),
    (FACILITY, "a b", True),
    (FACILITY, "f.sun\u200b", True),
    ("🙂", "🙂", True),
    (FACILITY, "x" * 257, False),
    (FACILITY, "bad\ufffd", False),
    (FACILITY, "", False),
    ("", "eb-1", False),
]


async def test_malformed_ids_are_answered_bad_topic_on_their_own_rejected_topic(
    running_hub: Hub, db: DB
) -> None:
    """A message whose ids are malformed is refused as bad_topic and answered once on the
    `rejected` of the topic as written, when that is a topic one can publish to."""
    root = running_hub.settings.topic_root
    heard: list[tuple[str, dict[str, Any]]] = []
    async with raw_client(running_hub.settings, "listener") as listener:
        await listener.subscribe(f"{root}/v1/+/+/rejected", qos=1)

        async def listen() -> None:
            async for message in listener.messages:
                heard.append((str(message.topic), json.loads(message.payload)))

        async with background_task(listen()), raw_client(running_hub.settings) as device:
            for facility, device_id, _ in MALFORMED_IDS:
                for channel in ("telemetry", "event", "status"):
                    body = json.dumps({"ts": now_ts(), "seq": 1, "battery": 80}).encode()
                    await device.publish(f"{root}/v1/{facility}/{device_id}/{channel}", body, qos=1)
            answered = [entry for entry in MALFORMED_IDS if entry[2]]

            async def all_dead_lettered() -> bool:
                rows = await _rows(db, "SELECT count(*) FROM dead_letters")
                return bool(rows[0][0] == 3 * len(MALFORMED_IDS))

            await wait_for(all_dead_lettered, timeout=SETTLE_S)
            await wait_for(lambda: len(heard) >= 3 * len(answered), timeout=SETTLE_S)
            # Whatever else was coming would have come by now.
            await asyncio.sleep(1.0)

    assert len(heard) == 3 * len(answered)
    for facility, device_id, _ in answered:
        replies = [
            body for topic, body in heard if topic == f"{root}/v1/{facility}/{device_id}/rejected"
        ]
        # One answer per message, on its own topic: no more (replies are not amplified).
        assert sorted((body["reason"], body["topic"].rsplit("/", 1)[1]) for body in replies) == [
            ("bad_topic", "event"),
            ("bad_topic", "status"),
            ("bad_topic", "telemetry"),
        ], (facility, device_id)
        assert all("must match" in body["detail"] for body in replies)
    reasons = await _rows(db, "SELECT DISTINCT reason FROM dead_letters")
    assert reasons == [("bad_topic",)]
    _assert_hub_alive(running_hub)
