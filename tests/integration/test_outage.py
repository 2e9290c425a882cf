"""SPEC §8: while PostgreSQL is unreachable the hub spools, acks nothing it has not kept,
and stores every message exactly once when the database is back."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from devices import topics
from hub.runtime import run_hub
from hub.settings import Settings
from tests.fix_hub import DEVICES, FACILITY, connect_db, fake_device, now_ts, raw_client, wait_for
from tests.postgres_proxy import PostgresProxy

pytestmark = [pytest.mark.mqtt, pytest.mark.db]


async def _count(settings: Settings) -> tuple[int, int]:
    async with await connect_db(settings) as conn:
        cursor = await conn.execute(
            "SELECT count(*), count(DISTINCT (device_id, seq)) FROM readings WHERE device_id = %s",
            ("oc-1",),
        )
        row = await cursor.fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


async def test_a_database_outage_is_spooled_and_replayed_exactly_once(
    migrated: Settings, proxy: PostgresProxy, tmp_path: Path
) -> None:
    assert DEVICES["oc-1"] == "occupancy_counter"
    settings = proxy.settings_through(migrated, tmp_path / "spool")
    topic = topics.topic(settings.topic_root, FACILITY, "oc-1", "telemetry")

    def reading(seq: int) -> bytes:
        return json.dumps({"ts": now_ts(), "seq": seq, "count": seq % 15}).encode()

    async with run_hub(settings) as hub, raw_client(settings, "outage") as device:
        await hub.wait_connected(15)
        for seq in range(1, 101):
            await device.publish(topic, reading(seq), qos=1)

        async def first_stored() -> bool:
            return (await _count(migrated))[0] == 100

        await wait_for(first_stored, timeout=20)

        proxy.sever()
        for seq in range(101, 401):
            await device.publish(topic, reading(seq), qos=1)

        def spooled() -> bool:
            return hub.metrics.spooled_messages >= 300

        await wait_for(spooled, timeout=60)
        assert not hub.metrics.database_up
        assert any((tmp_path / "spool").iterdir()), "the outage left no spool file"
        # The broker got every ack: nothing waits there, it is all in the fsynced spool.
        assert (await _count(migrated))[0] == 100

        proxy.restore()

        async def all_stored() -> bool:
            return (await _count(migrated))[0] >= 400

        await wait_for(all_stored, timeout=60)

        def replayed() -> bool:
            return hub.metrics.database_up and hub.metrics.spool_pending == 0

        await wait_for(replayed, timeout=30)

    rows, distinct = await _count(migrated)
    assert (rows, distinct) == (400, 400)
    assert [p for p in (tmp_path / "spool").rglob("*") if p.is_file()] == []


async def test_an_sos_during_a_database_outage_reaches_the_screens_and_the_button(
    migrated: Settings, proxy: PostgresProxy, tmp_path: Path
) -> None:
    """SPEC §8: with the database cut, a press is announced live and acked `received` at once;
    once the database is back, the alert is stored and announced as an ordinary alert."""
    settings = proxy.settings_through(migrated, tmp_path / "spool")
    async with run_hub(settings) as hub, fake_device(settings, "eb-1") as button:
        await hub.wait_connected(15)
        await asyncio.wait_for(hub.live.listening.wait(), 15)
        with hub.live.subscribe() as screen:
            proxy.sever()
            # A reading first, so the hub finds the database gone and spools.
            await button.send("telemetry", button.message(battery=80))
            await wait_for(lambda: not hub.metrics.database_up, timeout=30)

            await button.send("event", button.message(event="pressed", button="red"))
            press_seq = button.seq
            message = await asyncio.wait_for(screen.queue.get(), 5)
            assert message["type"] == "alert_provisional"
            assert (message["facility_id"], message["device_id"]) == (FACILITY, "eb-1")
            assert (message["kind"], message["priority"], message["seq"]) == (
                "sos",
                "high",
                press_seq,
            )
            await wait_for(lambda: bool(button.acks), timeout=5)
            assert button.acks[0] == {
                "seq": press_seq,
                "alert_id": None,
                "state": "received",
                "provisional": True,
            }

            # A replay tried while the database is still away fails and is tried again:
            # the pipeline goes on (it once ended here, on the pool's timeout).
            failures = hub.metrics.replay_failures
            await wait_for(lambda: hub.metrics.replay_failures > failures, timeout=30)
            assert not any(task.done() for task in hub.tasks)

            proxy.restore()
            raised = await asyncio.wait_for(screen.queue.get(), 60)
            assert (raised["type"], raised["action"]) == ("alert", "raise")
            assert raised["alert"]["kind"] == "sos"
            assert raised["alert"]["device_id"] == "eb-1"

            def acked_with_id() -> bool:
                return any(ack.get("alert_id") == raised["alert"]["id"] for ack in button.acks)

            await wait_for(acked_with_id, timeout=10)

    async with await connect_db(migrated) as conn:
        cur = await conn.execute("SELECT count(*) FROM alerts WHERE device_id = 'eb-1'")
        assert await cur.fetchone() == (1,)
