"""Every route of the OpenAPI document, for every role: the exact status SPEC §7 allows.

The expectation table below is docs/api.md's role table made executable. A route that is
in the app but not in the table fails the test, so a new route cannot ship unchecked.
"""

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest

from hub.auth import principal_for_token
from hub.credentials import issue
from hub.models import AlertDecision
from hub.notify import add_webhook
from hub.runtime import Hub
from tests.fix_api import ACCOUNTS, FAR_FACILITY, PASSWORD, Api
from tests.fix_hub import FACILITY, OTHER_FACILITY, connect_db
from tests.samples import sos_decision

pytestmark = [pytest.mark.mqtt, pytest.mark.db]

ANONYMOUS = "anonymous"
ROLES = (ANONYMOUS, *ACCOUNTS)
_serial = itertools.count(1)


def expect(
    anonymous: int,
    admin: int,
    regulator: int,
    regulator_other: int,
    manager: int,
    staff: int,
    staff_other: int,
) -> dict[str, int]:
    """Statuses by role, in the order of ROLES (all objects belong to f-sun, 鹿城区)."""
    return dict(
        zip(
            ROLES,
            (anonymous, admin, regulator, regulator_other, manager, staff, staff_other),
            strict=True,
        )
    )


# Shorthands for the common shapes of docs/api.md's table.
EVERYONE = expect(200, 200, 200, 200, 200, 200, 200)
SIGNED_IN = expect(401, 200, 200, 200, 200, 200, 200)
IN_SCOPE = expect(401, 200, 200, 404, 200, 200, 404)
STAFF_ACTION = expect(401, 200, 403, 403, 200, 200, 404)
MANAGER_ONLY = expect(401, 200, 403, 403, 200, 403, 403)
ADMIN_ONLY = expect(401, 200, 403, 403, 403, 403, 403)


@dataclass(frozen=True)
class Case:
    """How to call one route, and what each role gets."""

    expect: dict[str, int]
    query: dict[str, str] = field(default_factory=dict)
    body: Any = None
    # Each call gets a new object (an alert, a webhook) its action may consume.
    fresh: str | None = None
    # Each call signs in anew (logout revokes the token it carries).
    own_token: bool = False
    # login: the body is built from the caller's name.
    login: bool = False


RULE_BODY = {"kind": "fall", "params": {"min_confidence": 0.7}}
WEBHOOK_BODY = {"url": "https://example.invalid/hook", "format": "json"}

