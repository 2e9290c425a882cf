"""The simulators build a realistic district and payloads that keep the device contract."""

from __future__ import annotations

import csv
import json
import math
import random
import re
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from devices import CATALOGUE, ID_PATTERN, MAX_PAYLOAD_BYTES, REASON_CODES, first_bad_field
from devices.registry_files import Zone
from hub.cli.demo import regulator_accounts
from simulators import (
    CLASS_LIMITS,
    SCENARIOS,
    SHANGHAI,
    Device,
    Faults,
    Link,
    SimClock,
    SimulatedDevice,
    build_demo_district,
    build_district,
    daily_fraction,
    format_ts,
    garbage_messages,
    parse_mqtt_url,
    run_simulation,
)
from simulators.behaviour import (
    ButtonBehaviour,
    CounterBehaviour,
    FallSensorBehaviour,
    Outgoing,
    make_behaviour,
)
from simulators.device import encode_payload
from simulators.district import _PLACES as PLACES
from simulators.district import _SCATTER as SCATTER
from simulators.district import _STREETS as STREETS
from simulators.district import District

SPEC_HEADERS = {
    "facilities.csv": "id,name,kind,district,address,latitude,longitude,registration_no,beds,"
    "childcare_places",
    "zones.csv": "facility_id,zone_id,name,kind,capacity,class_type",
    "devices.csv": "id,facility_id,type,zone_id,heartbeat_s,vendor,model",
}
TS = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}\+08:00$")
# A weekday in the simulated district's own time zone, at midnight.
MIDNIGHT = datetime(2026, 11, 23, tzinfo=SHANGHAI)


@pytest.fixture(scope="module")
def district() -> District:
    """The 20-facility district the demo runs."""
    return build_district(20, seed=7)


def _contract_problem(device_type: str, channel: str, payload: bytes) -> str | None:
    """Why `payload` breaks the contract for this device type, or None when it keeps it."""
    if len(payload) > MAX_PAYLOAD_BYTES:
        return "too large"
    body: dict[str, Any] = json.loads(payload.decode("utf-8"))
    if not TS.match(body.get("ts", "")):
        return f"ts {body.get('ts')!r}"
    datetime.fromisoformat(body["ts"])
    if not isinstance(body.get("seq"), int) or body["seq"] < 0:
        return f"seq {body.get('seq')!r}"
    spec = CATALOGUE[device_type]
    if channel == "telemetry":
        bad = first_bad_field(spec.telemetry, body)
    else:
        event = spec.event(body.get("event", ""))
        if event is None:
            return f"event {body.get('event')!r} is not in the catalogue"
        bad = first_bad_field(event.fields, body)
    return None if bad is None else f"{bad[0]}: {bad[1]}"


def _behaviours(district: District, start: datetime) -> list[Any]:
    zones = {zone.zone_id: zone for zone in district.zones}
    return [
        make_behaviour(device, zones.get(device.zone_id or ""), random.Random(device.id), start)
        for device in district.devices
    ]


def _class_counter(district: District, start: datetime) -> CounterBehaviour:
    for behaviour in _behaviours(district, start):
        if isinstance(behaviour, CounterBehaviour) and behaviour.ratio:
            return behaviour
    raise AssertionError("the district has no childcare class counter")


def test_district_is_deterministic_for_a_seed() -> None:
    """The same seed builds the same district; another seed builds another."""
    assert build_district(20, seed=7) == build_district(20, seed=7)
    assert build_district(20, seed=7) != build_district(20, seed=8)
    assert build_district(3, seed=7).facilities == build_district(20, seed=7).facilities[:3]


def test_district_is_mixed_and_sized_like_a_demo(district: District) -> None:
    """Twenty facilities mix the three kinds and carry 200-400 devices of all three types."""
    kinds = Counter(facility.kind for facility in district.facilities)
    types = Counter(device.type for device in district.devices)
    assert len(district.facilities) == 20
    assert set(kinds) == {"elderly", "childcare", "integrated"}
    assert 200 <= len(district.devices) <= 400
    assert set(types) == set(CATALOGUE)
    assert {f.kind for f in build_district(2).facilities} == {"elderly", "childcare"}


