"""Fixtures for the HTTP API: the app on a running hub, accounts of every role, sign-in."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from starlette.types import Receive, Scope, Send

from hub.app import create_app
from hub.auth import add_user
from hub.runtime import Hub
from tests.fix_hub import FACILITY, OTHER_FACILITY, connect_db

DISTRICT = "鹿城区"
OTHER_DISTRICT = "瓯海区"
# A facility in the other district, so its regulator sees something of their own.
FAR_FACILITY = "f-star"
PASSWORD = "correct horse 9"  # noqa: S105 - the test accounts' password

# Every role of SPEC §7 as the authorization tests walk them: name -> (role, facility, district).
ACCOUNTS: dict[str, tuple[str, str | None, str | None]] = {
    "admin": ("admin", None, None),
    "regulator": ("regulator", None, DISTRICT),
    "regulator_other": ("regulator", None, OTHER_DISTRICT),
    "manager": ("manager", FACILITY, None),
    "staff": ("staff", FACILITY, None),
    "staff_other": ("staff", OTHER_FACILITY, None),
}


def asgi_on(hub: Hub) -> Any:
    """The hub's HTTP app, served on an already running hub (its lifespan state injected)."""
    app = create_app(hub.settings)

    async def with_state(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            scope = {**scope, "state": {**scope.get("state", {}), "hub": hub}}
        await app(scope, receive, send)

    with_state.app = app  # type: ignore[attr-defined]
    return with_state


@dataclass
class Api:
    """An HTTP client of the hub under test, and the tokens of the signed-in accounts."""

    client: httpx.AsyncClient
    hub: Hub
    tokens: dict[str, str]

    def auth(self, who: str | None) -> dict[str, str]:
        """The Authorization header of account `who` (none for None)."""
        return {} if who is None else {"Authorization": f"Bearer {self.tokens[who]}"}

    async def request(
        self, method: str, path: str, who: str | None = None, **kwargs: Any
    ) -> httpx.Response:
        """One request to /api/v1{path} as `who`."""
        headers = {**self.auth(who), **kwargs.pop("headers", {})}
        return await self.client.request(method, f"/api/v1{path}", headers=headers, **kwargs)

    async def login(self, username: str, password: str = PASSWORD) -> httpx.Response:
        """POST /auth/login."""
        return await self.client.post(
            "/api/v1/auth/login", json={"username": username, "password": password}
        )


async def add_far_facility(hub: Hub) -> None:
    """A facility in another district, with one zone and one button."""
    async with await connect_db(hub.settings) as conn:
        await conn.execute(
            "INSERT INTO facilities (id, name, kind, district, latitude, longitude, beds)"
            " VALUES (%s, '星光养老院', 'elderly', %s, 27.99, 120.63, 30)",
            (FAR_FACILITY, OTHER_DISTRICT),
        )
        await conn.execute(
            "INSERT INTO zones (facility_id, zone_id, name, kind, capacity)"
            " VALUES (%s, 'room-1', '1 室', 'room', 2)",
            (FAR_FACILITY,),
        )
        await conn.execute(
            "INSERT INTO devices (id, facility_id, type, zone_id, heartbeat_s)"
            " VALUES ('eb-far', %s, 'emergency_button', 'room-1', 60)",
            (FAR_FACILITY,),
        )


@pytest.fixture
async def api(running_hub: Hub) -> AsyncIterator[Api]:
    """A client of the running hub's API with every account of ACCOUNTS signed in."""
    await add_far_facility(running_hub)
    transport = httpx.ASGITransport(app=asgi_on(running_hub))
    async with httpx.AsyncClient(transport=transport, base_url="http://hub.test") as client:
        session = Api(client, running_hub, {})
        for username, (role, facility_id, district) in ACCOUNTS.items():
            await add_user(
                running_hub.pool,
                username,
                role,
                PASSWORD,
                facility_id=facility_id,
                district=district,
                display_name=f"{role} {username}",
            )
            response = await session.login(username)
            assert response.status_code == 200, response.text
            session.tokens[username] = response.json()["token"]
        yield session
