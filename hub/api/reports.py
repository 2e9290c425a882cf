"""The monthly supervision report (SPEC §1) as a download: PDF or XLSX."""

from __future__ import annotations

import asyncio
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Annotated, Literal
from urllib.parse import quote
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Depends, Query, Request, Response

from hub.api.common import District, FacilityFilter, kpi_scope, log_regulator_read
from hub.api.deps import HubDep, connection, require
from hub.api.errors import ERROR_RESPONSES, error_responses
from hub.auth import Principal
from hub.errors import ApiError, QueryError
from hub.reports.files import render
from hub.reports.monthly import MEDIA_TYPES, MonthlyReport, hub_report, month_period
from hub.settings import Settings
from hub.storage.pool import connect

router = APIRouter(tags=["reports"], responses=ERROR_RESPONSES)

ReportReader = Annotated[Principal, Depends(require("report"))]
Month = Annotated[
    str | None,
    Query(
        max_length=7,
        description="YYYY-MM, in CAREHUB_REPORT_TIMEZONE (default: last month)",
        examples=["2026-11"],
    ),
]
# A report reads a month of rows and hashes the audit chains: on the 2-core machines
# the hub runs on, two at a time is plenty, and the hub's own loop never does the work.
_BUILDS = threading.BoundedSemaphore(2)


def _last_month(zone: str, now: datetime) -> str:
    first = now.astimezone(ZoneInfo(zone)).replace(day=1)
    return f"{first - timedelta(days=1):%Y-%m}"


def _build(
    settings: Settings,
    facility: str | None,
    district: str | None,
    month: str,
    now: datetime,
    fmt: Literal["pdf", "xlsx"],
    lang: Literal["zh", "en"],
) -> tuple[MonthlyReport, bytes]:
    """In a worker thread: read on a connection of its own, then write the file."""

    async def read() -> MonthlyReport:
        async with await connect(settings) as conn:
            return await hub_report(
                conn, settings, facility=facility, district=district, month=month, now=now
            )

    with _BUILDS:
        report = asyncio.run(read())
        return report, render(report, fmt, lang)


@router.get(
    "/reports/monthly",
    summary="The monthly supervision report (月度监管报告)",
    description="One facility or district over one month, as PDF (A4, 简体中文 or English) "
    "or XLSX (one sheet per section, native charts): calls and alerts by kind and day, "
    "response KPIs against the care-line targets, overdue calls, false alarms, devices, "
    "people present, staff-ratio breaches, and the audit chain's verification with the "
    "hash of its last row. Facilities are ranked worst first. The figures are GET /kpis' "
    "over the month. Without facility or district: your own scope.",
    response_class=Response,
    responses={
        200: {"content": {media: {} for media in MEDIA_TYPES.values()}},
        **error_responses("both scopes given, or a month that is not YYYY-MM or not begun"),
    },
)
async def get_monthly_report(
    hub: HubDep,
    principal: ReportReader,
    request: Request,
    facility: FacilityFilter = None,
    district: District = None,
    month: Month = None,
    fmt: Annotated[Literal["pdf", "xlsx"], Query(alias="format")] = "pdf",
    lang: Annotated[Literal["zh", "en"], Query(description="the report's language")] = "zh",
) -> Response:
    """The report as a file download."""
    began = time.perf_counter()
    now = datetime.now(UTC)
    zone = hub.settings.report_timezone
    month = month or _last_month(zone, now)
    try:
        month_period(month, zone, now)
    except QueryError as exc:
        raise ApiError(400, str(exc), "query.month") from None
    async with connection(hub) as conn:
        facility, district = await kpi_scope(conn, principal, facility, district)
        if facility is not None:
            # A regulator's read of one facility's figures is logged (SPEC §7).
            await log_regulator_read(conn, principal, request, facility)
    report, content = await asyncio.to_thread(
        _build, hub.settings, facility, district, month, now, fmt, lang
    )
    name = report.filename(fmt)
    # The title in the file name too, for browsers that take the UTF-8 form (RFC 6266).
    title = f"{report.title}-{report.month}-月度监管报告.{fmt}"
    return Response(
        content,
        media_type=MEDIA_TYPES[fmt],
        headers={
            "Content-Disposition": (
                f"attachment; filename=\"{name}\"; filename*=UTF-8''{quote(title)}"
            ),
            "X-Carehub-Build-Seconds": f"{time.perf_counter() - began:.3f}",
            "Cache-Control": "no-store",
        },
    )
