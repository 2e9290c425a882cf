"""Notification bodies: the generic JSON notice, 企业微信 and 钉钉 robot markdown, signing."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, quote_plus, urlsplit

import pytest

from hub.errors import NotifyError
from hub.models import AlertChange, Priority
from hub.notify.delivery import judge, retry_delay
from hub.notify.formats import (
    WECOM_MAX_BYTES,
    dingtalk_sign,
    dingtalk_signed_url,
    flood_body,
    json_signature,
    notice_body,
    redact_url,
    render,
)
from hub.wire import Alert as AlertModel
from hub.wire import alert_json
from tests.samples import raised_alert

RAISED = datetime(2025, 3, 1, 0, 0, 5, tzinfo=UTC)  # 08:00:05 in Wenzhou
FACILITY_NAME = "阳光托育养老中心"


def make_change(
    *,
    kind: str = "sos",
    priority: Priority = "high",
    device_id: str | None = "eb-1",
    zone_id: str | None = "room-101",
    action: str = "raise",
    after: timedelta = timedelta(),
    count: int = 1,
) -> AlertChange:
    alert = raised_alert(
        id=42,
        facility_id="f-sun",
        zone_id=zone_id,
        device_id=device_id,
        subject=device_id or f"zone:f-sun/{zone_id}",
        kind=kind,
        priority=priority,
        latched=priority == "high",
        count=count,
        seq=7,
        raised_at=RAISED,
        last_raised_at=RAISED,
    )
    return AlertChange(
        alert, action, None if action == "raise" else "active", "hub", RAISED + after
    )


def sos_notice() -> dict[str, Any]:
    return notice_body(make_change(), FACILITY_NAME, "new", zone_name="101 室")


def test_the_generic_notice_carries_the_alert_and_a_sentence_staff_read() -> None:
    """A new sos becomes a JSON notice with string ids, RFC 3339 times and a Chinese text."""
    notice = sos_notice()
    assert notice == {
        "event": "new",
        "alert_id": "42",
        "facility_id": "f-sun",
        "facility_name": FACILITY_NAME,
        "zone_id": "room-101",
        "zone_name": "101 室",
        "device_id": "eb-1",
        "kind": "sos",
        "kind_text": "紧急呼叫",
        "priority": "high",
        "state": "active",
        "count": 1,
        "raised_at": "2025-03-01T00:00:05+00:00",
        "at": "2025-03-01T00:00:05+00:00",
        "title": "【紧急呼叫】阳光托育养老中心",
        "text": "【紧急呼叫】阳光托育养老中心 101 室 设备 eb-1 求助，请立即处理",
        "alert": alert_json(make_change().alert),
    }
    assert json.loads(json.dumps(notice, ensure_ascii=False)) == notice
    # The same Alert object as REST and the live feed carry.
    assert AlertModel.model_validate(notice["alert"]).id == "42"


def test_escalated_and_overdue_notices_say_how_long_nobody_answered() -> None:
    """Renotify and overdue changes read as a reminder and a flagged overdue call."""
    escalated = notice_body(
        make_change(action="renotify", after=timedelta(seconds=61)), FACILITY_NAME, "escalated"
    )
    assert escalated["event"] == "escalated"
    assert escalated["text"] == (
        "【再次提醒·紧急呼叫】阳光托育养老中心 room-101 设备 eb-1 求助，"
        "已 1 分钟无人确认，请立即处理"
    )
    overdue = notice_body(
        make_change(kind="fall", action="overdue", after=timedelta(seconds=180)),
        FACILITY_NAME,
        "overdue",
        zone_name="101 室",
    )
    assert overdue["text"] == (
        "【超时未处理·跌倒】阳光托育养老中心 101 室 设备 eb-1 检测到跌倒，"
        "已 3 分钟无人确认，已标记为超时呼叫"
    )
    zone_alert = notice_body(
        make_change(kind="over_capacity", priority="medium", device_id=None),
        FACILITY_NAME,
        "new",
        zone_name="101 室",
    )
    assert zone_alert["text"] == "【超员】阳光托育养老中心 101 室 人数超过核定容量，请及时处理"
    with pytest.raises(ValueError, match="flood"):
        notice_body(make_change(), FACILITY_NAME, "flood")


def test_a_json_webhook_receives_the_notice_itself() -> None:
    """Format json posts the generic notice unchanged."""
    notice = sos_notice()
    assert render("json", notice) == notice


def test_wecom_gets_a_group_robot_markdown_message() -> None:
    """企业微信: {"msgtype": "markdown", "markdown": {"content": ...}}, high ones in warning."""
    body = render("wecom", sos_notice())
    assert body == {
        "msgtype": "markdown",
        "markdown": {
            "content": "### 【紧急呼叫】阳光托育养老中心\n"
            '<font color="warning">【紧急呼叫】阳光托育养老中心 101 室 设备 eb-1 求助，'
            "请立即处理</font>\n"
            "> 位置：101 室\n"
            "> 设备：eb-1\n"
            "> 级别：高\n"
            "> 发生时间：2025-03-01 08:00:05\n"
            "> 告警编号：42"
        },
    }


def test_dingtalk_gets_a_custom_robot_markdown_message_that_rings_everyone_when_high() -> None:
    """钉钉: {"msgtype": "markdown", "markdown": {"title", "text"}, "at": {"isAtAll"}}."""
    body = render("dingtalk", sos_notice())
    assert body == {
        "msgtype": "markdown",
        "markdown": {
            "title": "【紧急呼叫】阳光托育养老中心",
            "text": "#### 【紧急呼叫】阳光托育养老中心\n\n"
            "**【紧急呼叫】阳光托育养老中心 101 室 设备 eb-1 求助，请立即处理**\n\n"
            "- 位置：101 室\n"
            "- 设备：eb-1\n"
            "- 级别：高\n"
            "- 发生时间：2025-03-01 08:00:05\n"
            "- 告警编号：42",
        },
        "at": {"isAtAll": True},
    }
    battery = notice_body(
        make_change(kind="low_battery", priority="low", count=3), FACILITY_NAME, "new"
    )
    body = render("dingtalk", battery)
    assert body["at"] == {"isAtAll": False}
    assert "- 次数：3" in body["markdown"]["text"]
    assert "告警" in body["markdown"]["text"]  # the keyword a DingTalk robot can require


def test_a_flood_summary_counts_the_grouped_alerts_per_kind() -> None:
    """37 alerts in 10 minutes, 27 grouped: one summary naming the facility and the kinds."""
    notice = flood_body(
        facility_id="f-sun",
        facility_name=FACILITY_NAME,
        kinds={"low_battery": 2, "device_offline": 25},
        escalated=0,
        window_count=37,
        window_s=600,
        first_at=RAISED,
        last_at=RAISED + timedelta(seconds=9),
    )
    assert notice["event"] == "flood"
    assert notice["count"] == 27
    assert notice["kinds"] == {"device_offline": 25, "low_battery": 2}
    assert notice["text"] == (
        "【告警汇总】阳光托育养老中心 10 分钟内共 37 条告警，以下 27 条合并通知："
        "设备离线 ×25，电量低 ×2"
    )
    wecom = render("wecom", notice)["markdown"]["content"]
    assert wecom.splitlines() == [
        "### 【告警汇总】阳光托育养老中心",
        notice["text"],
        "> 设备离线：25 条",
        "> 电量低：2 条",
        "> 时间：2025-03-01 08:00:05 至 2025-03-01 08:00:14",
        "> 每条告警均已保存，详见监管屏",
    ]
    dingtalk = render("dingtalk", notice)
    assert dingtalk["markdown"]["title"] == "【告警汇总】阳光托育养老中心"
    assert dingtalk["at"] == {"isAtAll": False}
    with_escalations = flood_body(
        facility_id="f-sun",
        facility_name=FACILITY_NAME,
        kinds={"device_offline": 3},
        escalated=4,
        window_count=45,
        window_s=90,
        first_at=RAISED,
        last_at=RAISED,
    )
    assert with_escalations["text"].endswith(
        "90 秒内共 45 条告警，以下 7 条合并通知：设备离线 ×3，仍无人确认 ×4"
    )


def test_a_robot_message_is_clipped_to_the_robot_size_limit() -> None:
    """企业微信 refuses markdown over 4096 bytes, so a long one is cut to fit."""
    notice = {**sos_notice(), "text": "很长的说明" * 1000}
    content = render("wecom", notice)["markdown"]["content"]
    assert len(content.encode()) <= WECOM_MAX_BYTES
    assert content.endswith("…")


def test_an_unknown_format_is_refused() -> None:
    """Only json, wecom and dingtalk exist."""
    with pytest.raises(NotifyError, match="json, wecom, dingtalk"):
        render("slack", sos_notice())


def test_dingtalk_signing_follows_the_documented_recipe() -> None:
    """加签: base64(HmacSHA256(secret, timestamp + "\\n" + secret)), url-encoded, appended."""
    sec = "SEC0123456789abcdef"
    timestamp = 1_700_000_000_123
    expected = base64.b64encode(
        hmac.new(sec.encode(), f"{timestamp}\n{sec}".encode(), hashlib.sha256).digest()
    ).decode()
    assert dingtalk_sign(sec, timestamp) == expected
    url = dingtalk_signed_url(
        "https://oapi.dingtalk.com/robot/send?access_token=abc", sec, timestamp
    )
    assert url == (
        "https://oapi.dingtalk.com/robot/send?access_token=abc"
        f"&timestamp={timestamp}&sign={quote_plus(expected)}"
    )
    query = parse_qs(urlsplit(url).query)
    assert query == {"access_token": ["abc"], "timestamp": [str(timestamp)], "sign": [expected]}
    assert dingtalk_signed_url("http://h/robot", sec, timestamp).startswith(
        f"http://h/robot?timestamp={timestamp}&sign="
    )


def test_a_json_webhook_signature_covers_timestamp_and_body() -> None:
    """X-Carehub-Signature is sha256=HMAC(secret, "{timestamp}." + body) in hex."""
    body = b'{"event":"new"}'
    expected = hmac.new(b"s3cret", b"1700000000000." + body, hashlib.sha256).hexdigest()
    assert json_signature("s3cret", 1_700_000_000_000, body) == f"sha256={expected}"


def test_replies_are_judged_by_status_and_robot_errcode() -> None:
    """2xx delivers; a robot also needs errcode 0; rate limits and 5xx blame the endpoint."""
    assert judge("json", 204, b"").ok
    assert judge("wecom", 200, b'{"errcode":0,"errmsg":"ok"}').ok
    assert judge("dingtalk", 200, b'{"errcode":0,"errmsg":"ok"}').ok
    down = judge("json", 503, b"busy")
    assert (down.ok, down.error, down.endpoint_down) == (False, "HTTP 503: busy", True)
    bad_message = judge("dingtalk", 200, b'{"errcode":310000,"errmsg":"keywords not in content"}')
    assert (bad_message.ok, bad_message.endpoint_down) == (False, False)
    assert bad_message.error == "errcode 310000: keywords not in content"
    assert judge("wecom", 200, b'{"errcode":45009,"errmsg":"api freq out of limit"}').endpoint_down
    assert judge("dingtalk", 200, b'{"errcode":130101,"errmsg":"send too fast"}').endpoint_down
    not_a_robot = judge("wecom", 200, b"<html>login</html>")
    assert not not_a_robot.ok and not_a_robot.endpoint_down
    assert not judge("json", 400, b"").endpoint_down
    assert judge("json", 302, b"").endpoint_down


def test_retries_back_off_exponentially_with_jitter_up_to_five_minutes() -> None:
    """1, 2, 4 ... s (±20 %), never more than 300 s."""
    assert [retry_delay(n) for n in range(1, 11)] == [1, 2, 4, 8, 16, 32, 64, 128, 256, 300]
    assert retry_delay(1, jitter=0.0) == pytest.approx(0.8)
    assert retry_delay(3, jitter=0.999999) == pytest.approx(4.8, rel=1e-5)
    assert retry_delay(50, jitter=0.999999) == 300


def test_a_reported_url_keeps_no_key_token_or_password() -> None:
    """Robot keys and tokens are in the query; the health endpoint must not show them."""
    assert (
        redact_url("https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=693a91f6")
        == "https://qyapi.weixin.qq.com/cgi-bin/webhook/send"
    )
    assert redact_url("http://user:pw@[::1]:8080/hook?token=x#f") == "http://[::1]:8080/hook"
