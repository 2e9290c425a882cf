"""What every route depends on: the running hub, the caller, a database connection."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from psycopg import AsyncConnection

from hub.auth import Action, Principal, principal_for_token
from hub.errors import ApiError

if TYPE_CHECKING:
    # Named for typing only: the routers never import the module that builds the hub.
    from hub.runtime import Hub


def get_hub(request: Request) -> Hub:
    """The running hub, from the lifespan state."""
    hub: Hub = request.state.hub
    return hub


HubDep = Annotated["Hub", Depends(get_hub)]

# auto_error off: a missing token is our 401 in our error shape, not FastAPI's 403.
_bearer = HTTPBearer(auto_error=False, description="the token from POST /api/v1/auth/login")


async def bearer_token(
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> str:
    """The caller's bearer token; 401 when there is none."""
    if credentials is None or not credentials.credentials:
        raise ApiError(401, "sign in first: send Authorization: Bearer <token>")
    return credentials.credentials


async def current_principal(
    hub: HubDep, token: Annotated[str, Depends(bearer_token)], request: Request
) -> Principal:
    """The signed-in caller; 401 for an unknown, expired or revoked token."""
    principal = await principal_for_token(hub.pool, token)
    if principal is None:
        raise ApiError(401, "the token is unknown, expired or revoked; sign in again")
    request.state.principal = principal
    return principal


PrincipalDep = Annotated[Principal, Depends(current_principal)]
TokenDep = Annotated[str, Depends(bearer_token)]


def require(action: Action) -> Callable[..., Awaitable[Principal]]:
    """A dependency: the caller, when their role may do `action`; 403 otherwise."""

    async def allowed(principal: PrincipalDep) -> Principal:
        if not principal.may(action):
            raise ApiError(403, f"a {principal.role} account may not {_WORDS[action]}")
        return principal

    return allowed


_WORDS: dict[str, str] = {
    "read": "read this",
    "comment": "comment on alerts",
    "ack": "acknowledge alerts",
    "attend": "mark alerts attended",
    "resolve": "resolve alerts",
    "snooze": "snooze a zone's alerts",
    "kpis": "read KPIs",
    "report": "download the monthly supervision report (regulators and facility managers do)",
    "configure": "configure rules or webhooks",
    "registry": "see pending devices or dead letters",
    "audit": "read the access log",
    "devices": "issue device credentials or place devices",
}

Reader = Annotated[Principal, Depends(require("read"))]


@contextlib.asynccontextmanager
async def connection(hub: Hub) -> AsyncIterator[AsyncConnection[Any]]:
    """A pooled connection; its transaction commits when the block ends without error."""
    async with hub.pool.connection() as conn:
        yield conn
