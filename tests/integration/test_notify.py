"""Staff notifications against real local HTTP endpoints and a real PostgreSQL outbox.

Alerts are written with SQL, their notices queued with `enqueue_notices` in the same
transaction, and a Notifier sends them. Its clock is a ManualClock the test moves, so
retries 1, 2, 4 ... s apart happen in milliseconds of test time.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import parse_qs, urlsplit

import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool

from hub.clock import ManualClock
from hub.errors import NotifyError
from hub.models import AlertChange, Priority
from hub.notify import Notifier, add_webhook
from hub.notify.formats import dingtalk_sign, json_signature
from hub.notify.outbox import enqueue_notices
from hub.rules import FloodRule
from hub.settings import Settings
from hub.storage.pool import create_pool
from tests.fix_hub import DB, FACILITY, OTHER_FACILITY, background_task, rows
from tests.samples import raised_alert

pytestmark = [pytest.mark.db]

Pool = AsyncConnectionPool[psycopg.AsyncConnection[Any]]
ROBOT_OK = (200, b'{"errcode":0,"errmsg":"ok"}')
FAIL = (500, b"internal error")


# -- a real HTTP endpoint ----------------------------------------------------------------


@dataclass
class Received:
    """One request as the endpoint read it off the socket."""

    method: str
    target: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def query(self) -> dict[str, list[str]]:
        return parse_qs(urlsplit(self.target).query)


@dataclass
class Endpoint:
    """A tiny HTTP/1.1 server: answers from `script` in order, then with `then`."""

    script: list[tuple[int, bytes]] = field(default_factory=list)
    then: tuple[int, bytes] = ROBOT_OK
    # When set, every request waits for it before it is answered.
    hold: asyncio.Event | None = None
    requests: list[Received] = field(default_factory=list)
    url: str = ""
    _server: asyncio.Server | None = None

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self.url

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            request_line, *header_lines = head.decode("latin-1").split("\r\n")
            method, target, _version = request_line.split(" ", 2)
            headers = {}
            for line in header_lines:
                if ":" in line:
                    name, value = line.split(":", 1)
                    headers[name.strip().lower()] = value.strip()
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            self.requests.append(Received(method, target, headers, body))
            if self.hold is not None:
                await self.hold.wait()
            status, reply = self.script.pop(0) if self.script else self.then
            writer.write(
                f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(reply)}\r\nConnection: close\r\n\r\n".encode()
                + reply
            )
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()


@contextlib.asynccontextmanager
async def serving(*endpoints: Endpoint) -> AsyncIterator[None]:
    for endpoint in endpoints:
        await endpoint.start()
    try:
        yield
    finally:
        for endpoint in endpoints:
            await endpoint.stop()


def refused_url() -> str:
    """An http:// URL on a local port nothing listens on: connections are refused."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/hook?token=dead-secret"


# -- fixtures and helpers ----------------------------------------------------------------


@pytest.fixture
def settings(migrated: Settings) -> Settings:
    """The hub's settings with a short HTTP timeout and 4 tries per notice."""
    return migrated.model_copy(update={"notify_timeout_s": 2.0, "notify_max_attempts": 4})


@pytest.fixture
async def pool(settings: Settings) -> AsyncIterator[Pool]:
    """An open connection pool on the test's schema."""
    opened: Pool = create_pool(settings, min_size=1)
    await opened.open(wait=True)
    try:
        yield opened
    finally:
        await opened.close()


def running(notifier: Notifier) -> contextlib.AbstractAsyncContextManager[asyncio.Task[None]]:
    """Run the notifier as a task; cancel and await it afterwards."""
    return background_task(notifier.run())


async def drive(
    clock: ManualClock,
    notifier: Notifier,
    done: Callable[[], Awaitable[bool]],
    *,
    step_s: float = 2.0,
    timeout: float = 30.0,
) -> None:
    """Move the clock `step_s` at a time (waking the notifier) until `done`, or fail."""
    deadline = time.monotonic() + timeout
    while not await done():
        if time.monotonic() > deadline:
            pytest.fail(f"not done within {timeout} s of test time")
        clock.advance(step_s)
        notifier.wake()
        await asyncio.sleep(0.02)


