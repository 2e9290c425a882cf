"""MQTT ingest: subscribe, reconnect with backoff, hand messages on, ack after commit."""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from hub.models import Inbound
from hub.settings import Settings

logger = logging.getLogger(__name__)

# First retry soon (a broker restart takes a second or two); then back off to a ceiling
# that a district of reconnecting hubs cannot turn into a thundering herd.
BACKOFF_FIRST_S = 0.5
BACKOFF_MAX_S = 30.0
# Outbound replies (rejected, ack) wait here; when it is full a reply is dropped, counted,
# and never allowed to hold up ingest.
OUTBOUND_QUEUE = 10_000
PUBLISH_WORKERS = 4
CHANNELS = ("event", "telemetry", "status")


def subscriptions(settings: Settings) -> list[str]:
    """The topic filters the hub subscribes to, shared when a group is configured."""
    filters = [f"{settings.topic_root}/v1/+/+/{channel}" for channel in CHANNELS]
    if settings.mqtt_shared_group:
        filters = [f"$share/{settings.mqtt_shared_group}/{f}" for f in filters]
    return filters


def make_client(settings: Settings, *, identifier: str | None = None, persistent: bool = True) -> aiomqtt.Client:
    """An aiomqtt client for the configured broker (not yet connected)."""
    target = settings.mqtt
    tls_context = ssl.create_default_context() if target.tls else None
    client_id = identifier or settings.mqtt_client_id
    if settings.mqtt_protocol == 5:
        properties = Properties(PacketTypes.CONNECT)
        # The broker may send this many unacknowledged QoS 1 messages at once; since
        # acks follow the database commit, it is the window that sets throughput.
        properties.ReceiveMaximum = settings.mqtt_receive_maximum
        properties.SessionExpiryInterval = settings.mqtt_session_expiry_s if persistent else 0
        return aiomqtt.Client(
            target.host,
            target.port,
            username=target.username,
            password=target.password,
            identifier=client_id,
            protocol=aiomqtt.ProtocolVersion.V5,
            clean_start=not persistent,
            properties=properties,
            keepalive=settings.mqtt_keepalive_s,
            tls_context=tls_context,
        )
    return aiomqtt.Client(
        target.host,
        target.port,
        username=target.username,
        password=target.password,
        identifier=client_id,
        protocol=aiomqtt.ProtocolVersion.V311,
        clean_session=not persistent,
        keepalive=settings.mqtt_keepalive_s,
        tls_context=tls_context,
    )


class Ingest:
    """Owns the hub's MQTT connection: messages in, replies out, acks after commit."""

    def __init__(self, settings: Settings, inbound: asyncio.Queue[Inbound]) -> None:
        self._settings = settings
        self._inbound = inbound
        self._outbound: asyncio.Queue[tuple[str, bytes, int]] = asyncio.Queue(OUTBOUND_QUEUE)
        self._client: aiomqtt.Client | None = None
        self._generation = 0
        self.connected = asyncio.Event()
        self.replies_dropped = 0
        self.connections = 0

    @property
    def generation(self) -> int:
        """Counts connections; an ack is only valid on the connection that received it."""
        return self._generation

    async def run(self) -> None:
        """Connect, subscribe and read until cancelled, reconnecting with backoff."""
        backoff = BACKOFF_FIRST_S
        while True:
            client = make_client(self._settings)
            # paho acknowledges QoS 1 itself unless told not to; we ack after commit.
            _paho(client).manual_ack_set(True)
            try:
                async with client:
                    self._generation += 1
                    self.connections += 1
                    self._client = client
                    backoff = BACKOFF_FIRST_S
                    for topic_filter in subscriptions(self._settings):
                        await client.subscribe(topic_filter, qos=1)
                    self.connected.set()
                    logger.info(
                        "connected to %s:%s as %s (generation %d)",
                        self._settings.mqtt.host,
                        self._settings.mqtt.port,
                        self._settings.mqtt_client_id,
                        self._generation,
                    )
                    async with asyncio.TaskGroup() as group:
                        for _ in range(PUBLISH_WORKERS):
                            group.create_task(self._publish_loop(client))
                        await self._read_loop(client)
            except* aiomqtt.MqttError as group_exc:
                logger.warning("MQTT connection lost (%s); retrying in %.1f s", group_exc.exceptions[0], backoff)
            finally:
                self._client = None
                self.connected.clear()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, BACKOFF_MAX_S)

    async def _read_loop(self, client: aiomqtt.Client) -> None:
        generation = self._generation
        async for message in client.messages:
            await self._inbound.put(
                Inbound(
                    topic=message.topic.value,
                    payload=message.payload if isinstance(message.payload, bytes) else b"",
                    qos=message.qos,
                    retain=message.retain,
                    mid=message.mid,
                    generation=generation,
                    received_at=datetime.now(UTC),
                )
            )
        raise aiomqtt.MqttError("message stream ended")

    async def _publish_loop(self, client: aiomqtt.Client) -> None:
        while True:
            topic, payload, qos = await self._outbound.get()
            await client.publish(topic, payload, qos=qos)

    def ack(self, messages: Iterable[Inbound]) -> int:
        """Acknowledge stored messages to the broker; return how many acks were sent.

        A message from an earlier connection is not acked: the broker redelivers it and
        the idempotent insert absorbs the duplicate.
        """
        client = self._client
        if client is None:
            return 0
        paho = _paho(client)
        sent = 0
        for message in messages:
            if message.qos > 0 and message.generation == self._generation:
                paho.ack(message.mid, message.qos)
                sent += 1
        return sent

    def reply(self, topic: str, payload: bytes, qos: int = 1) -> bool:
        """Queue a message to a device (rejected, ack); False if it had to be dropped."""
        try:
            self._outbound.put_nowait((topic, payload, qos))
        except asyncio.QueueFull:
            self.replies_dropped += 1
            return False
        return True


def _paho(client: aiomqtt.Client) -> Any:  # noqa: ANN401 - paho's client, typed loosely on purpose
    """The paho client under aiomqtt, for what aiomqtt does not expose (manual acks)."""
    return client._client  # noqa: SLF001
