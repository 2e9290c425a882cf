"""One simulated device on its own MQTT connection, speaking contract v1 (SPEC §3)."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import json
import logging
import random
import ssl
import time
from collections import deque
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final

import aiomqtt

from devices import mqtt, topic
from devices.mqtt import MqttTarget
from simulators.behaviour import (
    SHANGHAI,
    Behaviour,
    ButtonBehaviour,
    FallSensorBehaviour,
    Outgoing,
    SimClock,
    format_ts,
)
from simulators.district import Device
from simulators.faults import Faults, spoil_telemetry

logger = logging.getLogger(__name__)

ONLINE: Final = json.dumps({"online": True}).encode()
OFFLINE: Final = json.dumps({"online": False}).encode()
PROTOCOLS: Final = {311: aiomqtt.ProtocolVersion.V311, 5: aiomqtt.ProtocolVersion.V5}
# Reconnect backoff: the first retry is quick (a broker restart takes about a second), then
# doubles up to half a minute so hundreds of devices do not hammer a broker that is down.
BACKOFF_FIRST_S: Final = 0.5
BACKOFF_MAX_S: Final = 30.0
# The device's last goodbye on a clean shutdown must not hold up Ctrl-C for long.
GOODBYE_TIMEOUT_S: Final = 2.0
# seq must keep increasing across restarts of the simulator, because the hub stores
# (device_id, seq) once. Starting from tenths of a second since 2025 gives every run a higher
# start than the last, while staying below 2**31 until 2031.
SEQ_EPOCH: Final = datetime(2025, 1, 1, tzinfo=SHANGHAI).timestamp()


def seq_at(moment: datetime) -> int:
    """The seq a device uses for a message it sends at `moment` (tenths of a second)."""
    return max(0, int((moment.timestamp() - SEQ_EPOCH) * 10))


def first_seq() -> int:
    """A seq start higher than any earlier run of the simulator used."""
    return seq_at(datetime.now(SHANGHAI))


def encode_payload(out: Outgoing, seq: int, sent_at: datetime) -> bytes:
    """The UTF-8 JSON of one event or telemetry message, with `ts` and `seq` first."""
    body = {"ts": format_ts(sent_at), "seq": seq, **out.body}
    return json.dumps(body, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()


@functools.cache
def _tls_context() -> ssl.SSLContext:
    # Loading the system CA store costs milliseconds: once per process, not per connection.
    return ssl.create_default_context()


def new_client(
    target: MqttTarget,
    protocol: int,
    identifier: str,
    will: aiomqtt.Will | None = None,
) -> aiomqtt.Client:
    """An aiomqtt client for `target`; must be called inside the running event loop."""
    if protocol not in PROTOCOLS:
        raise ValueError("protocol must be 311 or 5")
    return mqtt.Client(
        target.host,
        target.port,
        username=target.username,
        password=target.password,
        identifier=identifier,
        protocol=PROTOCOLS[protocol],
        will=will,
        tls_context=_tls_context() if target.tls else None,
        keepalive=30,
    )


def drop_connection(client: aiomqtt.Client) -> None:
    """Close the socket with no DISCONNECT, as a power cut would, so the broker sends the will."""
    # aiomqtt has no public way to lose a connection on purpose; paho's own socket close
    # is what happens when the network fails. Marking the session as ended keeps aiomqtt's
    # context exit from trying a clean DISCONNECT on the dead socket.
    client._client._sock_close()
    if not client._disconnected.done():
        client._disconnected.set_result(None)


def raise_if_cancelled() -> None:
    """Re-raise a cancellation that an error on the way out, or a wait, has swallowed.

    aiomqtt's context exit waits for the DISCONNECT to go out and raises MqttError when
    that times out. Raised while a CancelledError unwinds, it replaces it: a reconnect
    loop that catches it would carry on after being told to stop, and so hang its owner.
    On Python 3.11 aiomqtt's waits for a PUBACK or SUBACK (asyncio.wait_for) return
    instead of raising when the answer lands in the same tick as the cancellation.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


class _DroppedError(Exception):
    """The device pulled its own plug (the dropout scenario)."""


