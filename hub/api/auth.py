"""Sign in, sign out, and who am I (docs/api.md Sign-in and scope)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response

from hub.api.deps import HubDep, PrincipalDep, TokenDep
from hub.api.errors import BAD_REQUEST, ERROR_RESPONSES, TOO_MANY_SIGN_INS, ErrorBody
from hub.api.models import LoginIn, LoginOut, Me
from hub.auth import login, revoke

router = APIRouter(prefix="/auth", tags=["auth"])


@router.post(
    "/login",
    response_model=LoginOut,
    summary="Sign in",
    description="Check a name and password; answer a bearer token that expires after "
    "CAREHUB_TOKEN_TTL_S. A wrong name or password gets 401 with the same message. After "
    "a few failures in a row for one account name or from one client address, sign-ins "
    "are refused with 429 and Retry-After: first for a growing backoff, then, after more, "
    "for a lock (see the README).",
    responses={
        400: BAD_REQUEST,
        401: {"model": ErrorBody},
        422: {"model": ErrorBody},
        429: TOO_MANY_SIGN_INS,
    },
)
async def post_login(body: LoginIn, hub: HubDep, request: Request) -> dict[str, Any]:
    """Sign in."""
    signed_in = await login(
        hub.pool,
        body.username,
        body.password,
        hub.settings.token_ttl_s,
        address=request.client.host if request.client is not None else None,
        guard=hub.sign_in,
    )
    return {
        "token": signed_in.token,
        "expires_at": signed_in.expires_at,
        "user": signed_in.principal.me(),
    }


@router.post(
    "/logout",
    status_code=204,
    response_class=Response,
    summary="Sign out",
    description="Revoke the token this request carries; it no longer signs anyone in.",
    responses={401: ERROR_RESPONSES[401]},
)
async def post_logout(hub: HubDep, principal: PrincipalDep, token: TokenDep) -> Response:
    """Sign out."""
    del principal  # only checked: a dead token cannot sign out
    await revoke(hub.pool, token)
    return Response(status_code=204)


@router.get(
    "/me",
    response_model=Me,
    summary="The signed-in account",
    description="Who the token belongs to: role, and the facility or district it covers.",
    responses={401: ERROR_RESPONSES[401]},
)
async def get_me(principal: PrincipalDep) -> dict[str, Any]:
    """The signed-in account."""
    return principal.me()