_seq = 0


async def raise_alert(
    db: DB,
    clock: ManualClock,
    settings: Settings,
    *,
    kind: str,
    priority: Priority,
    device_id: str,
    zone_id: str | None = "room-101",
    facility_id: str = FACILITY,
) -> tuple[AlertChange, int]:
    """Store an alert and queue its notices in one transaction, as the alert engine does."""
    global _seq  # noqa: PLW0603 - unique subjects across one test module's alerts
    _seq += 1
    now = clock.now()
    async with db.transaction():
        cur = await db.execute(
            "INSERT INTO alerts (facility_id, zone_id, device_id, subject, kind, priority,"
            " latched, seq, raised_at, last_raised_at)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING id",
            (
                facility_id,
                zone_id,
                device_id,
                device_id,
                kind,
                priority,
                priority == "high",
                _seq,
                now,
                now,
            ),
        )
        row = await cur.fetchone()
        assert row is not None
        alert = raised_alert(
            id=int(row[0]),
            facility_id=facility_id,
            zone_id=zone_id,
            device_id=device_id,
            subject=device_id,
            kind=kind,
            priority=priority,
            latched=priority == "high",
            seq=_seq,
            raised_at=now,
            last_raised_at=now,
        )
        change = AlertChange(alert, "raise", None, "hub", now)
        queued = await enqueue_notices(
            db,
            change,
            now=now,
            flood=FloodRule.of(settings),
        )
    return change, queued


async def states(db: DB) -> list[tuple[Any, ...]]:
    return await rows(
        db, "SELECT webhook_id, event, state, attempts FROM notifications ORDER BY id"
    )


# -- the tests ---------------------------------------------------------------------------


async def test_wecom_and_dingtalk_robots_get_their_formats_after_failing_the_first_tries(
    db: DB, pool: Pool, settings: Settings, clock: ManualClock
) -> None:
    """An sos reaches a 企业微信 and a signed 钉钉 robot that fail twice first, in their formats."""
    wecom = Endpoint(script=[FAIL, FAIL])
    dingtalk = Endpoint(script=[FAIL, (200, b'{"errcode":310000,"errmsg":"sign not match"}')])
    async with serving(wecom, dingtalk):
        wecom_id = await add_webhook(
            db, FACILITY, f"{wecom.url}/cgi-bin/webhook/send?key=k-123", "wecom"
        )
        dingtalk_id = await add_webhook(
            db, FACILITY, f"{dingtalk.url}/robot/send?access_token=t-456", "dingtalk", "SECxyz"
        )
        change, queued = await raise_alert(
            db, clock, settings, kind="sos", priority="high", device_id="eb-1"
        )
        assert queued == 2
        notifier = Notifier(settings, pool, clock)

        async def both_sent() -> bool:
            return [row[2] for row in await states(db)] == ["sent", "sent"]

        async with running(notifier) as task:
            await drive(clock, notifier, both_sent)
            assert not task.done()

    assert await states(db) == [(wecom_id, "new", "sent", 3), (dingtalk_id, "new", "sent", 3)]
    alert_id = str(change.alert.id)
    text = "【紧急呼叫】阳光托育养老中心 101 室 设备 eb-1 求助，请立即处理"

    assert len(wecom.requests) == 3
    assert {r.body for r in wecom.requests} == {wecom.requests[0].body}
    assert {r.headers["x-carehub-notification"] for r in wecom.requests} == {
        wecom.requests[0].headers["x-carehub-notification"]
    }
    first = wecom.requests[0]
    assert (first.method, first.query) == ("POST", {"key": ["k-123"]})
    assert first.headers["content-type"].startswith("application/json")
    body = first.json()
    assert set(body) == {"msgtype", "markdown"}
    assert body["msgtype"] == "markdown"
    assert set(body["markdown"]) == {"content"}
    content = body["markdown"]["content"]
    assert content.startswith("### 【紧急呼叫】阳光托育养老中心\n")
    assert f'<font color="warning">{text}</font>' in content
    assert f"> 告警编号：{alert_id}" in content

    assert len(dingtalk.requests) == 3
    for request in dingtalk.requests:
        query = request.query
        assert query["access_token"] == ["t-456"]
        assert query["sign"] == [dingtalk_sign("SECxyz", int(query["timestamp"][0]))]
        body = request.json()
        assert set(body) == {"msgtype", "markdown", "at"}
        assert body["msgtype"] == "markdown"
        assert body["markdown"]["title"] == "【紧急呼叫】阳光托育养老中心"
        assert f"**{text}**" in body["markdown"]["text"]
        assert body["at"] == {"isAtAll": True}

    endpoints = await rows(
        db,
        "SELECT id, consecutive_failures, last_success_at IS NOT NULL, last_error"
        " FROM webhooks ORDER BY id",
    )
    assert endpoints == [
        (wecom_id, 0, True, "HTTP 500: internal error"),
        (dingtalk_id, 0, True, "errcode 310000: sign not match"),
    ]
    await notifier.refresh_health()
    health = notifier.health()
    assert (health["status"], health["webhooks"], health["failing"]) == ("ok", 2, 0)
    assert health["pending"] == 0


