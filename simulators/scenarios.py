"""Named scenarios to inject into a running simulation: fall, sos, over_capacity, ..."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final

from devices import MAX_PAYLOAD_BYTES, topic
from simulators.behaviour import (
    SHANGHAI,
    ButtonBehaviour,
    CounterBehaviour,
    FallSensorBehaviour,
    format_ts,
)
from simulators.device import SimulatedDevice, new_client
from simulators.district import Device, District, Facility
from simulators.fleet import Fleet

logger = logging.getLogger(__name__)

SCENARIOS: Final[dict[str, str]] = {
    "fall": "a fall sensor in one facility sends fall_detected with high confidence",
    "sos": "an emergency button is pressed (a real call, not a test)",
    "over_capacity": "an occupancy counter reports more people than its zone capacity for minutes",
    "dropout": "every device of one facility loses power: its will publishes status offline",
    "garbage": "hostile payloads on device topics and junk topics (each should be rejected)",
}

# The hub measures rule durations on its own clock: over_capacity needs ≥ 2 real minutes
# (SPEC §4), so the surge lasts three, however fast the simulated clock runs.
OVER_CAPACITY_REAL_S: Final = 180.0
OVER_CAPACITY_MIN_SIM_S: Final = 10 * 60.0
# Long enough for device_offline alerts, the flood grouping and the big screen to show it.
DROPOUT_SILENT_S: Final = 180.0
# The fallen resident is up again after 20 simulated minutes: past the long_lie threshold.
FALL_CLEAR_SIM_S: Final = 20 * 60.0
# How long to wait for the chosen device to be connected before injecting anyway.
CONNECT_WAIT_S: Final = 10.0


@dataclass(frozen=True, slots=True)
class ScenarioReport:
    """What a scenario did, for the operator running the simulation."""

    name: str
    summary: str
    details: tuple[str, ...] = ()

    def __str__(self) -> str:
        """The summary and one indented line per detail."""
        return "\n".join(
            [f"[scenario {self.name}] {self.summary}", *(f"  {d}" for d in self.details)]
        )


@dataclass(frozen=True, slots=True)
class GarbageMessage:
    """One hostile message, and the reason code the hub should answer it with."""

    what: str
    topic: str
    payload: bytes
    expect: str


async def _connected(sim: SimulatedDevice) -> None:
    try:
        async with asyncio.timeout(CONNECT_WAIT_S):
            await sim.connected.wait()
    except TimeoutError:
        logger.warning("device %s is not connected; the scenario is queued on it", sim.id)


def _where(fleet: Fleet, sim: SimulatedDevice) -> str:
    facility = fleet.district.facility(sim.device.facility_id)
    zone = ""
    if sim.device.zone_id:
        zone = " / " + fleet.district.zone(sim.device.zone_id).name
    return f"{facility.name} ({facility.id}){zone}"


async def fall(fleet: Fleet, rng: random.Random) -> ScenarioReport:
    """A fall sensor sends fall_detected with high confidence; fall_cleared follows much later."""
    sim = rng.choice(fleet.of_type("fall_sensor"))
    behaviour = sim.behaviour
    assert isinstance(behaviour, FallSensorBehaviour)  # noqa: S101 - the catalogue type says so
    await _connected(sim)
    confidence = round(rng.uniform(0.9, 0.99), 2)
    behaviour.inject_fall(fleet.clock.now(), confidence, FALL_CLEAR_SIM_S)
    sim.wake()
    return ScenarioReport(
        "fall",
        f"{sim.id} at {_where(fleet, sim)} sent fall_detected, confidence {confidence}",
        (
            f"topic {sim.topic('event')}",
            f"fall_cleared in {FALL_CLEAR_SIM_S / 60:.0f} simulated minutes "
            f"({fleet.clock.real_seconds(FALL_CLEAR_SIM_S):.0f} s real)",
        ),
    )


async def sos(fleet: Fleet, rng: random.Random) -> ScenarioReport:
    """An emergency button sends a real `pressed` (not a test, not cancelled)."""
    sim = rng.choice(fleet.of_type("emergency_button"))
    behaviour = sim.behaviour
    assert isinstance(behaviour, ButtonBehaviour)  # noqa: S101 - the catalogue type says so
    await _connected(sim)
    behaviour.inject_press(fleet.clock.now())
    sim.wake()
    return ScenarioReport(
        "sos",
        f"{sim.id} ({behaviour.button}) at {_where(fleet, sim)} was pressed",
        (f"topic {sim.topic('event')}", f"watch {sim.topic('ack')} for the hub's answer"),
    )


async def over_capacity(fleet: Fleet, rng: random.Random) -> ScenarioReport:
    """An occupancy counter reports more people than its zone's capacity for several minutes."""
    counters = fleet.of_type("occupancy_counter")
    # A childcare class makes the point best: its capacity is a national limit.
    classes = [
        sim
        for sim in counters
        if isinstance(sim.behaviour, CounterBehaviour) and sim.behaviour.ratio
    ]
    sim = rng.choice(classes or counters)
    behaviour = sim.behaviour
    assert isinstance(behaviour, CounterBehaviour)  # noqa: S101 - the catalogue type says so
    await _connected(sim)
    extra = rng.randint(3, 6)
    hold_sim_s = max(OVER_CAPACITY_MIN_SIM_S, OVER_CAPACITY_REAL_S * fleet.clock.time_scale)
    behaviour.inject_over_capacity(fleet.clock.now(), hold_sim_s, extra)
    sim.wake()
    return ScenarioReport(
        "over_capacity",
        f"{sim.id} at {_where(fleet, sim)} reports {behaviour.capacity + extra} people "
        f"(capacity {behaviour.capacity}) for {fleet.clock.real_seconds(hold_sim_s):.0f} s real",
        (
            f"topic {sim.topic('telemetry')}",
            "a class also reports its staff in `count` and `staff`"
            if behaviour.ratio
            else "a common area: `count` only",
        ),
    )