ROUTES: dict[tuple[str, str], Case] = {
    # outside /api/v1: health and metrics are for the operator's probes, without a token
    ("GET", "/healthz"): Case(EVERYONE),
    ("GET", "/readyz"): Case(EVERYONE),
    ("GET", "/metrics"): Case(EVERYONE),
    ("GET", "/api/v1/config"): Case(EVERYONE),
    ("POST", "/api/v1/auth/login"): Case(expect(401, 200, 200, 200, 200, 200, 200), login=True),
    ("POST", "/api/v1/auth/logout"): Case(
        expect(401, 204, 204, 204, 204, 204, 204), own_token=True
    ),
    ("GET", "/api/v1/auth/me"): Case(SIGNED_IN),
    ("GET", "/api/v1/facilities"): Case(SIGNED_IN),
    ("GET", "/api/v1/facilities/{facility_id}"): Case(IN_SCOPE),
    ("GET", "/api/v1/devices"): Case(SIGNED_IN),
    ("GET", "/api/v1/devices/{device_id}"): Case(IN_SCOPE),
    ("GET", "/api/v1/devices/{device_id}/readings"): Case(IN_SCOPE, query={"bucket": "1h"}),
    ("GET", "/api/v1/alerts"): Case(SIGNED_IN),
    ("GET", "/api/v1/alerts/{alert_id}"): Case(IN_SCOPE),
    ("POST", "/api/v1/alerts/{alert_id}/ack"): Case(STAFF_ACTION, fresh="alert"),
    ("POST", "/api/v1/alerts/{alert_id}/attend"): Case(STAFF_ACTION, fresh="alert"),
    ("POST", "/api/v1/alerts/{alert_id}/resolve"): Case(
        STAFF_ACTION, body={"disposition": "test", "note": "drill"}, fresh="alert"
    ),
    ("POST", "/api/v1/alerts/{alert_id}/comment"): Case(
        IN_SCOPE, body={"note": "家属已通知"}, fresh="alert"
    ),
    ("POST", "/api/v1/alerts/{alert_id}/snooze"): Case(
        MANAGER_ONLY, body={"minutes": 30, "reason": "maintenance"}, fresh="alert"
    ),
    ("GET", "/api/v1/kpis"): Case(
        expect(401, 200, 200, 404, 200, 403, 403), query={"facility": FACILITY}
    ),
    ("GET", "/api/v1/kpis.csv"): Case(
        expect(401, 200, 200, 404, 200, 403, 403), query={"facility": FACILITY}
    ),
    ("GET", "/api/v1/reports/monthly"): Case(
        expect(401, 200, 200, 404, 200, 403, 403), query={"facility": FACILITY, "format": "xlsx"}
    ),
    ("GET", "/api/v1/facilities/{facility_id}/rules"): Case(MANAGER_ONLY),
    ("PUT", "/api/v1/facilities/{facility_id}/rules"): Case(MANAGER_ONLY, body=RULE_BODY),
    ("GET", "/api/v1/facilities/{facility_id}/webhooks"): Case(MANAGER_ONLY),
    ("POST", "/api/v1/facilities/{facility_id}/webhooks"): Case(
        expect(401, 201, 403, 403, 201, 403, 403), body=WEBHOOK_BODY
    ),
    ("DELETE", "/api/v1/facilities/{facility_id}/webhooks/{webhook_id}"): Case(
        expect(401, 204, 403, 403, 204, 403, 403), fresh="webhook"
    ),
    ("GET", "/api/v1/pending-devices"): Case(ADMIN_ONLY),
    ("GET", "/api/v1/dead-letters"): Case(ADMIN_ONLY),
    ("GET", "/api/v1/access-log"): Case(ADMIN_ONLY),
    # A facility's device setup: its manager and admins (rotate: each call issues anew).
    ("POST", "/api/v1/devices/{device_id}/credentials"): Case(
        expect(401, 201, 403, 403, 201, 403, 403), body={"rotate": True}
    ),
    ("DELETE", "/api/v1/devices/{device_id}/credentials"): Case(
        expect(401, 204, 403, 403, 204, 403, 403), fresh="credentials"
    ),
    ("POST", "/api/v1/devices/{device_id}/place"): Case(MANAGER_ONLY, body={"zone_id": "class-a"}),
    ("GET", "/api/v1/devices-unplaced"): Case(MANAGER_ONLY),
    # EMQX's hooks take EMQX's token, not an account's; off (404) unless it is configured.
    ("POST", "/api/v1/broker/emqx/authn"): Case(
        expect(401, 404, 404, 404, 404, 404, 404),
        body={"username": "oc-1", "password": "x", "clientid": "oc-1"},
    ),
    ("POST", "/api/v1/broker/emqx/authz"): Case(
        expect(401, 404, 404, 404, 404, 404, 404),
        body={"username": "oc-1", "clientid": "oc-1", "topic": "t", "action": "publish"},
    ),
}


# The facilities each account's scope covers, which the lists and the live feed must agree on.
FACILITIES_SEEN = {
    "admin": {FACILITY, OTHER_FACILITY, FAR_FACILITY},
    "regulator": {FACILITY, OTHER_FACILITY},
    "regulator_other": {FAR_FACILITY},
    "manager": {FACILITY},
    "staff": {FACILITY},
    "staff_other": {OTHER_FACILITY},
}


