"""EMQX 5's HTTP authentication and authorization, answered from the hub's credentials.

EMQX posts the client's username, password and client id on every CONNECT, and the
username, client id, topic and action on every PUBLISH and SUBSCRIBE it authorizes; the
hub answers in EMQX's documented shape (README "EMQX 5"). EMQX authenticates itself with
the bearer token of CAREHUB_EMQX_HOOK_TOKEN; without that setting these routes are off.
"""

from __future__ import annotations

import hmac
from typing import Annotated, Any

from fastapi import APIRouter, Depends

from hub.acl import Grant
from hub.api.deps import HubDep, TokenDep
from hub.api.errors import ERROR_RESPONSES
from hub.api.models import EmqxAuthnIn, EmqxAuthnOut, EmqxAuthzIn, EmqxAuthzOut
from hub.credentials import DeviceAuthority
from hub.errors import ApiError

router = APIRouter(tags=["broker"], responses=ERROR_RESPONSES)


async def _emqx(hub: HubDep, token: TokenDep) -> DeviceAuthority:
    """The hub's device authority, for EMQX with the hook token, once the hub is up."""
    expected = hub.settings.emqx_hook_token
    if expected is None:
        raise ApiError(404, "the EMQX endpoints are off: set CAREHUB_EMQX_HOOK_TOKEN")
    if not hmac.compare_digest(token.encode(), expected.encode()):
        raise ApiError(401, "not the token of CAREHUB_EMQX_HOOK_TOKEN")
    if hub.authority is None:
        raise ApiError(503, "the hub is starting")
    return hub.authority


Emqx = Annotated[DeviceAuthority, Depends(_emqx)]


def _acl(grant: Grant) -> list[dict[str, str]]:
    rules = [{"permission": "allow", "action": "publish", "topic": t} for t in grant.publish]
    # `eq`: the filter itself, not the topics it matches (a device subscribes exactly).
    prefix = "eq " if grant.device_id else ""
    rules += [
        {"permission": "allow", "action": "subscribe", "topic": f"{prefix}{t}"}
        for t in grant.subscribe
    ]
    return rules


@router.post(
    "/broker/emqx/authn",
    response_model=EmqxAuthnOut,
    response_model_exclude_none=True,
    summary="EMQX HTTP authentication",
    description="allow (with the account's `acl`) for the hub's own account and for a "
    "device whose username and client id are its id and whose password is in force; "
    "deny otherwise (anonymous too). Never a superuser.",
)
async def emqx_authn(body: EmqxAuthnIn, authority: Emqx) -> dict[str, Any]:
    """EMQX authentication."""
    grant = await authority.authenticate(body.username, body.password, body.clientid)
    if grant is None:
        return {"result": "deny", "is_superuser": False}
    return {"result": "allow", "is_superuser": False, "acl": _acl(grant)}


@router.post(
    "/broker/emqx/authz",
    response_model=EmqxAuthzOut,
    summary="EMQX HTTP authorization",
    description="allow when the topic is within the account's grant (a device: its own "
    "event, telemetry and status out, its own ack and rejected in); deny otherwise, and "
    "for a device whose credentials were revoked since it connected.",
)
async def emqx_authz(body: EmqxAuthzIn, authority: Emqx) -> dict[str, str]:
    """EMQX authorization."""
    grant = await authority.authorize(body.username, body.clientid)
    if grant is None or body.action not in ("publish", "subscribe"):
        return {"result": "deny"}
    allowed = (
        grant.may_publish(body.topic)
        if body.action == "publish"
        else grant.may_subscribe(body.topic)
    )
    return {"result": "allow" if allowed else "deny"}
