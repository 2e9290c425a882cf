"""Accounts and access (SPEC §7): who the caller is, what they see, what they may do.

Passwords are hashed with argon2id; API tokens are 32 random bytes, stored as sha256 only,
with an expiry. A `Principal` is the signed-in caller: its role says what it may do
(`may`), its facility or district what it sees (`sees_facility`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import re
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, get_args

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from hub.errors import AuthError
from hub.storage import accounts
from hub.storage.accounts import UserRow

Role = Literal["admin", "regulator", "manager", "staff"]
ROLES: tuple[Role, ...] = get_args(Role)
Action = Literal[
    "read",  # see facilities, zones, devices, readings and alerts in scope
    "comment",  # add a note to an alert's trail
    "ack",
    "attend",
    "resolve",
    "snooze",  # shelve a zone's alerts for a while
    "kpis",  # KPIs and the CSV report
    "configure",  # rule overrides and webhooks of a facility
    "registry",  # pending devices and dead letters
]
ACTIONS: tuple[Action, ...] = get_args(Action)

# SPEC §7 and docs/api.md: the one table of who may do what.
PERMISSIONS: dict[Role, frozenset[Action]] = {
    "admin": frozenset(ACTIONS),
    "regulator": frozenset({"read", "comment", "kpis"}),
    "manager": frozenset(
        {"read", "comment", "ack", "attend", "resolve", "snooze", "kpis", "configure"}
    ),
    "staff": frozenset({"read", "comment", "ack", "attend", "resolve"}),
}

USERNAME = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
PASSWORD_MIN = 8
# Hashing a megabyte-long "password" would be a cheap way to burn the hub's CPU.
PASSWORD_MAX = 1024
DISPLAY_NAME_MAX = 128
DISTRICT_MAX = 128
TOKEN_BYTES = 32
BAD_LOGIN = "wrong username or password"

# argon2-cffi's defaults (RFC 9106's second recommendation: 64 MiB, 3 passes).
_hasher = PasswordHasher()

Pool = AsyncConnectionPool[AsyncConnection[Any]] | AsyncConnectionPool[AsyncConnection[object]]
PoolOrConnection = Pool | AsyncConnection[Any]


@dataclass(frozen=True, slots=True)
class Principal:
    """The signed-in caller: a user, their role, and the facility or district they cover."""

    username: str
    role: Role
    facility_id: str | None
    district: str | None
    display_name: str

    def may(self, action: Action) -> bool:
        """True when the role allows `action` (on something it sees)."""
        return action in PERMISSIONS[self.role]

    def sees_facility(self, facility_id: str, district: str | None) -> bool:
        """True when the facility (in `district`) is in this caller's scope."""
        if self.role == "admin":
            return True
        if self.role == "regulator":
            return district is not None and district == self.district
        return facility_id == self.facility_id

    @property
    def sees_all(self) -> bool:
        """True for an admin, who sees every facility."""
        return self.role == "admin"

    def scope_params(self) -> dict[str, Any]:
        """Query parameters for `SCOPE_SQL`: restrict rows to what this caller sees."""
        return {
            "scope_all": self.sees_all,
            "scope_district": self.district if self.role == "regulator" else None,
            "scope_facility": self.facility_id if self.role in ("manager", "staff") else None,
        }

    def me(self) -> dict[str, Any]:
        """The `Me` object of docs/api.md."""
        return {
            "username": self.username,
            "role": self.role,
            "facility_id": self.facility_id,
            "district": self.district,
            "display_name": self.display_name,
        }


# Used as `WHERE ... AND {SCOPE_SQL}` with `f` the facilities table and the parameters of
# Principal.scope_params(); one definition, so every list agrees on what a caller sees.
SCOPE_SQL = "(%(scope_all)s OR f.district = %(scope_district)s OR f.id = %(scope_facility)s)"


@dataclass(frozen=True, slots=True)
class Login:
    """A successful sign-in: the token (shown once), its expiry, and who it is."""

    token: str
    expires_at: datetime
    principal: Principal


