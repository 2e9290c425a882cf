"""Parameters and helpers the routers share: list paging, times, scope checks."""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

from fastapi import Depends, Path, Query, Request
from psycopg import AsyncConnection
from pydantic import AwareDatetime, BeforeValidator, StringConstraints, WithJsonSchema

from hub.api.deps import connection, require
from hub.api.errors import not_found
from hub.api.models import ID
from hub.api.pagination import (
    CURSOR_MAX,
    DEFAULT_LIMIT,
    MAX_LIMIT,
    CursorKind,
    decode_cursor,
    encode_cursor,
)
from hub.auth import Principal
from hub.errors import ApiError
from hub.storage import accounts, api_queries

if TYPE_CHECKING:
    from hub.runtime import Hub

_Item = TypeVar("_Item")

Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description=f"items per page, 1..{MAX_LIMIT}")]


def cursor_format(kind: CursorKind) -> str:
    """The OpenAPI `format` of a cursor of `kind`: only a `next` such a list handed out is one."""
    return f"cursor-{kind.replace('_', '-')}"


def _cursor_schema(kind: CursorKind) -> WithJsonSchema:
    # The format says what a cursor is; the hub, not the schema, tells one it made (else 400).
    return WithJsonSchema(
        {"type": "string", "format": cursor_format(kind), "maxLength": CURSOR_MAX}
    )


_CURSOR_LENGTH = StringConstraints(max_length=CURSOR_MAX)
_CURSOR_QUERY = Query(
    alias="cursor",
    description="the `next` of the previous page of this list; "
    "any other value is a 400 (`field`: query.cursor)",
)
_TextCursor = Annotated[
    Annotated[str, _CURSOR_LENGTH, _cursor_schema("text")] | None, _CURSOR_QUERY
]
_IntCursor = Annotated[Annotated[str, _CURSOR_LENGTH, _cursor_schema("int")] | None, _CURSOR_QUERY]
_TimeIdCursor = Annotated[
    Annotated[str, _CURSOR_LENGTH, _cursor_schema("time_id")] | None, _CURSOR_QUERY
]


def _after_text(cursor: _TextCursor = None) -> str | None:
    return str(decode_cursor("text", cursor)) if cursor is not None else None


def _before_int(cursor: _IntCursor = None) -> int | None:
    key = decode_cursor("int", cursor) if cursor is not None else None
    return key if isinstance(key, int) else None


def _before_time_id(cursor: _TimeIdCursor = None) -> tuple[datetime, int] | None:
    key = decode_cursor("time_id", cursor) if cursor is not None else None
    return key if isinstance(key, tuple) else None


# A list's `cursor` parameter, decoded: the sort key of the last row of the previous page.
AfterId = Annotated[str | None, Depends(_after_text)]
BeforeNumber = Annotated[int | None, Depends(_before_int)]
BeforeTime = Annotated[tuple[datetime, int] | None, Depends(_before_time_id)]
# A date first: pydantic would also read a bare number as Unix seconds, which the
# document's `date-time` does not allow and no client of this API sends.
_RFC3339_START = re.compile(r"\d{4}-\d{2}-\d{2}[Tt ]")


def _rfc3339(value: object) -> object:
    if isinstance(value, str) and not _RFC3339_START.match(value):
        raise ValueError("not an RFC 3339 time such as 2026-11-22T08:15:00+08:00")
    return value


_Time = Annotated[AwareDatetime, BeforeValidator(_rfc3339)]
From = Annotated[_Time | None, Query(alias="from", description="RFC 3339 time with offset")]
To = Annotated[_Time | None, Query(alias="to", description="RFC 3339 time with offset")]
# Registry ids (SPEC §3): the document says their pattern; any other id names nothing (404).
_ID_SCHEMA = WithJsonSchema({"type": "string", "pattern": ID})
FacilityFilter = Annotated[
    Annotated[str, _ID_SCHEMA] | None,
    Query(max_length=64, description="only this facility (in your scope)"),
]
FacilityId = Annotated[str, _ID_SCHEMA, Path(description="the facility's id")]
DeviceId = Annotated[str, _ID_SCHEMA, Path(description="the device's id")]
Configurer = Annotated[Principal, Depends(require("configure"))]
DEFAULT_PAGE = DEFAULT_LIMIT


