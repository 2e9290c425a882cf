"""The HTTP API v1 (docs/api.md) on a running hub: sign-in, each resource, hostile input."""

from __future__ import annotations

import csv
import io
import json
import statistics
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from hub.auth import disable_user
from hub.models import AlertDecision
from hub.runtime import Hub
from tests.fix_api import PASSWORD, Api
from tests.fix_hub import FACILITY, OTHER_FACILITY, connect_db, fake_device, wait_for

pytestmark = [pytest.mark.mqtt, pytest.mark.db]


def assert_error(
    response: Any, status: int | tuple[int, ...], code: str | None = None
) -> dict[str, Any]:
    """The response is the one JSON error shape with a message a person can read."""
    statuses = (status,) if isinstance(status, int) else status
    assert response.status_code in statuses, response.text
    body: dict[str, Any] = response.json()
    assert set(body) <= {"error", "message", "field"}, body
    assert isinstance(body["message"], str) and len(body["message"]) > 10, body
    if code is not None:
        assert body["error"] == code, body
    return body


async def raise_alert(
    hub: Hub, *, kind: str = "fall", facility: str = FACILITY, device: str = "fs-1", n: int = 0
) -> int:
    """An alert raised through the AlertStore (where MQTT is not what a test is about)."""
    change = await hub.alerts.raise_alert(
        AlertDecision(
            kind=kind,
            priority="high" if kind in ("fall", "sos") else "medium",
            latched=kind in ("fall", "sos"),
            facility_id=facility,
            zone_id="room-101" if facility == FACILITY else None,
            device_id=device,
            subject=f"{device}#{n}" if n else device,
            at=datetime.now(UTC) - timedelta(seconds=n),
        )
    )
    assert change is not None
    return change.alert.id


# -- sign-in -------------------------------------------------------------------------------


async def test_login_gives_a_token_that_signs_in_until_logout(api: Api) -> None:
    """A good login answers a token and Me; the token works until logout revokes it."""
    response = await api.login("manager")
    assert response.status_code == 200
    body = response.json()
    assert body["user"] == {
        "username": "manager",
        "role": "manager",
        "facility_id": FACILITY,
        "district": None,
        "display_name": "manager manager",
    }
    expires = datetime.fromisoformat(body["expires_at"])
    ttl = api.hub.settings.token_ttl_s
    assert abs((expires - datetime.now(UTC)).total_seconds() - ttl) < 60
    headers = {"Authorization": f"Bearer {body['token']}"}
    me = await api.client.get("/api/v1/auth/me", headers=headers)
    assert me.status_code == 200 and me.json()["username"] == "manager"
    async with await connect_db(api.hub.settings) as conn:
        cur = await conn.execute("SELECT token_sha256 FROM api_tokens")
        stored = {row[0] for row in await cur.fetchall()}
    assert body["token"] not in stored  # only its hash is kept
    out = await api.client.post("/api/v1/auth/logout", headers=headers)
    assert out.status_code == 204
    assert_error(await api.client.get("/api/v1/auth/me", headers=headers), 401, "unauthorized")


async def test_wrong_password_and_unknown_name_get_the_same_401(api: Api) -> None:
    """Neither answer tells whether the account exists."""
    wrong = assert_error(await api.login("manager", "not the password"), 401, "unauthorized")
    unknown = assert_error(await api.login("nobody-here", "whatever12"), 401, "unauthorized")
    assert wrong["message"] == unknown["message"]
    missing = assert_error(await api.client.get("/api/v1/facilities"), 401, "unauthorized")
    assert "Bearer" in missing["message"]
    garbage = await api.client.get(
        "/api/v1/facilities", headers={"Authorization": "Bearer not-a-token"}
    )
    assert_error(garbage, 401, "unauthorized")


async def test_an_expired_token_is_refused(api: Api) -> None:
    """A token past its expiry gets 401 and must sign in again."""
    async with await connect_db(api.hub.settings) as conn:
        await conn.execute(
            "UPDATE api_tokens SET created_at = now() - interval '2 days',"
            " expires_at = now() - interval '1 second' WHERE username = 'staff'"
        )
    body = assert_error(await api.request("GET", "/auth/me", "staff"), 401, "unauthorized")
    assert "expired" in body["message"]
    assert (await api.login("staff")).status_code == 200


