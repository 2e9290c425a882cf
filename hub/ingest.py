"""MQTT ingest: subscribe, reconnect with backoff, hand messages on, ack after commit."""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import aiomqtt
from paho.mqtt.enums import MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from devices import mqtt, topics
from hub.clock import Clock, SystemClock
from hub.errors import raise_if_cancelled
from hub.metrics import Metrics, StageTimes
from hub.models import Inbound
from hub.settings import Settings

logger = logging.getLogger(__name__)
# A reply to a device: topic, payload, qos, and when it was handed over (time.monotonic()).
_Reply = tuple[str, bytes, int, float]

# First retry soon (a broker restart takes a second or two); then back off to a ceiling
# that a district of reconnecting hubs cannot turn into a thundering herd.
BACKOFF_FIRST_S = 0.5
BACKOFF_MAX_S = 30.0
# Outbound replies (rejected, ack) wait here; when it is full a reply is dropped, counted,
# and never allowed to hold up ingest.
OUTBOUND_QUEUE = 10_000
PUBLISH_WORKERS = 4
# Bytes asked of the socket per read: about a hundred messages at once, where paho alone
# makes three recv calls per message. Not more: the whole chunk is handled in one turn of
# the event loop, and an alert's transaction waits a turn for each of its round trips
# (64 KB made press->ack p99 a quarter slower at 5,000 msgs/s, for no more throughput).
RECV_CHUNK = 16 * 1024
# Reads one readable event may make before the event loop runs the other stages again:
# a backlog is taken ~500 messages (about a millisecond of parsing) at a time, so that an
# alert's round trips to the database are never held up for long.
RECV_CHUNKS_PER_WAKE = 1
_PUBACK = 0x40
# Mosquitto's count of the PUBLISH messages it dropped for its queue and in-flight limits
# (max_queued_messages, 1,000 a session by default). Retained, and sent on change.
BROKER_DROPPED_TOPIC = "$SYS/broker/publish/messages/dropped"


def subscriptions(settings: Settings, channels: Iterable[str]) -> list[str]:
    """The topic filters for `channels`, shared when a group is configured."""
    return [
        topics.device_filter(settings.topic_root, channel, shared_group=settings.mqtt_shared_group)
        for channel in channels
    ]


# Sent at once, not held by Nagle's algorithm until the broker acknowledges the packet
# before (our PUBACK of the press, which it may delay by up to 40 ms): for the lane whose
# replies a resident waits for. The telemetry lane keeps Nagle, which packs its PUBACKs.
NO_DELAY = ((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),)


def make_client(
    settings: Settings,
    *,
    identifier: str | None = None,
    persistent: bool = True,
    no_delay: bool = False,
) -> aiomqtt.Client:
    """An aiomqtt client for the configured broker (not yet connected)."""
    target = settings.mqtt
    common: dict[str, Any] = {
        "socket_options": NO_DELAY if no_delay else (),
        "username": target.username,
        "password": target.password,
        "identifier": identifier or settings.mqtt_client_id,
        "keepalive": settings.mqtt_keepalive_s,
        "tls_context": ssl.create_default_context() if target.tls else None,
    }
    if settings.mqtt_protocol == 5:
        properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        # The broker may send this many unacknowledged QoS 1 messages at once; since
        # acks follow the database commit, it is the window that sets throughput.
        properties.ReceiveMaximum = settings.mqtt_receive_maximum
        properties.SessionExpiryInterval = settings.mqtt_session_expiry_s if persistent else 0
        return mqtt.Client(
            target.host,
            target.port,
            protocol=aiomqtt.ProtocolVersion.V5,
            clean_start=not persistent,
            properties=properties,
            **common,
        )
    return mqtt.Client(
        target.host,
        target.port,
        protocol=aiomqtt.ProtocolVersion.V311,
        clean_session=not persistent,
        **common,
    )


