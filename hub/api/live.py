"""The live websocket `/api/v1/live` (docs/api.md): a snapshot of what the caller sees, then
every change of it, filtered to the caller's facilities.

Per connection: a bounded queue filled by the process's LiveFeed (messages serialised
once for all clients), one task writing it to the socket, one reading (so a close is
seen), and a check that the token still holds. A client that falls behind is told
`lagging` and closed with 4008; it never slows the others.

While the database is unreachable (SPEC §8), a screen that reconnects with `since` and a
token this process was lately opened with is served partially: `resumed` with
`"partial": true`, then only what is not stored (`alert_provisional`, statuses), so that
the next call still rings. Once the database answers, the hub closes it with 1012 and
the client reconnects as usual for what it missed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import psycopg
from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from psycopg import AsyncConnection
from psycopg_pool import PoolTimeout
from pydantic import TypeAdapter
from starlette.routing import WebSocketRoute
from starlette.types import Receive, Scope, Send

from hub.auth import Principal, principal_for_token, token_digest, token_principal
from hub.errors import StorageError
from hub.live import FRAME_MAX_MESSAGES, WRITE_BURST, LiveClient, encode_message
from hub.storage.alerts import open_alerts
from hub.storage.live import (
    changes_between,
    devices,
    district_facilities,
    facility_rows,
    last_change_id,
    oldest_change_id,
)
from hub.storage.status import facility_statuses, zone_status
from hub.wire import (
    LiveMessage,
    alert_json,
    device_status_message,
    facility_status_message,
    zone_count_message,
)

if TYPE_CHECKING:
    from hub.runtime import Hub

logger = logging.getLogger(__name__)

router = APIRouter(tags=["live"])

CLOSE_BAD_TOKEN = 4401
CLOSE_LAGGING = 4008
# RFC 6455 "try again later": the database cannot answer who the caller is right now.
CLOSE_TRY_AGAIN = 1013
# RFC 6455 "service restart": a partial connection's database is back; reconnecting with
# `since` gets what was stored meanwhile.
CLOSE_RECONNECT = 1012
# A partial connection looks for its database this often.
DATABASE_BACK_POLL_S = 1.0
# A floor above every change id: a partial connection passes on only what has none.
_UNSTORED_ONLY = 2**63
# The last words to a lagging or revoked client may wait this long for its socket to
# drain; a client that reads nothing at all is left to TCP after that.
FAREWELL_S = 10.0
# A token that expires mid-connection is noticed within this long. A disabled account or
# a revoked token is announced (hub/live.py) and noticed at once; this is the safety net.
TOKEN_RECHECK_S = 60.0
# A change id is a bigint; anything else in `since` is not one of ours.
_SINCE = re.compile(r"^[0-9]{1,18}$")

_DB_ERRORS = (StorageError, psycopg.Error, PoolTimeout, OSError)


def document_live_messages(document: dict[str, Any]) -> None:
    """Put `LiveMessage` and each of its messages into an OpenAPI document's components.

    OpenAPI has no place for a websocket: its messages are documented as schemas, which
    the dashboards' types are generated from like the REST answers'. A schema the routes
    already define (Alert, Device...) must come out the same, or this fails.
    """
    schema = TypeAdapter(LiveMessage).json_schema(
        mode="serialization", ref_template="#/components/schemas/{model}"
    )
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    for name, definition in schema.pop("$defs").items():
        if schemas.setdefault(name, definition) != definition:
            raise RuntimeError(f"the live message schema {name} differs from the routes' {name}")
    schemas["LiveMessage"] = {
        "title": "LiveMessage",
        "description": "A message of the live websocket /api/v1/live (docs/api.md): a frame "
        "carries one, or a JSON array of several in order.",
        **schema,
    }


class LiveEndpoint:
    """The route as a plain ASGI app, so that each client's writer hands the server the
    message's shared, pre-built send event: at hundreds of screens, the per-message layers
    of a WebSocket object cost more than the rest of the fan-out."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one websocket connection."""
        await live(WebSocket(scope, receive, send), send)