def test_ids_keep_the_contract_pattern_and_references_hold(district: District) -> None:
    """Every id matches the contract's pattern, is unique, and points at a real parent."""
    pattern = re.compile(ID_PATTERN)
    facility_ids = [facility.id for facility in district.facilities]
    zone_ids = [zone.zone_id for zone in district.zones]
    device_ids = [device.id for device in district.devices]
    for identifier in facility_ids + zone_ids + device_ids:
        assert pattern.fullmatch(identifier), identifier
    assert len(set(facility_ids)) == len(facility_ids)
    assert len(set(zone_ids)) == len(zone_ids)
    assert len(set(device_ids)) == len(device_ids)
    assert facility_ids[0] == "lc-001"
    assert re.fullmatch(r"lc-\d{3}-(fs|eb|oc)-\d{2}", device_ids[0])
    zone_facility = {zone.zone_id: zone.facility_id for zone in district.zones}
    for device in district.devices:
        assert device.facility_id in facility_ids
        assert device.zone_id is not None
        assert zone_facility[device.zone_id] == device.facility_id
        assert device.heartbeat_s == CATALOGUE[device.type].heartbeat_s
    assert len({facility.name for facility in district.facilities}) == 20
    assert len({facility.registration_no for facility in district.facilities}) == 20


def test_facilities_sit_in_wenzhou_with_beds_and_places_by_kind(district: District) -> None:
    """Coordinates fall in Lucheng; beds and childcare places match each facility's kind."""
    for facility in district.facilities:
        # 鹿城区's extent as the map's outlines draw it (WGS 84), from 山福 to 七都.
        assert 27.97 <= facility.latitude <= 28.16
        assert 120.38 <= facility.longitude <= 120.80
        assert facility.district == "鹿城区"
        assert facility.address.startswith("浙江省温州市鹿城区")
        classes = [z for z in district.zones_of(facility.id) if z.kind == "class"]
        rooms = [z for z in district.zones_of(facility.id) if z.kind == "room"]
        if facility.kind in ("elderly", "integrated"):
            assert facility.beds is not None
            assert facility.beds >= sum(room.capacity or 0 for room in rooms) > 0
        else:
            assert facility.beds is None
        if facility.kind in ("childcare", "integrated"):
            assert facility.childcare_places == sum(c.capacity or 0 for c in classes) > 0
        else:
            assert facility.childcare_places is None
            assert classes == []


def test_childcare_classes_keep_national_limits(district: District) -> None:
    """Every class has a known type and a capacity no larger than the national maximum."""
    classes = [zone for zone in district.zones if zone.kind == "class"]
    assert classes
    assert {zone.class_type for zone in classes} <= set(CLASS_LIMITS)
    for zone in classes:
        assert zone.class_type is not None
        assert zone.capacity is not None
        assert 0 < zone.capacity <= CLASS_LIMITS[zone.class_type][0]
    assert CLASS_LIMITS == {
        "乳儿班": (10, 3),
        "托小班": (15, 5),
        "托大班": (20, 7),
        "混合班": (18, 6),
    }
    for zone in district.zones:
        assert zone.kind in ("room", "class", "common")
        if zone.kind != "class":
            assert zone.class_type is None


def test_csv_files_have_exactly_the_spec_headers(district: District, tmp_path: Path) -> None:
    """The three CSVs are UTF-8 with the SPEC §5 header rows, one row per record, '' for None."""
    paths = district.write_csv(tmp_path / "registry")
    assert [path.name for path in paths] == ["facilities.csv", "zones.csv", "devices.csv"]
    for path in paths:
        raw = path.read_bytes()
        assert not raw.startswith(b"\xef\xbb\xbf")
        assert raw.decode("utf-8").splitlines()[0] == SPEC_HEADERS[path.name]
    with paths[0].open(encoding="utf-8", newline="") as file:
        facilities = list(csv.DictReader(file))
    with paths[1].open(encoding="utf-8", newline="") as file:
        zones = list(csv.DictReader(file))
    with paths[2].open(encoding="utf-8", newline="") as file:
        devices = list(csv.DictReader(file))
    assert len(facilities) == len(district.facilities)
    assert len(zones) == len(district.zones)
    assert len(devices) == len(district.devices)
    assert facilities[0]["name"] == district.facilities[0].name
    assert float(facilities[0]["latitude"]) == pytest.approx(district.facilities[0].latitude)
    childcare = next(row for row in facilities if row["kind"] == "childcare")
    assert childcare["beds"] == ""
    assert int(childcare["childcare_places"]) > 0
    room = next(row for row in zones if row["kind"] == "room")
    assert room["class_type"] == ""
    assert next(row for row in zones if row["kind"] == "class")["class_type"] in CLASS_LIMITS
    assert devices[0]["heartbeat_s"] == str(district.devices[0].heartbeat_s)


