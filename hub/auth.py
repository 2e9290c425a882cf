"""Accounts and access (SPEC §7): who the caller is, what they see, what they may do.

Passwords are hashed with argon2id; API tokens are 32 random bytes, stored as sha256 only,
with an expiry. A `Principal` is the signed-in caller: its role says what it may do
(`may`), its facility or district what it sees (`sees_facility`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import hashlib
import math
import re
import secrets
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Literal, get_args

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from hub.errors import AuthError, SignInLimitError
from hub.storage import accounts, logins
from hub.storage.accounts import UserRow
from hub.storage.logins import KeyKind, LimitPolicy, LimitRow

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
    "report",  # the monthly supervision report (PDF, XLSX)
    "configure",  # rule overrides and webhooks of a facility
    "registry",  # pending devices and dead letters
    "audit",  # the access log of regulators' reads (SPEC §7)
    "devices",  # a facility's device credentials (issue, rotate, revoke) and placement
]
ACTIONS: tuple[Action, ...] = get_args(Action)

# SPEC §7 and docs/api.md: the one table of who may do what.
PERMISSIONS: dict[Role, frozenset[Action]] = {
    "admin": frozenset(ACTIONS),
    "regulator": frozenset({"read", "comment", "kpis", "report"}),
    "manager": frozenset(
        {
            "read",
            "comment",
            "ack",
            "attend",
            "resolve",
            "snooze",
            "kpis",
            "report",
            "configure",
            "devices",
        }
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

# Failed sign-ins (README "API and accounts"). Per account name: five slips are a person
# who forgot; from the sixth on, each attempt waits 1, 2, 4 ... s (at most a minute), and
# the twentieth in a row locks the name for 15 minutes, so a guesser gets about 20 tries
# a quarter of an hour, not argon2's 20 a second. A try during a backoff is refused
# unchecked and still counts, so ignoring Retry-After only brings the lock sooner.
ACCOUNT_LIMITS = LimitPolicy(
    free_failures=5,
    lock_failures=20,
    lock_s=15 * 60,
    backoff_base_s=1.0,
    backoff_max_s=60.0,
    # An hour without a failure, and the slips are forgotten.
    forget_s=3600,
)
# Per client address: a facility's staff may sign in from behind one NAT address, so it
# takes many more failures (a spray of one password over many names) to slow it down.
ADDRESS_LIMITS = dataclasses.replace(ACCOUNT_LIMITS, free_failures=50, lock_failures=200)
# An account that signed in from an address within this long is not held back by that
# address's limit (only by its own): the staff behind a facility's one NAT address keep
# signing in while someone on it sprays guesses at other names.
KNOWN_ADDRESS_S = 30 * 86400
# A lock seen in the database is believed in this process for this long without asking
# again: a guesser's thousands of tries cost no round trip, and an admin's unlock from
# another process is seen within seconds.
LOCK_CACHE_S = 5.0
LOCK_CACHE_MAX = 10_000
# A second sign-in for a name whose check is still running here waits this long: no
# burst of parallel guesses gets hashed before the first failure is counted.
IN_FLIGHT_RETRY_S = 1
UNKNOWN_ADDRESS = "unknown"

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
        """Parameters of `storage.accounts.SCOPE_SQL`: only the rows this caller sees."""
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
    found = await token_principal(source, token)
    return None if found is None else found[0]


async def token_principal(
    source: PoolOrConnection, token: str
) -> tuple[Principal, datetime] | None:
    """The principal of a live token and when the token expires, or None."""
    if not token or len(token) > 256:
        return None
    async with _connection(source) as conn:
        found = await accounts.select_token_user(conn, token_digest(token))
    if found is None:
        return None
    user, expires_at = found
    return principal_of(user), expires_at


@functools.cache
def _dummy_hash() -> str:
    """A hash to verify against for unknown names, so they take as long as known ones."""
    return _hasher.hash(secrets.token_urlsafe(16))


def _verify(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


Key = tuple[KeyKind, str]


def _limited(limit: LimitRow) -> SignInLimitError | None:
    """The refusal a key's stored state calls for now, or None: a lock before a backoff."""
    locked = limit.locked_until is not None and limit.locked_until > limit.now
    until = limit.locked_until if locked else limit.backoff_until
    if until is None or until <= limit.now:
        return None
    retry_after_s = max(1, math.ceil((until - limit.now).total_seconds()))
    when = f"{until:%Y-%m-%dT%H:%M:%SZ}" if until.utcoffset() == timedelta(0) else until.isoformat()
    whose = "this account" if limit.kind == "account" else "this client address"
    if locked:
        message = (
            f"{whose} is locked after {limit.failures} failed sign-ins in a row; try again"
            f" in {retry_after_s} s (at {when}), or ask an administrator to unlock it"
        )
    else:
        message = f"too many failed sign-ins for {whose}; try again in {retry_after_s} s"
    return SignInLimitError(message, retry_after_s=retry_after_s, until=until, locked=locked)