async def live(websocket: WebSocket, send: Send) -> None:
    """Snapshot, then alert, status, device and count changes in the caller's scope."""
    hub: Hub = websocket.state.hub
    token = websocket.query_params.get("token") or ""
    since = _parse_since(websocket.query_params.get("since"))
    # Accepted first, so that a refusal can carry a close code the client can read.
    await websocket.accept()
    trusted = hub.live.trusted
    digest = token_digest(token)
    partial = False
    principal: Principal | None = None
    scope: frozenset[str] | None = None
    try:
        found = await token_principal(hub.pool, token)
        if found is None:
            trusted.discard(digest)
        else:
            principal, expires_at = found
            scope = await _scope(hub, principal)
            trusted.trust(digest, principal.username, (principal, scope), expires_at)
    except _DB_ERRORS as exc:
        vouched = None if since is None else trusted.vouched(digest, datetime.now(UTC))
        if vouched is None:
            logger.warning("live: cannot check a token: %s", exc)
            await _farewell(websocket, CLOSE_TRY_AGAIN, "the database is unavailable; try again")
            return
        principal, scope = vouched
        partial = True
    if principal is None:
        await _farewell(
            websocket, CLOSE_BAD_TOKEN, "the token is unknown, expired or revoked; sign in again"
        )
        return
    # Device-level deltas are for the screens of one facility, not a district's.
    device_level = principal.role in ("manager", "staff")
    client = LiveClient(
        scope,
        hub.settings.live_client_queue,
        device_level=device_level,
        username=principal.username,
    )
    with hub.live.connect(client):
        floor = _UNSTORED_ONLY
        if not partial:
            try:
                floor = await _start(websocket, hub, principal, scope, since)
            except _DB_ERRORS as exc:
                if since is None:
                    logger.warning("live: cannot build a snapshot: %s", exc)
                    await _farewell(
                        websocket, CLOSE_TRY_AGAIN, "the database is unavailable; try again"
                    )
                    return
                partial = True
            except (WebSocketDisconnect, RuntimeError):
                return
        if partial:
            logger.info("live: %s resumes partially: the database is unreachable", client.username)
            resumed = {"type": "resumed", "change_id": since, "partial": True}
            try:
                await websocket.send_text(encode_message(resumed, None).text)
            except (WebSocketDisconnect, RuntimeError):
                return
        await _serve(websocket, send, hub, client, floor, token, partial=partial)


def _parse_since(text: str | None) -> int | None:
    """The change id a client resumes after; None (a fresh snapshot) for anything else."""
    if text is None or not _SINCE.match(text):
        return None
    return int(text)


async def _scope(hub: Hub, principal: Principal) -> frozenset[str] | None:
    """The facilities the caller sees (None: all of them)."""
    if principal.sees_all:
        return None
    if principal.role == "regulator":
        if principal.district is None:
            return frozenset()
        async with hub.pool.connection() as conn:
            return await district_facilities(conn, principal.district)
    return frozenset() if principal.facility_id is None else frozenset({principal.facility_id})


async def _start(
    websocket: WebSocket,
    hub: Hub,
    principal: Principal,
    scope: frozenset[str] | None,
    since: int | None,
) -> int:
    """Send the snapshot, or `resumed` and what was missed; the change id deltas follow."""
    # Everything is read first and sent after: a slow socket must not hold a connection.
    async with hub.pool.connection() as conn:
        resumed: list[dict[str, Any]] | None = None
        if since is not None:
            newest = await last_change_id(conn)
            oldest = await oldest_change_id(conn)
            if since <= newest and (since == newest or (oldest or 0) <= since + 1):
                resumed = await _resume(hub, conn, principal, scope, since=since, upto=newest)
        if resumed is None:
            # End the reads above: the snapshot's isolation is set as its transaction begins.
            await conn.rollback()
            async with conn.transaction():
                # One view of the database for the change id and the alerts it covers.
                await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                snapshot = await _snapshot(hub, conn, principal, scope)
    if resumed is not None:
        for message in resumed:
            await websocket.send_text(encode_message(message, None).text)
        upto: int = resumed[0]["change_id"]
        return upto
    await websocket.send_text(encode_message(snapshot, None).text)
    change_id: int = snapshot["change_id"]
    return change_id


async def _snapshot(
    hub: Hub, conn: AsyncConnection[Any], principal: Principal, scope: frozenset[str] | None
) -> dict[str, Any]:
    change_id = await last_change_id(conn)
    facilities = await facility_rows(conn, scope)
    ids = [facility["id"] for facility in facilities]
    statuses, zones = await _statuses_and_zones(hub, conn, ids)
    for facility in facilities:
        facility["status"] = statuses.get(facility["id"])
    alerts = await open_alerts(conn, None if scope is None else sorted(scope))
    snapshot: dict[str, Any] = {
        "type": "snapshot",
        "change_id": change_id,
        "facilities": facilities,
        "alerts": [alert_json(alert) for alert in alerts],
        "zones": zones,
    }
    if principal.role in ("manager", "staff"):
        snapshot["devices"] = await devices(conn, facility_ids=scope or frozenset())
    return snapshot


async def _statuses_and_zones(
    hub: Hub, conn: AsyncConnection[Any], ids: list[str]
) -> tuple[dict[str, dict[str, Any]], dict[str, list[dict[str, Any]]]]:
    """What the status watcher last published (so deltas continue from it), else fresh."""
    watcher = hub.status
    statuses = watcher.statuses(ids) if watcher.ready.is_set() else {}
    zones = watcher.zones(ids) if watcher.ready.is_set() else {}
    missing = [fid for fid in ids if fid not in statuses]
    if missing:
        # Registered since the watcher's last poll, or the watcher has not read yet.
        statuses.update(await facility_statuses(conn, missing))
        fresh = await zone_status(conn, missing)
        zones.update({fid: fresh.get(fid, []) for fid in missing})
    return statuses, zones


