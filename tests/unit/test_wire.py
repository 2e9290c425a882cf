"""The SPEC §6 wire shapes: what the live feed and webhooks write is what REST documents."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

import pytest

from hub.models import AlertChange
from hub.wire import Alert as AlertModel
from hub.wire import Device, alert_json, change_json, device_json
from tests.samples import RAISED, sample_alert


def test_alert_json_is_the_documentedsample_alert() -> None:
    """alert_json writes every field of the Alert model, ids as strings, times in RFC 3339."""
    written = alert_json(sample_alert())
    assert list(written) == list(AlertModel.model_fields)
    parsed = AlertModel.model_validate_json(json.dumps(written))
    assert parsed.id == "17"
    assert parsed.acknowledged_at == RAISED + timedelta(seconds=30)
    assert written["raised_at"] == "2026-11-22T00:15:00+00:00"
    assert written["overdue"] is True
    assert alert_json(sample_alert(overdue_at=None))["overdue"] is False


def test_a_change_carries_the_samesample_alert() -> None:
    """The live feed's and the webhooks' change message holds alert_json's Alert as is."""
    alert = sample_alert()
    change = AlertChange(alert, "acknowledge", "active", "nurse-li", RAISED, "on my way")
    written = change_json(change)
    assert written["type"] == "alert"
    assert written["action"] == "acknowledge"
    assert written["alert"] == alert_json(alert)


@pytest.mark.parametrize("last_seen", [None, RAISED])
def test_device_json_is_the_documented_device(last_seen: datetime | None) -> None:
    """device_json writes exactly the Device model's fields, from a row of the device select."""
    row = {
        "id": "lc-001-fs-01",
        "facility_id": "lc-001",
        "zone_id": "room-101",
        "type": "fall_sensor",
        "vendor": "acme",
        "model": "FS-2",
        "heartbeat_s": 300,
        "online": 1,
        "battery": 88.0,
        "last_seen": last_seen,
        "presence": True,
        "count": None,
        "staff": None,
        "district": "鹿城区",
    }
    written = device_json(row)
    assert list(written) == list(Device.model_fields)
    assert written["online"] is True
    Device.model_validate_json(json.dumps(written))