def test_every_generated_payload_keeps_the_catalogue(district: District) -> None:
    """Two simulated days of every device's messages pass the catalogue, with ts and seq."""
    seen: Counter[tuple[str, str]] = Counter()
    end = MIDNIGHT + timedelta(days=2)
    for behaviour in _behaviours(district, MIDNIGHT):
        device_type = behaviour.device.type
        seq = 0
        while behaviour.due_at() <= end:
            now = behaviour.due_at()
            for out in behaviour.advance(now):
                payload = encode_payload(out, seq, now)
                seq += 1
                assert _contract_problem(device_type, out.channel, payload) is None, payload
                name = out.body.get("event", "telemetry")
                seen[(device_type, name)] += 1
    expected = {(t, "telemetry") for t in CATALOGUE} | {
        (name, event.name) for name, spec in CATALOGUE.items() for event in spec.events
    }
    assert set(seen) == expected


def test_injected_scenarios_keep_the_catalogue(district: District) -> None:
    """A scenario fall, sos press and over-capacity surge are valid messages that say so."""
    now = MIDNIGHT + timedelta(hours=10)
    behaviours = _behaviours(district, now)
    sensor = next(b for b in behaviours if isinstance(b, FallSensorBehaviour))
    button = next(b for b in behaviours if isinstance(b, ButtonBehaviour))
    counter = _class_counter(district, now)
    sensor.inject_fall(now, 0.95, 1200)
    button.inject_press(now)
    counter.inject_over_capacity(now, 600, 4)
    fall = [o for o in sensor.advance(now) if o.channel == "event"]
    press = [o for o in button.advance(now) if o.channel == "event"]
    surge = [o for o in counter.advance(now) if o.channel == "telemetry"]
    assert fall[0].body == {
        "event": "fall_detected",
        "confidence": 0.95,
        "posture": fall[0].body["posture"],
        "zone": sensor.device.zone_id,
    }
    assert press[0].body == {"event": "pressed", "button": button.button}
    assert surge[0].body["count"] - surge[0].body["staff"] == counter.capacity + 4
    for behaviour, outs in ((sensor, fall), (button, press), (counter, surge)):
        for out in outs:
            payload = encode_payload(out, 1, now)
            assert _contract_problem(behaviour.device.type, out.channel, payload) is None
    cleared = sensor.advance(now + timedelta(seconds=1200))
    assert Outgoing("event", {"event": "fall_cleared"}) in cleared
    later = counter.telemetry(now + timedelta(seconds=601))
    assert later["count"] <= counter.capacity


def test_childcare_is_empty_at_night_and_busy_at_ten(district: District) -> None:
    """Children arrive from 7:30, are there at 10:00, are gone by 17:30; staff keep the ratio."""
    assert daily_fraction("childcare_class", 2.0) == 0
    assert daily_fraction("childcare_class", 7.4) == 0
    assert daily_fraction("childcare_class", 10.0) > 0.8
    assert daily_fraction("childcare_class", 17.5) == 0
    assert daily_fraction("childcare_class", 23.0) == 0
    counter = _class_counter(district, MIDNIGHT)
    night = counter.telemetry(MIDNIGHT + timedelta(hours=2))
    assert night["count"] == 0
    assert night["staff"] == 0
    assert night["zone"] == counter.device.zone_id
    morning = counter.telemetry(MIDNIGHT + timedelta(hours=10))
    children = morning["count"] - morning["staff"]
    assert children > 0
    assert morning["staff"] >= math.ceil(children / counter.ratio)
    assert morning["count"] <= counter.capacity


def test_elderly_dining_room_peaks_at_meals() -> None:
    """The dining room is busy at lunch, quiet mid-afternoon and empty at night."""
    assert daily_fraction("dining", 12.0) > 0.5
    assert daily_fraction("dining", 15.0) < 0.1
    assert daily_fraction("dining", 3.0) == 0


