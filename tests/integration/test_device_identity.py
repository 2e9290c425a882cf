"""Each device's identity is enforced by the broker (SPEC §7): the embedded broker, and a
Mosquitto with dynamic security set up by `carehub broker setup mosquitto`."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from devices import mqtt, topics
from hub.credentials import DeviceAuthority, issue, revoke
from hub.credentials.dynsec import (
    DynsecAdmin,
    role_name,
    site_brokers,
    sync_registry,
    write_site,
)
from hub.embedded.broker import EmbeddedBroker
from hub.runtime import Hub, run_hub
from hub.settings import Settings
from hub.storage.migrate import migrate
from simulators.device import drop_connection
from tests.fix_hub import (
    FACILITY,
    connect_db,
    now_ts,
    register_site,
    rows,
    wait_for,
)
from tests.private_broker import free_port, run_mosquitto

pytestmark = [pytest.mark.mqtt, pytest.mark.db]

# Long enough for a forbidden message to have been stored, were it going to be.
SETTLE_S = 0.5
HUB_USERNAME = "carehub-hub"


@dataclass
class SiteMosquitto:
    """One Mosquitto per module, configured by the setup command; its files and settings."""

    directory: Path
    port: int
    root: str
    mqtt_url: str
    admin_url: str
    process: contextlib.ExitStack

    def start(self) -> None:
        """Start the broker (its persistence and security file carry over a restart)."""
        self.process.enter_context(run_mosquitto(self.directory / "mosquitto.conf", self.port))

    def restart(self) -> None:
        """Stop the broker and start it again on the same port."""
        self.process.close()
        self.start()


@pytest.fixture(scope="module")
def site_mosquitto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SiteMosquitto]:
    """A private Mosquitto started with the configuration `carehub broker setup` writes."""
    directory = tmp_path_factory.mktemp("site-broker")
    port = free_port()
    root = f"t{uuid.uuid4().hex[:12]}"
    site = write_site(directory, port=port, root=root, bind="127.0.0.1")
    with contextlib.ExitStack() as process:
        broker = SiteMosquitto(directory, port, root, site.mqtt_url, site.admin_url, process)
        broker.start()
        yield broker


@dataclass
class Stage:
    """A broker with authentication on, the hub's settings for it, and how to restart it."""

    kind: str
    settings: Settings
    restart: Callable[[], Awaitable[None]]

    async def issue(self, device_id: str, *, rotate: bool = False) -> str:
        """Issue the device's credentials as `carehub devices credentials` does; the password."""
        async with await connect_db(self.settings) as conn:
            issued = await issue(
                conn, device_id, "test", rotate=rotate, brokers=site_brokers(self.settings)
            )
        return issued.password

    async def revoke(self, device_id: str) -> None:
        """Revoke as `carehub devices revoke` does."""
        async with await connect_db(self.settings) as conn:
            await revoke(conn, device_id, "test", brokers=site_brokers(self.settings))

    def client(
        self, username: str | None, password: str | None, client_id: str | None = None
    ) -> aiomqtt.Client:
        """A client of this broker, with the MQTT version the hub speaks to it."""
        target = self.settings.mqtt
        protocol = (
            aiomqtt.ProtocolVersion.V5
            if self.settings.mqtt_protocol == 5
            else aiomqtt.ProtocolVersion.V311
        )
        return mqtt.Client(
            target.host,
            target.port,
            username=username,
            password=password,
            identifier=client_id or username or f"anon-{uuid.uuid4().hex[:6]}",
            protocol=protocol,
        )