def page(
    rows: Sequence[_Item],
    limit: int,
    kind: CursorKind,
    key: Callable[[_Item], Any],
    render: Callable[[_Item], dict[str, Any]],
) -> dict[str, Any]:
    """`{"items", "next"}` from up to limit + 1 rows: a next cursor when there are more."""
    shown = rows[:limit]
    more = len(rows) > limit and shown
    return {
        "items": [render(row) for row in shown],
        "next": encode_cursor(kind, key(shown[-1])) if more else None,
    }


async def visible_facility(
    conn: AsyncConnection[Any], principal: Principal, facility_id: str
) -> dict[str, Any]:
    """The facility's row when the caller sees it; 404 otherwise (existence not revealed)."""
    row = await api_queries.get_facility(conn, facility_id)
    if row is None or not principal.sees_facility(row["id"], row["district"]):
        raise not_found(f"facility {facility_id!r}")
    return row


async def visible_device(
    conn: AsyncConnection[Any], principal: Principal, device_id: str
) -> dict[str, Any]:
    """The device's row when the caller sees its facility; 404 otherwise (existence not
    revealed)."""
    row = await api_queries.get_device(conn, device_id)
    if row is None or not principal.sees_facility(row["facility_id"], row["district"]):
        raise not_found(f"device {device_id!r}")
    return row


District = Annotated[str | None, Query(max_length=128, description="a district's name")]


async def kpi_scope(
    conn: AsyncConnection[Any], principal: Principal, facility: str | None, district: str | None
) -> tuple[str | None, str | None]:
    """(facility, district) that KPIs and reports cover: one of them, checked against the
    caller's scope. Neither given: the caller's own (a regulator's district, a manager's
    facility). 400 for both or an account with no scope of its own; 404 outside the scope."""
    if facility is not None and district is not None:
        raise ApiError(400, "give facility or district, not both", "query.district")
    if facility is None and district is None:
        if principal.role == "regulator":
            district = principal.district
        elif principal.facility_id is not None:
            facility = principal.facility_id
        else:
            raise ApiError(400, "give facility=<id> or district=<name>", "query.facility")
    if facility is not None:
        await visible_facility(conn, principal, facility)
        return facility, None
    assert district is not None  # noqa: S101 - one of the two is set above
    if not principal.sees_all and district != principal.district:
        raise not_found(f"district {district!r}")
    if not await api_queries.district_exists(conn, district):
        raise not_found(f"district {district!r}")
    return None, district


@contextlib.asynccontextmanager
async def facility_scope(
    hub: Hub, principal: Principal, facility_id: str | None
) -> AsyncIterator[AsyncConnection[Any]]:
    """A connection for a list; first a 404 when its facility filter is outside the scope."""
    async with connection(hub) as conn:
        if facility_id is not None:
            await visible_facility(conn, principal, facility_id)
        yield conn


def period(
    start: datetime | None, end: datetime | None, *, now: datetime, default: timedelta, words: str
) -> tuple[datetime, datetime]:
    """[from, to): `to` defaults to now, `from` to `default` (said as `words`) before `to`.

    400 when `to` is too early to count back from, or `from` is not before `to`.
    """
    end = end or now
    try:
        start = start or end - default
    except OverflowError:
        raise ApiError(400, f"to is too early to count back {words} from", "query.to") from None
    if start >= end:
        raise ApiError(400, "from must be before to", "query.from")
    return start, end


def iso(value: datetime | None) -> str | None:
    """RFC 3339, or None."""
    return value.isoformat() if value is not None else None


async def log_regulator_read(
    conn: AsyncConnection[Any], principal: Principal, request: Request, facility_id: str
) -> None:
    """Log a regulator's read of a facility's detail (SPEC §7, PIPL), in the read's own
    transaction, so that there is no read without its log row. Other roles: nothing."""
    if principal.role != "regulator":
        return
    await accounts.log_access(
        conn,
        username=principal.username,
        role=principal.role,
        route=f"{request.method} {request.url.path}",
        facility_id=facility_id,
    )
