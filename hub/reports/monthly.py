"""The monthly supervision report (SPEC §1, 月度监管报告): one facility or district, one month.

`build_report` reads the figures (hub/storage/reports.py, the KPIs' own queries) and
verifies the audit chains (hub/alerts/audit.py); `render` writes them as PDF or XLSX.
`hub_report` is the one the hub's download, command and bench ask for: in the settings'
report time zone.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo

from psycopg import AsyncConnection

from hub.alerts.audit import verify_audit
from hub.errors import QueryError
from hub.settings import Settings
from hub.storage.audit import chain_heads
from hub.storage.reports import FacilityFigures, MonthlyFigures, monthly_figures

Format = Literal["pdf", "xlsx"]
FORMATS: tuple[Format, ...] = ("pdf", "xlsx")
MEDIA_TYPES: dict[Format, str] = {
    "pdf": "application/pdf",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
}
_MONTH = re.compile(r"([0-9]{4})-([0-9]{2})")
# Reports cover the hub's lifetime; a year outside this is a typing slip.
_FIRST_YEAR, _LAST_YEAR = 2000, 2099


@dataclass(frozen=True, slots=True)
class ChainCheck:
    """One facility's audit chain, verified: intact or where it breaks, and its last row."""

    facility_id: str
    facility_name: str
    intact: bool
    rows: int
    last_id: int | None
    last_hash: str | None
    # Where and why it breaks, when it does.
    problem: str | None


@dataclass(frozen=True, slots=True)
class MonthlyReport:
    """What the report says: its scope and month, the figures, the chains' verification."""

    month: str
    scope_kind: Literal["facility", "district"]
    scope_name: str
    # The facility's name for a facility; the district's name for a district.
    title: str
    start: datetime
    end: datetime
    generated_at: datetime
    figures: MonthlyFigures
    # Worst first (rank_key).
    ranked: tuple[FacilityFigures, ...]
    chains: tuple[ChainCheck, ...]

    @property
    def chains_intact(self) -> bool:
        """Every facility's audit chain verified."""
        return all(chain.intact for chain in self.chains)

    def filename(self, fmt: Format) -> str:
        """An ASCII file name for a download: carehub-report-{scope}-{month}.{fmt}."""
        scope = self.scope_name if self.scope_kind == "facility" else "district"
        safe = re.sub(r"[^A-Za-z0-9_-]+", "-", scope).strip("-") or self.scope_kind
        return f"carehub-report-{safe}-{self.month}.{fmt}"


def month_period(month: str, zone: str, now: datetime) -> tuple[datetime, datetime]:
    """[first midnight, next month's first midnight) of `YYYY-MM` in `zone`, cut at `now`.

    QueryError("invalid") for a month that is not YYYY-MM or has not begun yet.
    """
    match = _MONTH.fullmatch(month)
    if match is None:
        raise QueryError("invalid", f"month: expected YYYY-MM (for example 2026-11), not {month!r}")
    year, number = int(match[1]), int(match[2])
    if not 1 <= number <= 12:
        raise QueryError("invalid", f"month: {month!r} has no month {number} (01 to 12)")
    if not _FIRST_YEAR <= year <= _LAST_YEAR:
        raise QueryError("invalid", f"month: {month!r} is outside {_FIRST_YEAR} to {_LAST_YEAR}")
    tz = ZoneInfo(zone)
    start = datetime(year, number, 1, tzinfo=tz)
    end = datetime(year + number // 12, number % 12 + 1, 1, tzinfo=tz)
    if start > now:
        raise QueryError("invalid", f"month: {month} has not begun yet")
    # The month under way: its figures so far.
    return start, min(end, now)


def rank_key(facility: FacilityFigures, broken: frozenset[str]) -> tuple[Any, ...]:
    """Worst first: a broken audit chain, overdue calls, a low share acknowledged within
    60 s, staff-ratio breaches, a high false-alarm share, devices offline."""
    ack_share = 1.0 if facility.ack_within_60s_share is None else facility.ack_within_60s_share
    return (
        facility.id not in broken,
        -facility.overdue_calls,
        ack_share,
        -facility.staff_ratio_breaches,
        -(facility.false_alarm_share or 0.0),
        -(facility.devices_total - facility.devices_online),
        facility.id,
    )


async def build_report(
    conn: AsyncConnection[Any],
    *,
    facility: str | None,
    district: str | None,
    month: str,
    zone: str,
    now: datetime,
) -> MonthlyReport:
    """Read and verify everything the report of one facility or district and month says."""
    if (facility is None) == (district is None):
        raise QueryError("invalid", "give a facility or a district, not both or neither")
    start, end = month_period(month, zone, now)
    figures = await monthly_figures(
        conn, facility=facility, district=district, start=start, end=end, now=now, timezone=zone
    )
    chains = await _verify_chains(conn, figures)
    broken = frozenset(chain.facility_id for chain in chains if not chain.intact)
    ranked = tuple(sorted(figures.facilities, key=lambda row: rank_key(row, broken)))
    if facility is not None:
        kind: Literal["facility", "district"] = "facility"
        name, title = facility, figures.facilities[0].name
    else:
        assert district is not None  # noqa: S101 - checked above
        kind, name, title = "district", district, district
    return MonthlyReport(
        month=month,
        scope_kind=kind,
        scope_name=name,
        title=title,
        start=start,
        end=end,
        generated_at=now.astimezone(ZoneInfo(zone)),
        figures=figures,
        ranked=ranked,
        chains=chains,
    )


async def hub_report(
    conn: AsyncConnection[Any],
    settings: Settings,
    *,
    facility: str | None,
    district: str | None,
    month: str,
    now: datetime,
) -> MonthlyReport:
    """`build_report` with its month in the hub's report time zone (CAREHUB_REPORT_TIMEZONE)."""
    return await build_report(
        conn,
        facility=facility,
        district=district,
        month=month,
        zone=settings.report_timezone,
        now=now,
    )


async def _verify_chains(
    conn: AsyncConnection[Any], figures: MonthlyFigures
) -> tuple[ChainCheck, ...]:
    names = {row.id: row.name for row in figures.facilities}
    heads = await chain_heads(conn, list(names))
    checks = []
    for facility_id, name in names.items():
        problems = await verify_audit(conn, facility_id)
        head = heads.get(facility_id)
        rows, last_id, last_hash = (0, None, None) if head is None else head
        problem = None
        if problems:
            where = f"row {problems[0].row_id}" if problems[0].row_id is not None else "its head"
            problem = f"{where}: {problems[0].why}"
        checks.append(
            ChainCheck(facility_id, name, not problems, rows, last_id, last_hash, problem)
        )
    return tuple(checks)


def day_span(report: MonthlyReport) -> list[datetime]:
    """The report's days, as local midnights from its start up to its end."""
    days = []
    day = report.start
    while day < report.end:
        days.append(day)
        day = (day + timedelta(days=1, hours=2)).replace(hour=0)
    return days