@contextlib.asynccontextmanager
async def _embedded_stage(base: Settings) -> AsyncIterator[Stage]:
    password = uuid.uuid4().hex
    port = free_port()
    settings = base.model_copy(
        update={
            "mqtt_url": f"mqtt://{HUB_USERNAME}:{password}@127.0.0.1:{port}",
            "mqtt_protocol": 311,
        }
    )
    authority = DeviceAuthority(settings)
    broker = EmbeddedBroker(port, gate=authority.authenticate)
    await broker.start()

    async def restart() -> None:
        await broker.stop()
        await broker.start()

    async def drop(device_id: str) -> None:
        await broker.disconnect(device_id)

    watch = asyncio.create_task(authority.watch(drop))
    try:
        yield Stage("embedded", settings, restart)
    finally:
        watch.cancel()
        await asyncio.gather(watch, return_exceptions=True)
        await broker.stop()
        await authority.close()


async def _mosquitto_site(base: Settings, site: SiteMosquitto) -> Settings:
    """The hub's settings for the site Mosquitto, its schema migrated and the site registered."""
    settings = base.model_copy(
        update={
            "mqtt_url": site.mqtt_url,
            "mqtt_admin_url": site.admin_url,
            "mqtt_protocol": 5,
            "topic_root": site.root,
        }
    )
    await migrate(settings)
    await register_site(settings)
    return settings


@pytest.fixture(params=["embedded", "mosquitto"])
async def stage(request: pytest.FixtureRequest, hub_settings: Settings) -> AsyncIterator[Stage]:
    """The embedded broker gated by the hub's store, then the site Mosquitto; site migrated."""
    if request.param == "embedded":
        async with _embedded_stage(hub_settings) as embedded:
            await migrate(embedded.settings)
            await register_site(embedded.settings)
            yield embedded
        return
    site: SiteMosquitto = request.getfixturevalue("site_mosquitto")
    settings = await _mosquitto_site(hub_settings, site)

    async def restart() -> None:
        await asyncio.to_thread(site.restart)

    yield Stage("mosquitto", settings, restart)


@pytest.fixture
async def hub(stage: Stage) -> AsyncIterator[Hub]:
    """The hub on the stage's broker, as its own account."""
    async with run_hub(stage.settings, apply_migrations=False) as running:
        await running.wait_connected(15)
        yield running


async def _device_id(stage: Stage) -> str:
    """A new fall sensor at FACILITY (ids unique per test: the module's broker outlives it)."""
    device_id = f"fs-{uuid.uuid4().hex[:8]}"
    async with await connect_db(stage.settings) as conn:
        await conn.execute(
            "INSERT INTO devices (id, facility_id, type, zone_id, heartbeat_s)"
            " VALUES (%s, %s, 'fall_sensor', 'room-101', 60)",
            (device_id, FACILITY),
        )
    return device_id


def _telemetry(seq: int) -> bytes:
    return json.dumps({"ts": now_ts(), "seq": seq, "battery": 80, "presence": True}).encode()


def _topic(stage: Stage, device_id: str, channel: str) -> str:
    return topics.topic(stage.settings.topic_root, FACILITY, device_id, channel)


async def _stored(stage: Stage, device_id: str) -> list[int]:
    async with await connect_db(stage.settings) as db:
        found = await rows(
            db, "SELECT seq FROM readings WHERE device_id = %s ORDER BY seq", device_id
        )
    return [row[0] for row in found]


async def _refused(
    stage: Stage, username: str | None, password: str | None, client_id: str | None = None
) -> bool:
    try:
        async with stage.client(username, password, client_id):
            return False
    except aiomqtt.MqttError:
        return True


async def test_a_device_publishes_on_its_own_topics_and_is_stored(stage: Stage, hub: Hub) -> None:
    """With its own credentials a device's telemetry reaches the database."""
    device_id = await _device_id(stage)
    password = await stage.issue(device_id)
    async with stage.client(device_id, password) as device:
        granted = await device.subscribe(_topic(stage, device_id, "ack"), qos=1)
        await device.publish(_topic(stage, device_id, "telemetry"), _telemetry(1), qos=1)

        async def stored() -> bool:
            return await _stored(stage, device_id) == [1]

        await wait_for(stored)
    assert _codes(granted)[0] < 128, f"{stage.kind}: a device may read its own ack"