async def _resume(
    hub: Hub,
    conn: AsyncConnection[Any],
    principal: Principal,
    scope: frozenset[str] | None,
    *,
    since: int,
    upto: int,
) -> list[dict[str, Any]]:
    """`resumed`, the missed alert changes, then the current status of what is in scope."""
    missed = await changes_between(conn, since, upto, scope)
    rows = await facility_rows(conn, scope)
    ids = [row["id"] for row in rows]
    statuses, zones = await _statuses_and_zones(hub, conn, ids)
    device_list = (
        await devices(conn, facility_ids=scope or frozenset())
        if principal.role in ("manager", "staff")
        else []
    )
    messages: list[dict[str, Any]] = [{"type": "resumed", "change_id": upto}]
    messages += [{**change, "change_id": change_id} for change_id, _, change in missed]
    # Status deltas are not kept: what the client missed of them is the current state.
    messages += [facility_status_message(fid, status) for fid, status in statuses.items()]
    messages += [
        zone_count_message(fid, zone)
        for fid, facility_zones in zones.items()
        for zone in facility_zones
    ]
    messages += [device_status_message(device) for device in device_list]
    return messages


async def _serve(
    websocket: WebSocket,
    send: Send,
    hub: Hub,
    client: LiveClient,
    floor: int,
    token: str,
    *,
    partial: bool = False,
) -> None:
    """Write the queue to the socket until the client leaves, lags or loses its token (or,
    `partial`, until the database is back)."""
    writer = asyncio.create_task(_write(send, client, floor))
    reader = asyncio.create_task(_read(websocket))
    lagging = asyncio.create_task(client.lagging.wait())
    revoked = asyncio.create_task(_token_lapses(hub, token, client))
    back = asyncio.create_task(_database_back(hub) if partial else asyncio.Event().wait())
    tasks = (writer, reader, lagging, revoked, back)
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    if reader in done or writer in done:
        return
    if lagging in done:
        await _farewell(
            websocket,
            CLOSE_LAGGING,
            "you fell behind; reconnect with since=<the last change_id you got>",
            message={
                "type": "lagging",
                "message": "this client fell behind and is disconnected; "
                "reconnect with since=<the last change_id it received>",
            },
        )
    elif revoked in done:
        await _farewell(websocket, CLOSE_BAD_TOKEN, "the token expired or was revoked")
    elif back in done:
        await _farewell(
            websocket, CLOSE_RECONNECT, "the database is back; reconnect with since=<change_id>"
        )


async def _database_back(hub: Hub) -> None:
    """Return once the database answers again.

    The live feed's own session says when to look (it reconnects and catches up first),
    so the screens waiting out an outage do not each queue for the pool meanwhile, ahead
    of the spool's replay when the database returns.
    """
    while True:
        await asyncio.sleep(DATABASE_BACK_POLL_S)
        await hub.live.listening.wait()
        try:
            async with hub.pool.connection() as conn:
                await last_change_id(conn)
        except _DB_ERRORS:
            continue
        return


async def _write(send: Send, client: LiveClient, floor: int) -> None:
    written = 0
    while True:
        messages = [
            message
            for message in await client.take(FRAME_MAX_MESSAGES)
            # Already in the snapshot or the replay.
            if message.change_id is None or message.change_id > floor
        ]
        if not messages:
            continue
        if len(messages) == 1:
            # The event built once for every client.
            await send(messages[0].event)
        else:
            # Several waiting: one frame, a JSON array of them in order (docs/api.md).
            text = "[" + ",".join(message.text for message in messages) + "]"
            await send({"type": "websocket.send", "text": text})
        written += 1
        if written % WRITE_BURST == 0:
            # A send to a willing socket never suspends: let the others (and the feed,
            # with the next alert) have the loop between bursts.
            await asyncio.sleep(0)


async def _read(websocket: WebSocket) -> None:
    """Read (and ignore) what the client sends, until it closes."""
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return


async def _token_lapses(hub: Hub, token: str, client: LiveClient) -> None:
    """Return once the token is no longer good (a database outage is not that): checked
    every TOKEN_RECHECK_S, and at once when the feed says the account's sign-in ended."""
    while True:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(TOKEN_RECHECK_S):
                await client.recheck.wait()
        client.recheck.clear()
        try:
            if await principal_for_token(hub.pool, token) is None:
                hub.live.trusted.discard(token_digest(token))
                return
        except _DB_ERRORS:
            continue


async def _farewell(
    websocket: WebSocket, code: int, reason: str, *, message: dict[str, Any] | None = None
) -> None:
    """Send a last message and close with `code`, unless the client is gone or stuck."""
    with contextlib.suppress(WebSocketDisconnect, RuntimeError, OSError, TimeoutError):
        async with asyncio.timeout(FAREWELL_S):
            if message is not None:
                await websocket.send_text(json.dumps(message, ensure_ascii=False))
            await websocket.close(code, reason)


router.routes.append(WebSocketRoute("/live", LiveEndpoint(), name="live"))
