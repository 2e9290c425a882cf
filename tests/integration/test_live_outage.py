"""A screen whose link drops while the database is unreachable (SPEC §8): it reconnects,
is served partially on the word of the token it was opened with, still hears the next
call, and gets what was stored meanwhile once the database is back."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed

from hub.auth import disable_user, revoke
from hub.settings import Settings
from tests.fix_hub import FACILITY, connect_db, fake_device, wait_for
from tests.fix_live import (
    LiveServer,
    account_token,
    close_code,
    live_client,
    next_message,
    serve_hub,
    wait_message,
)
from tests.postgres_proxy import PostgresProxy

pytestmark = [pytest.mark.mqtt, pytest.mark.db, pytest.mark.slow]

# Close codes of docs/api.md.
BAD_TOKEN = 4401
TRY_AGAIN = 1013
RECONNECT = 1012


async def _opened(server: LiveServer, token: str) -> int:
    """Open a screen with `token`, as a page does, and leave: the change id it had."""
    async with live_client(server, f"token={token}") as screen:
        snapshot = await next_message(screen)
        assert snapshot["type"] == "snapshot"
        change_id: int = snapshot["change_id"]
        return change_id


async def _refused(server: LiveServer, query: str) -> int | None:
    async with live_client(server, query) as screen:
        try:
            message = await next_message(screen)
        except ConnectionClosed:
            return screen.close_code
        pytest.fail(f"{query[:40]}... was served: {message}")


def _is(kind: str, action: str | None = None, device: str | None = None) -> Any:
    def matches(message: dict[str, Any]) -> bool:
        if message["type"] != kind:
            return False
        if action is not None and message.get("action") != action:
            return False
        about = message["alert"]["device_id"] if kind == "alert" else message.get("device_id")
        return device is None or about == device

    return matches


async def test_a_screen_that_reconnects_during_an_outage_hears_the_next_call(
    migrated: Settings, proxy: PostgresProxy, tmp_path: Path
) -> None:
    token = await account_token(migrated, "nurse", "staff", facility_id=FACILITY)
    settings = proxy.settings_through(migrated, tmp_path / "spool")
    async with (
        serve_hub(settings) as server,
        fake_device(settings, "eb-1") as button,
        fake_device(settings, "fs-1") as sensor,
    ):
        hub = server.hub
        await hub.wait_connected(15)
        since = await _opened(server, token)
        # While the screen is away (a phone asleep), a call is stored...
        await button.send("event", button.message(event="pressed", button="red"))
        await wait_for(lambda: hub.live.last_change_id not in (None, since), timeout=15)
        # ...then the database goes.
        proxy.sever()
        await button.send("telemetry", button.message(battery=80))
        await wait_for(lambda: not hub.metrics.database_up, timeout=30)

        async with live_client(server, f"token={token}&since={since}") as screen:
            resumed = await next_message(screen)
            assert resumed == {"type": "resumed", "change_id": since, "partial": True}
            await sensor.send(
                "event", sensor.message(event="fall_detected", confidence=0.9, posture="lying")
            )
            call = await wait_message(screen, _is("alert_provisional", device="fs-1"))
            assert (call["kind"], call["facility_id"]) == ("fall", FACILITY)

            proxy.restore()
            # Back: the partial connection is closed so that the client resumes for real
            # (within the pool's reconnect backoff, as the outage tests allow).
            assert await close_code(screen, timeout=60) == RECONNECT

        async with live_client(server, f"token={token}&since={since}") as screen:
            resumed = await next_message(screen)
            assert resumed["type"] == "resumed"
            assert resumed.get("partial", False) is False
            # What was stored while it was away, and the fall once the spool is replayed.
            await wait_message(screen, _is("alert", "raise", "eb-1"), timeout=30)
            await wait_message(screen, _is("alert", "raise", "fs-1"), timeout=60)


async def test_during_an_outage_only_tokens_the_database_vouched_for_are_trusted(
    migrated: Settings, proxy: PostgresProxy, tmp_path: Path
) -> None:
    """A token this process was opened with is trusted through the outage; one it never
    saw, one signed out or of an account disabled before the outage, a forged one, and any
    connection without `since` (a snapshot needs the database) are told to try again."""
    known = await account_token(migrated, "nurse", "staff", facility_id=FACILITY)
    unseen = await account_token(migrated, "night", "staff", facility_id=FACILITY)
    signed_out = await account_token(migrated, "gone", "staff", facility_id=FACILITY)
    disabled = await account_token(migrated, "left", "manager", facility_id=FACILITY)
    settings = proxy.settings_through(migrated, tmp_path / "spool")
    async with serve_hub(settings) as server, fake_device(settings, "eb-1") as button:
        hub = server.hub
        await hub.wait_connected(15)
        since = await _opened(server, known)
        for token in (signed_out, disabled):
            await _opened(server, token)
        assert len(hub.live.trusted) == 3
        # Announced to every process: their word is withdrawn before the database goes.
        async with await connect_db(migrated) as db:
            await revoke(db, signed_out)
            await disable_user(db, "left")
        await wait_for(lambda: len(hub.live.trusted) == 1, timeout=15)

        proxy.sever()
        await button.send("telemetry", button.message(battery=80))
        await wait_for(lambda: not hub.metrics.database_up, timeout=30)
        for query in (
            f"token={unseen}&since={since}",
            f"token={signed_out}&since={since}",
            f"token={disabled}&since={since}",
            f"token={known}x&since={since}",
            f"token={known}",
            f"token={known}&since=-1",
        ):
            assert await _refused(server, query) == TRY_AGAIN, query
        # No token, or one longer than any token: bad whatever the database would say.
        for query in (f"token=&since={since}", f"token={'9' * 300}&since={since}"):
            assert await _refused(server, query) == BAD_TOKEN, query
        async with live_client(server, f"token={known}&since={since}") as screen:
            assert (await next_message(screen))["partial"] is True

        proxy.restore()
        # The database answers again: a bad token is a bad token, not a retry.
        await wait_for(lambda: hub.metrics.database_up, timeout=60)
        assert await _refused(server, f"token={signed_out}&since={since}") == BAD_TOKEN
