"""The simulated staff answer a call pressed over MQTT through the real API, and /kpis counts it."""

from __future__ import annotations

import asyncio
import logging
import random
from typing import Any

import httpx
import pytest

from simulators.response import Response
from simulators.staff import StaffDesk
from tests.fix_api import PASSWORD, Api
from tests.fix_hub import DB, FACILITY, background_task, fake_device, rows, wait_for

pytestmark = [pytest.mark.db, pytest.mark.mqtt]


def quick(ack_s: float, disposition: str = "false_alarm") -> Any:
    """A planner that answers every alert after `ack_s`, on site a second later, closed after."""

    def plan(kind: str, rng: random.Random) -> Response:
        return Response(ack_s, ack_s + 1.0, ack_s + 2.0, disposition, "误按")

    return plan


def desk_for(api: Api, planner: Any, staff: tuple[str, str] = ("staff", PASSWORD)) -> StaffDesk:
    """The desk of the test site: the admin watches, `staff` answers at FACILITY."""
    return StaffDesk(
        api.client,
        watcher=("admin", PASSWORD),
        staff={FACILITY: staff},
        poll_s=0.2,
        planner=planner,
    )


async def _alert(db: DB, kind: str = "sos") -> tuple[Any, ...] | None:
    found = await rows(
        db,
        "SELECT id, state, acknowledged_by, acknowledged_at - raised_at, attended_by,"
        " resolved_by, disposition, note FROM alerts WHERE kind = %s ORDER BY id DESC LIMIT 1",
        kind,
    )
    return found[0] if found else None


async def test_a_press_is_taken_over_attended_and_resolved_and_shows_in_the_kpis(
    api: Api, db: DB
) -> None:
    """A button pressed over MQTT: staff take it over in seconds, the device hears each step."""
    desk = desk_for(api, quick(1.5))
    async with (
        fake_device(api.hub.settings, "eb-1") as button,
        background_task(desk.run()),
    ):
        await button.send("event", button.message(event="pressed", button="red"))

        async def resolved() -> bool:
            alert = await _alert(db)
            return alert is not None and alert[1] == "resolved"

        await wait_for(resolved, timeout=20)
        await wait_for(lambda: [a["state"] for a in button.acks][-1:] == ["resolved"])
    alert = await _alert(db)
    assert alert is not None
    alert_id, _, taken_by, taken_after, attended_by, resolved_by, disposition, note = alert
    assert (taken_by, attended_by, resolved_by) == ("staff", "staff", "staff")
    assert 1.0 <= taken_after.total_seconds() <= 60
    assert (disposition, note) == ("false_alarm", "误按")
    assert [a["state"] for a in button.acks] == ["received", "acknowledged", "attended", "resolved"]
    assert desk.actions[str(alert_id)] == ["ack", "attend", "resolve"]
    trail = await rows(
        db, "SELECT actor, action FROM alert_audit WHERE alert_id = %s ORDER BY id", alert_id
    )
    assert trail == [
        ("system", "raise"),
        ("staff", "acknowledge"),
        ("staff", "attend"),
        ("staff", "resolve"),
    ]

    response = await api.request("GET", f"/kpis?facility={FACILITY}", "manager")
    assert response.status_code == 200, response.text
    kpis = response.json()
    assert kpis["high_alerts"] == 1
    assert kpis["ack_within_60s"] == 1
    assert kpis["ack_within_60s_share"] == 1.0
    sos = next(row for row in kpis["false_alarms_by_kind"] if row["subject"] == "sos")
    assert (sos["resolved"], sos["false_alarms"]) == (1, 1)


async def test_a_person_who_takes_it_over_first_keeps_it(api: Api, db: DB) -> None:
    """The manager takes the call over at the console; the simulated colleague hears 409."""
    desk = desk_for(api, quick(3.0, "real"))
    async with (
        fake_device(api.hub.settings, "eb-1") as button,
        background_task(desk.run()),
    ):
        await button.send("event", button.message(event="pressed", button="pendant"))
        await wait_for(lambda: len(button.acks) >= 1)
        alert_id = button.acks[0]["alert_id"]
        taken = await api.request("POST", f"/alerts/{alert_id}/ack", "manager")
        assert taken.status_code == 200, taken.text
        await asyncio.sleep(5.0)
    alert = await _alert(db)
    assert alert is not None
    assert alert[1:3] == ("acknowledged", "manager")
    assert alert[4] is None
    assert str(alert_id) not in desk.actions


async def test_staff_who_cannot_sign_in_leave_the_call_and_the_desk_keeps_running(
    api: Api, db: DB, caplog: pytest.LogCaptureFixture
) -> None:
    """A wrong password is logged with the reason, nothing is changed, and the desk goes on."""
    desk = desk_for(api, quick(0.5), staff=("staff", "wrong password 1"))
    with caplog.at_level(logging.WARNING, logger="simulators.staff"):
        async with (
            fake_device(api.hub.settings, "eb-1") as button,
            background_task(desk.run()) as running,
        ):
            await button.send("event", button.message(event="pressed", button="red"))
            await wait_for(lambda: "cannot sign in" in caplog.text, timeout=15)
            assert not running.done()
    alert = await _alert(db)
    assert alert is not None
    assert alert[1:3] == ("active", None)
    assert desk.actions == {}


async def test_an_unreachable_hub_is_retried_not_fatal(caplog: pytest.LogCaptureFixture) -> None:
    """With no hub listening the desk warns and keeps trying; it never raises."""
    async with httpx.AsyncClient(base_url="http://127.0.0.1:9", timeout=1.0) as client:
        desk = StaffDesk(client, watcher=("admin", "x"), staff={}, poll_s=0.1)
        with caplog.at_level(logging.WARNING, logger="simulators.staff"):
            async with background_task(desk.run()) as running:
                await wait_for(lambda: "cannot list open alerts" in caplog.text, timeout=10)
                assert not running.done()
