"""Pure decoding: topic + bytes -> a typed message, or a rejection with a reason code."""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

import msgspec

from devices import CATALOGUE, MAX_FUTURE_S, MAX_PAST_S, MAX_PAYLOAD_BYTES, first_bad_field, topics
from devices.topics import Topic, TopicError
from hub.errors import DecodeError
from hub.models import Decoded, DeviceInfo, Event, Reading, Rejection, StatusChange

# RFC 3339: date, 'T' (or space), time with optional fraction, and a mandatory offset.
_RFC3339 = re.compile(
    r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})$"
)
_MAX_PAST = timedelta(seconds=MAX_PAST_S)
_MAX_FUTURE = timedelta(seconds=MAX_FUTURE_S)
logger = logging.getLogger(__name__)
_json = msgspec.json.Decoder()


def parse_topic(topic: str, root: str) -> Topic:
    """Split `{root}/v1/{facility}/{device}/{channel}`, or raise DecodeError(bad_topic)."""
    try:
        return topics.parse(topic, root)
    except TopicError as exc:
        raise DecodeError("bad_topic", str(exc)) from None


def parse_time(value: Any, received_at: datetime) -> datetime:
    """Parse an RFC 3339 `ts` with offset and check it against the hub's clock."""
    if not isinstance(value, str) or not _RFC3339.match(value):
        raise DecodeError(
            "bad_field",
            "ts: must be an RFC 3339 time with offset, e.g. 2026-11-22T08:15:00.120+08:00",
        )
    try:
        ts = datetime.fromisoformat(value.replace("z", "Z"))
    except ValueError as exc:
        raise DecodeError("bad_field", f"ts: {exc}") from exc
    if ts < received_at - _MAX_PAST:
        raise DecodeError("bad_time", "ts is more than 24 h in the past")
    if ts > received_at + _MAX_FUTURE:
        raise DecodeError("bad_time", "ts is more than 5 min in the future")
    return ts


def _object(payload: bytes) -> dict[str, Any]:
    try:
        body = _json.decode(payload)
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise DecodeError("not_json", f"payload is not UTF-8 JSON: {exc}") from exc
    except RecursionError as exc:
        # msgspec gives up on nesting of about a thousand levels, before our own depth check.
        raise DecodeError("bad_field", f"payload: nested deeper than {MAX_DEPTH} levels") from exc
    if not isinstance(body, dict):
        raise DecodeError("not_object", f"payload is a JSON {_json_kind(body)}, not an object")
    # Both checks are cheap byte scans first: ordinary payloads never pay for the walk.
    if payload.count(b"{") + payload.count(b"[") > MAX_DEPTH:
        _check_depth(body, 1)
    if b"\\u0000" in payload:
        _check_nul(body, "payload")
    return body


MAX_DEPTH = 32


def _json_kind(value: Any) -> str:
    if isinstance(value, list):
        return "array"
    if isinstance(value, str):
        return "string"
    if isinstance(value, bool):
        return "boolean"
    if value is None:
        return "null"
    return "number"


def _check_depth(value: Any, depth: int) -> None:
    """Refuse nesting deeper than MAX_DEPTH, which storage (jsonb) could not hold safely."""
    if depth > MAX_DEPTH:
        raise DecodeError("bad_field", f"payload: nested deeper than {MAX_DEPTH} levels")
    children = (
        value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
    )
    for child in children:
        if isinstance(child, dict | list):
            _check_depth(child, depth + 1)


def _check_nul(value: Any, path: str) -> None:
    """Refuse U+0000 anywhere: valid JSON, but PostgreSQL text and jsonb cannot store it."""
    if isinstance(value, str):
        if "\x00" in value:
            raise DecodeError("bad_field", f"{path}: contains U+0000, which cannot be stored")
    elif isinstance(value, dict):
        for key, child in value.items():
            _check_nul(key, path)
            _check_nul(child, f"{key[:32]}" if path == "payload" else f"{path}.{key[:32]}")
    elif isinstance(value, list):
        for child in value:
            _check_nul(child, path)