def test_timestamps_are_shanghai_rfc3339_with_milliseconds() -> None:
    """ts carries +08:00 and three fraction digits, whatever zone the moment came in."""
    utc = datetime.fromisoformat("2026-11-22T00:15:00.120456+00:00")
    assert format_ts(utc) == "2026-11-22T08:15:00.120+08:00"
    with pytest.raises(ValueError, match="time zone"):
        format_ts(datetime(2026, 11, 22, 8, 15))  # naive on purpose


def test_mqtt_url_parsing() -> None:
    """Credentials, port and TLS come from the URL; other schemes are refused."""
    plain = parse_mqtt_url("mqtt://user:p%40ss@127.0.0.1:1883")
    assert (plain.host, plain.port, plain.username, plain.password, plain.tls) == (
        "127.0.0.1",
        1883,
        "user",
        "p@ss",
        False,
    )
    secure = parse_mqtt_url("mqtts://broker.example")
    assert (secure.port, secure.tls, secure.username) == (8883, True, None)
    with pytest.raises(ValueError, match="mqtt://"):
        parse_mqtt_url("http://127.0.0.1:1883")


def test_garbage_covers_every_hostile_kind(district: District) -> None:
    """Garbage holds oversize, non-UTF-8, non-JSON, nested and mis-addressed messages."""
    cases = garbage_messages(district, "carehub", random.Random(1), MIDNIGHT)
    expects = Counter(case.expect for case in cases)
    assert set(expects) == set(REASON_CODES)
    by_what = {case.what: case for case in cases}
    assert any(len(case.payload) > MAX_PAYLOAD_BYTES for case in cases)
    with pytest.raises(UnicodeDecodeError):
        by_what["invalid UTF-8"].payload.decode("utf-8")
    assert b"NaN" in by_what["NaN battery"].payload
    assert json.loads(by_what["seq -1"].payload)["seq"] == -1
    assert by_what["JSON nested 5000 deep"].payload.count(b"[") == 5000
    known = {device.id for device in district.devices}
    unknown = by_what["unknown device"].topic.split("/")[3]
    assert unknown not in known
    wrong = by_what["wrong facility"].topic.split("/")
    assert wrong[3] in known
    owner = {device.id: device.facility_id for device in district.devices}
    assert owner[wrong[3]] != wrong[2]


async def test_unknown_scenarios_are_refused_before_connecting(district: District) -> None:
    """Naming a scenario that does not exist fails at once and lists the known ones."""
    assert set(SCENARIOS) == {"fall", "sos", "over_capacity", "dropout", "garbage"}
    with pytest.raises(ValueError, match="known: fall"):
        await run_simulation(
            district, mqtt_url="mqtt://127.0.0.1:1", scenarios=["meteor"], duration_s=1
        )


def test_zone_without_purpose_falls_back_to_activity_curve() -> None:
    """An imported common zone whose id names no purpose still follows a daily curve."""
    zone = Zone("x-001", "x-001-lobby", "大厅", "common", 30, None)
    district = build_district(1)
    device = next(d for d in district.devices if d.type == "occupancy_counter")
    counter = make_behaviour(device, zone, random.Random(0), MIDNIGHT)
    assert isinstance(counter, CounterBehaviour)
    assert counter.profile == "activity"
    assert counter.telemetry(MIDNIGHT + timedelta(hours=3))["count"] == 0


def _faulty(device_type: str, faults: Faults) -> SimulatedDevice:
    device = Device("d-1", "f-1", device_type, None, 60, None, None)
    clock = SimClock(1.0)
    link = Link(parse_mqtt_url("mqtt://127.0.0.1:1"))
    behaviour = make_behaviour(device, None, random.Random(1), clock.now())
    return SimulatedDevice(device, behaviour, link=link, clock=clock, seq_start=10, faults=faults)


