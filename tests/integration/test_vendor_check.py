"""`carehub vendor-check` against simulated devices on a real broker, with the hub running.

A good device of each type passes; a device with one deliberate fault (simulators'
`Faults`) fails, naming the clause it breaks and the message that broke it. The check
asks the vendor for a test press and a power cut: here the simulated device makes them.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from hub.credentials import issue, revoke
from hub.runtime import Hub, run_hub
from hub.settings import Settings
from hub.storage.credentials import device_credentials
from hub.storage.pool import connect
from hub.vendor_check import Clause, Prompt, Report, run_vendor_check
from simulators import Device, Faults, Link, SimClock, SimulatedDevice, parse_mqtt_url
from simulators.behaviour import make_behaviour
from tests.child_process import clean_env
from tests.fix_hub import DB, DEVICES, FACILITY, background_task, build_settings
from tests.private_broker import free_port, private_mosquitto

pytestmark = [pytest.mark.mqtt, pytest.mark.db, pytest.mark.slow]

# Small, so a run takes seconds: telemetry every 2 s ± 10 %, judged over a 5 s watch.
HEARTBEAT_S = 2
WATCH_S = 5.0
WILL_WAIT_S = 5.0


def simulated(
    settings: Settings, device_id: str, faults: Faults | None = None, *, event_qos: int = 1
) -> SimulatedDevice:
    """The registered device `device_id`, simulated on real time with `faults`."""
    device = Device(device_id, FACILITY, DEVICES[device_id], None, HEARTBEAT_S, "Acme", "T-1")
    clock = SimClock(1.0)
    target = parse_mqtt_url(settings.mqtt_url)
    link = Link(target, settings.topic_root, settings.mqtt_protocol, event_qos=event_qos)
    behaviour = make_behaviour(device, None, random.Random(device_id), clock.now())
    return SimulatedDevice(device, behaviour, link=link, clock=clock, faults=faults)


def vendor(sim: SimulatedDevice) -> tuple[list[Prompt], Callable[[Prompt], None]]:
    """What the vendor at the device does when asked, and the prompts they were shown."""
    shown: list[Prompt] = []

    def act(prompt: Prompt) -> None:
        shown.append(prompt)
        if prompt.kind == "test_press":
            sim.press_test()
        elif prompt.kind == "cut_power":
            sim.drop(silent_s=0.5)  # powered up again half a second later

    return shown, act


async def check(
    hub: Hub,
    db: DB,
    device_id: str,
    faults: Faults | None = None,
    *,
    event_qos: int = 1,
    credentials: bool = True,
) -> Report:
    """Run the check on one simulated device (heartbeat_s = HEARTBEAT_S) and return its report.

    The device has credentials in the hub's store unless `credentials` is off (the suite's
    broker admits every test client through the hub's account, so the device connects
    either way; the clause judges the store)."""
    await db.execute("UPDATE devices SET heartbeat_s = %s WHERE id = %s", (HEARTBEAT_S, device_id))
    if credentials:
        async with await connect(hub.settings) as conn:
            await issue(conn, device_id, "test", rotate=True)
    sim = simulated(hub.settings, device_id, faults, event_qos=event_qos)
    shown, act = vendor(sim)
    async with background_task(sim.run()):
        await asyncio.wait_for(sim.connected.wait(), 15)
        report = await run_vendor_check(
            hub.settings,
            device_id,
            duration_s=WATCH_S,
            will_wait_s=WILL_WAIT_S,
            on_prompt=act,
        )
    assert "cut_power" in [prompt.kind for prompt in shown]
    return report


@pytest.mark.parametrize("device_id", ["eb-1", "fs-1", "oc-1"])
async def test_a_good_device_of_each_type_passes_every_clause(
    running_hub: Hub, db: DB, device_id: str
) -> None:
    """A device that keeps the contract passes every clause, its credentials included."""
    report = await check(running_hub, db, device_id)
    verdicts = {result.clause: result.verdict for result in report.clauses}
    assert report.passed, report.as_json()
    assert verdicts["credentials"] == "pass"
    assert "has live MQTT credentials" in report.clause("credentials").summary
    expected_press = "not_applicable" if device_id == "oc-1" else "pass"
    assert verdicts["test_press"] == expected_press
    assert {verdicts[c] for c in ("topics", "status", "heartbeat", "seq", "ts", "payload")} == {
        "pass"
    }
    assert "last will came" in report.clause("status").summary
    if device_id == "eb-1":
        assert '"test": true' in report.clause("test_press").summary
    assert report.messages >= 3
    assert not report.hub_rejections


# One fault per clause: the clauses it fails (its own, and what follows from it), the
# clause whose evidence is checked, and the words that evidence must hold.
FAULTS = [
    pytest.param(
        Faults(stray_channel="heartbeat"), ["topics"], "topics", "bad_topic", id="stray-channel"
    ),
    pytest.param(
        Faults(last_will=False), ["status"], "status", "no offline status", id="no-last-will"
    ),
    pytest.param(
        Faults(status_retained=False),
        ["status"],
        "status",
        "no retained status",
        id="status-not-retained",
    ),
    pytest.param(
        Faults(heartbeat_factor=3.0),
        ["heartbeat"],
        "heartbeat",
        "heartbeat_s is 2 s",
        id="slow-heartbeat",
    ),
    pytest.param(
        Faults(seq_backwards=True), ["seq"], "seq", "seq must increase", id="seq-backwards"
    ),
    pytest.param(Faults(clock_offset_s=-900), ["ts"], "ts", "s behind", id="clock-behind"),
    # The hub refuses a ts 10 min ahead (bad_time): no heartbeat reaches it, nor the press.
    pytest.param(
        Faults(clock_offset_s=600),
        ["heartbeat", "ts", "test_press"],
        "ts",
        "bad_time",
        id="clock-ahead",
    ),
    pytest.param(
        Faults(test_press_as_real=True),
        ["test_press"],
        "test_press",
        "not a test call",
        id="real-call",
    ),
]


@pytest.mark.parametrize(("faults", "failed", "clause", "why"), FAULTS)
async def test_a_faulty_device_fails_the_clause_it_breaks_with_the_message_as_evidence(
    running_hub: Hub, db: DB, faults: Faults, failed: list[str], clause: Clause, why: str
) -> None:
    """Each fault fails its own clause (and only what follows from it); the evidence says why."""
    report = await check(running_hub, db, "eb-1", faults)
    assert report.failed == failed, report.as_json()
    evidence = report.clause(clause).evidence
    assert evidence, report.as_json()
    assert any(why in item.why for item in evidence), [item.why for item in evidence]


async def test_a_call_sent_at_qos_0_fails_the_topics_on_mosquitto(
    migrated: Settings, db: DB, tmp_path: Path
) -> None:
    """A call at QoS 0 is lost on a dropped connection: seen on a broker that keeps the QoS.

    Mosquitto delivers each message at the QoS it was published with (at most the
    subscription's); amqtt, the embedded broker, raises it to the subscription's, so
    there the check cannot see it. Hence a Mosquitto of the test's own.
    """
    with private_mosquitto(tmp_path) as url:
        settings = build_settings(
            mqtt_url=url,
            mqtt_protocol=5,
            database_url=migrated.database_url,
            schema=migrated.database_schema,
            topic_root=migrated.topic_root,
            spool_dir=tmp_path / "spool-mosquitto",
        )
        async with run_hub(settings) as hub:
            await hub.wait_connected(15)
            report = await check(hub, db, "eb-1", event_qos=0)
    assert report.failed == ["topics"], report.as_json()
    why = report.clause("topics").evidence[0].why
    assert why.startswith("event published at QoS 0: the contract asks QoS 1")


async def test_a_payload_of_the_wrong_type_fails_the_payload_and_so_the_heartbeat(
    running_hub: Hub, db: DB
) -> None:
    """Refused telemetry is a heartbeat the hub never hears: both clauses fail, and say so."""
    report = await check(running_hub, db, "eb-1", Faults(bad_telemetry=True))
    assert report.failed == ["heartbeat", "payload"], report.as_json()
    payload = report.clause("payload").evidence
    assert "battery: must be a number" in payload[0].why
    assert '"battery":"not-a-number"' in payload[0].payload
    assert "see the payload clause" in report.clause("heartbeat").evidence[0].why
    # The hub said the same on the device's rejected channel.
    assert any("battery: must be a number" in item.why for item in report.hub_rejections)


async def test_credentials_are_judged_from_the_hubs_store_when_there_is_one(
    running_hub: Hub, db: DB
) -> None:
    """Never issued: none; issued: live; revoked: none; a schema without the store (older
    than its migration): not managed."""
    async with await connect(running_hub.settings) as conn:
        missing = await device_credentials(conn, "eb-1")
        assert missing.verdict == "none"
        assert "carehub devices credentials eb-1" in missing.detail
        await issue(conn, "eb-1", "test")
        assert (await device_credentials(conn, "eb-1")).verdict == "live"
        await revoke(conn, "eb-1", "test")
        assert (await device_credentials(conn, "eb-1")).verdict == "none"
    report = await check(running_hub, db, "oc-1", credentials=False)
    assert report.failed == ["credentials"], report.as_json()
    async with await connect(running_hub.settings) as conn:
        await conn.execute("DROP TABLE device_credentials")
        assert (await device_credentials(conn, "eb-1")).verdict == "not_managed"


async def _carehub(settings: Settings, *args: str, **env: str) -> tuple[int, str, str]:
    """`carehub ARGS` as a child process on the hub's settings (`env` overrides them)."""
    settings_env = {
        "CAREHUB_MQTT_URL": settings.mqtt_url,
        "CAREHUB_MQTT_PROTOCOL": str(settings.mqtt_protocol),
        "CAREHUB_DATABASE_URL": settings.database_url,
        "CAREHUB_DATABASE_SCHEMA": settings.database_schema,
        "CAREHUB_TOPIC_ROOT": settings.topic_root,
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "hub.cli",
        *args,
        env=clean_env(**(settings_env | env)),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, stdout.decode(), stderr.decode()


async def test_the_command_prints_one_json_object_and_exits_1_when_the_vendor_does_nothing(
    running_hub: Hub, db: DB
) -> None:
    """Nobody presses or cuts the power: those clauses fail; the prompts went to stderr."""
    code, out, err = await _check_by_command(running_hub, db, "--json")
    assert code == 1, out + err
    report = json.loads(out)
    assert report["passed"] is False
    assert report["failed"] == ["status", "test_press"]
    assert report["device"] == {
        "id": "eb-1",
        "facility_id": FACILITY,
        "type": "emergency_button",
        "zone_id": "room-101",
        "heartbeat_s": HEARTBEAT_S,
    }
    by_clause = {clause["clause"]: clause for clause in report["clauses"]}
    assert by_clause["heartbeat"]["verdict"] == "pass"
    assert "no test press arrived" in by_clause["test_press"]["evidence"][0]["why"]
    assert ">>> Within the next 3 s, make a test call" in err
    assert ">>> Now cut eb-1's power" in err


async def test_the_command_prints_the_report_clause_by_clause(running_hub: Hub, db: DB) -> None:
    """Without --json: the prompts, then one line per clause, the evidence, and the result."""
    code, out, err = await _check_by_command(running_hub, db)
    assert code == 1, out + err
    lines = out.splitlines()
    assert lines[0].startswith(f"Watching {running_hub.settings.topic_root}/v1/+/eb-1/#")
    assert any(line.startswith(">>> Within the next 3 s, make a test call") for line in lines)
    verdicts = [line.split("  ", 1)[0].strip() for line in lines if line[:4] in VERDICT_STARTS]
    assert verdicts == ["PASS", "PASS", "FAIL", "PASS", "PASS", "PASS", "PASS", "FAIL"]
    assert "-> no test press arrived during the watch" in out
    assert lines[-1] == (
        "result: FAIL (2 of 8 clauses: retained status and last will, a test press answered on ack)"
    )


VERDICT_STARTS = ("PASS", "FAIL", "NOT ", "N/A ")


async def _check_by_command(hub: Hub, db: DB, *options: str) -> tuple[int, str, str]:
    """`carehub vendor-check eb-1` for 3 s on a good device whose vendor does nothing."""
    await db.execute("UPDATE devices SET heartbeat_s = %s WHERE id = 'eb-1'", (HEARTBEAT_S,))
    async with await connect(hub.settings) as conn:
        await issue(conn, "eb-1", "test")
    sim = simulated(hub.settings, "eb-1")
    async with background_task(sim.run()):
        await asyncio.wait_for(sim.connected.wait(), 15)
        return await _carehub(
            hub.settings, "vendor-check", "eb-1", "--duration", "3", "--will-wait", "1", *options
        )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["no-such-device"], "device 'no-such-device' is not registered"),
        (["eb-1", "--duration", "0"], "must be positive"),
        (["eb-1", "--duration", "nan"], "must be positive"),
        (["eb-1", "--will-wait", "-5"], "must be positive"),
    ],
)
async def test_the_command_refuses_what_it_cannot_check_with_exit_2(
    running_hub: Hub, args: list[str], message: str
) -> None:
    """An unregistered device or a senseless duration: exit 2 and why, before any watching."""
    code, out, err = await _carehub(running_hub.settings, "vendor-check", *args)
    assert code == 2, out + err
    assert message in err


async def test_the_command_refuses_a_broker_it_cannot_reach_with_exit_2(running_hub: Hub) -> None:
    """Nothing listens on the broker's port: exit 2, naming the broker, not a traceback."""
    url = f"mqtt://127.0.0.1:{free_port()}"
    code, out, err = await _carehub(
        running_hub.settings, "vendor-check", "eb-1", CAREHUB_MQTT_URL=url
    )
    assert code == 2, out + err
    assert f"by the broker at 127.0.0.1:{url.rsplit(':', 1)[1]}" in err
    assert "Traceback" not in err
