"""`carehub devices credentials|revoke|import --credentials-out|place` and `carehub broker
setup|sync`, run as an installer runs them."""

from __future__ import annotations

import asyncio
import csv
import json
import stat
import sys
from pathlib import Path

import aiomqtt
import pytest

from devices import mqtt
from hub.settings import Settings
from tests.child_process import clean_env
from tests.fix_hub import FACILITY, connect_db, rows
from tests.private_broker import free_port, run_mosquitto

pytestmark = [pytest.mark.mqtt, pytest.mark.db]


async def carehub(settings: Settings, *args: str, **env: str) -> tuple[int, str, str]:
    """Run `carehub ARGS` against the test's schema; its exit code, stdout and stderr."""
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "hub.cli",
        *args,
        env=clean_env(
            CAREHUB_MQTT_URL=settings.mqtt_url,
            CAREHUB_DATABASE_URL=settings.database_url,
            CAREHUB_DATABASE_SCHEMA=settings.database_schema,
            CAREHUB_TOPIC_ROOT=settings.topic_root,
            CAREHUB_TIMESCALEDB="off",
            CAREHUB_LOG_LEVEL="WARNING",
            **env,
        ),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(child.communicate(), timeout=60)
    assert child.returncode is not None
    return child.returncode, out.decode(), err.decode()


async def test_credentials_are_shown_once_rotated_and_revoked(migrated: Settings) -> None:
    """--json prints one object; a second issue is refused; rotate and revoke work once."""
    code, out, err = await carehub(migrated, "devices", "credentials", "fs-1", "--json")
    assert code == 0, err
    issued = json.loads(out)
    assert set(issued) == {"device_id", "username", "password"}
    assert issued["device_id"] == issued["username"] == "fs-1"
    code, _, err = await carehub(migrated, "devices", "credentials", "fs-1")
    assert code == 2
    assert "already has credentials" in err and "--rotate" in err
    code, out, err = await carehub(migrated, "devices", "credentials", "fs-1", "--rotate")
    assert code == 0, err
    assert "password" in out and issued["password"] not in out
    code, out, err = await carehub(migrated, "devices", "revoke", "fs-1")
    assert code == 0, err
    assert "revoked" in out
    code, _, err = await carehub(migrated, "devices", "revoke", "fs-1")
    assert code == 2
    assert "no credentials in force" in err
    for device_id, words in [("nosuch", "register it first"), ("fs!1", "not a device id")]:
        code, _, err = await carehub(migrated, "devices", "credentials", device_id)
        assert code == 2
        assert words in err, err


async def test_an_import_writes_credentials_for_its_new_devices_only(
    migrated: Settings, tmp_path: Path
) -> None:
    """One row per device without credentials; the file is private; unplaced until placed."""
    code, _, err = await carehub(migrated, "devices", "credentials", "fs-1")
    assert code == 0, err
    devices_csv = tmp_path / "devices.csv"
    devices_csv.write_text(
        "id,facility_id,type,zone_id,heartbeat_s,vendor,model\n"
        f"fs-1,{FACILITY},fall_sensor,room-101,60,,\n"
        f"fs-2,{FACILITY},fall_sensor,room-101,60,acme,FS2\n"
        f"eb-9,{FACILITY},emergency_button,,,,\n"
        f"bad!,{FACILITY},emergency_button,,,,\n",
        encoding="utf-8",
    )
    out_csv = tmp_path / "creds.csv"
    code, out, err = await carehub(
        migrated, "devices", "import", str(devices_csv), "--credentials-out", str(out_csv)
    )
    assert code == 1, err  # the bad row is reported, the others land
    assert "bad!" in err or "row 5" in err
    assert "credentials issued to 2 new devices" in out
    assert stat.S_IMODE(out_csv.stat().st_mode) == 0o600
    with out_csv.open(encoding="utf-8", newline="") as handle:
        written = list(csv.DictReader(handle))
    assert [row["device_id"] for row in written] == ["fs-2", "eb-9"]
    assert all(row["username"] == row["client_id"] == row["device_id"] for row in written)
    assert written[0]["topic_prefix"] == f"{migrated.topic_root}/v1/{FACILITY}/fs-2"
    assert all(len(row["password"]) >= 32 for row in written)
    code, _, err = await carehub(
        migrated, "devices", "import", str(devices_csv), "--credentials-out", str(out_csv)
    )
    assert code == 2
    assert "exists" in err
    code, out, _ = await carehub(migrated, "devices", "unplaced")
    assert "eb-9" in out and "fs-2" not in out
    code, out, _ = await carehub(migrated, "devices", "pending")
    assert "1 registered device(s) with credentials wait to be placed" in out
    code, _, err = await carehub(migrated, "devices", "place", "eb-9", "--zone", "nowhere")
    assert code == 2
    assert "nowhere" in err
    code, out, err = await carehub(migrated, "devices", "place", "eb-9", "--zone", "room-101")
    assert code == 0, err
    async with await connect_db(migrated) as db:
        assert await rows(db, "SELECT zone_id FROM devices WHERE id = 'eb-9'") == [("room-101",)]


