"""Notice bodies and their webhook formats (json, wecom, dingtalk), with signing; pure.

Formats: `json` (the generic notice below), `wecom` (企业微信 group robot, markdown) and
`dingtalk` (钉钉 custom robot, markdown, signed when the robot has a SEC... secret). Every
message text contains "告警", so a DingTalk robot's keyword check can use that word.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
from collections.abc import Mapping
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

from devices import ALERT_LABELS
from hub.errors import NotifyError
from hub.models import AlertChange
from hub.wire import alert_json

FORMATS = ("json", "wecom", "dingtalk")
EVENTS = ("new", "escalated", "overdue", "flood")
# Message size limits of the robots (WeCom markdown: 4096 bytes; DingTalk: 20000).
WECOM_MAX_BYTES = 4096
DINGTALK_MAX_BYTES = 18000
# Facilities are in China (UTC+8, no daylight saving); staff read times in it.
CHINA = timezone(timedelta(hours=8))

KIND_TEXT = ALERT_LABELS
# What happened, as a sentence about the place or device.
KIND_SENTENCE = {
    "sos": "求助",
    "fall": "检测到跌倒",
    "long_lie": "跌倒后长时间未起身",
    "dwell": "长时间无活动",
    "over_capacity": "人数超过核定容量",
    "staff_ratio": "师幼比超过规定",
    "device_offline": "离线",
    "low_battery": "电量低",
}
PRIORITY_TEXT = {"high": "高", "medium": "中", "low": "低"}


def notice_body(
    change: AlertChange, facility_name: str, event: str, *, zone_name: str | None = None
) -> dict[str, Any]:
    """The generic notice of one alert change: what a `json` webhook receives."""
    if event not in ("new", "escalated", "overdue"):
        raise ValueError(f"not an alert notice event: {event!r}")
    alert = change.alert
    kind_text = KIND_TEXT.get(alert.kind, alert.kind)
    where = " ".join(
        part
        for part in (
            facility_name,
            zone_name or alert.zone_id,
            f"设备 {alert.device_id}" if alert.device_id else None,
        )
        if part
    )
    sentence = f"{where} {KIND_SENTENCE.get(alert.kind, kind_text)}"
    if event == "new":
        label = kind_text
        urge = "请立即处理" if alert.priority == "high" else "请及时处理"
        text = f"【{label}】{sentence}，{urge}"
    elif event == "escalated":
        label = f"再次提醒·{kind_text}"
        waited = _duration_text(change.at - alert.raised_at)
        text = f"【{label}】{sentence}，已 {waited}无人确认，请立即处理"
    else:
        label = f"超时未处理·{kind_text}"
        waited = _duration_text(change.at - alert.raised_at)
        text = f"【{label}】{sentence}，已 {waited}无人确认，已标记为超时呼叫"
    return {
        "event": event,
        "alert_id": str(alert.id),
        "facility_id": alert.facility_id,
        "facility_name": facility_name,
        "zone_id": alert.zone_id,
        "zone_name": zone_name,
        "device_id": alert.device_id,
        "kind": alert.kind,
        "kind_text": kind_text,
        "priority": alert.priority,
        "state": alert.state,
        "count": alert.count,
        "raised_at": alert.raised_at.isoformat(),
        "at": change.at.isoformat(),
        "title": f"【{label}】{facility_name}",
        "text": text,
        # The alert as REST and the live feed show it (SPEC §6), for integrators.
        "alert": alert_json(alert),
    }


def flood_body(
    *,
    facility_id: str,
    facility_name: str,
    kinds: Mapping[str, int],
    escalated: int,
    window_count: int,
    window_s: int,
    first_at: datetime,
    last_at: datetime,
) -> dict[str, Any]:
    """The summary notice of a facility's flood: grouped alerts counted per kind."""
    grouped = sum(kinds.values()) + escalated
    window = f"{window_s // 60} 分钟" if window_s % 60 == 0 else f"{window_s} 秒"
    ordered = sorted(kinds.items(), key=lambda item: (-item[1], item[0]))
    parts = [f"{KIND_TEXT.get(kind, kind)} ×{count}" for kind, count in ordered]
    if escalated:
        parts.append(f"仍无人确认 ×{escalated}")
    title = f"【告警汇总】{facility_name}"
    summary = "，".join(parts)
    text = f"{title} {window}内共 {window_count} 条告警，以下 {grouped} 条合并通知：{summary}"
    return {
        "event": "flood",
        "facility_id": facility_id,
        "facility_name": facility_name,
        "priority": "medium",
        "count": grouped,
        "kinds": dict(ordered),
        "escalated": escalated,
        "window_s": window_s,
        "window_count": window_count,
        "first_at": first_at.isoformat(),
        "last_at": last_at.isoformat(),
        "title": title,
        "text": text,
    }


