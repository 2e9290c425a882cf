"""Device credentials through the API (admin, the facility's manager) and EMQX's HTTP hooks."""

from __future__ import annotations

from typing import Any

import pytest

from hub.settings import Settings
from tests.fix_api import Api
from tests.fix_hub import FACILITY, connect_db

pytestmark = [pytest.mark.mqtt, pytest.mark.db]

HOOK_TOKEN = "emqx-hook-token-for-tests-0123"  # noqa: S105 - the test's own hook token
EMQX = {"Authorization": f"Bearer {HOOK_TOKEN}"}


@pytest.fixture
def hub_settings(hub_settings: Settings) -> Settings:
    """The hub under test, with the EMQX endpoints on."""
    return hub_settings.model_copy(update={"emqx_hook_token": HOOK_TOKEN})


async def _issue(api: Api, device_id: str, who: str = "admin", **body: Any) -> Any:
    return await api.request("POST", f"/devices/{device_id}/credentials", who, json=body)


async def test_an_admin_and_the_facilitys_manager_issue_rotate_and_revoke(api: Api) -> None:
    """Issue once (409 the second time), rotate, revoke (404 the second time)."""
    first = await _issue(api, "fs-1")
    assert first.status_code == 201, first.text
    body = first.json()
    assert body["device_id"] == body["username"] == "fs-1"
    assert len(body["password"]) >= 32
    again = await _issue(api, "fs-1", "manager")
    assert again.status_code == 409
    assert "rotate" in again.json()["message"]
    rotated = await _issue(api, "fs-1", "manager", rotate=True)
    assert rotated.status_code == 201
    assert rotated.json()["password"] != body["password"]
    async with await connect_db(api.hub.settings) as db:
        cur = await db.execute(
            "SELECT secret_hash, rotations, issued_by FROM device_credentials"
            " WHERE device_id = 'fs-1'"
        )
        stored = await cur.fetchone()
    assert stored is not None
    assert body["password"] not in stored[0] and rotated.json()["password"] not in stored[0]
    assert stored[0].startswith("pbkdf2_sha256$")
    assert stored[1] == 1
    assert stored[2] == "api:manager"
    revoked = await api.request("DELETE", "/devices/fs-1/credentials", "manager")
    assert revoked.status_code == 204
    twice = await api.request("DELETE", "/devices/fs-1/credentials", "admin")
    assert twice.status_code == 404


async def test_other_roles_and_bad_requests_are_refused_with_a_reason(api: Api) -> None:
    """Staff and regulators: 403; another facility's manager: 404; bad ids and bodies: 4xx."""
    for who in ("staff", "regulator", "staff_other"):
        assert (await _issue(api, "fs-1", who)).status_code == 403, who
        assert (await api.request("DELETE", "/devices/fs-1/credentials", who)).status_code == 403
    assert (await _issue(api, "eb-far", "manager")).status_code == 404
    for device_id, body, statuses in [
        ("no-such-device", {}, {404}),
        ("fs!1", {}, {404, 422}),
        ("x" * 65, {}, {404, 422}),
        ("fs-1", {"rotate": "maybe"}, {400, 422}),
        ("fs-1", {"rotate": False, "password": "mine"}, {400, 422}),
        ("fs-1", {"rotate": None}, {400, 422}),
    ]:
        response = await _issue(api, device_id, **body)
        assert response.status_code in statuses, (device_id, body, response.text)
        assert response.json()["message"]
    async with await connect_db(api.hub.settings) as db:
        cur = await db.execute("SELECT count(*) FROM device_credentials")
        assert await cur.fetchone() == (0,)


async def test_a_device_without_a_zone_waits_until_its_manager_places_it(api: Api) -> None:
    """Credentials but no zone: listed as unplaced; placing it takes it off the list."""
    async with await connect_db(api.hub.settings) as db:
        await db.execute(
            "INSERT INTO devices (id, facility_id, type) VALUES ('fs-new', %s, 'fall_sensor')",
            (FACILITY,),
        )
    assert (await _issue(api, "fs-new", "manager")).status_code == 201
    waiting = await api.request("GET", "/devices-unplaced", "manager")
    assert [item["device_id"] for item in waiting.json()["items"]] == ["fs-new"]
    bad = await api.request("POST", "/devices/fs-new/place", "manager", json={"zone_id": "nowhere"})
    assert bad.status_code == 404
    assert "nowhere" in bad.json()["message"]
    placed = await api.request(
        "POST", "/devices/fs-new/place", "manager", json={"zone_id": "room-101"}
    )
    assert placed.status_code == 200, placed.text
    assert placed.json()["zone_id"] == "room-101"
    after = await api.request("GET", "/devices-unplaced", "admin")
    assert after.json()["items"] == []
    staff = await api.request(
        "POST", "/devices/fs-new/place", "staff", json={"zone_id": "room-101"}
    )
    assert staff.status_code == 403


# -- EMQX: the request bodies of the README's configuration, as EMQX fills them in ---------


async def _authn(api: Api, username: str, password: str, clientid: str) -> dict[str, Any]:
    response = await api.client.post(
        "/api/v1/broker/emqx/authn",
        json={"username": username, "password": password, "clientid": clientid},
        headers=EMQX,
    )
    assert response.status_code == 200, response.text
    return dict(response.json())