class Ingest:
    """Owns the hub's MQTT connection: messages in, replies out, acks after commit."""

    def __init__(
        self,
        settings: Settings,
        inbound: asyncio.Queue[Inbound],
        clock: Clock | None = None,
        *,
        channels: Sequence[str] = topics.DEVICE_CHANNELS,
        client_id: str | None = None,
        broker_stats: Metrics | None = None,
        emergency: StageTimes | None = None,
    ) -> None:
        """`broker_stats`: where to count the broker's own drops, if this lane watches them.

        `emergency`: where to time the urgent replies (alert acks), handed over to PUBACK.
        """
        # The receive time stamps every message; rules and timers compare against it.
        self._clock: Clock = clock or SystemClock()
        self._settings = settings
        # The hub has one connection per lane (pipeline.Lane), each with its own session.
        self._channels = tuple(channels)
        self.client_id = client_id or settings.mqtt_client_id
        self._broker_stats = broker_stats
        self._emergency = emergency
        self._inbound = inbound
        # Messages the fast path took while `inbound` was full, oldest first. Bounded by
        # the Receive Maximum: the broker sends no more until we ack.
        self._backlog: deque[Inbound] = deque()
        self._backlog_ready = asyncio.Event()
        # (topic, payload, qos, when it was handed over: time.monotonic())
        self._outbound: asyncio.Queue[_Reply] = asyncio.Queue(OUTBOUND_QUEUE)
        self._urgent: asyncio.Queue[_Reply] = asyncio.Queue(OUTBOUND_QUEUE)
        self._client: aiomqtt.Client | None = None
        self._generation = 0
        self.connected = asyncio.Event()
        self.replies_dropped = 0
        self.connections = 0

    @property
    def generation(self) -> int:
        """Counts connection attempts; an ack is only valid on the connection that received it."""
        return self._generation

    async def run(self) -> None:
        """Connect, subscribe and read until cancelled, reconnecting with backoff."""
        backoff = BACKOFF_FIRST_S
        while True:
            # The lane that times urgent replies (the events lane) sends them undelayed.
            urgent_lane = self._emergency is not None
            client = make_client(self._settings, identifier=self.client_id, no_delay=urgent_lane)
            # paho acknowledges QoS 1 itself unless told not to; we ack after commit.
            _paho(client).manual_ack_set(True)
            fast = _FastPath.install(_paho(client), self._received)
            # Before connecting: a resumed session may deliver messages (stamped with the
            # generation, acked through self._client) before `async with` returns.
            self._generation += 1
            self._backlog.clear()
            self._client = client
            try:
                async with client:
                    raise_if_cancelled()
                    self.connections += 1
                    backoff = BACKOFF_FIRST_S
                    for topic_filter in subscriptions(self._settings, self._channels):
                        await client.subscribe(topic_filter, qos=1)
                        raise_if_cancelled()
                    # A session kept from before the lanes still holds every channel: drop
                    # the other lanes' filters, or their messages would come here too.
                    others = [c for c in topics.DEVICE_CHANNELS if c not in self._channels]
                    for topic_filter in subscriptions(self._settings, others):
                        await client.unsubscribe(topic_filter)
                        raise_if_cancelled()
                    if self._broker_stats is not None:
                        await self._watch_broker_drops(client, self._broker_stats)
                    self.connected.set()
                    logger.info(
                        "connected to %s:%s as %s for %s (generation %d, %s read path)",
                        self._settings.mqtt.host,
                        self._settings.mqtt.port,
                        self.client_id,
                        "/".join(self._channels),
                        self._generation,
                        "bulk" if fast else "paho",
                    )
                    async with asyncio.TaskGroup() as group:
                        for _ in range(PUBLISH_WORKERS):
                            group.create_task(self._publish_loop(client, self._outbound))
                            group.create_task(self._publish_loop(client, self._urgent))
                        group.create_task(self._backlog_loop())
                        await self._read_loop(client)
            except* aiomqtt.MqttError as group_exc:
                raise_if_cancelled()
                logger.warning(
                    "MQTT connection lost (%s); retrying in %.1f s",
                    group_exc.exceptions[0],
                    backoff,
                )
            finally:
                self._client = None
                self.connected.clear()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, BACKOFF_MAX_S)

    async def _watch_broker_drops(self, client: aiomqtt.Client, stats: Metrics) -> None:
        """Subscribe to the broker's drop counter; say so when the broker will not tell."""
        granted = await client.subscribe(BROKER_DROPPED_TOPIC, qos=0)
        raise_if_cancelled()
        refused = isinstance(granted, tuple | list) and any(
            getattr(code, "value", code) >= 0x80 for code in granted
        )
        stats.broker_drops_visible = not refused
        if refused:
            logger.warning(
                "the broker refuses %s: messages it drops for its queue limits cannot be"
                " reported (allow the hub's account to read $SYS)",
                BROKER_DROPPED_TOPIC,
            )

    def _broker_stat(self, topic: str, payload: bytes, retained: bool) -> None:
        """Count what the broker says it dropped; never a device message."""
        if self._broker_stats is None or topic != BROKER_DROPPED_TOPIC:
            return
        try:
            total = int(payload)
        except ValueError:
            return
        dropped = self._broker_stats.broker_dropped_now(total, retained=retained)
        if dropped:
            logger.error(
                "the broker dropped %d messages (%d since it started): its queue limits"
                " overflowed, and whatever was meant for the hub in them is lost. Raise"
                " max_queued_messages (README: Deploying a site)",
                dropped,
                total,
            )

    def _received(self, topic: str, payload: bytes, qos: int, retain: bool, mid: int) -> None:
        """Take one PUBLISH from the fast path, in arrival order."""
        if topic[:1] == "$":
            self._broker_stat(topic, payload, retain)
            return
        message = Inbound(
            topic=topic,
            payload=payload,
            qos=qos,
            retain=retain,
            mid=mid,
            generation=self._generation,
            received_at=self._clock.now(),
        )
        if not self._backlog:
            try:
                self._inbound.put_nowait(message)
            except asyncio.QueueFull:
                pass
            else:
                return
        self._backlog.append(message)
        self._backlog_ready.set()

    async def _backlog_loop(self) -> None:
        """Move what the fast path could not queue at once into `inbound`, waiting for room."""
        while True:
            await self._backlog_ready.wait()
            while self._backlog:
                await self._inbound.put(self._backlog[0])
                self._backlog.popleft()
            self._backlog_ready.clear()

    async def _read_loop(self, client: aiomqtt.Client) -> None:
        # With the fast path installed, only what it leaves to paho arrives here; the
        # iterator still ends the connection's tasks when the broker goes away.
        generation = self._generation
        async for message in client.messages:
            if message.topic.value[:1] == "$":
                payload = message.payload if isinstance(message.payload, bytes) else b""
                self._broker_stat(message.topic.value, payload, message.retain)
                continue
            await self._inbound.put(
                Inbound(
                    topic=message.topic.value,
                    payload=message.payload if isinstance(message.payload, bytes) else b"",
                    qos=message.qos,
                    retain=message.retain,
                    mid=message.mid,
                    generation=generation,
                    received_at=self._clock.now(),
                )
            )
        raise aiomqtt.MqttError("message stream ended")

    async def _publish_loop(self, client: aiomqtt.Client, queue: asyncio.Queue[_Reply]) -> None:
        timed = self._emergency if queue is self._urgent else None
        while True:
            topic, payload, qos, queued = await queue.get()
            await client.publish(topic, payload, qos=qos)
            # A PUBACK landing with the shutdown's cancel would leave this worker running
            # and the connection's TaskGroup waiting for it forever.
            raise_if_cancelled()
            if timed is not None:
                timed.record("ack_published", time.monotonic() - queued)

    def ack(self, messages: Iterable[Inbound]) -> int:
        """Acknowledge stored messages to the broker; return how many acks were sent.

        A message from an earlier connection is not acked: the broker redelivers it and
        the idempotent insert absorbs the duplicate.
        """
        client = self._client
        if client is None:
            return 0
        paho = _paho(client)
        generation = self._generation
        if not _FastPath.installed(paho):
            sent = 0
            for message in messages:
                if message.qos > 0 and message.generation == generation:
                    paho.ack(message.mid, message.qos)
                    sent += 1
            return sent
        # One write for the whole batch instead of a packet, a wake-up and a send each.
        pubacks = bytearray()
        sent = 0
        for message in messages:
            if message.generation != generation or message.qos == 0:
                continue
            if message.qos == 1:
                pubacks += b"\x40\x02" + message.mid.to_bytes(2, "big")
            else:
                paho.ack(message.mid, message.qos)
            sent += 1
        if pubacks:
            paho._packet_queue(_PUBACK, bytes(pubacks), 0, 0)
        return sent

    def reply(self, topic: str, payload: bytes, qos: int = 1, *, urgent: bool = False) -> bool:
        """Queue a message to a device (rejected, ack); False if it had to be dropped.

        Urgent messages (an alert's ack: a resident waits for the light) have workers of
        their own, so a burst of rejections can never delay them.
        """
        queue = self._urgent if urgent else self._outbound
        try:
            queue.put_nowait((topic, payload, qos, time.monotonic()))
        except asyncio.QueueFull:
            self.replies_dropped += 1
            return False
        return True