def _worst(refusals: list[SignInLimitError | None]) -> SignInLimitError | None:
    """Of the keys' refusals, a lock before a backoff, then the longest."""
    found = [refusal for refusal in refusals if refusal is not None]
    return max(found, key=lambda r: (r.locked, r.retry_after_s)) if found else None


class SignInGuard:
    """This process's fast path in front of the database's sign-in counts: account locks
    already seen, and the names whose check is running now. The counts themselves live in the
    database (storage/logins.py), shared by every hub process."""

    def __init__(
        self, account: LimitPolicy = ACCOUNT_LIMITS, address: LimitPolicy = ADDRESS_LIMITS
    ) -> None:
        self._policies: dict[KeyKind, LimitPolicy] = {"account": account, "address": address}
        # key -> (believed until, monotonic; the stored row; when it was read, monotonic)
        self._locks: dict[Key, tuple[float, LimitRow, float]] = {}
        self._checking: set[str] = set()

    def known_lock(self, keys: list[Key]) -> SignInLimitError | None:
        """A lock of one of `keys` seen lately, with the time left on it; else None."""
        now = time.monotonic()
        for key in keys:
            entry = self._locks.get(key)
            if entry is None:
                continue
            believed_until, limit, read_at = entry
            refusal = _limited(replace(limit, now=limit.now + timedelta(seconds=now - read_at)))
            if now >= believed_until or refusal is None:
                del self._locks[key]
                continue
            return refusal
        return None

    def remember(self, limit: LimitRow, refusal: SignInLimitError) -> None:
        """Believe an account's lock for a while, never past its end."""
        if not refusal.locked or limit.kind != "account":
            return
        if len(self._locks) >= LOCK_CACHE_MAX:
            self._locks.clear()
        now = time.monotonic()
        believed_until = now + min(LOCK_CACHE_S, float(refusal.retry_after_s))
        self._locks[(limit.kind, limit.key)] = (believed_until, limit, now)

    def policy(self, kind: KeyKind) -> LimitPolicy:
        """How failures of an account name or of an address are limited."""
        return self._policies[kind]

    def forget(self, username: str) -> None:
        """Drop what this process believes of an account (it was unlocked here)."""
        self._locks.pop(("account", username), None)

    @contextlib.contextmanager
    def checking(self, username: str) -> Iterator[None]:
        """Hold `username` as being checked; SignInLimitError when it already is."""
        if username in self._checking:
            raise SignInLimitError(
                "another sign-in for this account is being checked; try again in"
                f" {IN_FLIGHT_RETRY_S} s",
                retry_after_s=IN_FLIGHT_RETRY_S,
                until=datetime.now().astimezone() + timedelta(seconds=IN_FLIGHT_RETRY_S),
                locked=False,
            )
        self._checking.add(username)
        try:
            yield
        finally:
            self._checking.discard(username)


async def _count_failure(
    conn: AsyncConnection[Any], guard: SignInGuard, keys: list[Key]
) -> list[SignInLimitError | None]:
    """Count a failed or refused sign-in against every key; what each key calls for now."""
    refusals: list[SignInLimitError | None] = []
    for kind, key in keys:
        limit = await logins.record_failure(conn, kind, key, guard.policy(kind))
        refusal = _limited(limit)
        if refusal is not None:
            guard.remember(limit, refusal)
        refusals.append(refusal)
    return refusals


