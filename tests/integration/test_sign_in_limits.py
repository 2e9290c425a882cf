"""Sign-in limits: a growing backoff, then a lock, per account name and per client address."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from hub.auth import ACCOUNT_LIMITS, ADDRESS_LIMITS, SignInGuard, login
from hub.cli import main
from hub.errors import AuthError, SignInLimitError
from tests.fix_api import PASSWORD, Api, asgi_on
from tests.fix_hub import connect_db, rows

pytestmark = [pytest.mark.mqtt, pytest.mark.db]

WRONG = "not the password 1"


@contextlib.asynccontextmanager
async def client_at(api: Api, address: str) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the same hub whose requests come from `address`."""
    transport = httpx.ASGITransport(app=asgi_on(api.hub), client=(address, 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://hub.test") as client:
        yield client


async def sign_in(client: httpx.AsyncClient, username: str, password: str) -> httpx.Response:
    """POST /auth/login."""
    return await client.post(
        "/api/v1/auth/login", json={"username": username, "password": password}
    )


def assert_limited(response: httpx.Response) -> dict[str, Any]:
    """A 429 that says, in the body and in Retry-After, when to try again."""
    assert response.status_code == 429, response.text
    body: dict[str, Any] = response.json()
    assert body["error"] == "too_many_requests"
    assert "try again in" in body["message"]
    retry_after = int(response.headers["Retry-After"])
    assert retry_after >= 1
    assert body["retry_after_s"] == retry_after
    retry_at = datetime.fromisoformat(body["retry_at"])
    assert retry_at > datetime.now(UTC) - timedelta(seconds=2)
    assert abs((retry_at - datetime.now(UTC)).total_seconds() - retry_after) < 5
    return body


async def audit(api: Api, action: str) -> list[tuple[Any, ...]]:
    """(actor, username, address, detail) of the account audit rows of `action`."""
    async with await connect_db(api.hub.settings) as conn:
        return await rows(
            conn,
            "SELECT actor, username, address, detail FROM account_audit"
            " WHERE action = %s ORDER BY id",
            action,
        )


async def test_a_thousand_wrong_passwords_lock_the_account_and_slow_nobody_else(api: Api) -> None:
    """1,000 wrong passwords in a row lock the account after a few hashed tries, cheaply,
    while another user signs in from elsewhere as fast as ever; the lock is audited."""
    others: list[float] = []
    statuses: Counter[int] = Counter()
    last: httpx.Response | None = None

    async def attack() -> float:
        nonlocal last
        started = time.perf_counter()
        async with client_at(api, "203.0.113.7") as client:
            for _ in range(1000):
                last = await sign_in(client, "staff", WRONG)
                statuses[last.status_code] += 1
        return time.perf_counter() - started

    async def colleague() -> None:
        async with client_at(api, "198.51.100.20") as client:
            for _ in range(5):
                started = time.perf_counter()
                response = await sign_in(client, "manager", PASSWORD)
                others.append(time.perf_counter() - started)
                assert response.status_code == 200, response.text

    attack_s, _ = await asyncio.gather(attack(), colleague())

    # Only the free failures were hashed (401); every other try was refused unchecked.
    assert statuses[401] == ACCOUNT_LIMITS.free_failures, statuses
    assert statuses[429] == 1000 - ACCOUNT_LIMITS.free_failures, statuses
    assert set(statuses) == {401, 429}
    # 1,000 argon2 checks take over a minute on two cores; refusals take milliseconds.
    assert attack_s < 30, f"1,000 refused sign-ins took {attack_s:.1f} s"
    assert max(others) < 5, f"a colleague's sign-ins took {others}"
    assert last is not None
    body = assert_limited(last)
    assert "locked" in body["message"] and "administrator" in body["message"]
    assert body["retry_after_s"] > ACCOUNT_LIMITS.lock_s - 60

    # The right password does not get through a lock either.
    async with client_at(api, "203.0.113.7") as client:
        assert_limited(await sign_in(client, "staff", PASSWORD))
    async with client_at(api, "192.0.2.99") as client:
        assert_limited(await sign_in(client, "staff", PASSWORD))

    locks = await audit(api, "locked")
    assert locks == [("hub", "staff", None, locks[0][3])]
    assert f"{ACCOUNT_LIMITS.lock_failures} failed sign-ins" in locks[0][3]
    async with await connect_db(api.hub.settings) as conn:
        (locked_until,) = (
            await rows(
                conn,
                "SELECT locked_until FROM login_failures WHERE kind = 'account' AND key = %s",
                "staff",
            )
        )[0]
    assert locked_until > datetime.now(UTC) + timedelta(seconds=ACCOUNT_LIMITS.lock_s - 60)


async def test_the_backoff_grows_and_a_good_sign_in_ends_it(api: Api) -> None:
    """After the free failures each try waits longer; once it is over, the right password
    signs in and the slate is wiped."""
    async with client_at(api, "203.0.113.8") as client:
        for _ in range(ACCOUNT_LIMITS.free_failures):
            assert (await sign_in(client, "regulator", WRONG)).status_code == 401
        first = assert_limited(await sign_in(client, "regulator", PASSWORD))
        # That refused try counted too: the next wait is longer.
        second = assert_limited(await sign_in(client, "regulator", PASSWORD))
        assert second["retry_after_s"] > first["retry_after_s"]
        assert "locked" not in second["message"]
        await asyncio.sleep(second["retry_after_s"] + 0.2)
        assert (await sign_in(client, "regulator", PASSWORD)).status_code == 200
        # Forgotten: five more slips are free again.
        for _ in range(ACCOUNT_LIMITS.free_failures):
            assert (await sign_in(client, "regulator", WRONG)).status_code == 401


async def test_unknown_names_are_limited_exactly_like_real_ones(api: Api) -> None:
    """A guesser cannot tell a real account from a made-up one by how it is limited."""
    names = ["staff_other", "nobody-here", "x" * 64, "a.b@c-d_e"]
    seen: dict[str, list[int]] = {}
    for n, name in enumerate(names):
        async with client_at(api, f"203.0.113.{20 + n}") as client:
            seen[name] = [
                (await sign_in(client, name, WRONG)).status_code
                for _ in range(ACCOUNT_LIMITS.free_failures + 3)
            ]
    expected = [401] * ACCOUNT_LIMITS.free_failures + [429] * 3
    assert seen == dict.fromkeys(names, expected)


async def test_hostile_names_and_passwords_never_reach_the_limiter_or_break_it(api: Api) -> None:
    """Malformed names, huge or odd passwords: a plain 401 or 422, never a 500."""
    async with client_at(api, "203.0.113.40") as client:
        for username, password in [
            ("staff'; DROP TABLE login_failures; --", WRONG),
            ("staff\u0000", WRONG),
            ("", WRONG),
            ("staff", "p" * 5000),
            ("staff", "\u0000" * 10),
            ("卫健委", WRONG),
            ("staff", "😀" * 200),
        ]:
            response = await sign_in(client, username, password)
            assert response.status_code in (401, 422), (username[:20], response.text)
    assert (await api.login("staff")).status_code == 200


async def test_one_address_spraying_many_names_is_locked_out_itself(api: Api) -> None:
    """One password tried over many names from one address backs off, then locks that
    address for every account not signed in from there before; the same accounts still
    sign in from another address."""
    statuses: Counter[int] = Counter()
    async with client_at(api, "203.0.113.66") as client:
        # A colleague behind the same address, signed in before the spray began.
        assert (await sign_in(client, "manager", PASSWORD)).status_code == 200
        for n in range(ADDRESS_LIMITS.lock_failures + 20):
            response = await sign_in(client, f"made-up-{n}", WRONG)
            statuses[response.status_code] += 1
        assert statuses[401] == ADDRESS_LIMITS.free_failures, statuses
        body = assert_limited(await sign_in(client, "admin", PASSWORD))
        assert "this client address is locked" in body["message"]
        # Known at this address: only the account's own limit applies to it.
        assert (await sign_in(client, "manager", PASSWORD)).status_code == 200
        assert (await sign_in(client, "manager", WRONG)).status_code == 401
    async with client_at(api, "198.51.100.66") as client:
        assert (await sign_in(client, "admin", PASSWORD)).status_code == 200
    locks = await audit(api, "locked")
    assert [(actor, username, address) for actor, username, address, _ in locks] == [
        ("hub", None, "203.0.113.66")
    ]


async def test_parallel_guesses_for_one_name_are_not_all_hashed(api: Api) -> None:
    """Fifty guesses at once for one name: at most a handful are checked, none fails."""
    async with client_at(api, "203.0.113.77") as client:
        responses = await asyncio.gather(
            *(sign_in(client, "staff_other", f"{WRONG}{n}") for n in range(50))
        )
    statuses = Counter(response.status_code for response in responses)
    assert set(statuses) <= {401, 429}, statuses
    assert statuses[401] <= ACCOUNT_LIMITS.free_failures, statuses
    for response in responses:
        if response.status_code == 429:
            assert_limited(response)


async def test_failures_are_counted_in_the_database_for_every_hub_process(api: Api) -> None:
    """Two hub processes (two guards) on one database count the same failures."""
    guards = (SignInGuard(), SignInGuard())
    for n in range(ACCOUNT_LIMITS.free_failures):
        with pytest.raises(AuthError) as refused:
            await login(api.hub.pool, "manager", WRONG, 60, address="10.1.1.1", guard=guards[n % 2])
        assert refused.value.code == "unauthorized"
    with pytest.raises(SignInLimitError):
        await login(api.hub.pool, "manager", PASSWORD, 60, address="10.1.1.2", guard=guards[1])


async def test_an_admin_unlocks_an_account_from_the_command_line(
    api: Api, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`carehub users unlock NAME` lifts the lock at once, audited; `users list` shows it."""
    settings = api.hub.settings
    monkeypatch.setenv("CAREHUB_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("CAREHUB_DATABASE_SCHEMA", settings.database_schema)
    monkeypatch.setenv("CAREHUB_TIMESCALEDB", "off")
    async with client_at(api, "203.0.113.90") as client:
        for _ in range(ACCOUNT_LIMITS.lock_failures):
            await sign_in(client, "staff", WRONG)
        assert "locked" in assert_limited(await sign_in(client, "staff", PASSWORD))["message"]

        assert await asyncio.to_thread(main, ["users", "list"]) == 0
        listing = capsys.readouterr().out
        (line,) = [line for line in listing.splitlines() if line.startswith("staff ")]
        assert "locked until" in line

        assert await asyncio.to_thread(main, ["users", "unlock", "staff"]) == 0
        assert "account staff unlocked" in capsys.readouterr().out
        # The hub's own cache of the lock is believed for a few seconds at most.
        deadline = time.monotonic() + 10
        while (response := await sign_in(client, "staff", PASSWORD)).status_code == 429:
            assert time.monotonic() < deadline, response.text
            await asyncio.sleep(0.5)
        assert response.status_code == 200, response.text

    assert await asyncio.to_thread(main, ["users", "unlock", "nobody-here"]) == 2
    assert "no account 'nobody-here'" in capsys.readouterr().err
    unlocks = await audit(api, "unlocked")
    assert [(username, detail) for _, username, _, detail in unlocks] == [("staff", "was locked")]
    assert unlocks[0][0].startswith("cli")
