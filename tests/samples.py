"""Domain values for tests that need one: an alert as the store returns it, a rule's decision."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from hub.models import Alert, AlertDecision

RAISED = datetime(2026, 11, 22, 0, 15, tzinfo=UTC)


def raised_alert(**changes: Any) -> Alert:
    """An sos alert of lc-001-eb-01 just raised (active, counted once), with `changes` applied."""
    fields: dict[str, Any] = {
        "id": 17,
        "facility_id": "lc-001",
        "zone_id": "room-101",
        "device_id": "lc-001-eb-01",
        "subject": "lc-001-eb-01",
        "kind": "sos",
        "priority": "high",
        "latched": True,
        "state": "active",
        "count": 1,
        "seq": 1001,
        "raised_at": RAISED,
        "last_raised_at": RAISED,
        "acknowledged_at": None,
        "acknowledged_by": None,
        "attended_at": None,
        "attended_by": None,
        "resolved_at": None,
        "resolved_by": None,
        "disposition": None,
        "note": "",
        "cleared_at": None,
        "renotified_at": None,
        "overdue_at": None,
        "shelved": False,
        "detail": {},
    }
    return Alert(**{**fields, **changes})


def sample_alert(**changes: Any) -> Alert:
    """An acknowledged sos alert of lc-001-eb-01, with `changes` applied."""
    acknowledged: dict[str, Any] = {
        "state": "acknowledged",
        "count": 2,
        "last_raised_at": RAISED + timedelta(seconds=5),
        "acknowledged_at": RAISED + timedelta(seconds=30),
        "acknowledged_by": "nurse-li",
        "overdue_at": RAISED + timedelta(seconds=180),
        "detail": {"button": "red"},
    }
    return raised_alert(**{**acknowledged, **changes})


def sos_decision(
    facility_id: str = "lc-001",
    device_id: str | None = "lc-001-eb-01",
    zone_id: str | None = "room-101",
    **changes: Any,
) -> AlertDecision:
    """An sos decision about `device_id` as the button rule makes it, with `changes` applied."""
    fields: dict[str, Any] = {
        "kind": "sos",
        "priority": "high",
        "latched": True,
        "facility_id": facility_id,
        "zone_id": zone_id,
        "device_id": device_id,
        "subject": device_id,
        "at": RAISED,
    }
    return AlertDecision(**{**fields, **changes})