async def test_a_disabled_account_cannot_sign_in_and_its_tokens_stop(api: Api) -> None:
    """Disabling revokes the account's tokens and refuses its next login."""
    await disable_user(api.hub.pool, "staff")
    assert_error(await api.request("GET", "/auth/me", "staff"), 401)
    body = assert_error(await api.login("staff"), 401, "unauthorized")
    assert "disabled" in body["message"]


# -- facilities and devices, driven over MQTT ----------------------------------------------


async def test_facility_status_and_zones_follow_what_devices_send(api: Api) -> None:
    """A call and a crowded class show in the facility's status, zones and devices."""
    settings = api.hub.settings
    async with fake_device(settings, "eb-1") as button, fake_device(settings, "oc-1") as counter:
        await button.send("event", button.message(event="pressed", button="red"))
        await counter.send("telemetry", counter.message(count=20, staff=2, zone="class-a"))

        async def shown() -> bool:
            response = await api.request("GET", f"/facilities/{FACILITY}", "staff")
            detail = response.json()
            zones = {zone["zone_id"]: zone for zone in detail["zones"]}
            return (
                detail["status"]["open_alerts"]["high"] == 1 and zones["class-a"]["present"] == 20
            )

        await wait_for(shown, timeout=15)
    detail = (await api.request("GET", f"/facilities/{FACILITY}", "staff")).json()
    assert detail["status"]["state"] == "alert"
    assert detail["status"]["present"] == 20 and detail["status"]["staff"] == 2
    assert detail["status"]["devices_total"] == 3
    assert detail["devices_by_type"] == {
        "emergency_button": 1,
        "fall_sensor": 1,
        "occupancy_counter": 1,
    }
    zones = {zone["zone_id"]: zone for zone in detail["zones"]}
    # 托小班: at most 15 children, one staff member per 5; 18 children with 2 staff breach both.
    assert zones["class-a"]["over_capacity"] is True
    assert zones["class-a"]["ratio_breached"] is True
    assert zones["class-a"]["staff_ratio_limit"] == 5
    assert zones["room-101"]["present"] is None

    listed = (await api.request("GET", "/facilities", "regulator")).json()
    by_id = {facility["id"]: facility for facility in listed["items"]}
    assert by_id[FACILITY]["status"]["state"] == "alert"
    assert by_id[OTHER_FACILITY]["status"]["state"] == "ok"

    online = (await api.request("GET", "/devices", "staff", params={"online": "true"})).json()
    assert {device["id"] for device in online["items"]} == {"eb-1", "oc-1"}
    counter_row = (await api.request("GET", "/devices/oc-1", "staff")).json()
    assert counter_row["count"] == 20 and counter_row["online"] is True


async def test_a_regulators_read_of_a_facility_is_logged(api: Api) -> None:
    """SPEC §7: every facility-detail read by a regulator leaves an access_log row."""
    for who in ("regulator", "regulator", "manager", "admin"):
        assert (await api.request("GET", f"/facilities/{FACILITY}", who)).status_code == 200
    async with await connect_db(api.hub.settings) as conn:
        cur = await conn.execute("SELECT username, role, route, facility_id FROM access_log")
        rows = await cur.fetchall()
    assert rows == [("regulator", "regulator", f"GET /api/v1/facilities/{FACILITY}", FACILITY)] * 2