async def test_another_devices_topic_is_refused_and_nothing_is_stored(
    stage: Stage, hub: Hub
) -> None:
    """The same credentials on another device's topics: refused by the broker, nothing stored."""
    own, other = await _device_id(stage), await _device_id(stage)
    password = await stage.issue(own)
    await stage.issue(other)
    async with stage.client(own, password) as device:
        granted = await device.subscribe(_topic(stage, other, "ack"), qos=1)
        everything = await device.subscribe(f"{stage.settings.topic_root}/#", qos=1)
        for channel in ("telemetry", "status"):
            with contextlib.suppress(aiomqtt.MqttError):  # MQTT 5: PUBACK 135, not authorized
                await device.publish(_topic(stage, other, channel), _telemetry(1), qos=1)
        # A topic of another facility, and the hub's reply channel of its own device.
        with contextlib.suppress(aiomqtt.MqttError):
            await device.publish(
                topics.topic(stage.settings.topic_root, "f-moon", own, "telemetry"),
                _telemetry(2),
                qos=1,
            )
        await device.publish(_topic(stage, own, "telemetry"), _telemetry(3), qos=1)

        async def own_stored() -> bool:
            return await _stored(stage, own) == [3]

        await wait_for(own_stored)
    await asyncio.sleep(SETTLE_S)
    assert await _stored(stage, other) == []
    assert _codes(granted)[0] >= 128, f"{stage.kind}: subscribed to another device's ack"
    assert _codes(everything)[0] >= 128, f"{stage.kind}: subscribed to every topic"
    async with await connect_db(stage.settings) as db:
        assert await rows(db, "SELECT 1 FROM dead_letters WHERE device_id = %s", own) == []


async def test_a_last_will_on_another_devices_topic_is_never_published(
    stage: Stage, hub: Hub
) -> None:
    """A will naming another device's status: refused at CONNECT or never delivered."""
    del hub
    own, other = await _device_id(stage), await _device_id(stage)
    password = await stage.issue(own)
    will = aiomqtt.Will(_topic(stage, other, "status"), b'{"online": false}', qos=1, retain=True)
    client = stage.client(own, password)
    client._will = will  # type: ignore[attr-defined]
    client._client.will_set(will.topic, will.payload, will.qos, will.retain, will.properties)
    with contextlib.suppress(aiomqtt.MqttError):
        async with client:
            drop_connection(client)
    await asyncio.sleep(SETTLE_S * 2)
    async with await connect_db(stage.settings) as db:
        assert await rows(db, "SELECT 1 FROM status_changes WHERE device_id = %s", other) == []
        assert await rows(db, "SELECT 1 FROM device_state WHERE device_id = %s", other) == []


async def test_a_wrong_password_an_anonymous_client_and_a_borrowed_client_id_are_refused(
    stage: Stage, hub: Hub
) -> None:
    """Bad credentials, none at all, or a client id that is not the device id: no connection."""
    del hub
    device_id = await _device_id(stage)
    password = await stage.issue(device_id)
    never_issued = await _device_id(stage)
    hub_user = stage.settings.mqtt.username
    assert await _refused(stage, device_id, password + "x")
    assert await _refused(stage, device_id, "")
    assert await _refused(stage, None, None)
    assert await _refused(stage, device_id, password, client_id=f"{device_id}-2")
    assert await _refused(stage, never_issued, password)
    assert await _refused(stage, "no-such-device", password)
    assert await _refused(stage, hub_user, password)
    assert await _refused(stage, "fs-1' OR '1'='1", password)
    assert not await _refused(stage, device_id, password)


