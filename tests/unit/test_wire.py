"""The SPEC §6 wire shapes: what the live feed and webhooks write is what REST documents."""

from __future__ import annotations

import json
from collections import Counter
from datetime import datetime, timedelta
from typing import Any, cast, get_args

import pytest
from pydantic import TypeAdapter, ValidationError

from hub.app import create_app
from hub.live import group_message, provisional_json
from hub.models import AlertAction, AlertChange
from hub.settings import Settings
from hub.wire import Alert as AlertModel
from hub.wire import (
    Device,
    LiveMessage,
    alert_json,
    change_json,
    device_json,
    device_status_message,
    facility_status_message,
    zone_count_message,
)
from tests.samples import RAISED, sample_alert, sos_decision


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


# -- the live websocket's messages --------------------------------------------------------

LIVE = TypeAdapter(LiveMessage)


def _device() -> dict[str, Any]:
    return dict.fromkeys(Device.model_fields) | {
        "id": "lc-001-fs-01",
        "facility_id": "lc-001",
        "type": "fall_sensor",
        "vendor": "acme",
        "model": "FS-2",
        "heartbeat_s": 300,
        "online": False,
    }


def _status() -> dict[str, Any]:
    return {
        "state": "offline",
        "open_alerts": {"high": 0, "medium": 0, "low": 0},
        "overdue": 0,
        "devices_total": 1,
        "devices_online": 0,
        "present": 0,
        "staff": 0,
    }


def _written_messages() -> dict[str, dict[str, Any]]:
    """One message of each kind, as the hub's own functions write them, through JSON."""
    change = AlertChange(sample_alert(), "raise", None, "system", RAISED)
    zone = {"zone_id": "room-101", "present": 3, "staff": None, "name": "101", "kind": "room"}
    messages = [
        {**change_json(change), "change_id": 41},
        provisional_json(sos_decision(seq=7)),
        provisional_json(sos_decision(device_id=None, seq=None)),
        group_message("lc-001", Counter({"device_offline": 30, "low_battery": 7})),
        facility_status_message("lc-001", _status()),
        zone_count_message("lc-001", zone),
        device_status_message(_device()),
    ]
    return {f"{m['type']}:{i}": json.loads(json.dumps(m)) for i, m in enumerate(messages)}


@pytest.mark.parametrize("name", sorted(_written_messages()))
def test_every_live_message_the_hub_writes_is_a_documented_live_message(name: str) -> None:
    """What hub/live.py, hub/live_status.py and hub/wire.py write is `LiveMessage`, exactly."""
    message = _written_messages()[name]
    parsed = LIVE.validate_python(message)
    assert parsed.type == message["type"]
    # Every field it wrote is declared, and none was left to a default.
    assert parsed.model_fields_set == set(message)


@pytest.mark.parametrize(
    "message",
    [
        {
            "type": "zone_count",
            "facility_id": "f",
            "zone_id": "z",
            "present": 1,
            "staff": 0,
            "x": 0,
        },
        {"type": "alert_provisional", "facility_id": "f"},
        {"type": "zone_counts", "facility_id": "f", "zone_id": "z", "present": 1, "staff": 0},
        {"type": "ping", "at": "yesterday"},
        {"type": "resumed", "change_id": "7x"},
        {"facility_id": "f"},
    ],
)
def test_a_message_outside_the_document_is_refused(message: dict[str, Any]) -> None:
    """A field, a type or a value the document does not declare fails, so the tests that hold
    every message a screen receives against it catch an undocumented change."""
    with pytest.raises(ValidationError):
        LIVE.validate_python(message)


@pytest.mark.parametrize("action", get_args(AlertAction))
def test_every_alert_action_is_documented_and_no_other(action: str) -> None:
    """The dashboards switch on `action`: the document lists each one the hub writes."""
    change = AlertChange(sample_alert(), cast(AlertAction, action), "active", "nurse", RAISED)
    message = json.loads(json.dumps({**change_json(change), "change_id": 41}))
    assert LIVE.validate_python(message).action == action
    with pytest.raises(ValidationError):
        LIVE.validate_python({**message, "action": f"{action}ed"})


def test_the_served_document_describes_every_live_message() -> None:
    """`LiveMessage` is in the OpenAPI document, one schema per `type`, for the dashboards'
    generated types (the websocket itself has no place in OpenAPI)."""
    schemas = create_app(Settings()).openapi()["components"]["schemas"]
    mapping = schemas["LiveMessage"]["discriminator"]["mapping"]
    assert set(mapping) == {
        "snapshot",
        "resumed",
        "alert",
        "alert_provisional",
        "alert_group",
        "facility_status",
        "device_status",
        "zone_count",
        "ping",
        "lagging",
    }
    for ref in mapping.values():
        schema = schemas[ref.rsplit("/", 1)[1]]
        assert schema["additionalProperties"] is False
    # The live messages reuse the routes' shapes rather than a second copy of them.
    snapshot = schemas["SnapshotMessage"]["properties"]
    assert snapshot["alerts"]["items"] == {"$ref": "#/components/schemas/Alert"}
    assert snapshot["devices"]["items"] == {"$ref": "#/components/schemas/Device"}
