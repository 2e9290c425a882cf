"""Notifications through the running hub: MQTT press in, webhook POST out, ingest untouched.

The endpoints are the real local HTTP servers of test_notify; the hub is the whole hub
(ingest, pipeline, alert engine, notifier) on the test broker and database.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import psycopg
import pytest

from hub.notify import add_webhook
from hub.runtime import Hub, run_hub
from hub.settings import Settings
from tests.fix_hub import FACILITY, connect_db, fake_device, register_buttons, wait_for
from tests.integration.test_notify import Endpoint, refused_url, serving

pytestmark = [pytest.mark.db, pytest.mark.mqtt]

BUTTONS = [f"eb-n{number}" for number in range(1, 6)]
TELEMETRY = 2000


@pytest.fixture
def settings(migrated: Settings) -> Settings:
    """A short HTTP timeout, so a hanging endpoint costs each try 2 s."""
    return migrated.model_copy(update={"notify_timeout_s": 2.0})


@contextlib.asynccontextmanager
async def hub_with_buttons(settings: Settings) -> AsyncIterator[Hub]:
    """Register five more buttons, then run the hub (it reads the registry at start)."""
    async with await connect_db(settings) as conn:
        await register_buttons(conn, BUTTONS)
    async with run_hub(settings) as hub:
        await hub.wait_connected(15)
        yield hub


async def count(conn: psycopg.AsyncConnection[Any], query: str, *params: Any) -> int:
    cur = await conn.execute(query, params)
    row = await cur.fetchone()
    return int(row[0]) if row else 0


async def press_and_stream(
    settings: Settings, conn: psycopg.AsyncConnection[Any], first_seq: int
) -> tuple[float, list[list[dict[str, Any]]]]:
    """Press every button once, stream TELEMETRY readings; the stored readings per second.

    Returns the rate and each button's acks once every press has its `received` ack.
    """
    before = await count(conn, "SELECT count(*) FROM readings WHERE device_id = 'oc-1'")
    async with contextlib.AsyncExitStack() as stack:
        buttons = [await stack.enter_async_context(fake_device(settings, b)) for b in BUTTONS]
        counter = await stack.enter_async_context(fake_device(settings, "oc-1"))
        counter.seq = first_seq
        for button in buttons:
            button.seq = first_seq
        started = time.monotonic()
        for button in buttons:
            await button.send("event", button.message(event="pressed", button="red"))
        for _ in range(TELEMETRY):
            await counter.send("telemetry", counter.message(count=5, staff=1, zone="class-a"))

        async def all_stored() -> bool:
            stored = await count(conn, "SELECT count(*) FROM readings WHERE device_id = 'oc-1'")
            return stored - before == TELEMETRY

        await wait_for(all_stored, timeout=60)
        rate = TELEMETRY / (time.monotonic() - started)

        def all_received() -> bool:
            return all(any(ack.get("state") == "received" for ack in b.acks) for b in buttons)

        await wait_for(all_received, timeout=10)
        return rate, [list(b.acks) for b in buttons]


async def test_a_press_is_posted_to_the_facility_webhook_by_the_running_hub(
    settings: Settings,
) -> None:
    """An sos pressed over MQTT becomes one json notice on the facility's webhook."""
    endpoint = Endpoint(then=(200, b"ok"))
    async with serving(endpoint), await connect_db(settings) as conn:
        await add_webhook(conn, FACILITY, f"{endpoint.url}/carehub", "json")
        async with hub_with_buttons(settings) as hub, fake_device(settings, "eb-1") as button:
            await button.send("event", button.message(event="pressed", button="red"))
            await wait_for(lambda: len(endpoint.requests) == 1, timeout=10)
            await wait_for(
                lambda: any(ack.get("state") == "received" for ack in button.acks), timeout=5
            )
            await hub.notifier.refresh_health()
            health = hub.notifier.health()
        notice = endpoint.requests[0].json()
        (alert_id,) = (
            await (await conn.execute("SELECT id FROM alerts WHERE device_id = 'eb-1'")).fetchone()
            or ()
        )
        sent = await count(conn, "SELECT count(*) FROM notifications WHERE state = 'sent'")
    assert (notice["event"], notice["kind"], notice["device_id"]) == ("new", "sos", "eb-1")
    assert notice["alert_id"] == str(alert_id)
    assert notice["facility_id"] == FACILITY
    assert sent == 1
    assert (health["status"], health["webhooks"], health["failing"]) == ("ok", 1, 0)


async def test_ingest_keeps_its_pace_and_acks_while_the_webhook_endpoints_are_down(
    settings: Settings,
) -> None:
    """One endpoint hangs, one refuses: readings and presses flow as fast as with none down.

    The same load runs twice, first with a working endpoint, then with the facility's
    endpoints dead. Every reading is stored both times, every press is acked `received`,
    and the rate with dead endpoints stays within half of the baseline (it is measured on
    a shared 2-core machine, so the bound leaves room for noise, not for a stall: a
    notifier that blocked ingest would hold it for the 2 s timeout per try).
    """
    working = Endpoint(then=(200, b"ok"))
    hold = asyncio.Event()
    hanging = Endpoint(then=(200, b"ok"), hold=hold)
    async with serving(working, hanging), await connect_db(settings) as conn:
        working_id = await add_webhook(conn, FACILITY, f"{working.url}/carehub", "json")
        async with hub_with_buttons(settings) as hub:
            baseline, _ = await press_and_stream(settings, conn, first_seq=0)
            await wait_for(lambda: len(working.requests) == len(BUTTONS), timeout=10)

            await conn.execute("UPDATE webhooks SET enabled = false WHERE id = %s", (working_id,))
            await add_webhook(conn, FACILITY, f"{hanging.url}/carehub", "json")
            await add_webhook(conn, FACILITY, refused_url(), "json")
            # Resolve the first round's alerts, so the presses open new alerts to notify.
            await conn.execute(
                "UPDATE alerts SET state = 'resolved', resolved_at = now(),"
                " resolved_by = 'test', disposition = 'test' WHERE state <> 'resolved'"
            )
            down, acks = await press_and_stream(settings, conn, first_seq=10_000)

            # The dead endpoints were tried while the load ran, and are still owed.
            await wait_for(lambda: len(hanging.requests) >= 1, timeout=10)
            await hub.notifier.refresh_health()
            failing = hub.notifier.health()
            pending = await count(
                conn,
                "SELECT count(*) FROM notifications WHERE state IN ('pending', 'sending')",
            )
            hold.set()
    print(f"readings/s with a working endpoint {baseline:.0f}, with dead endpoints {down:.0f}")
    assert all(acks_of_one[0]["state"] == "received" for acks_of_one in acks)
    assert down >= 0.5 * baseline, (baseline, down)
    # 5 new alerts x 2 dead endpoints are owed; the health endpoint names the refused one.
    assert pending == 2 * len(BUTTONS)
    assert failing["pending"] == pending
    assert any(e["last_error"] and "ConnectError" in e["last_error"] for e in failing["endpoints"])
