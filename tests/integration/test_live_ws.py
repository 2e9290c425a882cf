"""The live websocket /api/v1/live (docs/api.md) over a real uvicorn, PostgreSQL and MQTT."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from hub.auth import disable_user, revoke
from hub.models import AlertDecision
from hub.settings import Settings
from hub.storage.live import live_channel
from tests.fix_api import FAR_FACILITY, OTHER_DISTRICT, add_far_facility
from tests.fix_hub import FACILITY, OTHER_FACILITY, connect_db, fake_device, wait_for
from tests.fix_live import (
    LiveServer,
    account_token,
    live_client,
    next_message,
    serve_hub,
    wait_message,
)
from tests.postgres_proxy import PostgresProxy
from tests.samples import sos_decision

pytestmark = [pytest.mark.mqtt, pytest.mark.db]

DISTRICT = "鹿城区"


def sos(facility_id: str, device_id: str, zone_id: str | None = "room-101") -> AlertDecision:
    """An sos decision as the button rule makes it."""
    return sos_decision(facility_id, device_id, zone_id, at=datetime.now(UTC))


def is_alert(action: str, alert_id: str | None = None) -> Any:
    """A matcher for an `alert` message of `action` (about `alert_id`)."""

    def matches(message: dict[str, Any]) -> bool:
        return (
            message["type"] == "alert"
            and message["action"] == action
            and (alert_id is None or message["alert"]["id"] == alert_id)
        )

    return matches


@contextlib.asynccontextmanager
async def two_facility_screens(
    live_server: LiveServer, other_role: str
) -> AsyncIterator[tuple[ClientConnection, ClientConnection, dict[str, Any]]]:
    """A staff screen of FACILITY and a screen of OTHER_FACILITY's `other_role`, both past
    their snapshots; the screens, and the first one's snapshot."""
    settings = live_server.settings
    here = await account_token(settings, "nurse", "staff", facility_id=FACILITY)
    there = await account_token(settings, "other", other_role, facility_id=OTHER_FACILITY)
    async with (
        live_client(live_server, f"token={here}") as screen,
        live_client(live_server, f"token={there}") as elsewhere,
    ):
        snapshot = await next_message(screen)
        assert snapshot["type"] == "snapshot"
        assert (await next_message(elsewhere))["type"] == "snapshot"
        yield screen, elsewhere, snapshot