async def test_broker_setup_writes_a_site_mosquitto_and_sync_keeps_it_in_step(
    migrated: Settings, tmp_path: Path
) -> None:
    """The written config runs, the hub's account connects, and sync names what it cannot fix."""
    port = free_port()
    site = tmp_path / "broker"
    code, out, err = await carehub(
        migrated, "broker", "setup", "mosquitto", "--dir", str(site), "--port", str(port)
    )
    assert code == 0, err
    urls = dict(line.strip().split("=", 1) for line in out.splitlines() if "_URL=" in line)
    config = (site / "mosquitto.conf").read_text()
    for line in (
        "allow_anonymous false",
        "persistence true",
        "max_queued_messages 200000",
        "set_tcp_nodelay true",
    ):
        assert line in config
    assert "mosquitto_dynamic_security.so" in config
    assert stat.S_IMODE((site / "dynamic-security.json").stat().st_mode) == 0o600
    code, _, err = await carehub(migrated, "broker", "setup", "mosquitto", "--dir", str(site))
    assert code == 2
    assert "exists" in err
    for bad in (["--port", "0"], ["--port", "70000"]):
        code, _, err = await carehub(
            migrated, "broker", "setup", "mosquitto", "--dir", str(tmp_path / "b2"), *bad
        )
        assert code == 2
        assert "not a TCP port" in err
    (tmp_path / "a-file").write_text("")
    code, _, err = await carehub(
        migrated, "broker", "setup", "mosquitto", "--dir", str(tmp_path / "a-file")
    )
    assert code == 2
    assert "cannot make" in err and "Traceback" not in err
    env = {"CAREHUB_MQTT_ADMIN_URL": urls["CAREHUB_MQTT_ADMIN_URL"]}
    with run_mosquitto(site / "mosquitto.conf", port):
        hub_target = mqtt.parse_mqtt_url(urls["CAREHUB_MQTT_URL"])
        async with mqtt.Client(
            "127.0.0.1",
            port,
            username=hub_target.username,
            password=hub_target.password,
            identifier="hub-check",
        ):
            pass
        code, out, err = await carehub(migrated, "devices", "credentials", "fs-1", "--json", **env)
        assert code == 0, err
        password = json.loads(out)["password"]
        async with mqtt.Client(
            "127.0.0.1", port, username="fs-1", password=password, identifier="fs-1"
        ):
            pass
        code, out, err = await carehub(migrated, "broker", "sync", **env)
        assert code == 0, err
        assert "in step: 1 devices" in out
        # Issued while the broker was not told (no admin URL): sync cannot push a hash.
        code, _, err = await carehub(migrated, "devices", "credentials", "eb-1")
        assert code == 0, err
        code, out, err = await carehub(migrated, "broker", "sync", **env)
        assert code == 1
        assert "eb-1" in err and "--rotate" in err
        code, _, err = await carehub(migrated, "devices", "revoke", "fs-1", **env)
        assert code == 0, err
        with pytest.raises(aiomqtt.MqttError):
            async with mqtt.Client(
                "127.0.0.1", port, username="fs-1", password=password, identifier="fs-1"
            ):
                pass
    code, _, err = await carehub(migrated, "broker", "sync")
    assert code == 2
    assert "CAREHUB_MQTT_ADMIN_URL" in err