async def test_a_dead_endpoint_fails_after_its_tries_shows_on_health_and_stops_nothing(
    db: DB, pool: Pool, settings: Settings, clock: ManualClock
) -> None:
    """Connection refused: the notice fails after 4 tries, health is degraded, sending goes on."""
    dead_id = await add_webhook(db, FACILITY, refused_url(), "json")
    await raise_alert(db, clock, settings, kind="device_offline", priority="medium", device_id="d1")
    notifier = Notifier(settings, pool, clock)

    async def failed() -> bool:
        return [row[2] for row in await states(db)] == ["failed"]

    live = Endpoint(then=(204, b""))
    async with serving(live), running(notifier) as task:
        await drive(clock, notifier, failed)
        ((_, _, state, attempts),) = await states(db)
        assert (state, attempts) == ("failed", settings.notify_max_attempts)
        ((error,),) = await rows(db, "SELECT last_error FROM notifications")
        assert "ConnectError" in error

        await notifier.refresh_health()
        health = notifier.health()
        assert health["status"] == "degraded"
        assert health["failing"] == 1
        assert health["failed_last_hour"] == 1
        (endpoint,) = health["endpoints"]
        assert endpoint["id"] == dead_id
        assert endpoint["consecutive_failures"] == settings.notify_max_attempts
        assert "ConnectError" in endpoint["last_error"]
        assert endpoint["last_success_at"] is None
        # The robot key or token in the query is not shown.
        assert "dead-secret" not in json.dumps(health)
        assert endpoint["url"].endswith("/hook")

        # Still running: a facility with a working endpoint is notified.
        await add_webhook(db, OTHER_FACILITY, f"{live.url}/carehub", "json", "s3cret")
        change, _ = await raise_alert(
            db,
            clock,
            settings,
            kind="fall",
            priority="high",
            device_id="fs-9",
            zone_id=None,
            facility_id=OTHER_FACILITY,
        )

        async def delivered() -> bool:
            return len(live.requests) == 1

        await drive(clock, notifier, delivered, step_s=0.5)
        assert not task.done()

    request = live.requests[0]
    notice = request.json()
    assert notice["event"] == "new"
    assert notice["alert_id"] == str(change.alert.id)
    assert (notice["facility_id"], notice["facility_name"]) == (OTHER_FACILITY, "月亮湾颐养院")
    assert (notice["kind"], notice["priority"], notice["device_id"]) == ("fall", "high", "fs-9")
    assert notice["text"] == "【跌倒】月亮湾颐养院 设备 fs-9 检测到跌倒，请立即处理"
    timestamp = int(request.headers["x-carehub-timestamp"])
    assert request.headers["x-carehub-signature"] == json_signature(
        "s3cret", timestamp, request.body
    )