async def test_snapshot_holds_what_each_role_may_see(live_server: LiveServer) -> None:
    """Admin sees every facility, a regulator their district's, staff their facility's
    with its devices; open alerts and zones follow the same scope."""
    hub, settings = live_server.hub, live_server.settings
    await add_far_facility(hub)
    here = await hub.alerts.raise_alert(sos(FACILITY, "eb-1"))
    far = await hub.alerts.raise_alert(sos(FAR_FACILITY, "eb-far", "room-1"))
    assert here is not None and far is not None
    tokens = {
        "admin": await account_token(settings, "root", "admin"),
        "regulator": await account_token(settings, "reg", "regulator", district=DISTRICT),
        "far_regulator": await account_token(
            settings, "reg2", "regulator", district=OTHER_DISTRICT
        ),
        "staff": await account_token(settings, "nurse", "staff", facility_id=FACILITY),
        "manager": await account_token(settings, "boss", "manager", facility_id=OTHER_FACILITY),
    }
    snapshots: dict[str, dict[str, Any]] = {}
    for who, token in tokens.items():
        async with live_client(live_server, f"token={token}") as websocket:
            snapshots[who] = await next_message(websocket)

    def facilities(who: str) -> set[str]:
        return {facility["id"] for facility in snapshots[who]["facilities"]}

    def alerts(who: str) -> set[str]:
        return {alert["facility_id"] for alert in snapshots[who]["alerts"]}

    assert {s["type"] for s in snapshots.values()} == {"snapshot"}
    assert facilities("admin") == {FACILITY, OTHER_FACILITY, FAR_FACILITY}
    assert facilities("regulator") == {FACILITY, OTHER_FACILITY}
    assert facilities("far_regulator") == {FAR_FACILITY}
    assert facilities("staff") == {FACILITY}
    assert facilities("manager") == {OTHER_FACILITY}
    assert alerts("admin") == {FACILITY, FAR_FACILITY}
    assert alerts("regulator") == {FACILITY}
    assert alerts("far_regulator") == {FAR_FACILITY}
    assert alerts("staff") == {FACILITY}
    assert alerts("manager") == set()
    assert set(snapshots["regulator"]["zones"]) == {FACILITY, OTHER_FACILITY}
    assert set(snapshots["staff"]["zones"]) == {FACILITY}

    staff = snapshots["staff"]
    sun = staff["facilities"][0]
    assert sun["name"] == "阳光托育养老中心"
    assert sun["status"]["state"] == "alert"
    assert sun["status"]["open_alerts"] == {"high": 1, "medium": 0, "low": 0}
    assert sun["status"]["devices_total"] == 3
    assert {zone["zone_id"] for zone in staff["zones"][FACILITY]} == {"room-101", "class-a"}
    assert staff["alerts"][0]["id"] == str(here.alert.id)
    assert staff["alerts"][0]["kind"] == "sos"
    assert {device["id"] for device in staff["devices"]} == {"fs-1", "eb-1", "oc-1"}
    assert snapshots["manager"]["devices"] == []
    # Regulators and admins get facility-level data, not the device list.
    assert "devices" not in snapshots["regulator"]
    assert "devices" not in snapshots["admin"]
    assert staff["change_id"] >= 2


async def test_a_button_press_arrives_as_an_alert_and_its_ack_follows(
    live_server: LiveServer,
) -> None:
    """A press over MQTT reaches the facility's screen as `alert` raise, an ack through the
    store as `alert` acknowledge; another facility's staff hear neither."""
    hub, settings = live_server.hub, live_server.settings
    async with (
        two_facility_screens(live_server, "staff") as (screen, elsewhere, snapshot),
        fake_device(settings, "eb-1") as button,
    ):
        await button.send("event", button.message(event="pressed", button="red"))
        raised = await wait_message(screen, is_alert("raise"))
        alert = raised["alert"]
        assert (alert["kind"], alert["device_id"], alert["state"]) == ("sos", "eb-1", "active")
        assert raised["change_id"] > snapshot["change_id"]
        status = await wait_message(screen, lambda m: m["type"] == "facility_status")
        assert status["facility_id"] == FACILITY
        assert status["status"]["state"] == "alert"

        await hub.alerts.acknowledge(int(alert["id"]), "nurse")
        acked = await wait_message(screen, is_alert("acknowledge", alert["id"]))
        assert acked["alert"]["state"] == "acknowledged"
        assert acked["alert"]["acknowledged_by"] == "nurse"
        assert acked["change_id"] > raised["change_id"]

        # The other facility's screen: its own alert is the first alert it hears of.
        mine = await hub.alerts.raise_alert(sos(OTHER_FACILITY, "moon-call", None))
        assert mine is not None
        first = await wait_message(elsewhere, lambda m: m["type"].startswith("alert"))
        assert first["alert"]["id"] == str(mine.alert.id)