async def login(
    source: PoolOrConnection,
    username: str,
    password: str,
    ttl_s: int,
    *,
    address: str | None = None,
    guard: SignInGuard | None = None,
) -> Login:
    """Check a name and password and issue a token; AuthError unauthorized otherwise.

    SignInLimitError while the account name or the client `address` has failed too often:
    then nothing is hashed, and the attempt counts as one more failure (unless locked).
    """
    if not USERNAME.match(username) or len(password) > PASSWORD_MAX:
        raise AuthError("unauthorized", BAD_LOGIN)
    guard = guard or SignInGuard()
    keys: list[Key] = [("account", username), ("address", (address or UNKNOWN_ADDRESS)[:128])]
    # Only the account's lock is believed here: an address's lock does not hold back an
    # account known at that address, which takes the database to tell.
    known = guard.known_lock(keys[:1])
    if known is not None:
        raise known
    with guard.checking(username):
        return await _check(source, guard, keys, password=password, ttl_s=ttl_s)


async def _check(
    source: PoolOrConnection,
    guard: SignInGuard,
    keys: list[Key],
    *,
    password: str,
    ttl_s: int,
) -> Login:
    # Refusals are raised after the block: leaving a pooled connection by an exception
    # would roll back the failures just counted.
    outcome: AuthError | Login
    username, address = keys[0][1], keys[1][1]
    async with _connection(source) as conn:
        stored, known = await logins.select_limits(conn, username, address, KNOWN_ADDRESS_S)
        if known:
            stored = [limit for limit in stored if limit.kind == "account"]
        limited = [_limited(limit) for limit in stored]
        for limit, limit_refusal in zip(stored, limited, strict=True):
            if limit_refusal is not None:
                guard.remember(limit, limit_refusal)
        refusal = _worst(limited)
        if refusal is None:
            outcome = await _verify_and_issue(conn, guard, keys, password, ttl_s)
        elif refusal.locked:
            outcome = refusal
        else:
            # Unchecked, but a try all the same: hammering on brings the lock.
            outcome = _worst(await _count_failure(conn, guard, keys)) or refusal
    if isinstance(outcome, AuthError):
        raise outcome
    return outcome


async def _verify_and_issue(
    conn: AsyncConnection[Any], guard: SignInGuard, keys: list[Key], password: str, ttl_s: int
) -> AuthError | Login:
    """The login for the right password of an enabled account, else the refusal."""
    username = keys[0][1]
    found = await accounts.select_password_hash(conn, username)
    password_hash = found[1] if found is not None else _dummy_hash()
    # argon2 takes tens of milliseconds by design: not on the event loop.
    matches = await asyncio.to_thread(_verify, password_hash, password)
    if found is None or not matches:
        await _count_failure(conn, guard, keys)
        return AuthError("unauthorized", BAD_LOGIN)
    user = found[0]
    if user.disabled:
        return AuthError("unauthorized", f"account {username!r} is disabled; ask an administrator")
    await logins.clear_failures(conn, "account", username)
    await logins.record_sign_in(conn, username, keys[1][1], KNOWN_ADDRESS_S)
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


async def disable_user(source: PoolOrConnection, username: str, *, actor: str = "admin") -> None:
    """Disable an account and revoke its tokens, audited; AuthError not_found if none."""
    async with _connection(source) as conn, conn.transaction():
        if not await accounts.set_disabled(conn, username, disabled=True):
            raise AuthError("not_found", f"there is no account {username!r}", "username")
        await logins.insert_account_audit(
            conn, actor=actor, action="disabled", username=username, address=None
        )


async def unlock_user(
    source: PoolOrConnection,
    username: str,
    *,
    actor: str = "admin",
    guard: SignInGuard | None = None,
) -> bool:
    """Lift an account's sign-in lock and backoff, audited; whether it was locked.

    AuthError not_found when there is no such account.
    """
    async with _connection(source) as conn:
        was_locked = await logins.unlock_account(conn, username, actor)
    if was_locked is None:
        raise AuthError("not_found", f"there is no account {username!r}", "username")
    if guard is not None:
        guard.forget(username)
    return was_locked


async def account_locks(source: PoolOrConnection) -> dict[str, datetime]:
    """Account names locked now, and until when."""
    async with _connection(source) as conn:
        return await logins.locked_accounts(conn)
