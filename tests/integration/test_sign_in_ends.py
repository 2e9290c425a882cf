"""A disabled account, or a revoked token, stops working at once: HTTP and open websockets."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

import httpx
import pytest

from hub.api.live import TOKEN_RECHECK_S
from hub.auth import disable_user, login
from hub.storage.accounts import account_channel
from tests.fix_api import PASSWORD
from tests.fix_hub import FACILITY, connect_db
from tests.fix_live import LiveServer, account_token, close_code, live_client, wait_message
from tests.samples import sos_decision

pytestmark = [pytest.mark.mqtt, pytest.mark.db]

# Far below TOKEN_RECHECK_S: the close comes from the announcement, not the periodic check.
AT_ONCE_S = 5.0


def bearer(token: str) -> dict[str, str]:
    """The Authorization header of `token`."""
    return {"Authorization": f"Bearer {token}"}


async def test_disabling_an_account_closes_its_open_websockets_and_refuses_its_requests(
    live_server: LiveServer,
) -> None:
    """Disabled from another connection (as another process would), the account's open
    screens close with 4401 within seconds and its token gets 401 everywhere; junk on the
    announcement channel closes nothing, and other accounts' screens carry on."""
    settings = live_server.settings
    staff = await account_token(settings, "nurse.li@f-sun", "staff", facility_id=FACILITY)
    staff_too = await account_token(settings, "nurse.li", "staff", facility_id=FACILITY)
    manager = await account_token(settings, "manager", "manager", facility_id=FACILITY)
    base_url = f"http://127.0.0.1:{live_server.port}"
    async with (
        httpx.AsyncClient(base_url=base_url) as http,
        live_client(live_server, f"token={staff}") as first,
        live_client(live_server, f"token={staff}") as second,
        live_client(live_server, f"token={staff_too}") as similar,
        live_client(live_server, f"token={manager}") as bystander,
    ):
        for websocket in (first, second, similar, bystander):
            await wait_message(websocket, lambda m: m["type"] == "snapshot")
        assert (await http.get("/api/v1/auth/me", headers=bearer(staff))).status_code == 200

        async with await connect_db(settings) as db:
            channel = account_channel(settings.database_schema)
            # Hostile announcements: unknown names, a near-prefix, a huge payload, empty.
            for payload in ("nobody", "nurse.li@f-sun ", "nurse.li@f-su", "x" * 7000, ""):
                await db.execute("SELECT pg_notify(%s, %s)", (channel, payload))
            await asyncio.sleep(1.0)
            for websocket in (first, second, similar, bystander):
                assert websocket.close_code is None

            started = time.monotonic()
            await disable_user(db, "nurse.li@f-sun")
            assert await close_code(first, timeout=AT_ONCE_S) == 4401
            assert await close_code(second, timeout=AT_ONCE_S) == 4401
            assert time.monotonic() - started < AT_ONCE_S < TOKEN_RECHECK_S

        for path in ("/api/v1/auth/me", "/api/v1/facilities", f"/api/v1/facilities/{FACILITY}"):
            response = await http.get(path, headers=bearer(staff))
            assert response.status_code == 401, (path, response.text)
        async with live_client(live_server, f"token={staff}") as again:
            assert await close_code(again, timeout=AT_ONCE_S) == 4401

        # The others still hear the floor.
        change = await live_server.hub.alerts.raise_alert(
            sos_decision(FACILITY, "eb-1", "room-101", at=datetime.now(UTC))
        )
        assert change is not None
        for websocket in (similar, bystander):
            message = await wait_message(websocket, lambda m: m["type"] == "alert")
            assert message["alert"]["id"] == str(change.alert.id)
        assert (await http.get("/api/v1/auth/me", headers=bearer(staff_too))).status_code == 200


async def test_signing_out_closes_the_websocket_of_that_token_only(
    live_server: LiveServer,
) -> None:
    """POST /auth/logout closes the screen that used the token at once; the same account's
    screen on another token stays."""
    settings = live_server.settings
    phone = await account_token(settings, "staff", "staff", facility_id=FACILITY)
    async with await connect_db(settings) as db:
        tablet = (await login(db, "staff", PASSWORD, settings.token_ttl_s)).token
    base_url = f"http://127.0.0.1:{live_server.port}"
    async with (
        httpx.AsyncClient(base_url=base_url) as http,
        live_client(live_server, f"token={phone}") as on_phone,
        live_client(live_server, f"token={tablet}") as on_tablet,
    ):
        for websocket in (on_phone, on_tablet):
            await wait_message(websocket, lambda m: m["type"] == "snapshot")
        started = time.monotonic()
        response = await http.post("/api/v1/auth/logout", headers=bearer(phone))
        assert response.status_code == 204
        assert await close_code(on_phone, timeout=AT_ONCE_S) == 4401
        assert time.monotonic() - started < AT_ONCE_S
        assert (await http.get("/api/v1/auth/me", headers=bearer(phone))).status_code == 401
        change = await live_server.hub.alerts.raise_alert(
            sos_decision(FACILITY, "eb-1", "room-101", at=datetime.now(UTC))
        )
        assert change is not None
        message = await wait_message(on_tablet, lambda m: m["type"] == "alert")
        assert message["alert"]["id"] == str(change.alert.id)
        assert on_tablet.close_code is None
