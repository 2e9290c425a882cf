"""The embedded services: amqtt keeps the hub's delivery guarantees, pgserver keeps its data."""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiomqtt
import psycopg
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from devices import mqtt, topics
from hub.embedded.broker import EmbeddedBroker
from hub.embedded.postgres import EmbeddedPostgres

# Generous: the first message on a cold CI machine; normally milliseconds.
RECEIVE_TIMEOUT_S = 10.0
# How long silence must last before "nothing more was delivered" is believed.
QUIET_S = 1.0
SESSION_EXPIRY_S = 300  # MQTT 5 only: long enough to outlive the test's reconnects


class Target:
    """A broker to test against: its URL and the MQTT version to speak to it."""

    def __init__(self, url: str, protocol: int) -> None:
        self.url = url
        self.protocol = protocol

    def client(self, identifier: str, *, persistent: bool = False) -> aiomqtt.Client:
        """A client; a persistent one keeps its session (and its unacked messages) when away."""
        target = mqtt.parse_mqtt_url(self.url)
        options: dict[str, Any] = {"username": target.username, "password": target.password}
        if self.protocol == 5:
            options["protocol"] = aiomqtt.ProtocolVersion.V5
            options["clean_start"] = not persistent
            properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            properties.SessionExpiryInterval = SESSION_EXPIRY_S if persistent else 0
            options["properties"] = properties
        else:
            options["protocol"] = aiomqtt.ProtocolVersion.V311
            options["clean_session"] = not persistent
        return mqtt.Client(target.host, target.port, identifier=identifier, **options)

    def hub_client(self, identifier: str) -> aiomqtt.Client:
        """A client that consumes as the hub does: persistent session, acks by hand."""
        client = self.client(identifier, persistent=True)
        client._client.manual_ack_set(True)
        return client


@pytest.fixture(params=["embedded-in-loop", "test-broker"])
async def broker(request: pytest.FixtureRequest) -> AsyncIterator[Target]:
    """An EmbeddedBroker in this test's loop, then the session's test broker (maybe Mosquitto)."""
    if request.param == "embedded-in-loop":
        async with EmbeddedBroker() as embedded:
            yield Target(embedded.url, 311)
    else:
        yield Target(request.getfixturevalue("mqtt_url"), request.getfixturevalue("mqtt_protocol"))


async def receive(client: aiomqtt.Client, count: int) -> list[aiomqtt.Message]:
    """The next `count` messages, or fail after RECEIVE_TIMEOUT_S."""
    received: list[aiomqtt.Message] = []
    async with asyncio.timeout(RECEIVE_TIMEOUT_S):
        async for message in client.messages:
            received.append(message)
            if len(received) == count:
                break
    return received


async def nothing_more(client: aiomqtt.Client) -> bool:
    """True if no message arrives for QUIET_S seconds."""
    try:
        async with asyncio.timeout(QUIET_S):
            await anext(aiter(client.messages))
    except TimeoutError:
        return True
    return False


async def flush(client: aiomqtt.Client, topic_root: str) -> None:
    """Wait until the broker has read everything sent before, acks included (TCP keeps order)."""
    await client.publish(f"{topic_root}/flush", b"", qos=1)


async def drain_until_disconnected(client: aiomqtt.Client) -> None:
    """Read messages until the client notices its connection is gone (aiomqtt then raises)."""
    async with asyncio.timeout(RECEIVE_TIMEOUT_S):
        async for _ in client.messages:
            pass


async def crash(client: aiomqtt.Client) -> None:
    """Drop the connection as a killed process would: no DISCONNECT, unacked messages held."""
    connection = client._client.socket()
    assert isinstance(connection, socket.socket)
    connection.shutdown(socket.SHUT_RDWR)
    with pytest.raises(aiomqtt.MqttError):
        await drain_until_disconnected(client)
    await client.__aexit__(None, None, None)


def payloads(messages: list[aiomqtt.Message]) -> list[bytes]:
    """The messages' payloads, in order of arrival."""
    return [bytes(message.payload) for message in messages]


@pytest.mark.mqtt
async def test_embedded_broker_listens_on_a_free_loopback_port() -> None:
    """An EmbeddedBroker picks a free port on 127.0.0.1, never the machine's 1883."""
    async with EmbeddedBroker() as embedded:
        assert embedded.port != 1883
        assert embedded.url == f"mqtt://127.0.0.1:{embedded.port}"
        with socket.create_connection(("127.0.0.1", embedded.port), timeout=5):
            pass