async def test_a_revoked_device_is_disconnected_and_cannot_reconnect(
    stage: Stage, hub: Hub
) -> None:
    """Revocation drops the connection at once, and the credentials no longer connect."""
    device_id = await _device_id(stage)
    password = await stage.issue(device_id)
    async with contextlib.AsyncExitStack() as stack:
        device = await stack.enter_async_context(stage.client(device_id, password))
        await device.publish(_topic(stage, device_id, "telemetry"), _telemetry(1), qos=1)
        await stage.revoke(device_id)
        await wait_for(device._disconnected.done, timeout=10)
        stack.pop_all()
    assert await _refused(stage, device_id, password)
    with pytest.raises(Exception, match="no credentials in force"):
        await stage.revoke(device_id)


async def test_after_a_rotation_the_new_password_works_and_the_old_does_not(
    stage: Stage, hub: Hub
) -> None:
    """A rotated device connects with its new password only."""
    device_id = await _device_id(stage)
    old = await stage.issue(device_id)
    new = await stage.issue(device_id, rotate=True)
    assert new != old
    assert await _refused(stage, device_id, old)
    async with stage.client(device_id, new) as device:
        await device.publish(_topic(stage, device_id, "telemetry"), _telemetry(7), qos=1)

        async def stored() -> bool:
            return await _stored(stage, device_id) == [7]

        await wait_for(stored)


async def test_the_hubs_own_account_works_across_a_broker_restart(stage: Stage, hub: Hub) -> None:
    """After the broker restarts the hub is back in, and a device's messages are stored again."""
    device_id = await _device_id(stage)
    password = await stage.issue(device_id)
    connections = hub.ingest.connections
    await stage.restart()
    await wait_for(lambda: hub.ingest.connections > connections, timeout=30)
    await hub.wait_connected(30)
    # The device may have to wait for the broker too.
    for _ in range(50):
        try:
            async with stage.client(device_id, password) as device:
                await device.publish(_topic(stage, device_id, "telemetry"), _telemetry(5), qos=1)
            break
        except aiomqtt.MqttError:
            await asyncio.sleep(0.2)

    async def stored() -> bool:
        return await _stored(stage, device_id) == [5]

    await wait_for(stored, timeout=20)
    if stage.kind == "mosquitto":
        report = await sync_registry(stage.settings)
        assert report is not None
        assert device_id not in report.missing


def _codes(granted: Any) -> list[int]:
    """The SUBACK's granted QoS or reason codes as numbers (3.1.1 ints, 5 ReasonCodes)."""
    return [code if isinstance(code, int) else code.value for code in granted]


async def test_the_hub_puts_a_lost_device_role_back_at_start(
    site_mosquitto: SiteMosquitto, hub_settings: Settings
) -> None:
    """A device role removed at the broker is recreated when the hub starts; its device
    connects and publishes again."""
    settings = await _mosquitto_site(hub_settings, site_mosquitto)
    stage = Stage("mosquitto", settings, restart=_no_restart)
    device_id = await _device_id(stage)
    password = await stage.issue(device_id)
    admin = settings.mqtt_admin
    assert admin is not None
    async with DynsecAdmin(admin) as control:
        await control.run([{"command": "deleteRole", "rolename": role_name(device_id)}])
    async with stage.client(device_id, password) as device:
        with contextlib.suppress(aiomqtt.MqttError):
            await device.publish(_topic(stage, device_id, "telemetry"), _telemetry(1), qos=1)
    async with run_hub(settings, apply_migrations=False) as hub:
        await hub.wait_connected(15)

        async def role_back() -> bool:
            async with DynsecAdmin(admin) as control:
                answer = await control.run(
                    [{"command": "getRole", "rolename": role_name(device_id)}]
                )
            return "error" not in answer[0]

        await wait_for(role_back, timeout=20)
        async with stage.client(device_id, password) as device:
            await device.publish(_topic(stage, device_id, "telemetry"), _telemetry(2), qos=1)

            async def stored() -> bool:
                return await _stored(stage, device_id) == [2]

            await wait_for(stored)


async def _no_restart() -> None:
    raise AssertionError("this test does not restart the broker")