async def test_readings_are_bucketed_and_fields_a_type_lacks_are_null(api: Api) -> None:
    """1m buckets of a counter average its counts; a fall sensor has no count."""
    settings = api.hub.settings
    async with fake_device(settings, "oc-1") as counter, fake_device(settings, "fs-1") as sensor:
        for count in (4, 6, 8):
            await counter.send("telemetry", counter.message(count=count, staff=1))
        await sensor.send("telemetry", sensor.message(presence=True, battery=80))
        await sensor.send("telemetry", sensor.message(presence=False, battery=70))

        async def stored() -> bool:
            async with await connect_db(settings) as conn:
                cur = await conn.execute("SELECT count(*) FROM readings")
                row = await cur.fetchone()
            return row is not None and row[0] == 5

        await wait_for(stored, timeout=15)
    hour = {"from": (datetime.now(UTC) - timedelta(hours=1)).isoformat(), "bucket": "1h"}
    points = (await api.request("GET", "/devices/oc-1/readings", "staff", params=hour)).json()
    assert points["bucket"] == "1h"
    total = sum(point["n"] for point in points["points"])
    assert total == 3
    [point] = points["points"] if len(points["points"]) == 1 else [points["points"][-1]]
    assert point["battery_min"] is None and point["presence_share"] is None
    five = await api.request("GET", "/devices/oc-1/readings", "staff", params={"bucket": "5m"})
    aggregate = five.json()["points"]
    assert aggregate and max(p["count_max"] for p in aggregate) == 8
    assert all(p["n"] is None for p in aggregate)  # the occupancy_5m aggregate has no count
    sensor_points = (
        await api.request("GET", "/devices/fs-1/readings", "staff", params={"bucket": "1d"})
    ).json()["points"]
    assert sum(p["n"] for p in sensor_points) == 2
    assert all(p["count_avg"] is None for p in sensor_points)
    assert min(p["battery_min"] for p in sensor_points) == 70


# -- alerts --------------------------------------------------------------------------------


async def test_staff_take_an_alert_through_its_states_and_the_trail_names_them(
    api: Api,
) -> None:
    """ack -> attend -> resolve as the caller; a second ack or resolve is a 409."""
    alert_id = await raise_alert(api.hub)
    acked = await api.request("POST", f"/alerts/{alert_id}/ack", "staff", json={"note": "去了"})
    assert acked.status_code == 200
    assert acked.json()["state"] == "acknowledged"
    assert acked.json()["acknowledged_by"] == "staff"
    assert_error(await api.request("POST", f"/alerts/{alert_id}/ack", "manager"), 409, "conflict")
    attended = await api.request("POST", f"/alerts/{alert_id}/attend", "staff")
    assert attended.status_code == 200 and attended.json()["attended_by"] == "staff"
    comment = await api.request(
        "POST", f"/alerts/{alert_id}/comment", "regulator", json={"note": "已电话回访"}
    )
    assert comment.status_code == 200 and comment.json()["state"] == "attended"
    resolved = await api.request(
        "POST",
        f"/alerts/{alert_id}/resolve",
        "manager",
        json={"disposition": "false_alarm", "note": "坐下了"},
    )
    assert resolved.status_code == 200
    assert resolved.json()["disposition"] == "false_alarm"
    again = await api.request(
        "POST", f"/alerts/{alert_id}/resolve", "manager", json={"disposition": "real"}
    )
    assert_error(again, 409, "conflict")
    detail = (await api.request("GET", f"/alerts/{alert_id}", "staff")).json()
    trail = [(entry["actor"], entry["action"]) for entry in detail["audit"]]
    assert trail == [
        ("system", "raise"),
        ("staff", "acknowledge"),
        ("staff", "attend"),
        ("regulator", "comment"),
        ("manager", "resolve"),
    ]


async def test_an_sos_over_mqtt_is_listed_and_filtered(api: Api) -> None:
    """A button press becomes an open sos alert that the list's filters find."""
    async with fake_device(api.hub.settings, "eb-1") as button:
        await button.send("event", button.message(event="pressed", button="red"))

        async def listed() -> bool:
            response = await api.request("GET", "/alerts", "staff", params={"kind": "sos"})
            return len(response.json()["items"]) == 1

        await wait_for(listed, timeout=15)
    params = {"state": "open", "priority": "high", "facility": FACILITY}
    items = (await api.request("GET", "/alerts", "manager", params=params)).json()["items"]
    assert [(a["kind"], a["device_id"], a["state"]) for a in items] == [("sos", "eb-1", "active")]
    resolved = await api.request("GET", "/alerts", "manager", params={"state": "resolved"})
    assert resolved.json()["items"] == []


