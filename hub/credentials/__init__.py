"""Device credentials (SPEC §7): the hub issues them, keeps a salted hash, and brokers ask it.

A device's MQTT username and client id are its device id; its password is 32 random
characters (192 bits) the hub makes and shows once. The hash is PBKDF2-HMAC-SHA256 with a
16-byte salt and 1,000 iterations: the secret is machine-made and far beyond guessing, so
stretching it buys nothing against a stolen table, while the embedded broker and the EMQX
endpoint check a password on every CONNECT (a district's reconnect after a broker restart
is thousands at once). On top, a (device, hash) pair once verified is remembered, so a
reconnecting device costs one indexed read and no hashing; a rotation changes the hash and
so misses the cache, a revocation removes it.

Brokers with a store of their own (Mosquitto's dynamic security, hub/credentials/dynsec.py)
are told of every issue, rotation and revocation through `BrokerAccounts`.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import logging
import re
import secrets
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import psycopg
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from devices.topics import ID_PATTERN
from hub.acl import Grant, device_grant, hub_grant
from hub.errors import BrokerAdminError, CredentialError, StorageError, raise_if_cancelled
from hub.settings import Settings
from hub.storage import credentials as store
from hub.storage.credentials import DeviceAccount, credentials_channel
from hub.storage.live import listen
from hub.storage.pool import connect

logger = logging.getLogger(__name__)

_ID = re.compile(ID_PATTERN)

SECRET_BYTES = 24  # 192 bits, 32 URL-safe characters
_ALGORITHM = "pbkdf2_sha256"
_ITERATIONS = 1000
_SALT_BYTES = 16
# Verified (device, stored hash) pairs remembered; a district is a few tens of thousands.
CACHE_MAX = 100_000
# How long the authority waits before it reconnects to a database that went away.
RECONNECT_S = 2.0


def new_secret() -> str:
    """A fresh device password."""
    return secrets.token_urlsafe(SECRET_BYTES)


def hash_secret(secret: str, *, salt: bytes | None = None, iterations: int = _ITERATIONS) -> str:
    """`pbkdf2_sha256$iterations$salt$hash`, salt and hash in base64."""
    salt = salt if salt is not None else secrets.token_bytes(_SALT_BYTES)
    digest = hashlib.pbkdf2_hmac("sha256", secret.encode(), salt, iterations)
    return "$".join(
        (
            _ALGORITHM,
            str(iterations),
            base64.b64encode(salt).decode(),
            base64.b64encode(digest).decode(),
        )
    )


def verify_secret(secret: str, stored: str) -> bool:
    """True when `secret` is the password `stored` was made from."""
    try:
        algorithm, iterations, salt, _ = stored.split("$")
        if algorithm != _ALGORITHM:
            return False
        again = hash_secret(secret, salt=base64.b64decode(salt), iterations=int(iterations))
    except ValueError:
        return False
    return hmac.compare_digest(again, stored)


@dataclass(frozen=True, slots=True)
class IssuedCredentials:
    """What a device is configured with; the password is shown once and never stored."""

    device_id: str
    username: str
    password: str

    def as_json(self) -> dict[str, str]:
        """The object `carehub devices credentials --json` prints and the API returns."""
        return {"device_id": self.device_id, "username": self.username, "password": self.password}


class BrokerAccounts(Protocol):
    """A broker that keeps device accounts of its own and must hear of every change."""

    async def issued(self, account: DeviceAccount, password: str) -> None:
        """The device may connect with `password` from now on (any older one no longer)."""

    async def revoked(self, device_id: str) -> None:
        """The device may no longer connect; a connected one is disconnected."""


async def issue(
    conn: AsyncConnection[Any],
    device_id: str,
    actor: str,
    *,
    rotate: bool = False,
    brokers: Sequence[BrokerAccounts] = (),
) -> IssuedCredentials:
    """Issue (or with `rotate`, replace) a registered device's credentials."""
    account = await _registered(conn, device_id)
    password = new_secret()
    if not await store.store_secret(conn, device_id, hash_secret(password), actor, rotate=rotate):
        raise CredentialError(
            "conflict",
            f"device {device_id!r} already has credentials, shown once when issued;"
            " rotate them (--rotate) to get a new password",
        )
    for broker in brokers:
        try:
            await broker.issued(account, password)
        except BrokerAdminError as exc:
            raise BrokerAdminError(
                f"the hub issued device {device_id!r} new credentials but the broker did not"
                f" take them ({exc}); once the broker answers, issue them again with --rotate"
            ) from exc
    logger.info(
        "%s credentials of device %s",
        "rotated" if rotate else "issued",
        device_id,
        extra={"device_id": device_id, "facility_id": account.facility_id},
    )
    return IssuedCredentials(device_id, device_id, password)


async def revoke(
    conn: AsyncConnection[Any],
    device_id: str,
    actor: str,
    *,
    brokers: Sequence[BrokerAccounts] = (),
) -> None:
    """Revoke a device's credentials; the brokers disconnect it."""
    account = await _registered(conn, device_id)
    if not await store.revoke_secret(conn, device_id, actor):
        raise CredentialError("not_found", f"device {device_id!r} has no credentials in force")
    for broker in brokers:
        try:
            await broker.revoked(device_id)
        except BrokerAdminError as exc:
            raise BrokerAdminError(
                f"device {device_id!r} is revoked at the hub but the broker did not hear it"
                f" ({exc}); run `carehub broker sync` once the broker answers"
            ) from exc
    logger.info(
        "revoked credentials of device %s",
        device_id,
        extra={"device_id": device_id, "facility_id": account.facility_id},
    )