async def test_counts_devices_and_facility_status_arrive_as_deltas(
    live_server: LiveServer,
) -> None:
    """Telemetry moves a zone's count, a device online and its battery: `zone_count`,
    `facility_status` and `device_status` follow; a battery moving by less than a point
    does not; another facility's screen hears none of it."""
    settings = live_server.settings
    async with (
        two_facility_screens(live_server, "manager") as (screen, elsewhere, snapshot),
        fake_device(settings, "oc-1") as counter,
        fake_device(settings, "fs-1") as sensor,
    ):
        class_a = next(z for z in snapshot["zones"][FACILITY] if z["zone_id"] == "class-a")
        assert class_a["present"] is None
        assert snapshot["facilities"][0]["status"]["present"] == 0

        await counter.send("telemetry", counter.message(count=5, staff=1))
        # One poll publishes all three; in whatever order, each arrives.
        heard: dict[str, dict[str, Any]] = {}
        while len(heard) < 3:
            message = await next_message(screen)
            if message["type"] in ("zone_count", "facility_status", "device_status"):
                heard[message["type"]] = message
        assert heard["zone_count"] == {
            "type": "zone_count",
            "facility_id": FACILITY,
            "zone_id": "class-a",
            "present": 5,
            "staff": 1,
        }
        status = heard["facility_status"]
        assert status["facility_id"] == FACILITY
        assert (status["status"]["present"], status["status"]["staff"]) == (5, 1)
        online = heard["device_status"]["device"]
        assert (online["id"], online["online"], online["count"]) == ("oc-1", True, 5)

        def battery_of_fs1(message: dict[str, Any]) -> bool:
            return message["type"] == "device_status" and message["device"]["id"] == "fs-1"

        await sensor.send("telemetry", sensor.message(battery=80, presence=True))
        first = await wait_message(screen, battery_of_fs1)
        assert first["device"]["battery"] == 80
        # Less than a point: no delta. Then a point and more from what was published.
        await sensor.send("telemetry", sensor.message(battery=79.5, presence=True))
        await asyncio.sleep(1.5)
        await sensor.send("telemetry", sensor.message(battery=78.75, presence=True))
        second = await wait_message(screen, battery_of_fs1)
        assert second["device"]["battery"] == 78.75

        # The other facility's manager: the first delta they hear is their own facility's.
        await live_server.hub.alerts.raise_alert(sos(OTHER_FACILITY, "moon-call", None))
        heard = await wait_message(elsewhere, lambda m: m["type"] != "ping")
        assert heard["type"] == "alert"
        assert heard["alert"]["facility_id"] == OTHER_FACILITY


async def flood_changes(settings: Settings, alert_id: int, rows: int) -> None:
    """Commit `rows` comment changes on one alert at once, as a busy district's would come."""
    async with await connect_db(settings) as db:
        cur = await db.execute(
            "SELECT change FROM live_changes WHERE alert_id = %s ORDER BY id LIMIT 1",
            (alert_id,),
        )
        row = await cur.fetchone()
        assert row is not None
        await db.execute(
            "INSERT INTO live_changes (facility_id, alert_id, change)"
            " SELECT %s, %s, %s::jsonb || jsonb_build_object("
            "  'action', 'comment', 'note', i || ' ' || repeat(%s, 140))"
            " FROM generate_series(1, %s) AS i",
            (FACILITY, alert_id, json.dumps(row[0]), "长时间无人应答，请尽快处理。", rows),
        )
        await db.execute("SELECT pg_notify(%s, 'flood')", (live_channel(settings.database_schema),))