@pytest.mark.parametrize("device_type", list(CATALOGUE))
def test_a_device_without_faults_keeps_the_contract_and_each_knob_breaks_its_clause(
    device_type: str,
) -> None:
    """Faults() changes nothing; seq, clock and telemetry knobs break just their part."""
    good = _faulty(device_type, Faults())
    telemetry = Outgoing("telemetry", good.behaviour.telemetry(good.clock.now()))
    first = json.loads(good.encode(telemetry))
    assert first["seq"] == 10 and good.seq == 11
    assert first_bad_field(CATALOGUE[device_type].telemetry, first) is None

    backwards = _faulty(device_type, Faults(seq_backwards=True))
    assert [json.loads(backwards.encode(telemetry))["seq"] for _ in range(3)] == [10, 9, 8]

    ahead = _faulty(device_type, Faults(clock_offset_s=600))
    ts = datetime.fromisoformat(json.loads(ahead.encode(telemetry))["ts"])
    assert 590 < (ts - datetime.now(SHANGHAI)).total_seconds() < 610

    spoiled = json.loads(_faulty(device_type, Faults(bad_telemetry=True)).encode(telemetry))
    assert first_bad_field(CATALOGUE[device_type].telemetry, spoiled) is not None

    slow = _faulty(device_type, Faults(heartbeat_factor=3.0))
    assert slow.behaviour.heartbeat_s == 180


def test_a_test_press_is_what_each_type_can_press() -> None:
    """A button's test call (real with the fault), a fall sensor's fall, nothing on a counter."""
    for faults, test in ((Faults(), True), (Faults(test_press_as_real=True), False)):
        button = _faulty("emergency_button", faults)
        assert button.press_test()
        (pressed,) = button.behaviour.advance(button.clock.now() + timedelta(seconds=1))[-1:]
        assert pressed.body["event"] == "pressed"
        assert ("test" in pressed.body) is test
    sensor = _faulty("fall_sensor", Faults())
    assert sensor.press_test()
    due = sensor.behaviour.advance(sensor.clock.now() + timedelta(seconds=1))
    assert [out.body["event"] for out in due if out.channel == "event"] == ["fall_detected"]
    assert not _faulty("occupancy_counter", Faults()).press_test()


@pytest.mark.parametrize(
    "knobs", [{"heartbeat_factor": 0}, {"heartbeat_factor": math.nan}, {"clock_offset_s": math.inf}]
)
def test_senseless_fault_knobs_are_refused(knobs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="must be"):
        Faults(**knobs)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["鹿城区", "瓯海区"])
def test_facilities_stand_near_a_real_street_office_of_their_district(name: str) -> None:
    """Each facility is within the scatter of one of its district's street points, so the
    demo's homes stand in town, not in the river or the next district."""
    district = build_district(60, district=name)
    points = [PLACES[street] for street in STREETS[name] if street in PLACES]
    assert len(points) == len(STREETS[name]), "a street of the district has no place"
    for facility in district.facilities:
        assert any(
            abs(facility.latitude - lat) <= SCATTER[0]
            and abs(facility.longitude - lon) <= SCATTER[1]
            for lat, lon in points
        ), facility
    # The same seed puts each home in the same place every time.
    again = build_district(60, district=name)
    assert [(f.latitude, f.longitude) for f in again.facilities] == [
        (f.latitude, f.longitude) for f in district.facilities
    ]


def test_the_demo_splits_its_facilities_over_both_districts() -> None:
    """20 facilities: 12 in 鹿城区 and 8 in 瓯海区, ids and addresses of their own district."""
    district = build_demo_district(20)
    assert district.districts == ("鹿城区", "瓯海区")
    lucheng, ouhai = district.part("鹿城区"), district.part("瓯海区")
    assert [f.id for f in lucheng.facilities] == [f"lc-{n:03d}" for n in range(1, 13)]
    assert [f.id for f in ouhai.facilities] == [f"oh-{n:03d}" for n in range(1, 9)]
    for part in (lucheng, ouhai):
        for facility in part.facilities:
            assert facility.address.startswith(f"浙江省温州市{part.name}"), facility
        assert {d.facility_id for d in part.devices} == {f.id for f in part.facilities}
    assert len({f.name for f in district.facilities}) == 20
    assert regulator_accounts(district) == [("regulator", "鹿城区"), ("regulator-oh", "瓯海区")]
    # The smallest demo that has both still has both.
    assert build_demo_district(2).districts == ("鹿城区", "瓯海区")
    assert build_demo_district(1).districts == ("鹿城区",)