async def test_a_flood_is_one_summary_and_a_fall_during_it_still_rings(
    db: DB, pool: Pool, settings: Settings, clock: ManualClock
) -> None:
    """30 offline devices: 10 notices, then 1 summary of 20; a fall in the flood comes alone."""
    endpoint = Endpoint(then=(200, b"ok"))
    async with serving(endpoint):
        webhook_id = await add_webhook(db, FACILITY, f"{endpoint.url}/hook", "json")
        for number in range(30):
            _, queued = await raise_alert(
                db,
                clock,
                settings,
                kind="device_offline",
                priority="medium",
                device_id=f"off-{number}",
            )
            assert queued == 1
        fall, _ = await raise_alert(
            db, clock, settings, kind="fall", priority="high", device_id="fs-1"
        )

        assert await rows(db, "SELECT count(*) FROM alerts WHERE facility_id = %s", FACILITY) == [
            (31,)
        ]
        events = await rows(
            db,
            "SELECT event, count(*), sum(group_count) FROM notifications"
            " WHERE webhook_id = %s GROUP BY event ORDER BY event",
            webhook_id,
        )
        assert events == [("flood", 1, 20), ("new", 11, 11)]
        (fall_rows,) = await rows(
            db, "SELECT count(*) FROM notifications WHERE alert_id = %s", fall.alert.id
        )
        assert fall_rows == (1,)

        notifier = Notifier(settings, pool, clock)

        async def all_sent() -> bool:
            return {row[2] for row in await states(db)} == {"sent"}

        async with running(notifier):
            await drive(clock, notifier, all_sent)

    assert len(endpoint.requests) == 12
    notices = [request.json() for request in endpoint.requests]
    (summary,) = [notice for notice in notices if notice["event"] == "flood"]
    assert summary["count"] == 20
    assert summary["kinds"] == {"device_offline": 20}
    assert summary["window_count"] == 30
    assert summary["text"] == (
        "【告警汇总】阳光托育养老中心 10 分钟内共 30 条告警，以下 20 条合并通知：设备离线 ×20"
    )
    singles = [notice for notice in notices if notice["event"] == "new"]
    assert sorted(notice["kind"] for notice in singles) == ["device_offline"] * 10 + ["fall"]


async def test_a_notice_is_queued_only_for_new_escalated_and_overdue_changes(
    db: DB, settings: Settings, clock: ManualClock
) -> None:
    """Repeats, acks and shelved alerts send nothing; renotify and overdue do, and go singly."""
    await add_webhook(db, FACILITY, "https://example.invalid/hook", "json")
    change, queued = await raise_alert(
        db, clock, settings, kind="sos", priority="high", device_id="eb-1"
    )
    assert queued == 1

    async def queue(action: str, **alert_changes: Any) -> int:
        alert = replace(change.alert, **alert_changes)
        async with db.transaction():
            return await enqueue_notices(
                db,
                AlertChange(alert, action, "active", "hub", clock.now()),
                now=clock.now(),
                flood=FloodRule.of(settings),
            )

    assert await queue("repeat", count=2) == 0
    assert await queue("acknowledge", state="acknowledged") == 0
    assert await queue("raise", shelved=True) == 0
    clock.advance(61)
    assert await queue("renotify") == 1
    clock.advance(120)
    assert await queue("overdue") == 1
    texts = await rows(db, "SELECT event, body->>'text' FROM notifications ORDER BY id")
    assert [event for event, _ in texts] == ["new", "escalated", "overdue"]
    assert "已 1 分钟无人确认" in texts[1][1]
    assert "已 3 分钟无人确认，已标记为超时呼叫" in texts[2][1]