async def test_a_client_that_does_not_read_is_told_lagging_and_closed(
    migrated: Settings,
) -> None:
    """A screen that stops reading fills its queue, is marked lagging, and once it reads
    again gets `lagging` and close 4008; a screen beside it gets every change in time."""
    settings = migrated.model_copy(update={"live_client_queue": 200})
    async with serve_hub(settings) as server:
        hub = server.hub
        token = await account_token(settings, "root", "admin")
        change = await hub.alerts.raise_alert(sos(FACILITY, "eb-1"))
        assert change is not None
        alert_id = change.alert.id
        # A small receive buffer and no reading: the server's writes back up sooner.
        slow_socket = socket.socket()
        slow_socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        slow_socket.connect(("127.0.0.1", server.port))
        async with (
            connect(server.url(f"token={token}"), sock=slow_socket, max_queue=1) as slow,
            live_client(server, f"token={token}") as fast,
        ):
            assert (await next_message(fast))["type"] == "snapshot"
            comments: list[dict[str, Any]] = []

            async def read_fast() -> None:
                while True:
                    message = await next_message(fast, timeout=60)
                    if message["type"] == "alert":
                        comments.append(message)

            reading = asyncio.create_task(read_fast())
            try:
                sent = 0
                # The kernel's socket buffers take megabytes before the hub sees a backlog.
                while not hub.live.lagging:
                    await flood_changes(settings, alert_id, 500)
                    sent += 500
                    target = sent
                    await wait_for(
                        lambda: len(comments) == target or hub.live.lagging > 0,  # noqa: B023
                        30,
                    )
                    assert sent < 20_000, "the silent client never counted as lagging"
                await flood_changes(settings, alert_id, 500)
                sent += 500
                # The reading screen got every change, in order, while the other lagged.
                await wait_for(lambda: len(comments) == sent, 30)
                ids = [message["change_id"] for message in comments]
                assert ids == sorted(set(ids))
                assert not reading.done()
            finally:
                reading.cancel()

            # The silent one, reading at last: what was on the wire, `lagging`, then 4008.
            kinds: list[str] = []
            with contextlib.suppress(ConnectionClosed):
                while True:
                    kinds.append((await next_message(slow))["type"])
            assert kinds[-1] == "lagging"
            assert slow.close_code == 4008
            assert len(kinds) < sent
            await wait_for(lambda: hub.live.lagging == 0 and hub.live.clients == 1)


async def test_resume_with_since_gets_what_was_missed_and_a_stale_since_a_snapshot(
    live_server: LiveServer,
) -> None:
    """Reconnecting with the last change id: `resumed`, the missed changes of the caller's
    facilities in order, the current status; with an id no longer kept: a snapshot."""
    hub, settings = live_server.hub, live_server.settings
    token = await account_token(settings, "nurse", "staff", facility_id=FACILITY)
    async with live_client(live_server, f"token={token}") as websocket:
        snapshot = await next_message(websocket)
    since = snapshot["change_id"]

    raised = await hub.alerts.raise_alert(sos(FACILITY, "eb-1"))
    assert raised is not None
    await hub.alerts.raise_alert(sos(OTHER_FACILITY, "moon-call", None))
    acked = await hub.alerts.acknowledge(raised.alert.id, "nurse")

    async with live_client(live_server, f"token={token}&since={since}") as websocket:
        resumed = await next_message(websocket)
        assert resumed["type"] == "resumed"
        assert resumed["change_id"] == since + 3
        missed = [await next_message(websocket) for _ in range(2)]
        assert [(m["type"], m["action"]) for m in missed] == [
            ("alert", "raise"),
            ("alert", "acknowledge"),
        ]
        assert {m["alert"]["id"] for m in missed} == {str(raised.alert.id)}
        assert missed[1]["alert"]["acknowledged_by"] == acked.actor == "nurse"
        assert missed[0]["change_id"] < missed[1]["change_id"] <= resumed["change_id"]
        current = [await next_message(websocket) for _ in range(6)]
        assert [m["type"] for m in current] == [
            "facility_status",
            "zone_count",
            "zone_count",
            "device_status",
            "device_status",
            "device_status",
        ]
        assert current[0]["facility_id"] == FACILITY
        # And live changes go on from there.
        await hub.alerts.comment(raised.alert.id, "nurse", "on my way")
        comment = await wait_message(websocket, is_alert("comment"))
        assert comment["change_id"] == resumed["change_id"] + 1

    # The changes after `since` are gone (retention): a fresh snapshot instead.
    async with await connect_db(settings) as db:
        await db.execute("DELETE FROM live_changes WHERE id <= %s", (since + 1,))
    for stale in (str(since), "999999999999", "-1", "abc", "1e3", ""):
        async with live_client(live_server, f"token={token}&since={stale}") as websocket:
            fresh = await next_message(websocket)
            assert fresh["type"] == "snapshot", stale
            assert fresh["change_id"] == since + 4
            assert [a["state"] for a in fresh["alerts"]] == ["acknowledged"]


