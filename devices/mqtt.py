"""The MQTT client and broker URL both ends of the contract use: aiomqtt, with one fix.

aiomqtt 2.5 cancels its `_connected` future when the task awaiting the CONNACK is
cancelled, and its disconnect callback then asks that future for its exception, which
raises CancelledError inside an event-loop callback: a traceback in the log every time
a client is stopped while it is still connecting (a demo shutting down, a device
reconnecting as the broker goes away). A cancelled connect has nothing to report on
disconnect, so the callback returns early in that case.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

import aiomqtt


@dataclass(frozen=True, slots=True)
class MqttTarget:
    """Where and how to reach the broker, parsed from an `mqtt://user:pass@host:port` URL."""

    host: str
    port: int
    tls: bool
    username: str | None
    password: str | None


def parse_mqtt_url(url: str) -> MqttTarget:
    """Parse `mqtt://` (plain) or `mqtts://` (TLS), with optional credentials and port."""
    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "mqtts", "tcp", "ssl"):
        raise ValueError(f"MQTT URL {url!r}: scheme must be mqtt:// or mqtts://")
    if not parts.hostname:
        raise ValueError(f"MQTT URL {url!r}: no host")
    tls = parts.scheme in ("mqtts", "ssl")
    try:
        port = parts.port or (8883 if tls else 1883)
    except ValueError as exc:
        raise ValueError(f"MQTT URL {url!r}: bad port") from exc
    return MqttTarget(
        host=parts.hostname,
        port=port,
        tls=tls,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
    )


class Client(aiomqtt.Client):
    """aiomqtt.Client whose disconnect callback tolerates a cancelled connect."""

    def _on_disconnect(self, *args: Any, **kwargs: Any) -> None:
        if self._connected.cancelled():
            return
        super()._on_disconnect(*args, **kwargs)