# SPEC §4: more than 10 new alerts in 10 minutes at one facility is a flood.
FLOOD_ALERTS: Final = 10


def flood_facilities(district: District) -> list[Facility]:
    """Facilities with devices enough that losing them all is a flood (or the largest one)."""
    sizes = {f.id: len(district.devices_of(f.id)) for f in district.facilities}
    large = [f for f in district.facilities if sizes[f.id] > FLOOD_ALERTS]
    if large or not district.facilities:
        return large
    return [max(district.facilities, key=lambda f: sizes[f.id])]


async def dropout(fleet: Fleet, rng: random.Random) -> ScenarioReport:
    """Every device of one facility drops its connection uncleanly, so each will fires."""
    return drop_facility(fleet, rng.choice(fleet.district.facilities))


def drop_facility(fleet: Fleet, facility: Facility) -> ScenarioReport:
    """Every device of `facility` drops its connection uncleanly (a power cut)."""
    sims = fleet.in_facility(facility.id)
    for sim in sims:
        sim.drop(DROPOUT_SILENT_S)
    statuses = f"{fleet.link.topic_root}/v1/{facility.id}/+/status"
    return ScenarioReport(
        "dropout",
        f"{len(sims)} devices of {facility.name} ({facility.id}) lost their connections; "
        f"silent for {DROPOUT_SILENT_S:.0f} s, then they reconnect",
        (f'wills publish {{"online": false}} on {statuses}',),
    )


def _json(body: dict[str, Any]) -> bytes:
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()