@pytest.mark.parametrize(
    "query",
    [
        "",
        "token=",
        "token=not-a-token",
        "token=" + "A" * 5000,
        "token=%00%ff%fe",
        "token=%E4%BD%A0%E5%A5%BD",
        "token[]=x&token[]=y",
        "since=1",
        "&&&==&token",
    ],
)
async def test_a_bad_token_is_closed_with_4401(live_server: LiveServer, query: str) -> None:
    """No token, an unknown one or garbage: the socket closes with 4401 and no data."""
    async with live_client(live_server, query) as websocket:
        with pytest.raises(ConnectionClosed):
            await next_message(websocket)
        assert websocket.close_code == 4401


async def test_expired_revoked_and_disabled_tokens_are_closed_with_4401(
    live_server: LiveServer,
) -> None:
    """A token past its expiry, signed out, or of a disabled account gets 4401; a good one
    beside them still gets its snapshot, whatever else the query string holds."""
    settings = live_server.settings
    expired = await account_token(settings, "old", "admin")
    revoked = await account_token(settings, "gone", "admin")
    disabled = await account_token(settings, "left", "staff", facility_id=FACILITY)
    good = await account_token(settings, "root", "admin")
    async with await connect_db(settings) as db:
        await db.execute(
            "UPDATE api_tokens SET created_at = now() - interval '2 days',"
            " expires_at = now() - interval '1 second' WHERE username = 'old'"
        )
        await revoke(db, revoked)
        await disable_user(db, "left")
    # The last of repeated parameters counts, as everywhere in the API.
    for query in (expired, revoked, disabled, good + "x", good[:-1], f"{good}&token=second"):
        async with live_client(live_server, f"token={query}") as websocket:
            with pytest.raises(ConnectionClosed):
                await next_message(websocket)
            assert websocket.close_code == 4401
    for extra in (
        "&since=%00",
        "&since=" + "9" * 400,
        "&x=%ZZ",
        "&since=1&since=2",
    ):
        async with live_client(live_server, f"token={good}{extra}") as websocket:
            message = await next_message(websocket)
            assert message["type"] in ("snapshot", "resumed"), extra


async def test_screens_stay_connected_through_a_database_outage(
    migrated: Settings, proxy: PostgresProxy, tmp_path: Path
) -> None:
    """With the database cut, a connected screen stays connected, hears a press as
    `alert_provisional`, and once the database is back gets the stored alert and new
    changes as usual."""
    token = await account_token(migrated, "nurse", "staff", facility_id=FACILITY)
    settings = proxy.settings_through(migrated, tmp_path / "spool")
    async with (
        serve_hub(settings) as server,
        fake_device(settings, "eb-1") as button,
        live_client(server, f"token={token}") as screen,
    ):
        hub = server.hub
        await hub.wait_connected(15)
        assert (await next_message(screen))["type"] == "snapshot"
        proxy.sever()
        await button.send("telemetry", button.message(battery=80))
        await wait_for(lambda: not hub.metrics.database_up, timeout=30)

        await button.send("event", button.message(event="pressed", button="red"))
        provisional = await wait_message(screen, lambda m: m["type"] == "alert_provisional")
        assert (provisional["device_id"], provisional["kind"]) == ("eb-1", "sos")

        proxy.restore()
        raised = await wait_message(screen, is_alert("raise"), timeout=60)
        assert raised["alert"]["device_id"] == "eb-1"
        await hub.alerts.acknowledge(int(raised["alert"]["id"]), "nurse")
        acked = await wait_message(screen, is_alert("acknowledge"), timeout=15)
        assert acked["alert"]["id"] == raised["alert"]["id"]