async def _registered(conn: AsyncConnection[Any], device_id: str) -> DeviceAccount:
    if not _is_id(device_id):
        raise CredentialError("invalid", f"{device_id[:80]!r} is not a device id ({ID_PATTERN})")
    account = await store.find_account(conn, device_id)
    if account is None:
        raise CredentialError(
            "not_found",
            f"no device {device_id!r}; register it first (carehub devices import FILE)",
        )
    return account


def _is_id(value: str) -> bool:
    return _ID.fullmatch(value) is not None


class DeviceAuthority:
    """Answers a broker's two questions from the hub's store: who is this, what may it do.

    It keeps one database connection of its own (opened on first use, in the loop that
    asks), so the embedded broker can run in any thread, and the EMQX endpoints share it.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        hub_root: str | None = "",
        pool: AsyncConnectionPool[AsyncConnection[object]] | None = None,
    ) -> None:
        """`hub_root`: the topic root the hub's own account is granted ('' for the
        settings' root; None for every root, on a broker many test hubs share). `pool`:
        the hub's own, for the EMQX endpoints; without it, one connection of its own."""
        self._settings = settings
        self._pool = pool
        self._root = settings.topic_root
        target = settings.mqtt
        self._hub_account = (target.username, target.password) if target.username else None
        self._hub_root = settings.topic_root if hub_root == "" else hub_root
        self._conn: AsyncConnection[Any] | None = None
        self._lock = asyncio.Lock()
        # (device, stored hash) -> sha256 of the password that verified against it.
        self._verified: dict[tuple[str, str], bytes] = {}

    async def authenticate(
        self, username: str | None, password: str | None, client_id: str | None
    ) -> Grant | None:
        """The grant of a client that presents these credentials; None to refuse it."""
        if not username or password is None:
            return None  # anonymous: never, with authentication on
        if self._hub_account is not None and username == self._hub_account[0]:
            expected = self._hub_account[1] or ""
            if hmac.compare_digest(password.encode(), expected.encode()):
                return hub_grant(username, self._hub_root)
            return None
        account = await self._device(username, client_id)
        return self._check(account, password) if account is not None else None

    async def authorize(self, username: str | None, client_id: str | None) -> Grant | None:
        """The grant of a client the broker has authenticated (EMQX asks on every PUBLISH
        and SUBSCRIBE); None once its credentials are revoked."""
        if not username:
            return None
        if self._hub_account is not None and username == self._hub_account[0]:
            return hub_grant(username, self._hub_root)
        account = await self._device(username, client_id)
        if account is None:
            return None
        return device_grant(self._root, account.facility_id, account.device_id)

    async def _device(self, username: str, client_id: str | None) -> DeviceAccount | None:
        """The device account `username` names, if its credentials are in force."""
        if client_id != username or not _is_id(username):
            return None  # a device's client id is its device id (SPEC §7)
        account = await self._account(username)
        return account if account is not None and account.secret_hash is not None else None

    def _check(self, account: DeviceAccount, password: str) -> Grant | None:
        stored = account.secret_hash or ""
        key = (account.device_id, stored)
        fingerprint = hashlib.sha256(password.encode()).digest()
        known = self._verified.get(key)
        if known is not None:
            ok = hmac.compare_digest(known, fingerprint)
        else:
            ok = verify_secret(password, stored)
            if ok:
                if len(self._verified) >= CACHE_MAX:
                    self._verified.clear()
                self._verified[key] = fingerprint
        return device_grant(self._root, account.facility_id, account.device_id) if ok else None

    async def _account(self, device_id: str) -> DeviceAccount | None:
        if self._pool is not None:
            try:
                async with self._pool.connection() as conn:
                    return await store.find_account(conn, device_id)
            except (StorageError, psycopg.Error, PoolTimeout):
                raise_if_cancelled()
                logger.warning("cannot check device %s: the database is unreachable", device_id)
                return None
        async with self._lock:
            for attempt in range(2):
                try:
                    if self._conn is None or self._conn.closed:
                        self._conn = await connect(self._settings)
                    return await store.find_account(self._conn, device_id)
                except StorageError:
                    raise_if_cancelled()
                    self._conn = None
                    if attempt:
                        # Refusing is safe: the device retries, and nothing it sent is lost.
                        logger.warning(
                            "cannot check device %s: the database is unreachable", device_id
                        )
        return None

    async def watch(self, on_change: Callable[[str], Awaitable[None]]) -> None:
        """Call `on_change(device_id)` for every rotated or revoked device, until cancelled."""
        channel = credentials_channel(self._settings.database_schema)
        while True:
            try:
                async with await connect(self._settings) as conn:
                    await listen(conn, channel)
                    async for notice in conn.notifies():
                        await on_change(notice.payload)
            except (StorageError, psycopg.Error) as exc:
                raise_if_cancelled()
                logger.warning("credentials watch lost its database connection: %s", exc)
            await asyncio.sleep(RECONNECT_S)

    async def close(self) -> None:
        """Close the authority's database connection."""
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.close()