def garbage_messages(
    district: District,
    topic_root: str,
    rng: random.Random,
    now: datetime | None = None,
) -> list[GarbageMessage]:
    """Hostile messages against a district, each with the reason code the hub should give."""
    moment = now or datetime.now(SHANGHAI)
    ts = format_ts(moment)
    sensors = [d for d in district.devices if d.type == "fall_sensor"]
    buttons = [d for d in district.devices if d.type == "emergency_button"]
    counters = [d for d in district.devices if d.type == "occupancy_counter"]
    sensor = rng.choice(sensors or list(district.devices))
    button = rng.choice(buttons or list(district.devices))
    counter = rng.choice(counters or list(district.devices))
    home = sensor.facility_id
    elsewhere = next((f.id for f in district.facilities if f.id != home), home + "x")

    def on(device: Device, channel: str) -> str:
        return topic(topic_root, device.facility_id, device.id, channel)

    def valid(**fields: Any) -> dict[str, Any]:
        return {"ts": ts, "seq": rng.randint(0, 1000), **fields}

    fell = {"event": "fall_detected", "confidence": 0.9, "posture": "lying"}
    telemetry = {"presence": True, "battery": 80, "rssi": -60}
    nested = b'{"ts":"' + ts.encode() + b'","seq":1,"deep":' + b"[" * 5000 + b"]" * 5000 + b"}"
    s_event, s_tele = on(sensor, "event"), on(sensor, "telemetry")
    return [
        GarbageMessage("not JSON", s_event, "救命!!! fall".encode(), "not_json"),
        GarbageMessage("empty payload", s_event, b"", "not_json"),
        GarbageMessage("invalid UTF-8", s_tele, b'{"ts":"\xff\xfe\xfd","seq":1}', "not_json"),
        GarbageMessage(
            "UTF-8 byte-order mark", s_tele, b"\xef\xbb\xbf" + _json(valid(**telemetry)), "not_json"
        ),
        GarbageMessage("truncated JSON", s_event, _json(valid(**fell))[:-7], "not_json"),
        GarbageMessage(
            "NaN battery",
            s_tele,
            f'{{"ts":"{ts}","seq":2,"battery":NaN,"rssi":-60}}'.encode(),
            "not_json",
        ),
        GarbageMessage(
            "Infinity confidence",
            s_event,
            f'{{"ts":"{ts}","seq":3,"event":"fall_detected","confidence":Infinity}}'.encode(),
            "not_json",
        ),
        GarbageMessage("JSON array", s_tele, b"[1,2,3]", "not_object"),
        GarbageMessage("JSON string", s_event, b'"fall_detected"', "not_object"),
        GarbageMessage("JSON null", s_tele, b"null", "not_object"),
        GarbageMessage(
            f"payload over {MAX_PAYLOAD_BYTES // 1024} KiB",
            s_tele,
            _json(valid(**telemetry, pad="x" * (MAX_PAYLOAD_BYTES + 1000))),
            "too_large",
        ),
        GarbageMessage(
            "payload of 256 KiB",
            s_tele,
            _json(valid(**telemetry, pad="填" * (256 * 1024 // 3))),
            "too_large",
        ),
        GarbageMessage("JSON nested 5000 deep", s_tele, nested, "bad_field"),
        GarbageMessage(
            "U+0000 in a string", s_event, _json(valid(**fell, zone="r\x00oom")), "bad_field"
        ),
        GarbageMessage("seq -1", s_tele, _json({"ts": ts, "seq": -1, **telemetry}), "bad_field"),
        GarbageMessage(
            "seq as text", s_tele, _json({"ts": ts, "seq": "7", **telemetry}), "bad_field"
        ),
        GarbageMessage(
            "seq 2**64", s_tele, _json({"ts": ts, "seq": 2**64, **telemetry}), "bad_field"
        ),
        GarbageMessage("seq 1.5", s_tele, _json({"ts": ts, "seq": 1.5, **telemetry}), "bad_field"),
        GarbageMessage("seq missing", s_tele, _json({"ts": ts, **telemetry}), "bad_field"),
        GarbageMessage("ts missing", s_tele, _json({"seq": 4, **telemetry}), "bad_field"),
        GarbageMessage(
            "ts not a time", s_tele, _json(valid(**telemetry) | {"ts": "yesterday"}), "bad_field"
        ),
        GarbageMessage(
            "ts without offset",
            s_tele,
            _json(valid(**telemetry) | {"ts": moment.strftime("%Y-%m-%dT%H:%M:%S")}),
            "bad_field",
        ),
        GarbageMessage(
            "ts as epoch number",
            s_tele,
            _json(valid(**telemetry) | {"ts": math.floor(moment.timestamp())}),
            "bad_field",
        ),
        GarbageMessage(
            "ts February 30",
            s_tele,
            _json(valid(**telemetry) | {"ts": "2026-02-30T08:00:00+08:00"}),
            "bad_field",
        ),
        GarbageMessage(
            "ts three days ago",
            s_tele,
            _json(valid(**telemetry) | {"ts": format_ts(moment - timedelta(days=3))}),
            "bad_time",
        ),
        GarbageMessage(
            "ts an hour ahead",
            s_tele,
            _json(valid(**telemetry) | {"ts": format_ts(moment + timedelta(hours=1))}),
            "bad_time",
        ),
        GarbageMessage(
            "confidence 1.5", s_event, _json(valid(**fell) | {"confidence": 1.5}), "bad_field"
        ),
        GarbageMessage(
            "confidence missing", s_event, _json(valid(event="fall_detected")), "bad_field"
        ),
        GarbageMessage(
            "posture invented", s_event, _json(valid(**fell) | {"posture": "flying"}), "bad_field"
        ),
        GarbageMessage(
            "battery as text", s_tele, _json(valid(**telemetry) | {"battery": "full"}), "bad_field"
        ),
        GarbageMessage(
            "battery 180", s_tele, _json(valid(**telemetry) | {"battery": 180}), "bad_field"
        ),
        GarbageMessage(
            "presence as text", s_tele, _json(valid(**telemetry) | {"presence": "yes"}), "bad_field"
        ),
        GarbageMessage("event missing", s_event, _json(valid(confidence=0.9)), "bad_field"),
        GarbageMessage("event a number", s_event, _json(valid(event=42)), "bad_field"),
        GarbageMessage("unknown event", s_event, _json(valid(event="exploded")), "unknown_event"),
        GarbageMessage(
            "button kind invented",
            on(button, "event"),
            _json(valid(event="pressed", button="foot")),
            "bad_field",
        ),
        GarbageMessage(
            "event from a counter",
            on(counter, "event"),
            _json(valid(event="pressed", button="red")),
            "unknown_event",
        ),
        GarbageMessage(
            "count negative", on(counter, "telemetry"), _json(valid(count=-3)), "bad_field"
        ),
        GarbageMessage("status not JSON", on(sensor, "status"), b"online", "not_json"),
        GarbageMessage(
            "status online as text", on(sensor, "status"), b'{"online":"yes"}', "bad_field"
        ),
        GarbageMessage(
            "wrong facility",
            topic(topic_root, elsewhere, sensor.id, "telemetry"),
            _json(valid(**telemetry)),
            "wrong_facility",
        ),
        GarbageMessage(
            "unknown device",
            topic(topic_root, home, f"{home}-zz-99", "telemetry"),
            _json(valid(**telemetry)),
            "unknown_device",
        ),
        # A valid fall event on each kind of malformed topic: the topic alone is at fault.
        *(
            GarbageMessage(what, bad_topic, _json(valid(**fell)), "bad_topic")
            for what, bad_topic in (
                ("missing channel", f"{topic_root}/v1/{home}/{sensor.id}"),
                ("extra topic level", s_event + "/extra"),
                ("unknown channel", on(sensor, "alarm")),
                ("contract v2", f"{topic_root}/v2/{home}/{sensor.id}/event"),
                ("empty facility level", f"{topic_root}/v1//{sensor.id}/event"),
                ("Chinese device id", topic(topic_root, home, "一号跌倒传感器", "event")),
                ("device id of 65 characters", topic(topic_root, home, "x" * 65, "event")),
            )
        ),
        GarbageMessage("junk topic", f"{topic_root}/junk", b"hello", "bad_topic"),
        GarbageMessage(
            "junk topic, binary", f"{topic_root}/v1/{home}", bytes(range(256)), "bad_topic"
        ),
    ]


async def garbage(fleet: Fleet, rng: random.Random) -> ScenarioReport:
    """Publish every hostile message from a separate connection (QoS 1, never retained)."""
    cases = garbage_messages(fleet.district, fleet.link.topic_root, rng)
    client = new_client(fleet.link.target, fleet.link.protocol, f"carehub-sim-garbage-{fleet.seed}")
    async with client:
        for case in cases:
            await client.publish(case.topic, case.payload, qos=1, retain=False)
    return ScenarioReport(
        "garbage",
        f"published {len(cases)} hostile messages; each should draw the reason code shown",
        tuple(
            f"{case.expect:<15} {case.what} on {case.topic[:90]} ({len(case.payload)} bytes)"
            for case in cases
        ),
    )


_RUNNERS: Final[dict[str, Callable[[Fleet, random.Random], Awaitable[ScenarioReport]]]] = {
    "fall": fall,
    "sos": sos,
    "over_capacity": over_capacity,
    "dropout": dropout,
    "garbage": garbage,
}


async def run_scenario(name: str, fleet: Fleet, rng: random.Random | None = None) -> ScenarioReport:
    """Inject the scenario called `name` into a running fleet and say what it did."""
    runner = _RUNNERS.get(name)
    if runner is None:
        raise ValueError(f"unknown scenario {name!r}; known: {', '.join(SCENARIOS)}")
    report = await runner(fleet, rng or random.Random(f"carehub-scenario:{fleet.seed}:{name}"))
    logger.debug("%s", report)
    return report
