"""The MQTT client both ends of the contract use: aiomqtt, with one shutdown fix.

aiomqtt 2.5 cancels its `_connected` future when the task awaiting the CONNACK is
cancelled, and its disconnect callback then asks that future for its exception, which
raises CancelledError inside an event-loop callback: a traceback in the log every time
a client is stopped while it is still connecting (a demo shutting down, a device
reconnecting as the broker goes away). A cancelled connect has nothing to report on
disconnect, so the callback returns early in that case.
"""

from __future__ import annotations

from typing import Any

import aiomqtt


class Client(aiomqtt.Client):
    """aiomqtt.Client whose disconnect callback tolerates a cancelled connect."""

    def _on_disconnect(self, *args: Any, **kwargs: Any) -> None:
        if self._connected.cancelled():
            return
        super()._on_disconnect(*args, **kwargs)