async def new_alert(hub: Hub) -> int:
    """A fresh active alert at f-sun, in a zone, about a device of its own."""
    n = next(_serial)
    sos = sos_decision(FACILITY, f"eb-authz-{n}", "room-101", at=datetime.now(UTC))
    change = await hub.alerts.raise_alert(sos)
    assert change is not None
    return change.alert.id


async def new_webhook(hub: Hub) -> int:
    """A fresh webhook of f-sun."""
    async with await connect_db(hub.settings) as conn:
        return await add_webhook(conn, FACILITY, "https://example.invalid/x", "json")


FRESH: dict[str, Callable[[Hub], Awaitable[int]]] = {"alert": new_alert, "webhook": new_webhook}


def openapi_routes(document: dict[str, Any]) -> set[tuple[str, str]]:
    """(METHOD, path) of every operation in an OpenAPI document."""
    return {
        (method.upper(), path)
        for path, operations in document["paths"].items()
        for method in operations
        if method in {"get", "put", "post", "delete", "patch", "head", "options"}
    }


async def call(api: Api, method: str, path: str, case: Case, who: str) -> int:
    """Call one route as `who` with fresh objects where the case needs them; the status."""
    values: dict[str, Any] = {"facility_id": FACILITY, "device_id": "oc-1"}
    if "{alert_id}" in path:
        values["alert_id"] = await new_alert(api.hub)
    if case.fresh == "webhook":
        values["webhook_id"] = await new_webhook(api.hub)
    if case.fresh == "credentials":
        async with await connect_db(api.hub.settings) as conn:
            await issue(conn, "oc-1", "test", rotate=True)
    url = path.format(**values)
    headers: dict[str, str] = {}
    if who != ANONYMOUS:
        token = api.tokens[who]
        if case.own_token:
            signed_in = await api.login(who)
            token = signed_in.json()["token"]
        headers["Authorization"] = f"Bearer {token}"
    body = case.body
    if case.login:
        name = "nobody" if who == ANONYMOUS else who
        body = {"username": name, "password": PASSWORD}
    response = await api.client.request(method, url, params=case.query, json=body, headers=headers)
    if response.status_code >= 400:
        # Every refusal has the one error shape of docs/api.md.
        error = response.json()
        assert set(error) >= {"error", "message"}, (method, url, who, response.text)
    return response.status_code


async def test_every_route_answers_each_role_exactly_as_spec_7_says(api: Api) -> None:
    """Each (route, role) gets the status the table pins; unlisted routes fail the test."""
    response = await api.client.get("/api/v1/openapi.json")
    assert response.status_code == 200
    routes = openapi_routes(response.json())
    missing = sorted(routes - set(ROUTES))
    assert not missing, f"routes without an authorization expectation: {missing}"
    stale = sorted(set(ROUTES) - routes)
    assert not stale, f"expectations for routes the app does not have: {stale}"

    wrong: list[str] = []
    for (method, path), case in sorted(ROUTES.items()):
        for who in ROLES:
            got = await call(api, method, path, case, who)
            if got != case.expect[who]:
                wrong.append(f"{method} {path} as {who}: {got}, expected {case.expect[who]}")
    assert not wrong, "\n".join(wrong)


async def test_a_role_without_the_permission_is_refused_before_the_object_is_looked_up(
    api: Api,
) -> None:
    """403 depends on the role alone: a missing alert and an existing one answer alike."""
    for alert_id in (await new_alert(api.hub), 987_654_321):
        response = await api.request("POST", f"/alerts/{alert_id}/ack", "regulator")
        assert response.status_code == 403
        assert response.json()["error"] == "forbidden"