def token_digest(token: str) -> str:
    """The sha256 hex of a token, as api_tokens stores it."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def principal_of(user: UserRow) -> Principal:
    """The principal of a stored account."""
    role = user.role
    if role not in ROLES:
        raise AuthError("invalid", f"account {user.username!r} has an unknown role {role!r}")
    return Principal(
        username=user.username,
        role=role,
        facility_id=user.facility_id,
        district=user.district,
        display_name=user.display_name,
    )


@contextlib.asynccontextmanager
async def _connection(source: PoolOrConnection) -> AsyncIterator[AsyncConnection[Any]]:
    if isinstance(source, AsyncConnection):
        yield source
    else:
        async with source.connection() as conn:
            yield conn


async def principal_for_token(source: PoolOrConnection, token: str) -> Principal | None:
    """The principal of a live token (unexpired, unrevoked, account enabled), or None."""
    if not token or len(token) > 256:
        return None
    async with _connection(source) as conn:
        user = await accounts.select_token_user(conn, token_digest(token))
    return None if user is None else principal_of(user)


@functools.cache
def _dummy_hash() -> str:
    """A hash to verify against for unknown names, so they take as long as known ones."""
    return _hasher.hash(secrets.token_urlsafe(16))


def _verify(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


async def login(source: PoolOrConnection, username: str, password: str, ttl_s: int) -> Login:
    """Check a name and password and issue a token; AuthError unauthorized otherwise."""
    if not USERNAME.match(username) or len(password) > PASSWORD_MAX:
        raise AuthError("unauthorized", BAD_LOGIN)
    async with _connection(source) as conn:
        found = await accounts.select_password_hash(conn, username)
        password_hash = found[1] if found is not None else _dummy_hash()
        # argon2 takes tens of milliseconds by design: not on the event loop.
        matches = await asyncio.to_thread(_verify, password_hash, password)
        if found is None or not matches:
            raise AuthError("unauthorized", BAD_LOGIN)
        user = found[0]
        if user.disabled:
            raise AuthError(
                "unauthorized", f"account {username!r} is disabled; ask an administrator"
            )
        if _hasher.check_needs_rehash(password_hash):
            new_hash = await asyncio.to_thread(_hasher.hash, password)
            await accounts.update_password_hash(conn, username, new_hash)
        token = secrets.token_urlsafe(TOKEN_BYTES)
        expires_at = await accounts.insert_token(conn, token_digest(token), username, ttl_s)
    return Login(token, expires_at, principal_of(user))


async def revoke(source: PoolOrConnection, token: str) -> bool:
    """Revoke a token (sign out); False when it was not live."""
    async with _connection(source) as conn:
        return await accounts.revoke_token(conn, token_digest(token))


def check_new_user(
    username: str,
    role: str,
    *,
    facility_id: str | None,
    district: str | None,
    display_name: str,
    password: str,
) -> None:
    """Refuse a new account's bad input with AuthError invalid, naming the field."""
    if not USERNAME.match(username):
        raise AuthError(
            "invalid",
            f"username {username!r}: use 1 to 64 letters, digits or . _ @ -",
            "username",
        )
    if role not in ROLES:
        raise AuthError("invalid", f"role must be one of {', '.join(ROLES)}, not {role!r}", "role")
    _check_scope(role, facility_id, district)
    if len(display_name) > DISPLAY_NAME_MAX:
        raise AuthError(
            "invalid", f"display name is at most {DISPLAY_NAME_MAX} characters", "display_name"
        )
    if len(password) < PASSWORD_MIN:
        raise AuthError(
            "invalid", f"the password must have at least {PASSWORD_MIN} characters", "password"
        )
    if len(password) > PASSWORD_MAX:
        raise AuthError(
            "invalid", f"the password must have at most {PASSWORD_MAX} characters", "password"
        )


def _check_scope(role: str, facility_id: str | None, district: str | None) -> None:
    """A manager or staff account has a facility, a regulator a district, an admin neither."""
    if role in ("manager", "staff"):
        if not facility_id:
            raise AuthError("invalid", f"a {role} account needs --facility", "facility")
        if district:
            raise AuthError("invalid", f"a {role} account takes no --district", "district")
    elif role == "regulator":
        if not district or not district.strip():
            raise AuthError("invalid", "a regulator account needs --district", "district")
        if len(district) > DISTRICT_MAX:
            raise AuthError(
                "invalid", f"--district is at most {DISTRICT_MAX} characters", "district"
            )
        if facility_id:
            raise AuthError("invalid", "a regulator account takes no --facility", "facility")
    elif facility_id or district:
        raise AuthError("invalid", "an admin account takes no --facility or --district", "role")


async def add_user(
    source: PoolOrConnection,
    username: str,
    role: str,
    password: str,
    *,
    facility_id: str | None = None,
    district: str | None = None,
    display_name: str = "",
) -> UserRow:
    """Create an account; AuthError invalid (naming the field) or conflict."""
    check_new_user(
        username,
        role,
        facility_id=facility_id,
        district=district,
        display_name=display_name,
        password=password,
    )
    password_hash = await asyncio.to_thread(_hasher.hash, password)
    async with _connection(source) as conn:
        return await accounts.insert_user(
            conn,
            username=username,
            display_name=display_name or username,
            role=role,
            facility_id=facility_id,
            district=district.strip() if district else None,
            password_hash=password_hash,
        )


async def list_users(source: PoolOrConnection) -> list[UserRow]:
    """Every account, by name (no hashes)."""
    async with _connection(source) as conn:
        return await accounts.select_users(conn)


async def disable_user(source: PoolOrConnection, username: str) -> None:
    """Disable an account and revoke its tokens; AuthError not_found if there is none."""
    async with _connection(source) as conn:
        if not await accounts.set_disabled(conn, username, disabled=True):
            raise AuthError("not_found", f"there is no account {username!r}", "username")