async def _authz(api: Api, username: str, clientid: str, topic: str, action: str) -> str:
    response = await api.client.post(
        "/api/v1/broker/emqx/authz",
        json={"username": username, "clientid": clientid, "topic": topic, "action": action},
        headers=EMQX,
    )
    assert response.status_code == 200, response.text
    return str(response.json()["result"])


async def test_emqx_authentication_allows_a_device_with_its_topics_and_denies_the_rest(
    api: Api,
) -> None:
    """allow + acl for the right password and client id; deny for everything else."""
    password = (await _issue(api, "fs-1")).json()["password"]
    root = api.hub.settings.topic_root
    answer = await _authn(api, "fs-1", password, "fs-1")
    assert answer["result"] == "allow"
    assert answer["is_superuser"] is False
    assert {
        "permission": "allow",
        "action": "publish",
        "topic": f"{root}/v1/{FACILITY}/fs-1/event",
    } in answer["acl"]
    assert {
        "permission": "allow",
        "action": "subscribe",
        "topic": f"eq {root}/v1/{FACILITY}/fs-1/ack",
    } in answer["acl"]
    assert len(answer["acl"]) == 5
    for username, secret, clientid in [
        ("fs-1", password + "x", "fs-1"),  # wrong password
        ("fs-1", password, "someone-else"),  # borrowed credentials
        ("", "", ""),  # anonymous, as EMQX fills in missing placeholders
        ("eb-1", password, "eb-1"),  # never issued
        ("nobody", password, "nobody"),
    ]:
        assert (await _authn(api, username, secret, clientid))["result"] == "deny"
    rotated = (await _issue(api, "fs-1", rotate=True)).json()["password"]
    assert (await _authn(api, "fs-1", password, "fs-1"))["result"] == "deny"
    assert (await _authn(api, "fs-1", rotated, "fs-1"))["result"] == "allow"
    await api.request("DELETE", "/devices/fs-1/credentials", "admin")
    assert (await _authn(api, "fs-1", rotated, "fs-1"))["result"] == "deny"


async def test_emqx_authorization_allows_own_topics_only(api: Api) -> None:
    """A device: its own three channels out, its own ack and rejected in; deny otherwise."""
    await _issue(api, "fs-1")
    root = api.hub.settings.topic_root

    def own(channel: str) -> str:
        return f"{root}/v1/{FACILITY}/fs-1/{channel}"

    for channel in ("event", "telemetry", "status"):
        assert await _authz(api, "fs-1", "fs-1", own(channel), "publish") == "allow"
    for channel in ("ack", "rejected"):
        assert await _authz(api, "fs-1", "fs-1", own(channel), "subscribe") == "allow"
        assert await _authz(api, "fs-1", "fs-1", own(channel), "publish") == "deny"
    for topic, action in [
        (f"{root}/v1/{FACILITY}/eb-1/event", "publish"),
        (f"{root}/v1/{FACILITY}/eb-1/ack", "subscribe"),
        (f"{root}/v1/f-moon/fs-1/event", "publish"),
        (f"{root}/v1/#", "subscribe"),
        (f"{root}/v1/{FACILITY}/fs-1/+", "subscribe"),
        (f"$share/g/{root}/v1/{FACILITY}/fs-1/ack", "subscribe"),
        ("$SYS/#", "subscribe"),
        (own("event"), "delete"),
    ]:
        assert await _authz(api, "fs-1", "fs-1", topic, action) == "deny", (topic, action)
    assert await _authz(api, "fs-1", "intruder", own("event"), "publish") == "deny"
    await api.request("DELETE", "/devices/fs-1/credentials", "admin")
    assert await _authz(api, "fs-1", "fs-1", own("event"), "publish") == "deny"


async def test_emqx_hooks_answer_the_hubs_own_account(api: Api) -> None:
    """The hub's account (CAREHUB_MQTT_URL) is allowed its subscriptions and replies."""
    target = api.hub.settings.mqtt
    if target.username is None:
        pytest.skip("the test broker URL has no account (an open broker): nothing to check")
    root = api.hub.settings.topic_root
    answer = await _authn(api, target.username, target.password or "", "hub-1")
    assert answer["result"] == "allow"
    assert answer["is_superuser"] is False
    assert (await _authn(api, target.username, "wrong", "hub-1"))["result"] == "deny"
    assert (
        await _authz(
            api, target.username, "hub-1", f"$share/carehub/{root}/v1/+/+/event", "subscribe"
        )
        == "allow"
    )
    assert (
        await _authz(api, target.username, "hub-1", f"{root}/v1/{FACILITY}/fs-1/ack", "publish")
        == "allow"
    )
    assert await _authz(api, target.username, "hub-1", "other/v1/x/y/event", "subscribe") == "deny"


async def test_emqx_hooks_refuse_a_caller_without_the_token(api: Api) -> None:
    """No token or a wrong one: 401, and nothing is answered."""
    body = {"username": "fs-1", "password": "x", "clientid": "fs-1"}
    assert (await api.client.post("/api/v1/broker/emqx/authn", json=body)).status_code == 401
    wrong = {"Authorization": "Bearer not-the-token-at-all"}
    response = await api.client.post("/api/v1/broker/emqx/authn", json=body, headers=wrong)
    assert response.status_code == 401
    assert response.json()["message"]
