"""KPIs of a facility or a district over a period, as JSON or as CSV for the monthly report."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Response

from hub.api.common import District, FacilityFilter, From, To, kpi_scope, period
from hub.api.deps import HubDep, connection, require
from hub.api.errors import ERROR_RESPONSES, error_responses
from hub.auth import Principal
from hub.storage.kpis import Kpis, district_kpis, facility_kpis, kpis_as_dict

# Every route here may answer the shared errors; a route adds its own words for a 400.
router = APIRouter(tags=["kpis"], responses=ERROR_RESPONSES)

DEFAULT_PERIOD = timedelta(days=30)
KpiReader = Annotated[Principal, Depends(require("kpis"))]
_RESPONSES = error_responses("both or neither scope given, or a bad period")


async def _kpis(
    hub: HubDep,
    principal: KpiReader,
    facility: FacilityFilter = None,
    district: District = None,
    start: From = None,
    end: To = None,
) -> dict[str, Any]:
    # A dependency, so GET /kpis and GET /kpis.csv take the same parameters from one place.
    now = datetime.now(UTC)
    start, end = period(start, end, now=now, default=DEFAULT_PERIOD, words="30 days")
    async with connection(hub) as conn:
        facility, district = await kpi_scope(conn, principal, facility, district)
        if facility is not None:
            kpis = await facility_kpis(conn, facility, start, end, now)
        else:
            assert district is not None  # noqa: S101 - kpi_scope gives one of the two
            kpis = await district_kpis(conn, district, start, end, now)
    return kpis_as_dict(kpis)


ScopedKpis = Annotated[dict[str, Any], Depends(_kpis)]


@router.get(
    "/kpis",
    summary="KPIs of a facility or district",
    description="SPEC §4 KPIs over [from, to) (default: the last 30 days): acknowledged "
    "within 60 s and 180 s, median and p90 times, overdue calls, false alarms, devices "
    "online, people present. Without facility or district: your own scope.",
    response_model=Kpis,
    responses=_RESPONSES,
)
async def get_kpis(kpis: ScopedKpis) -> dict[str, Any]:
    """KPIs as JSON."""
    return kpis


def flatten(value: Any, prefix: str = "") -> list[tuple[str, str]]:
    """(figure, value) rows from nested KPIs: dotted names, list items by position."""
    rows: list[tuple[str, str]] = []
    if isinstance(value, dict):
        for key, inner in value.items():
            rows += flatten(inner, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(value, list | tuple):
        for index, inner in enumerate(value):
            rows += flatten(inner, f"{prefix}[{index}]")
    else:
        rows.append((prefix, "" if value is None else str(value)))
    return rows


@router.get(
    "/kpis.csv",
    summary="KPIs as CSV (monthly supervision report)",
    description="The same figures as GET /kpis, one row per figure (figure,value), UTF-8 "
    "with a byte-order mark so spreadsheet programs read the Chinese names right.",
    response_class=Response,
    responses={200: {"content": {"text/csv": {}}}, **_RESPONSES},
)
async def get_kpis_csv(kpis: ScopedKpis) -> Response:
    """KPIs as CSV."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(("figure", "value"))
    writer.writerows(flatten(kpis))
    return Response(
        "\ufeff" + out.getvalue(),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": 'attachment; filename="carehub-kpis.csv"'},
    )