async def test_alert_pages_follow_the_cursor_newest_first_without_repeats(api: Api) -> None:
    """limit and cursor walk every alert once, newest first."""
    ids = [await raise_alert(api.hub, device=f"fs-p{n}", n=n + 1) for n in range(7)]
    seen: list[str] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 3}
        if cursor:
            params["cursor"] = cursor
        page = (await api.request("GET", "/alerts", "admin", params=params)).json()
        seen += [item["id"] for item in page["items"]]
        cursor = page["next"]
        if cursor is None:
            break
    assert seen == [str(alert_id) for alert_id in ids]  # raised 1 s, 2 s ... ago


async def test_snooze_shelves_the_alerts_of_the_zone(api: Api) -> None:
    """A manager snoozes an alert's zone: its alerts are shelved and the facility calms."""
    alert_id = await raise_alert(api.hub, kind="low_battery", device="fs-1")
    response = await api.request(
        "POST", f"/alerts/{alert_id}/snooze", "manager", json={"minutes": 60, "reason": "换电池"}
    )
    assert response.status_code == 200
    assert response.json()["shelved"] is True
    status = (await api.request("GET", f"/facilities/{FACILITY}", "manager")).json()["status"]
    assert status["open_alerts"] == {"high": 0, "medium": 0, "low": 0}


# -- KPIs, rules, webhooks, registry, config -----------------------------------------------


async def test_kpis_as_json_and_csv_agree(api: Api) -> None:
    """The CSV report has one row per figure, with the JSON's values."""
    alert_id = await raise_alert(api.hub)
    await api.request("POST", f"/alerts/{alert_id}/ack", "staff")
    kpis = (await api.request("GET", "/kpis", "regulator")).json()
    assert kpis["scope"]["kind"] == "district" and kpis["high_alerts"] == 1
    assert kpis["ack_within_60s"] == 1
    own = (await api.request("GET", "/kpis", "manager")).json()
    assert own["scope"] == {"kind": "facility", "name": FACILITY, "facility_ids": [FACILITY]}
    response = await api.request("GET", "/kpis.csv", "regulator")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    rows = dict(csv.reader(io.StringIO(response.text.removeprefix("\ufeff"))))
    assert rows["figure"] == "value"
    assert rows["high_alerts"] == "1"
    assert rows["scope.name"] == "鹿城区"
    both = await api.request(
        "GET", "/kpis", "admin", params={"facility": FACILITY, "district": "x"}
    )
    assert_error(both, 400, "bad_request")


async def test_rule_overrides_are_stored_and_a_bad_one_names_its_field(api: Api) -> None:
    """PUT stores a validated override; a value out of range is a 400 naming the field."""
    put = await api.request(
        "PUT",
        f"/facilities/{FACILITY}/rules",
        "manager",
        json={"zone_id": "room-101", "kind": "fall", "params": {"min_confidence": 0.8}},
    )
    assert put.status_code == 200
    overrides = put.json()["overrides"]
    assert overrides[0]["zone_id"] == "room-101" and overrides[0]["updated_by"] == "manager"
    assert overrides[0]["params"] == {"min_confidence": 0.8}
    bad = await api.request(
        "PUT",
        f"/facilities/{FACILITY}/rules",
        "manager",
        json={"kind": "fall", "params": {"min_confidence": 7}},
    )
    body = assert_error(bad, 400, "bad_request")
    assert body["field"] == "body.params.min_confidence"
    unknown = await api.request(
        "PUT",
        f"/facilities/{FACILITY}/rules",
        "manager",
        json={"kind": "meteor", "params": {"x": 1}},
    )
    assert assert_error(unknown, 400)["field"] == "body.kind"
    nozone = await api.request(
        "PUT",
        f"/facilities/{FACILITY}/rules",
        "manager",
        json={"zone_id": "room-999", "kind": "fall", "params": {"min_confidence": 0.7}},
    )
    assert assert_error(nozone, 400)["field"] == "body.zone_id"


