"""One hand-written MQTT encoder and packet reader, for load no client library can offer.

A client library spends tens of microseconds a message; pre-encoded packets written in
bulk let one process offer 40,000 QoS 1 messages a second, and let a test send a topic no
library would. MQTT 3.1.1 (protocol level 4) and 5: CONNECT, PUBLISH (QoS 0 and 1),
PUBACK, SUBSCRIBE, PINGREQ, DISCONNECT, and a reader that splits a byte stream into packets.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import ssl
from typing import TYPE_CHECKING

from hub.errors import HubError

if TYPE_CHECKING:
    from devices.mqtt import MqttTarget

MQTT_311 = 4
MQTT_5 = 5
CONNECT = 0x10
CONNACK = 0x20
PUBLISH = 0x30
PUBACK = 0x40
SUBSCRIBE = 0x82  # the reserved flags of SUBSCRIBE are 0b0010
SUBACK = 0x90
PINGRESP = 0xD0
PINGREQ_PACKET = b"\xc0\x00"
DISCONNECT_PACKET = b"\xe0\x00"
# The first byte of a QoS 1 PUBLISH (no DUP, no RETAIN): what the load loop writes.
PUBLISH_QOS1 = 0x32
# No properties: the one-byte property length MQTT 5 adds to CONNECT, PUBLISH, SUBSCRIBE.
_NO_PROPERTIES = b"\x00"


def remaining_length(length: int) -> bytes:
    """The variable-length "remaining length" of a fixed header."""
    out = bytearray()
    while True:
        byte, length = length & 0x7F, length >> 7
        out.append(byte | (0x80 if length else 0))
        if not length:
            return bytes(out)


def mqtt_string(text: str | bytes) -> bytes:
    """A length-prefixed MQTT string; bytes are sent as given, valid UTF-8 or not."""
    raw = text.encode() if isinstance(text, str) else text
    return len(raw).to_bytes(2, "big") + raw


def connect_packet(
    client_id: str,
    *,
    username: str | None = None,
    password: str | None = None,
    keepalive_s: int = 60,
    protocol: int = MQTT_311,
) -> bytes:
    """CONNECT with a clean session (clean start in MQTT 5): a bench keeps no state."""
    flags = 0x02
    payload = mqtt_string(client_id)
    if username is not None:
        flags |= 0x80
        payload += mqtt_string(username)
        if password is not None:
            flags |= 0x40
            payload += mqtt_string(password)
    body = mqtt_string("MQTT") + bytes((protocol, flags)) + keepalive_s.to_bytes(2, "big")
    if protocol == MQTT_5:
        body += _NO_PROPERTIES
    body += payload
    return bytes((CONNECT,)) + remaining_length(len(body)) + body


def publish_packet(
    topic: str | bytes,
    payload: bytes,
    *,
    qos: int = 0,
    packet_id: int = 0,
    protocol: int = MQTT_311,
) -> bytes:
    """PUBLISH at QoS 0 or 1 (`packet_id` is needed for QoS 1)."""
    body = mqtt_string(topic)
    if qos:
        body += packet_id.to_bytes(2, "big")
    if protocol == MQTT_5:
        body += _NO_PROPERTIES
    body += payload
    return bytes((PUBLISH | qos << 1,)) + remaining_length(len(body)) + body


def puback_packet(packet_id: int | bytes) -> bytes:
    """PUBACK of a QoS 1 PUBLISH (success: MQTT 5 lets the reason code be left out)."""
    raw = packet_id.to_bytes(2, "big") if isinstance(packet_id, int) else packet_id
    return bytes((PUBACK, 2)) + raw


def subscribe_packet(
    packet_id: int, topic: str, *, qos: int = 1, protocol: int = MQTT_311
) -> bytes:
    """SUBSCRIBE to one topic filter at `qos`."""
    body = packet_id.to_bytes(2, "big")
    if protocol == MQTT_5:
        body += _NO_PROPERTIES
    body += mqtt_string(topic) + bytes((qos,))
    return bytes((SUBSCRIBE,)) + remaining_length(len(body)) + body


def decode_remaining_length(buffer: bytes, at: int) -> tuple[int, int] | None:
    """(remaining length, where the body starts) from the header bytes at `at`, or None if cut."""
    length, shift = 0, 0
    while True:
        if at >= len(buffer):
            return None
        byte = buffer[at]
        at += 1
        length |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return length, at
        if shift > 21:
            raise HubError("malformed remaining length from the broker")


def next_packet(buffer: bytes, pos: int) -> tuple[int, int, int] | None:
    """(first byte, body start, body end) of the MQTT packet at `pos`, or None if partial."""
    decoded = decode_remaining_length(buffer, pos + 1)
    if decoded is None:
        return None
    length, start = decoded
    if start + length > len(buffer):
        return None
    return buffer[pos], start, start + length


async def read_packet(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """(first byte, body) of the next whole packet on the stream."""
    header = await reader.readexactly(2)
    while (decoded := decode_remaining_length(header, 1)) is None:
        header += await reader.readexactly(1)
    return header[0], await reader.readexactly(decoded[0])


async def open_mqtt(
    target: MqttTarget,
    client_id: str,
    who: str,
    connack_s: float,
    *,
    protocol: int = MQTT_311,
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A raw MQTT connection for a bench client: TCP (or TLS), CONNECT, a successful CONNACK.

    `who` names the client in errors ("bench connection 3", "button eb-1").
    """
    context = ssl.create_default_context() if target.tls else None
    try:
        reader, writer = await asyncio.open_connection(target.host, target.port, ssl=context)
    except OSError as exc:
        raise HubError(
            f"{who} cannot reach the broker at {target.host}:{target.port}: {exc}"
        ) from exc
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    writer.write(
        connect_packet(
            client_id, username=target.username, password=target.password, protocol=protocol
        )
    )
    kind, body = await asyncio.wait_for(read_packet(reader), connack_s)
    # Byte 0 of the body holds the session flag, byte 1 the return (reason) code.
    if kind != CONNACK or len(body) < 2 or body[1] != 0:
        raise HubError(
            f"broker refused {who}: CONNACK {bytes((kind, len(body))).hex()}{body.hex()}"
        )
    return reader, writer


class RawConnection:
    """A bench client's raw MQTT connection: where it goes as whom, its two streams, a clean end."""

    def __init__(self, target: MqttTarget, prefix: str, index: int, who: str) -> None:
        self._target = target
        # This process's id in it: two benches on one broker never share a client id (the
        # broker would drop the older connection).
        self._client_id = f"{prefix}-{os.getpid()}-{index}"
        # Names the client in errors ("bench connection 3", "button eb-1").
        self._who = who
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        # Set before the connection is closed on purpose, so that the reader ends quietly.
        self._closing = False

    async def _open(self, connack_s: float) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """Connect (see open_mqtt) and keep the two streams; they are returned for convenience."""
        self._reader, self._writer = await open_mqtt(
            self._target, self._client_id, self._who, connack_s
        )
        return self._reader, self._writer

    async def close(self) -> None:
        """Send DISCONNECT and close the connection."""
        if self._writer is None:
            return
        self._closing = True
        with contextlib.suppress(OSError):
            self._writer.write(DISCONNECT_PACKET)
            await self._writer.drain()
        self._writer.close()
        with contextlib.suppress(OSError):
            await self._writer.wait_closed()