def _seq(body: Mapping[str, Any]) -> int:
    seq = body.get("seq")
    if isinstance(seq, bool) or not isinstance(seq, int) or seq < 0 or seq >= 2**63:
        raise DecodeError("bad_field", "seq: must be an integer ≥ 0")
    return seq


def _optional_number(body: Mapping[str, Any], name: str) -> float | None:
    value = body.get(name)
    return None if value is None else float(value)


def _optional_int(body: Mapping[str, Any], name: str) -> int | None:
    value = body.get(name)
    return None if value is None else int(value)


def decode_body(
    parts: Topic, payload: bytes, received_at: datetime, device: DeviceInfo
) -> Reading | Event | StatusChange:
    """Validate the payload of a message from a known device; raise DecodeError if bad."""
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise DecodeError(
            "too_large", f"payload is {len(payload)} bytes; the limit is {MAX_PAYLOAD_BYTES}"
        )
    body = _object(payload)
    if parts.channel == "status":
        online = body.get("online")
        if not isinstance(online, bool):
            raise DecodeError("bad_field", "online: must be true or false")
        return StatusChange(device.id, device.facility_id, online, received_at)

    ts = parse_time(body.get("ts"), received_at)
    seq = _seq(body)
    # DeviceMessage's fields, in their order: every reading and event begins with them.
    origin = (device.id, device.facility_id, device.zone_id, seq, ts, received_at)
    device_type = CATALOGUE[device.type]
    if parts.channel == "telemetry":
        bad = first_bad_field(device_type.telemetry, body)
        if bad is not None:
            raise DecodeError("bad_field", f"{bad[0]}: {bad[1]}")
        presence = body.get("presence")
        return Reading(
            *origin,
            battery=_optional_number(body, "battery"),
            presence=presence if isinstance(presence, bool) else None,
            count=_optional_int(body, "count"),
            staff=_optional_int(body, "staff"),
            rssi=_optional_number(body, "rssi"),
            payload=body,
        )

    name = body.get("event")
    if not isinstance(name, str):
        raise DecodeError("bad_field", "event: must be a string naming the event")
    spec = device_type.event(name)
    if spec is None:
        known = ", ".join(e.name for e in device_type.events) or "none"
        raise DecodeError(
            "unknown_event", f"{device.type} sends no event {name[:64]!r} (known: {known})"
        )
    bad = first_bad_field(spec.fields, body)
    if bad is not None:
        raise DecodeError("bad_field", f"{bad[0]}: {bad[1]}")
    return Event(*origin, device_type=device.type, event=name, payload=body)


def decode(
    topic: str,
    payload: bytes,
    received_at: datetime,
    root: str,
    devices: Mapping[str, DeviceInfo],
) -> Decoded:
    """Turn one MQTT message into a typed value or a Rejection; never raises."""
    try:
        parts = parse_topic(topic, root)
    except DecodeError as exc:
        return Rejection(topic, exc.reason, exc.detail, received_at, payload, None, None)
    device = devices.get(parts.device_id)
    if device is None:
        return Rejection(
            topic,
            "unknown_device",
            f"device {parts.device_id!r} is not registered; it is listed as pending for an admin",
            received_at,
            payload,
            parts.facility_id,
            parts.device_id,
            pending=True,
        )
    if device.facility_id != parts.facility_id:
        return Rejection(
            topic,
            "wrong_facility",
            f"device {device.id!r} is not registered at facility {parts.facility_id!r}",
            received_at,
            payload,
            parts.facility_id,
            parts.device_id,
        )
    try:
        return decode_body(parts, payload, received_at, device)
    except DecodeError as exc:
        return Rejection(
            topic, exc.reason, exc.detail, received_at, payload, parts.facility_id, parts.device_id
        )
    except Exception:
        # A payload that trips a case decode missed is still refused, never a dead pipeline.
        logger.exception("decode failed unexpectedly on %s", topic)
        return Rejection(
            topic,
            "bad_field",
            "payload could not be decoded",
            received_at,
            payload,
            parts.facility_id,
            parts.device_id,
        )