async def test_webhooks_are_added_listed_redacted_and_removed(api: Api) -> None:
    """A manager adds a 钉钉 robot; the list hides its token and secret; delete removes it."""
    added = await api.request(
        "POST",
        f"/facilities/{FACILITY}/webhooks",
        "manager",
        json={
            "url": "https://oapi.dingtalk.com/robot/send?access_token=abcdef123456",
            "format": "dingtalk",
            "secret": "SECabc",
        },
    )
    assert added.status_code == 201, added.text
    webhook = added.json()
    assert webhook["has_secret"] is True and "abcdef123456" not in webhook["url"]
    assert "SECabc" not in added.text
    listed = (await api.request("GET", f"/facilities/{FACILITY}/webhooks", "manager")).json()
    assert [item["id"] for item in listed["items"]] == [webhook["id"]]
    bad = await api.request(
        "POST", f"/facilities/{FACILITY}/webhooks", "manager", json={"url": "ftp://x"}
    )
    assert "http" in assert_error(bad, 400, "bad_request")["message"]
    path = f"/facilities/{FACILITY}/webhooks/{webhook['id']}"
    assert (await api.request("DELETE", path, "manager")).status_code == 204
    assert_error(await api.request("DELETE", path, "manager"), 404, "not_found")


async def test_unknown_devices_and_refused_messages_reach_the_admin_lists(api: Api) -> None:
    """A message from an unregistered device is pending and dead-lettered with its reason."""
    async with fake_device(api.hub.settings, "ghost-1") as ghost:
        await ghost.send("telemetry", ghost.message(battery=50))

        async def seen() -> bool:
            response = await api.request("GET", "/pending-devices", "admin")
            return [d["device_id"] for d in response.json()["items"]] == ["ghost-1"]

        await wait_for(seen, timeout=15)
    letters = await api.request("GET", "/dead-letters", "admin", params={"device": "ghost-1"})
    [letter] = letters.json()["items"]
    assert letter["reason"] == "unknown_device"
    assert json.loads(letter["payload"])["battery"] == 50
    none = await api.request("GET", "/dead-letters", "admin", params={"reason": "too_large"})
    assert none.json()["items"] == []


async def test_config_needs_no_token(api: Api) -> None:
    """The dashboards read the map centre and language before anyone signs in."""
    response = await api.client.get("/api/v1/config")
    assert response.status_code == 200
    body = response.json()
    assert body["default_language"] == "zh-CN"
    latitude, longitude = body["map_center"]
    assert 27 < latitude < 29 and 120 < longitude < 121


async def test_openapi_describes_every_route(api: Api) -> None:
    """Each operation has a summary, a description and a documented 200-range answer."""
    document = (await api.client.get("/api/v1/openapi.json")).json()
    for path, operations in document["paths"].items():
        if not path.startswith("/api/v1/") or path == "/api/v1/live":
            continue
        for method, operation in operations.items():
            assert operation.get("summary"), (method, path)
            assert operation.get("description"), (method, path)
            answers = [code for code in operation["responses"] if code.startswith("2")]
            assert answers, (method, path)


# -- hostile input -------------------------------------------------------------------------