async def test_lists_show_each_role_only_the_facilities_it_sees(api: Api) -> None:
    """Facilities, devices and alerts lists hold only what the caller's scope covers."""
    for facility in (FACILITY, OTHER_FACILITY, FAR_FACILITY):
        n = next(_serial)
        await api.hub.alerts.raise_alert(
            AlertDecision(
                kind="device_offline",
                priority="medium",
                latched=False,
                facility_id=facility,
                zone_id=None,
                device_id=f"x-{n}",
                subject=f"x-{n}",
                at=datetime.now(UTC),
            )
        )
    for who, visible in FACILITIES_SEEN.items():
        facilities = (await api.request("GET", "/facilities", who)).json()["items"]
        assert {f["id"] for f in facilities} == visible, who
        alerts = (await api.request("GET", "/alerts", who)).json()["items"]
        assert {a["facility_id"] for a in alerts} == visible, who
        devices = (await api.request("GET", "/devices", who)).json()["items"]
        with_devices = visible - {OTHER_FACILITY}  # f-moon has no devices
        assert {d["facility_id"] for d in devices} == with_devices, who
        # Filtering to a facility outside the scope is a 404, not an empty list.
        for facility in {FACILITY, OTHER_FACILITY, FAR_FACILITY} - visible:
            for path in ("/alerts", "/devices"):
                response = await api.request("GET", path, who, params={"facility": facility})
                assert response.status_code == 404, (who, path, facility)


async def test_a_token_is_checked_on_every_request_not_once(api: Api) -> None:
    """A revoked token stops working at once, and the websocket's lookup agrees."""
    token = api.tokens["staff"]
    assert await principal_for_token(api.hub.pool, token) is not None
    assert (await api.request("POST", "/auth/logout", "staff")).status_code == 204
    assert await principal_for_token(api.hub.pool, token) is None
    response = await api.request("GET", "/facilities", "staff")
    assert response.status_code == 401
    assert response.json()["error"] == "unauthorized"


async def websocket_cases(api: Api) -> None:
    """The websocket `/api/v1/live` for every role: its cases go here (docs/api.md).

    The live route is not in the OpenAPI document (websockets never are), so the walk
    above does not reach it; this function is where its per-role expectations belong.
    Without a token: 4401. With one: a snapshot of exactly the caller's facilities, then
    the alerts of those facilities and no others.
    """
    from websockets.exceptions import ConnectionClosed

    from tests.fix_api import asgi_on
    from tests.fix_live import live_client, next_message, serve_running, wait_message

    assert set(FACILITIES_SEEN) == set(ACCOUNTS)
    raised_at = (FACILITY, OTHER_FACILITY, FAR_FACILITY)
    async with serve_running(api.hub, asgi_on(api.hub)) as server:
        async with live_client(server, "") as anonymous:
            with pytest.raises(ConnectionClosed):
                await next_message(anonymous)
            assert anonymous.close_code == 4401
        for who, facilities in FACILITIES_SEEN.items():
            async with live_client(server, f"token={api.tokens[who]}") as websocket:
                snapshot = await next_message(websocket)
                assert snapshot["type"] == "snapshot", who
                assert {f["id"] for f in snapshot["facilities"]} == facilities, who
                assert set(snapshot["zones"]) == facilities, who
                assert {a["facility_id"] for a in snapshot["alerts"]} <= facilities, who
                assert ("devices" in snapshot) == (ACCOUNTS[who][0] in ("manager", "staff"))
                for device in snapshot.get("devices", []):
                    assert device["facility_id"] in facilities, who
                for facility_id in raised_at:
                    sos = sos_decision(
                        facility_id,
                        device_id=None,
                        zone_id=None,
                        subject=f"ws-{who}-{facility_id}",
                        at=datetime.now(UTC),
                    )
                    await api.hub.alerts.raise_alert(sos)
                heard = []
                for _ in facilities:
                    message = await wait_message(websocket, lambda m: m["type"] == "alert")
                    heard.append(message["alert"]["facility_id"])
                # In the order raised, only those in scope: nothing else came before them.
                assert heard == [f for f in raised_at if f in facilities], who


async def test_websocket_authorization(api: Api) -> None:
    """The live websocket answers each role as SPEC §7 says (see websocket_cases)."""
    await websocket_cases(api)
