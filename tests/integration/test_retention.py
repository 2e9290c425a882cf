"""CAREHUB_RETENTION_DAYS bounds readings and events, also in a database made before it changed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg
import pytest

from hub.runtime import run_hub
from hub.settings import Settings
from hub.storage.migrate import migrate
from tests.fix_hub import FACILITY, connect_db, database_only_settings, register_site, rows
from tests.integration.test_migrations import NO_TIMESCALE, timescale_unusable

pytestmark = [pytest.mark.db, pytest.mark.mqtt]


def _settings(base: Settings, **overrides: Any) -> Settings:
    return base.model_copy(update=overrides)


async def _seed(settings: Settings) -> None:
    """A reading and an event 30 days old, and one of each from now."""
    async with await connect_db(settings) as db:
        for age in ("30 days", "0 days"):
            await db.execute(
                "INSERT INTO readings (ts, device_id, seq, facility_id, received_at, payload)"
                f" VALUES (now() - interval '{age}', 'fs-1', %s, %s, now(), '{{}}')",
                (30 if age == "30 days" else 1, FACILITY),
            )
            await db.execute(
                "INSERT INTO events (ts, device_id, seq, facility_id, event, received_at, payload)"
                f" VALUES (now() - interval '{age}', 'eb-1', %s, %s, 'pressed', now(), '{{}}')",
                (30 if age == "30 days" else 1, FACILITY),
            )


async def test_plain_postgresql_deletes_what_is_older_than_the_setting_at_the_next_start(
    hub_settings: Settings,
) -> None:
    """Made with 400 days, started again with 7: the 30-day-old rows go, today's stay."""
    first = _settings(hub_settings, retention_days=400, timescaledb="off")
    await migrate(first)
    await register_site(first)
    await _seed(first)
    async with run_hub(first) as hub:
        await hub.wait_connected(15)
        await hub.timers.prune()
    async with await connect_db(first) as db:
        assert len(await rows(db, "SELECT 1 FROM readings")) == 2
    again = _settings(first, retention_days=7)
    async with run_hub(again) as hub:
        await hub.wait_connected(15)
        await hub.timers.prune()
    async with await connect_db(again) as db:
        assert await rows(db, "SELECT seq FROM readings") == [(1,)]
        assert await rows(db, "SELECT seq FROM events") == [(1,)]


async def test_timescaledb_policies_follow_the_setting_at_the_next_start(
    database_url: str, db_schema: str, tmp_path: Path
) -> None:
    """Made with 400 days, migrated again with 30: both retention policies say 30 days."""
    why = timescale_unusable(database_url)
    if why is not None:
        pytest.skip(NO_TIMESCALE.format(why=why))
    settings = database_only_settings(
        database_url, db_schema, "retention", tmp_path, timescaledb="on", retention_days=400
    )
    await migrate(settings)
    await migrate(_settings(settings, retention_days=30))
    await migrate(_settings(settings, retention_days=30))  # nothing to change: no new job
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as db:
        cur = await db.execute(
            "SELECT hypertable_name, config->>'drop_after' FROM timescaledb_information.jobs"
            " WHERE proc_name = 'policy_retention' AND hypertable_schema = %s ORDER BY 1",
            (db_schema,),
        )
        policies = await cur.fetchall()
    assert policies == [("events", "30 days"), ("readings", "30 days")]