HOSTILE: list[tuple[str, str, dict[str, Any], tuple[int, ...]]] = [
    ("GET", "/facilities", {"params": {"cursor": "bm90IGEgY3Vyc29y"}}, (400,)),
    ("GET", "/facilities", {"params": {"cursor": "!!!"}}, (400,)),
    ("GET", "/facilities", {"params": {"cursor": "x" * 5000}}, (422,)),
    ("GET", "/alerts", {"params": {"cursor": "WzEsInRleHQiLCJhIl0"}}, (400,)),
    ("GET", "/facilities", {"params": {"limit": "100000"}}, (422,)),
    ("GET", "/facilities", {"params": {"limit": "-1"}}, (422,)),
    ("GET", "/facilities", {"params": {"limit": "ten"}}, (422,)),
    ("GET", "/facilities", {"params": {"kind": "prison"}}, (422,)),
    # A filter for admin: nothing matches, and the users table is still there (below).
    ("GET", "/facilities", {"params": {"district": "鹿城区'; DROP TABLE users; --"}}, (200,)),
    ("GET", "/facilities/' OR '1'='1", {}, (404,)),
    ("GET", "/facilities/%F0%9F%92%A9%E2%80%AE", {}, (404,)),
    ("GET", "/facilities/x%00y", {}, (400, 404)),
    ("GET", "/devices", {"params": {"facility": "\u202e\U0001f4a9"}}, (404,)),
    ("GET", "/devices", {"params": {"online": "maybe"}}, (422,)),
    ("GET", "/devices/oc-1/readings", {"params": {"bucket": "7m"}}, (422,)),
    ("GET", "/devices/oc-1/readings", {"params": {"from": "yesterday"}}, (422,)),
    ("GET", "/devices/oc-1/readings", {"params": {"from": "2026-01-01T00:00:00"}}, (422,)),
    # A bare number is not an RFC 3339 time (pydantic alone would read Unix seconds).
    ("GET", "/alerts", {"params": {"to": "0.5"}}, (422,)),
    (
        "GET",
        "/devices/oc-1/readings",
        {"params": {"from": "2000-01-01T00:00:00Z", "bucket": "1m"}},
        (400,),
    ),
    (
        "GET",
        "/devices/oc-1/readings",
        {"params": {"from": "2026-01-02T00:00:00Z", "to": "2026-01-01T00:00:00Z"}},
        (400,),
    ),
    ("GET", "/devices/oc-1/readings", {"params": {"to": "0001-01-01T00:00:00Z"}}, (400,)),
    ("GET", "/alerts", {"params": {"state": "exploded"}}, (422,)),
    ("GET", "/alerts", {"params": {"kind": "x" * 100}}, (422,)),
    ("GET", "/alerts/abc", {}, (422,)),
    ("GET", "/alerts/99999999999999999999999", {}, (422,)),
    ("GET", "/alerts/0", {}, (422,)),
    ("GET", "/alerts/424242", {}, (404,)),
    ("POST", "/alerts/{alert}/resolve", {"json": {"disposition": "shrug"}}, (422,)),
    ("POST", "/alerts/{alert}/resolve", {"json": {}}, (422,)),
    (
        "POST",
        "/alerts/{alert}/resolve",
        {"content": b"{not json", "headers": {"content-type": "application/json"}},
        (422,),
    ),
    ("POST", "/alerts/{alert}/resolve", {"json": [1, 2]}, (422,)),
    ("POST", "/alerts/{alert}/resolve", {"json": {"disposition": "real", "evil": 1}}, (422,)),
    ("POST", "/alerts/{alert}/comment", {"json": {"note": "x" * 5000}}, (422,)),
    ("POST", "/alerts/{alert}/comment", {"json": {"note": "nul\u0000byte"}}, (400,)),
    ("POST", "/alerts/{alert}/comment", {"json": {"note": "   "}}, (400,)),
    ("POST", "/alerts/{alert}/ack", {"json": {"note": 12}}, (422,)),
    ("POST", "/alerts/{alert}/snooze", {"json": {"minutes": 0, "reason": "x"}}, (422,)),
    ("POST", "/alerts/{alert}/snooze", {"json": {"minutes": 10**12, "reason": "x"}}, (422,)),
    ("GET", "/kpis", {"params": {"facility": "f-sun", "from": "2030-01-01T00:00:00Z"}}, (400,)),
    ("GET", "/kpis", {"params": {"district": "没有这个区"}}, (404,)),
    ("PUT", "/facilities/f-sun/rules", {"json": {"kind": "fall", "params": {}}}, (422,)),
    (
        "PUT",
        "/facilities/f-sun/rules",
        {"json": {"kind": "fall", "params": {"min_confidence": "high"}}},
        (400,),
    ),
    (
        "PUT",
        "/facilities/f-sun/rules",
        {"json": {"kind": "fall", "zone_id": "../x", "params": {"a": 1}}},
        (422,),
    ),
    ("POST", "/facilities/f-sun/webhooks", {"json": {"url": "javascript:alert(1)"}}, (400,)),
    ("POST", "/facilities/f-sun/webhooks", {"json": {"url": "https://x", "format": "fax"}}, (422,)),
    ("DELETE", "/facilities/f-sun/webhooks/-5", {}, (422,)),
    ("GET", "/dead-letters", {"params": {"cursor": "WzEsImludCIsMWUzMDBd"}}, (400,)),
    ("GET", "/no-such-route", {}, (404,)),
    ("DELETE", "/facilities", {}, (405,)),
]


