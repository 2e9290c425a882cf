"""Messages the broker drops for its queue limits are lost outside the hub: it must say so."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from hub.metrics import Metrics
from hub.runtime import run_hub
from hub.settings import Settings
from tests.fix_hub import connect_db, fake_device, rows, wait_for
from tests.private_broker import private_mosquitto

pytestmark = [pytest.mark.mqtt, pytest.mark.db, pytest.mark.slow]

SENT = 300


async def test_a_broker_that_drops_what_it_cannot_queue_is_reported_with_the_count(
    migrated: Settings, tmp_path: Path
) -> None:
    """A queue of 20 behind a window of 5, and a hub that cannot commit: the rest is lost.

    The hub cannot get those messages back, but it counts them from the broker's $SYS
    counter, on /metrics and /readyz, so that every message is either stored or counted.
    """
    with private_mosquitto(
        tmp_path,
        "max_queued_messages 20",
        "sys_interval 1",
        "persistence false",
    ) as url:
        settings = migrated.model_copy(
            update={"mqtt_url": url, "mqtt_protocol": 5, "mqtt_receive_maximum": 5}
        )
        db = await connect_db(settings)
        blocker = await psycopg.AsyncConnection.connect(
            settings.database_url, options=f"-c search_path={settings.database_schema},public"
        )
        async with db, blocker, run_hub(settings) as hub:
            await hub.wait_connected(15)
            assert hub.metrics.broker_drops_visible
            # Telemetry cannot be written: 5 wait at the hub, 20 in the broker's queue.
            await blocker.execute("LOCK TABLE readings IN SHARE MODE")
            async with fake_device(settings, "fs-1") as sensor:
                for battery in range(SENT):
                    await sensor.send("telemetry", sensor.message(battery=battery % 100))
            await wait_for(lambda: hub.metrics.broker_dropped_seen > 0, timeout=15)
            await blocker.rollback()

            async def all_accounted() -> bool:
                stored = (await rows(db, "SELECT count(*) FROM readings"))[0][0]
                return bool(stored + hub.metrics.broker_dropped_seen == SENT)

            await wait_for(all_accounted, timeout=20)
            stored = (await rows(db, "SELECT count(*) FROM readings"))[0][0]
            assert 5 <= stored <= 5 + 20 + 5, "the broker kept more than its limits allow"
            text = hub.metrics.render()
            assert f"carehub_broker_dropped_seen_total {SENT - stored}" in text
            assert f"carehub_broker_dropped_messages {SENT - stored}" in text


def test_a_restarted_broker_counts_its_drops_anew() -> None:
    metrics = Metrics()
    assert metrics.broker_dropped_now(7, retained=True) == 0  # from before the hub watched
    assert metrics.broker_dropped_now(10, retained=False) == 3
    assert metrics.broker_dropped_now(4, retained=True) == 4  # a restart: 0 again, then 4
    assert metrics.broker_dropped_seen == 7
    fresh = Metrics()
    # Mosquitto sends nothing while its count is 0: a first live value counts whole.
    assert fresh.broker_dropped_now(12, retained=False) == 12