def render(format: str, notice: Mapping[str, Any]) -> dict[str, Any]:
    """The POST body of `notice` for a webhook of `format` (json, wecom or dingtalk)."""
    if format == "json":
        return dict(notice)
    if format == "wecom":
        return {"msgtype": "markdown", "markdown": {"content": _wecom_markdown(notice)}}
    if format == "dingtalk":
        return {
            "msgtype": "markdown",
            "markdown": {"title": str(notice["title"]), "text": _dingtalk_markdown(notice)},
            # A high alert rings everyone in the group.
            "at": {"isAtAll": notice.get("priority") == "high"},
        }
    raise NotifyError(f"unknown webhook format {format!r}; use one of {', '.join(FORMATS)}")


def _facts(notice: Mapping[str, Any]) -> list[str]:
    """The detail lines under a notice's headline."""
    if notice.get("event") == "flood":
        facts = [
            f"{KIND_TEXT.get(kind, kind)}：{count} 条" for kind, count in notice["kinds"].items()
        ]
        if notice.get("escalated"):
            facts.append(f"仍无人确认：{notice['escalated']} 条")
        facts.append(f"时间：{_local_time(notice['first_at'])} 至 {_local_time(notice['last_at'])}")
        facts.append("每条告警均已保存，详见监管屏")
        return facts
    facts = []
    if notice.get("zone_name") or notice.get("zone_id"):
        facts.append(f"位置：{notice.get('zone_name') or notice.get('zone_id')}")
    if notice.get("device_id"):
        facts.append(f"设备：{notice['device_id']}")
    facts.append(f"级别：{PRIORITY_TEXT.get(str(notice.get('priority')), notice.get('priority'))}")
    facts.append(f"发生时间：{_local_time(notice['raised_at'])}")
    if int(notice.get("count", 1)) > 1:
        facts.append(f"次数：{notice['count']}")
    facts.append(f"告警编号：{notice['alert_id']}")
    return facts


def _wecom_markdown(notice: Mapping[str, Any]) -> str:
    headline = str(notice["text"])
    if notice.get("priority") == "high":
        headline = f'<font color="warning">{headline}</font>'
    lines = [f"### {notice['title']}", headline, *(f"> {fact}" for fact in _facts(notice))]
    return _clip("\n".join(lines), WECOM_MAX_BYTES)


def _dingtalk_markdown(notice: Mapping[str, Any]) -> str:
    # DingTalk's markdown needs a blank line between paragraphs; list items need none.
    body = "\n".join(f"- {fact}" for fact in _facts(notice))
    text = f"#### {notice['title']}\n\n**{notice['text']}**\n\n{body}"
    return _clip(text, DINGTALK_MAX_BYTES)


def _clip(text: str, max_bytes: int) -> str:
    data = text.encode()
    if len(data) <= max_bytes:
        return text
    return data[: max_bytes - 3].decode(errors="ignore") + "…"


def _local_time(iso: str) -> str:
    return datetime.fromisoformat(iso).astimezone(CHINA).strftime("%Y-%m-%d %H:%M:%S")


def _duration_text(delta: timedelta) -> str:
    seconds = max(0, int(delta.total_seconds()))
    if seconds < 60:
        return f"{seconds} 秒"
    if seconds < 3600:
        return f"{seconds // 60} 分钟"
    return f"{seconds // 3600} 小时 {seconds % 3600 // 60} 分钟"


def dingtalk_sign(secret: str, timestamp_ms: int) -> str:
    """DingTalk's signature: base64(HMAC-SHA256(key=secret, f"{timestamp}\\n{secret}"))."""
    digest = hmac.new(
        secret.encode(), f"{timestamp_ms}\n{secret}".encode(), hashlib.sha256
    ).digest()
    return base64.b64encode(digest).decode()


def dingtalk_signed_url(url: str, secret: str, timestamp_ms: int) -> str:
    """The robot URL with `&timestamp=...&sign=...` appended, as DingTalk's 加签 requires."""
    query = urlencode({"timestamp": timestamp_ms, "sign": dingtalk_sign(secret, timestamp_ms)})
    return f"{url}{'&' if '?' in url else '?'}{query}"


def json_signature(secret: str, timestamp_ms: int, content: bytes) -> str:
    """The X-Carehub-Signature of a json webhook: sha256=hex(HMAC(secret, "{ts}." + body))."""
    digest = hmac.new(secret.encode(), f"{timestamp_ms}.".encode() + content, hashlib.sha256)
    return f"sha256={digest.hexdigest()}"


def redact_url(url: str) -> str:
    """The URL without credentials, query or fragment (robot keys and tokens live there)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    with contextlib.suppress(ValueError):
        if parts.port is not None:
            host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))