async def test_no_database_connection_is_held_while_a_post_waits(
    db: DB, settings: Settings, clock: ManualClock
) -> None:
    """With a one-connection pool, the connection is free while the endpoint is still answering."""
    hold = asyncio.Event()
    endpoint = Endpoint(then=(200, b"ok"), hold=hold)
    async with serving(endpoint):
        await add_webhook(db, FACILITY, f"{endpoint.url}/slow", "json")
        await raise_alert(db, clock, settings, kind="sos", priority="high", device_id="eb-1")
        single: Pool = AsyncConnectionPool(
            settings.database_url,
            min_size=1,
            max_size=1,
            kwargs={"options": f"-c search_path={settings.database_schema},public"},
            open=False,
        )
        await single.open(wait=True)
        try:
            notifier = Notifier(settings, single, clock)
            async with running(notifier):
                deadline = time.monotonic() + 10
                while not endpoint.requests:
                    assert time.monotonic() < deadline, "the notice was never sent"
                    await asyncio.sleep(0.02)
                async with single.connection(timeout=2) as conn:
                    cur = await conn.execute("SELECT state FROM notifications")
                    assert await cur.fetchall() == [("sending",)]
                hold.set()

                async def sent() -> bool:
                    return [row[2] for row in await states(db)] == ["sent"]

                await drive(clock, notifier, sent, step_s=0.1)
        finally:
            await single.close()


async def test_a_webhook_is_refused_with_a_reason(db: DB) -> None:
    """Bad formats, schemes, hosts, facilities and a WeCom secret are refused, saying why."""
    cases: Sequence[tuple[tuple[str, str, str, str], str]] = [
        ((FACILITY, "https://h/x", "slack", ""), "format must be one of json, wecom, dingtalk"),
        ((FACILITY, "ftp://h/x", "json", ""), "http:// or https://"),
        ((FACILITY, "https:///x", "json", ""), "with a host"),
        ((FACILITY, "https://h/x y", "json", ""), "without spaces"),
        (("f-none", "https://h/x", "json", ""), "no facility 'f-none'"),
        ((FACILITY, "https://h/x?key=1", "wecom", "SEC1"), "企业微信 robot has no signing secret"),
    ]
    for (facility_id, url, fmt, secret), reason in cases:
        with pytest.raises(NotifyError, match=reason):
            await add_webhook(db, facility_id, url, fmt, secret)
    assert await rows(db, "SELECT count(*) FROM webhooks") == [(0,)]


async def test_the_notifier_waits_out_an_unreachable_database_and_says_so(
    settings: Settings, clock: ManualClock
) -> None:
    """No database: run() keeps going, backing off, and health reports it degraded."""
    port = int(refused_url().split(":")[2].split("/")[0])
    unreachable: Pool = AsyncConnectionPool(
        f"postgresql://postgres@127.0.0.1:{port}/none",
        min_size=1,
        max_size=1,
        timeout=0.2,
        reconnect_timeout=0,
        open=False,
    )
    await unreachable.open(wait=False)
    try:
        notifier = Notifier(settings, unreachable, clock)
        async with running(notifier) as task:
            deadline = time.monotonic() + 10
            while notifier.health()["database_error"] is None:
                assert time.monotonic() < deadline, "the outage was never reported"
                await asyncio.sleep(0.05)
            await asyncio.sleep(1.5)
            assert not task.done()
            assert notifier.health()["status"] == "degraded"
    finally:
        await unreachable.close()


async def test_an_alert_is_stored_even_when_its_notices_cannot_be_queued(
    db: DB, settings: Settings, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    """Queuing runs in a savepoint: if it fails, it is logged and the alert still commits."""
    await add_webhook(db, FACILITY, "https://example.invalid/hook", "json")
    # A broken outbox: every insert into it fails.
    await db.execute("ALTER TABLE notifications ADD CONSTRAINT broken CHECK (false) NOT VALID")
    change, queued = await raise_alert(
        db, clock, settings, kind="sos", priority="high", device_id="eb-1"
    )
    assert queued == 0
    assert await rows(db, "SELECT id FROM alerts") == [(change.alert.id,)]
    assert "cannot queue notifications of alert" in caplog.text
