"""Fixtures for the live websocket: the hub served by uvicorn on a free port, accounts, clients."""

from __future__ import annotations

import asyncio
import contextlib
import json
import weakref
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import pytest
import uvicorn
from pydantic import TypeAdapter
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from hub.app import SERVER_OPTIONS, create_app
from hub.auth import add_user, login
from hub.runtime import Hub
from hub.settings import Settings
from hub.wire import LiveMessage
from tests.fix_api import PASSWORD
from tests.fix_hub import connect_db

# Stopping uvicorn: it waits for websocket clients to close for at most this long.
SERVER_STOP_S = 15.0


@dataclass
class LiveServer:
    """The hub under test, serving HTTP and the websocket on a port of its own."""

    hub: Hub
    settings: Settings
    port: int

    def url(self, query: str) -> str:
        """The websocket URL with a raw query string (not encoded here: tests send hostile ones)."""
        return f"ws://127.0.0.1:{self.port}/api/v1/live?{query}"


@contextlib.asynccontextmanager
async def serve_hub(settings: Settings) -> AsyncIterator[LiveServer]:
    """Run create_app(settings), lifespan and all, under uvicorn on a free port."""
    async with serve_asgi(create_app(settings), lifespan=True) as (server, port):
        hub: Hub = server.lifespan.state["hub"]
        await asyncio.wait_for(hub.live.listening.wait(), 15)
        await asyncio.wait_for(hub.status.ready.wait(), 15)
        yield LiveServer(hub, settings, port)


@contextlib.asynccontextmanager
async def serve_running(hub: Hub, app: Any) -> AsyncIterator[LiveServer]:
    """Serve an ASGI app that already has its hub (tests.fix_api.asgi_on) on a free port."""
    async with serve_asgi(app, lifespan=False) as (_, port):
        await asyncio.wait_for(hub.live.listening.wait(), 15)
        await asyncio.wait_for(hub.status.ready.wait(), 15)
        yield LiveServer(hub, hub.settings, port)


@contextlib.asynccontextmanager
async def serve_asgi(app: Any, *, lifespan: bool) -> AsyncIterator[tuple[uvicorn.Server, int]]:
    """Run `app` under uvicorn on a free port until the block ends."""
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=0,
        log_level="warning",
        lifespan="on" if lifespan else "off",
        **SERVER_OPTIONS,
    )
    server = uvicorn.Server(config)
    # The test runner owns the signals.
    server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign,assignment]
    serving = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(30):
            while not server.started:
                if serving.done():
                    serving.result()
                    pytest.fail("uvicorn stopped before it started")
                await asyncio.sleep(0.05)
        yield server, server.servers[0].sockets[0].getsockname()[1]
    finally:
        server.should_exit = True
        done, _ = await asyncio.wait({serving}, timeout=SERVER_STOP_S)
        if not done:
            server.force_exit = True
            serving.cancel()
            await asyncio.wait({serving}, timeout=5)


@pytest.fixture
async def live_server(migrated: Settings) -> AsyncIterator[LiveServer]:
    """The hub with its websocket, on the test's schema with the registered site."""
    async with serve_hub(migrated) as server:
        yield server


async def account_token(
    settings: Settings,
    username: str,
    role: str,
    *,
    facility_id: str | None = None,
    district: str | None = None,
) -> str:
    """Create an account and sign it in; its API token."""
    async with await connect_db(settings) as conn:
        await add_user(conn, username, role, PASSWORD, facility_id=facility_id, district=district)
        signed_in = await login(conn, username, PASSWORD, settings.token_ttl_s)
    return signed_in.token


@contextlib.asynccontextmanager
async def live_client(server: LiveServer, query: str) -> AsyncIterator[ClientConnection]:
    """A websocket client of the hub's live feed."""
    async with connect(server.url(query), open_timeout=10, close_timeout=2) as websocket:
        yield websocket


# A frame: one live message, or a JSON array of several (docs/api.md).
LIVE_FRAME: TypeAdapter[Any] = TypeAdapter(LiveMessage | list[LiveMessage])

# Messages of a frame that held several (a JSON array), not yet handed out, per client.
_unread: weakref.WeakKeyDictionary[ClientConnection, deque[dict[str, Any]]] = (
    weakref.WeakKeyDictionary()
)


async def next_message(websocket: ClientConnection, timeout: float = 10.0) -> dict[str, Any]:
    """The next message the server sends, decoded; a frame of several is handed out in order."""
    unread = _unread.setdefault(websocket, deque())
    if not unread:
        text = await asyncio.wait_for(websocket.recv(), timeout)
        # Whatever a screen receives is what the OpenAPI document's LiveMessage says.
        LIVE_FRAME.validate_json(text)
        frame = json.loads(text)
        unread.extend(frame if isinstance(frame, list) else [frame])
    message: dict[str, Any] = unread.popleft()
    return message


async def wait_message(
    websocket: ClientConnection,
    matches: Callable[[dict[str, Any]], bool],
    timeout: float = 10.0,
) -> dict[str, Any]:
    """The first message that `matches`, skipping others; fail after `timeout` seconds."""
    async with asyncio.timeout(timeout):
        while True:
            message = await next_message(websocket, timeout)
            if matches(message):
                return message


async def close_code(websocket: ClientConnection, timeout: float = 10.0) -> int | None:
    """Read until the server closes; the close code it sent (None if it sent none)."""
    with contextlib.suppress(ConnectionClosed):
        async with asyncio.timeout(timeout):
            while True:
                await websocket.recv()
    return websocket.close_code