@pytest.mark.mqtt
async def test_broker_relays_a_qos1_message(broker: Target, topic_root: str) -> None:
    """A QoS 1 message published on a device topic reaches a QoS 1 subscriber, at QoS 1."""
    topic = topics.topic(topic_root, "f-1", "d-1", "event")
    async with broker.client(f"sub-{uuid.uuid4().hex[:8]}") as subscriber:
        await subscriber.subscribe(topics.device_filter(topic_root, "event"), qos=1)
        async with broker.client(f"pub-{uuid.uuid4().hex[:8]}") as publisher:
            await publisher.publish(topic, b'{"seq": 1}', qos=1)
        [message] = await receive(subscriber, 1)
    assert message.topic.value == topic
    assert message.payload == b'{"seq": 1}'
    assert message.qos == 1
    assert not message.retain


@pytest.mark.mqtt
async def test_broker_keeps_a_retained_message(broker: Target, topic_root: str) -> None:
    """A retained message reaches a client that subscribes afterwards, flagged as retained."""
    topic = topics.topic(topic_root, "f-1", "d-1", "status")
    async with broker.client(f"pub-{uuid.uuid4().hex[:8]}") as publisher:
        await publisher.publish(topic, b"online", qos=1, retain=True)
        try:
            async with broker.client(f"sub-{uuid.uuid4().hex[:8]}") as subscriber:
                await subscriber.subscribe(topics.device_filter(topic_root, "status"), qos=1)
                [message] = await receive(subscriber, 1)
        finally:
            await publisher.publish(topic, b"", qos=1, retain=True)  # clear it again
    assert message.payload == b"online"
    assert message.retain


@pytest.mark.mqtt
async def test_unacked_messages_are_redelivered_after_a_crash(
    broker: Target, topic_root: str
) -> None:
    """A hub that dies before acking gets those messages, and those sent meanwhile, on reconnect."""
    hub_id = f"hub-{topic_root}"
    events = topics.device_filter(topic_root, "event")
    topic = topics.topic(topic_root, "f-1", "d-1", "event")
    async with broker.client(f"pub-{uuid.uuid4().hex[:8]}") as publisher:
        hub = broker.hub_client(hub_id)
        await hub.__aenter__()
        await hub.subscribe(events, qos=1)
        await publisher.publish(topic, b"stored", qos=1)
        await publisher.publish(topic, b"in flight", qos=1)
        first = await receive(hub, 2)
        hub._client.ack(first[0].mid, 1)  # only the first reached the database
        await flush(hub, topic_root)
        await crash(hub)

        await publisher.publish(topic, b"while away", qos=1)

        async with broker.hub_client(hub_id) as hub:
            await hub.subscribe(events, qos=1)
            again = await receive(hub, 2)
            for message in again:
                hub._client.ack(message.mid, 1)
            await flush(hub, topic_root)

        async with broker.hub_client(hub_id) as hub:
            nothing_left = await nothing_more(hub)

    async with broker.client(hub_id):  # a clean session: the broker forgets this hub
        pass
    assert payloads(first) == [b"stored", b"in flight"]
    assert payloads(again) == [b"in flight", b"while away"]
    assert not any(message.retain for message in again)
    assert nothing_left


@pytest.mark.db
async def test_embedded_postgres_serves_its_database(tmp_path: Path) -> None:
    """EmbeddedPostgres starts from an empty directory and serves the `carehub` database."""
    async with EmbeddedPostgres(tmp_path / "pgdata", delete_on_stop=True) as server:
        url = server.url
        async with await psycopg.AsyncConnection.connect(url) as conn:
            cursor = await conn.execute("select 1, current_database()")
            row = await cursor.fetchone()
    assert row == (1, "carehub")
    assert url.startswith("postgresql://postgres@/carehub?host=%2F")
    assert not (tmp_path / "pgdata").exists()


@pytest.mark.db
def test_embedded_postgres_keeps_data_across_a_restart(tmp_path: Path) -> None:
    """Rows written before a stop are still there after a start in the same directory."""
    data_dir = tmp_path / "pgdata"
    with EmbeddedPostgres(data_dir) as server, psycopg.connect(server.url, autocommit=True) as conn:
        conn.execute("create table visit (resident text)")
        conn.execute("insert into visit values ('王奶奶')")
    assert (data_dir / "PG_VERSION").exists()

    with (
        EmbeddedPostgres(data_dir, delete_on_stop=True) as server,
        psycopg.connect(server.url) as conn,
    ):
        rows = conn.execute("select resident from visit").fetchall()
    assert rows == [("王奶奶",)]
    assert not data_dir.exists()