async def test_hostile_input_gets_the_error_shape_never_a_500(api: Api) -> None:
    """Junk in any parameter or body is refused with a clear message and the JSON shape."""
    for index, (method, template, kwargs, statuses) in enumerate(HOSTILE):
        where = f"{method} {template} {kwargs}"[:200]
        path = template
        if "{alert}" in template:
            path = template.format(alert=await raise_alert(api.hub, device=f"h-{index}"))
        response = await api.request(method, path, "admin", **kwargs)
        if statuses == (200,):
            assert response.status_code == 200 and response.json()["items"] == [], where
            continue
        assert response.status_code in statuses, (where, response.text)
        body = assert_error(response, statuses)
        if response.status_code == 422:
            assert body["field"], (where, body)
    # SQL-ish strings were only ever parameters: the accounts are all still there.
    assert (await api.request("GET", "/auth/me", "admin")).status_code == 200


async def test_a_405_names_every_method_of_the_path_in_allow(api: Api) -> None:
    """GET and PUT share a path as two routes; a 405 there lists both."""
    response = await api.request("DELETE", f"/facilities/{FACILITY}/rules", "admin")
    assert_error(response, 405, "method_not_allowed")
    assert response.headers["allow"] == "GET, PUT"


async def test_a_login_body_that_is_not_json_or_too_long_is_refused(api: Api) -> None:
    """Login validates its body like every other route."""
    bad = await api.client.post(
        "/api/v1/auth/login", content=b"\xff\xfe", headers={"content-type": "application/json"}
    )
    assert_error(bad, 422, "bad_request")
    long = await api.login("admin", "p" * 5000)
    assert assert_error(long, 422)["field"] == "body.password"
    assert (await api.login("admin", PASSWORD)).status_code == 200


# -- performance ---------------------------------------------------------------------------


async def test_listing_500_facilities_with_status_is_fast(api: Api) -> None:
    """500 facilities with devices and alerts list in one page quickly (aggregate queries)."""
    async with await connect_db(api.hub.settings) as conn:
        await conn.execute(
            "INSERT INTO facilities (id, name, kind, district, beds)"
            " SELECT 'p-' || i, '养老院 ' || i, 'elderly', '鹿城区', 50"
            " FROM generate_series(1, 498) AS i"
        )
        await conn.execute(
            "INSERT INTO devices (id, facility_id, type, heartbeat_s)"
            " SELECT 'pd-' || i || '-' || j, 'p-' || i, 'emergency_button', 60"
            " FROM generate_series(1, 498) AS i, generate_series(1, 10) AS j"
        )
        await conn.execute(
            "INSERT INTO device_state (device_id, last_seen, online, battery)"
            " SELECT id, now(), true, 90 FROM devices WHERE id LIKE 'pd-%'"
        )
        await conn.execute(
            "INSERT INTO alerts (facility_id, device_id, subject, kind, priority, latched,"
            " raised_at, last_raised_at)"
            " SELECT 'p-' || i, 'pd-' || i || '-1', 'pd-' || i || '-1', 'sos', 'high', true,"
            " now(), now() FROM generate_series(1, 498, 3) AS i"
        )
        await conn.execute("ANALYZE")
    timings = []
    for _ in range(5):
        started = time.perf_counter()
        response = await api.request("GET", "/facilities", "regulator", params={"limit": 500})
        timings.append(time.perf_counter() - started)
        assert response.status_code == 200
    items = response.json()["items"]
    assert len(items) == 500 and response.json()["next"] is None
    states = {item["id"]: item["status"]["state"] for item in items}
    assert states["p-1"] == "alert" and states["p-2"] == "ok"
    print(f"GET /facilities?limit=500: median {statistics.median(timings) * 1000:.0f} ms")
    # The target is well under 200 ms; the bound leaves room for a loaded test machine while
    # still failing a per-facility query loop (500 round trips).
    assert statistics.median(timings) < 0.5
