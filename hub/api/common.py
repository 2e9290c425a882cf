"""Parameters and helpers the routers share: list paging, times, scope checks."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Annotated, Any, TypeVar

from fastapi import Query
from psycopg import AsyncConnection
from pydantic import AwareDatetime

from hub.api.errors import not_found
from hub.api.pagination import CURSOR_MAX, DEFAULT_LIMIT, MAX_LIMIT, CursorKind, encode_cursor
from hub.auth import Principal
from hub.storage import api_queries

_Item = TypeVar("_Item")

Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description=f"items per page, 1..{MAX_LIMIT}")]
Cursor = Annotated[
    str | None,
    Query(max_length=CURSOR_MAX, description="the `next` of the previous page"),
]
From = Annotated[AwareDatetime | None, Query(alias="from", description="RFC 3339 time with offset")]
To = Annotated[AwareDatetime | None, Query(alias="to", description="RFC 3339 time with offset")]
FacilityFilter = Annotated[
    str | None, Query(max_length=64, description="only this facility (in your scope)")
]
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


def iso(value: datetime | None) -> str | None:
    """RFC 3339, or None."""
    return value.isoformat() if value is not None else None
