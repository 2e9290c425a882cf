"""Domain values for tests that need one: an alert as the store returns it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from hub.models import Alert

RAISED = datetime(2026, 11, 22, 0, 15, tzinfo=UTC)


def sample_alert(**changes: Any) -> Alert:
    """An acknowledged sos alert of lc-001-eb-01, with `changes` applied."""
    fields: dict[str, Any] = {
        "id": 17,
        "facility_id": "lc-001",
        "zone_id": "room-101",
        "device_id": "lc-001-eb-01",
        "subject": "lc-001-eb-01",
        "kind": "sos",
        "priority": "high",
        "latched": True,
        "state": "acknowledged",
        "count": 2,
        "seq": 1001,
        "raised_at": RAISED,
        "last_raised_at": RAISED + timedelta(seconds=5),
        "acknowledged_at": RAISED + timedelta(seconds=30),
        "acknowledged_by": "nurse-li",
        "attended_at": None,
        "attended_by": None,
        "resolved_at": None,
        "resolved_by": None,
        "disposition": None,
        "note": "",
        "cleared_at": None,
        "renotified_at": None,
        "overdue_at": RAISED + timedelta(seconds=180),
        "shelved": False,
        "detail": {"button": "red"},
    }
    return Alert(**{**fields, **changes})