@dataclass(frozen=True, slots=True)
class Link:
    """How the devices of a run reach the hub: the broker, topic root, MQTT version and qos."""

    target: MqttTarget
    topic_root: str = "carehub"
    protocol: int = 5
    telemetry_qos: int = 1
    event_qos: int = 1

    def __post_init__(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise ValueError("protocol must be 311 or 5")
        if self.telemetry_qos not in (0, 1) or self.event_qos not in (0, 1, 2):
            raise ValueError("telemetry_qos must be 0 or 1 and event_qos 0, 1 or 2")


class SimulatedDevice:
    """A device with its own MQTT connection: status, telemetry, events; reads ack and rejected."""

    def __init__(
        self,
        device: Device,
        behaviour: Behaviour,
        *,
        link: Link,
        clock: SimClock,
        seq_start: int | None = None,
        connect_delay_s: float = 0.0,
        password: str | None = None,
        faults: Faults | None = None,
    ) -> None:
        """`password`: the device's own MQTT password (its username is its id); None to
        connect with the link's credentials, as on a broker without per-device accounts."""
        self.device = device
        self.behaviour = behaviour
        self.faults = faults or Faults()
        # A slow heartbeat is the plan's own pace: the behaviour reads heartbeat_s each time.
        behaviour.heartbeat_s *= self.faults.heartbeat_factor
        self.link = link
        self.target = (
            dataclasses.replace(link.target, username=device.id, password=password)
            if password is not None
            else link.target
        )
        self.clock = clock
        self.seq = first_seq() if seq_start is None else seq_start
        self.connect_delay_s = connect_delay_s
        self.connected = asyncio.Event()
        self.last_ack: Any = None
        self.last_rejected: Any = None
        self.received: deque[tuple[str, Any]] = deque(maxlen=100)
        self.sent: deque[tuple[str, bytes]] = deque(maxlen=100)
        self.messages_sent = 0
        self._wake = asyncio.Event()
        self._drop_requested = False
        self._silent_until = 0.0
        self._log_fields = {"device_id": device.id, "facility_id": device.facility_id}

    @property
    def id(self) -> str:
        """The device id (also its MQTT client id)."""
        return self.device.id

    def topic(self, channel: str) -> str:
        """This device's topic for `channel`."""
        return topic(self.link.topic_root, self.device.facility_id, self.device.id, channel)

    def encode(self, out: Outgoing) -> bytes:
        """Stamp `out` with the next seq and the device's time now, and encode it."""
        faults = self.faults
        sent_at = datetime.now(SHANGHAI) + timedelta(seconds=faults.clock_offset_s)
        if out.channel == "telemetry" and faults.bad_telemetry:
            out = Outgoing(out.channel, spoil_telemetry(self.device.type, out.body))
        payload = encode_payload(out, self.seq, sent_at)
        self.seq += -1 if faults.seq_backwards else 1
        return payload

    def press_test(self) -> bool:
        """Make the test press an installer makes on request; False if the type has none.

        A button sends a test call (`"test": true`), a fall sensor a fall_detected (what
        its walk test sends); a counter has nothing to press.
        """
        now = self.clock.now()
        if isinstance(self.behaviour, ButtonBehaviour):
            self.behaviour.inject_press(now, test=not self.faults.test_press_as_real)
        elif isinstance(self.behaviour, FallSensorBehaviour):
            self.behaviour.inject_fall(now, confidence=0.95, clear_after_s=60.0)
        else:
            return False
        self.wake()
        return True

    def wake(self) -> None:
        """Look at the plan again now: a scenario has changed it."""
        self._wake.set()

    def drop(self, silent_s: float) -> None:
        """Lose the connection abruptly (the will fires), then stay silent for `silent_s` real s."""
        self._silent_until = time.monotonic() + silent_s
        self._drop_requested = True
        self._wake.set()

    async def run(self) -> None:
        """Connect, talk and reconnect with backoff until cancelled."""
        rng = random.Random(self.device.id)
        await asyncio.sleep(self.connect_delay_s)
        backoff = BACKOFF_FIRST_S
        while True:
            await self._sit_out_silence()
            lost: BaseException | None = None
            will = aiomqtt.Will(self.topic("status"), OFFLINE, qos=1, retain=True)
            client = new_client(
                self.target,
                self.link.protocol,
                self.device.id,
                will if self.faults.last_will else None,
            )
            try:
                async with client:
                    backoff = BACKOFF_FIRST_S
                    await self._session(client)
            except* _DroppedError:
                logger.debug(
                    "device %s dropped its connection (dropout)",
                    self.device.id,
                    extra=self._log_fields,
                )
            except* aiomqtt.MqttError as group:
                raise_if_cancelled()
                lost = group.exceptions[0]
            if lost is not None and not self._drop_requested:
                delay = backoff * rng.uniform(0.5, 1.5)
                # The first failure is news; the retries while the broker stays away are not.
                log = logger.warning if backoff == BACKOFF_FIRST_S else logger.debug
                log(
                    "device %s: MQTT connection lost (%s); retrying in %.1f s",
                    self.device.id,
                    lost,
                    delay,
                    extra=self._log_fields,
                )
                await asyncio.sleep(delay)
                backoff = min(backoff * 2, BACKOFF_MAX_S)

    async def _sit_out_silence(self) -> None:
        silence = self._silent_until - time.monotonic()
        if silence > 0:
            await asyncio.sleep(silence)
        self._drop_requested = False

    async def _session(self, client: aiomqtt.Client) -> None:
        retain = self.faults.status_retained
        await client.publish(self.topic("status"), ONLINE, qos=1, retain=retain)
        await client.subscribe([(self.topic("ack"), 1), (self.topic("rejected"), 1)])
        raise_if_cancelled()
        self.connected.set()
        logger.debug("device %s online", self.device.id, extra=self._log_fields)
        try:
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(self._listen(client))
                tasks.create_task(self._speak(client))
        except asyncio.CancelledError:
            # A clean shutdown sends no will, so say goodbye ourselves: otherwise the
            # retained status would claim the device is online forever.
            try:
                await client.publish(
                    self.topic("status"),
                    OFFLINE,
                    qos=1,
                    retain=retain,
                    timeout=GOODBYE_TIMEOUT_S,
                )
            except aiomqtt.MqttError:
                logger.debug(
                    "device %s could not say goodbye", self.device.id, extra=self._log_fields
                )
            raise
        finally:
            self.connected.clear()

    async def _listen(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            channel = str(message.topic).rsplit("/", 1)[-1]
            raw = message.payload if isinstance(message.payload, bytes) else b""
            try:
                decoded: Any = json.loads(raw)
            except ValueError:
                decoded = raw.decode("utf-8", "replace")
            self.received.append((channel, decoded))
            if channel == "ack":
                self.last_ack = decoded
            elif channel == "rejected":
                self.last_rejected = decoded
                logger.info(
                    "device %s: hub rejected a message: %s",
                    self.device.id,
                    decoded,
                    extra=self._log_fields,
                )

    async def _speak(self, client: aiomqtt.Client) -> None:
        while True:
            if self._drop_requested:
                drop_connection(client)
                raise _DroppedError
            delay = self.clock.real_delay_until(self.behaviour.due_at())
            if delay > 0:
                self._wake.clear()
                try:
                    async with asyncio.timeout(delay):
                        await self._wake.wait()
                except TimeoutError:
                    pass
                continue
            for out in self.behaviour.advance(self.clock.now()):
                await self._publish(client, out)

    async def _publish(self, client: aiomqtt.Client, out: Outgoing) -> None:
        payload = self.encode(out)
        channel_topic = self.topic(out.channel)
        qos = self.link.event_qos if out.channel == "event" else self.link.telemetry_qos
        await client.publish(channel_topic, payload, qos=qos)
        if out.channel == "telemetry" and self.faults.stray_channel is not None:
            await client.publish(self.topic(self.faults.stray_channel), payload, qos=qos)
        raise_if_cancelled()
        self.sent.append((channel_topic, payload))
        self.messages_sent += 1
        if out.channel == "event":
            logger.info(
                "device %s sent %s", self.device.id, payload.decode(), extra=self._log_fields
            )
