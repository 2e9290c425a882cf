"""Outbound: what leaves the hub after a decision, on three paths that share one shape.

Device replies (`ack`, `rejected` on MQTT), the live feed (websocket screens) and the
webhooks (staff phones) are each a `Communicator`. The `Dispatcher` hands every
committed alert change, and every alert the database could not take yet, to each of
them. The pipeline and the alert lifecycle feed the dispatcher; nothing here calls back
into them, so data flows one way: ingest -> pipeline -> alerts -> outbound.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol, TypeVar

from hub.models import AlertChange, AlertDecision
from hub.outbound.device import DeviceReplies

logger = logging.getLogger(__name__)

_Message = TypeVar("_Message", AlertChange, AlertDecision)

__all__ = ["Communicator", "DeviceReplies", "Dispatcher"]


class Communicator(Protocol):
    """One outbound path. Both calls return at once: a slow path queues its own work."""

    def alert_changed(self, change: AlertChange) -> None:
        """A change of an alert, committed to the database."""

    def alert_provisional(self, decision: AlertDecision) -> None:
        """An alert decided while the database is down; it is stored on the spool's replay."""


class Dispatcher:
    """Hands each alert change to every outbound path; one failing path never stops another."""

    def __init__(self, device: DeviceReplies, others: Sequence[Communicator] = ()) -> None:
        self.device = device
        self._paths: tuple[Communicator, ...] = (device, *others)

    def alert_changed(self, change: AlertChange) -> None:
        """Tell every path of a committed change (the alert store's change listener)."""
        for path in self._paths:
            _each(path, path.alert_changed, change, {"alert_id": change.alert.id})

    def alert_provisional(self, decision: AlertDecision) -> None:
        """Tell every path of an alert the database could not take (SPEC §8)."""
        extra = {"device_id": decision.device_id, "facility_id": decision.facility_id}
        logger.warning(
            "database down: %s from %s announced provisionally; stored on replay",
            decision.kind,
            decision.device_id,
            extra=extra,
        )
        for path in self._paths:
            _each(path, path.alert_provisional, decision, extra)


def _each(
    path: Communicator,
    call: Callable[[_Message], None],
    message: _Message,
    extra: Mapping[str, object],
) -> None:
    """Hand one message to one path; a path that fails is logged, and the others go on."""
    try:
        call(message)
    except Exception:
        logger.exception(
            "%s failed on %s", type(path).__name__, type(message).__name__, extra=extra
        )