def _paho(client: aiomqtt.Client) -> Any:  # paho's client, typed loosely on purpose
    """The paho client under aiomqtt, for what aiomqtt does not expose (manual acks)."""
    return client._client


class _FastPath:
    """The hub's hot path on the paho client under aiomqtt, without paho's per-message costs.

    paho reads each packet with three recv calls, then builds an MQTTMessage (with a
    threading.Condition and v5 Properties) that aiomqtt wraps again and hands over through
    a task per message. Installed, the socket is read in large chunks, PUBLISH packets are
    parsed in place and handed to ingest directly, and PUBACKs leave in one write per
    batch. Every other packet (CONNACK, SUBACK, PUBACK for our replies, PINGRESP,
    DISCONNECT) still goes through paho, and so does QoS 2, which we never subscribe to.
    """

    _HOOKS = (
        "_sock_recv",
        "_packet_read",
        "_handle_publish",
        "_in_packet",
        "_loop_rc_handle",
        "_packet_queue",
        "_protocol",
        "_sock",
        "loop_read",
    )

    def __init__(self, paho: Any, sink: Callable[[str, bytes, int, bool, int], None]) -> None:
        self._paho = paho
        self._sink = sink
        self._v5 = paho._protocol == MQTTProtocolVersion.MQTTv5
        self._recv: Callable[[int], bytes] = paho._sock_recv
        self._paho_publish: Callable[[], MQTTErrorCode] = paho._handle_publish
        self._chunk = b""
        self._pos = 0
        self._reads_left = 0

    @classmethod
    def install(cls, paho: Any, sink: Callable[[str, bytes, int, bool, int], None]) -> bool:
        """Hook into `paho` if its internals are the ones this was written for (paho 2.x)."""
        if not all(hasattr(paho, name) for name in cls._HOOKS):
            logger.warning("paho internals differ from 2.x; using paho's own read path")
            return False
        fast = cls(paho, sink)
        paho._sock_recv = fast._sock_recv
        paho._handle_publish = fast._handle_publish
        paho.loop_read = fast.loop_read
        paho._carehub_fast_path = fast
        return True

    @staticmethod
    def installed(paho: Any) -> bool:
        """True when `paho` runs with the fast path."""
        return hasattr(paho, "_carehub_fast_path")

    def loop_read(self, max_packets: int = 1) -> MQTTErrorCode:
        """paho's loop_read, but reading every packet that arrived, not one per wake-up."""
        paho = self._paho
        self._reads_left = RECV_CHUNKS_PER_WAKE
        while True:
            if paho._sock is None:
                return MQTTErrorCode.MQTT_ERR_NO_CONN
            rc: MQTTErrorCode = paho._packet_read()
            if rc > 0:
                handled: MQTTErrorCode = paho._loop_rc_handle(rc)
                return handled
            if rc == MQTTErrorCode.MQTT_ERR_AGAIN:
                return MQTTErrorCode.MQTT_ERR_SUCCESS

    def _sock_recv(self, bufsize: int) -> bytes:
        """paho's recv, served from one large read of the socket."""
        if self._pos >= len(self._chunk):
            if self._reads_left <= 0:
                # Yield to the event loop; the socket is still readable, so we are called again.
                raise BlockingIOError
            self._reads_left -= 1
            chunk = self._recv(RECV_CHUNK)
            if not chunk:
                return chunk  # end of stream: paho reports the connection lost
            self._chunk, self._pos = chunk, 0
        start = self._pos
        self._pos = start + bufsize
        return self._chunk[start : self._pos]

    def _handle_publish(self) -> MQTTErrorCode:
        """Parse a PUBLISH in place and hand it to ingest (QoS 2 is left to paho)."""
        packet = self._paho._in_packet
        header: int = packet["command"]
        qos = (header & 0x06) >> 1
        if qos == 2:
            return self._paho_publish()
        body: bytearray = packet["packet"]
        try:
            end = 2 + ((body[0] << 8) | body[1])
            topic = body[2:end]
            mid = 0
            if qos:
                mid = (body[end] << 8) | body[end + 1]
                end += 2
            if self._v5:
                # Properties: skipped. We announce no Topic Alias Maximum, so the broker
                # sends none; nothing else in them changes what the message is.
                length, shift = 0, 0
                while True:
                    byte = body[end]
                    end += 1
                    length |= (byte & 0x7F) << shift
                    shift += 7
                    if not byte & 0x80:
                        break
                end += length
        except IndexError:
            return MQTTErrorCode.MQTT_ERR_PROTOCOL
        if end > len(body) or (not topic and not self._v5):
            return MQTTErrorCode.MQTT_ERR_PROTOCOL
        # A topic that is not UTF-8 is a broker fault; decoding it lossily lets decode
        # refuse it as bad_topic instead of killing the connection.
        retain = bool(header & 0x01)
        self._sink(topic.decode("utf-8", "replace"), bytes(body[end:]), qos, retain, mid)
        return MQTTErrorCode.MQTT_ERR_SUCCESS
