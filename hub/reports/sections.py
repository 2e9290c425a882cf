"""The report's sections as plain tables and charts, written once for both formats.

Each section is a PDF chapter and an XLSX sheet. A cell's type says how it is shown:
`Share` as a percentage, `Seconds` as seconds, a datetime in the report's time zone,
None as empty. A chart draws columns of one of its section's tables, so the XLSX chart
points at the cells the sheet holds and the PDF chart draws the same numbers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from functools import partial
from typing import Literal

from hub.reports.labels import ALERT_KINDS, Language, coded, word, words
from hub.reports.monthly import MonthlyReport, day_span
from hub.storage.kpis import ACK_FAST_S, ACK_SLOW_S, ResponseFigures
from hub.storage.reports import RESPONSE_BINS_S

# Care-line practice targets (SPEC §4).
TARGET_60S = 0.975
TARGET_180S = 0.99
# Charts of facilities show the worst this many; the tables hold them all.
CHART_FACILITIES = 20


class Share(float):
    """A fraction shown as a percentage."""


class Seconds(float):
    """A duration in seconds."""


Cell = str | int | float | datetime | date | None


@dataclass(frozen=True, slots=True)
class Table:
    """A heading, a header row and rows of cells."""

    title: str | None
    header: tuple[str, ...]
    rows: list[tuple[Cell, ...]]
    # Printed whole in the PDF (the ranking, the overdue calls, the chains): evidence, not
    # a summary; other long tables are cut there, and whole in the XLSX.
    complete: bool = False


@dataclass(frozen=True, slots=True)
class Chart:
    """A chart of table `table`: categories from column `categories`, one series per
    column of `series`, over the first `limit` rows (all when None)."""

    title: str
    kind: Literal["column", "stacked", "bar", "line"]
    table: int
    categories: int
    series: tuple[int, ...]
    limit: int | None = None
    # Percentages on the value axis.
    shares: bool = False


@dataclass(frozen=True, slots=True)
class Section:
    """One chapter / sheet."""

    key: str
    title: str
    note: str
    tables: list[Table]
    charts: list[Chart] = field(default_factory=list)
    # Lines printed before the tables (the audit verdict).
    lead: tuple[str, ...] = ()


def _share(value: float | None) -> Share | None:
    return None if value is None else Share(value)


def _seconds(value: float | None) -> Seconds | None:
    return None if value is None else Seconds(value)


def sections(report: MonthlyReport, lang: Language) -> list[Section]:
    """Every section of the report, in order."""
    return [
        _summary(report, lang),
        _ranking(report, lang),
        _daily(report, lang),
        _response(report, lang),
        _overdue(report, lang),
        _false_alarms(report, lang),
        _devices(report, lang),
        _occupancy(report, lang),
        _staff_ratio(report, lang),
        _audit(report, lang),
    ]


def audit_verdict(report: MonthlyReport, lang: Language) -> str:
    """One sentence: every chain intact, or how many are broken."""
    broken = sum(not chain.intact for chain in report.chains)
    if broken:
        return word(lang, "audit.broken", n=broken)
    if len(report.chains) == 1:
        return word(lang, "audit.one_ok")
    return word(lang, "audit.all_ok", n=len(report.chains))


def _verdict(lang: Language, value: float | None, target: float) -> str:
    if value is None:
        return "—"
    return word(lang, "met") if value >= target else word(lang, "missed")


def _summary(report: MonthlyReport, lang: Language) -> Section:
    k = report.figures.kpis
    w = partial(word, lang)
    alerts = sum(row.alerts for row in report.figures.daily)
    calls = sum(row.alerts for row in report.figures.daily if row.kind == "sos")
    judged = sum(rate.resolved for rate in k.false_alarms_by_kind)
    false = sum(rate.false_alarms for rate in k.false_alarms_by_kind)
    rows: list[tuple[Cell, ...]] = [
        (w("facilities"), len(report.figures.facilities), None, None),
        (w("alerts"), alerts, None, None),
        (w("calls"), calls, None, None),
        (w("high_alerts"), k.high_alerts, None, None),
        (
            w("ack60"),
            _share(k.ack_within_60s_share),
            Share(TARGET_60S),
            _verdict(lang, k.ack_within_60s_share, TARGET_60S),
        ),
        (
            w("ack180"),
            _share(k.ack_within_180s_share),
            Share(TARGET_180S),
            _verdict(lang, k.ack_within_180s_share, TARGET_180S),
        ),
        (w("ack_median"), _seconds(k.time_to_ack.median_s), None, None),
        (w("ack_p90"), _seconds(k.time_to_ack.p90_s), None, None),
        (w("attend_median"), _seconds(k.time_to_attend.median_s), None, None),
        (w("attend_p90"), _seconds(k.time_to_attend.p90_s), None, None),
        (w("overdue_calls"), k.overdue_calls, None, None),
        (w("staff_ratio_breaches"), k.staff_ratio_breaches, None, None),
        (w("judged"), judged, None, None),
        (w("false_alarms"), false, None, None),
        (w("false_share"), _share(false / judged if judged else None), None, None),
        (w("devices_online"), k.devices_online, None, None),
        (w("devices_total"), k.devices_total, None, None),
        (w("buttons_untested"), len(k.buttons_untested), None, None),
        (w("people_now"), k.people_present, None, None),
        (w("capacity"), k.capacity, None, None),
        (w("s.audit"), audit_verdict(report, lang), None, None),
    ]
    if report.scope_kind == "facility" and report.chains:
        # One facility's report: the hash to file is on page 1.
        chain = report.chains[0]
        rows += [
            (w("chain_last_id"), chain.last_id, None, None),
            (w("chain_last_hash"), chain.last_hash, None, None),
        ]
    header = ("", w("total"), w("target"), "")
    return Section("summary", w("s.summary"), "", [Table(None, header, rows)])


def _ranking(report: MonthlyReport, lang: Language) -> Section:
    w = partial(word, lang)
    broken = {chain.facility_id for chain in report.chains if not chain.intact}
    header = words(
        lang,
        "rank",
        "id",
        "name",
        "kind",
        "high_alerts",
        "ack60",
        "ack180",
        "overdue_calls",
        "staff_ratio_breaches",
        "false_share",
        "devices_online",
        "devices_total",
        "buttons_untested",
        "s.audit",
    )
    rows: list[tuple[Cell, ...]] = [
        (
            rank,
            f.id,
            f.name,
            coded(lang, "fkind", f.kind),
            f.high_alerts,
            _share(f.ack_within_60s_share),
            _share(f.ack_within_180s_share),
            f.overdue_calls,
            f.staff_ratio_breaches,
            _share(f.false_alarm_share),
            f.devices_online,
            f.devices_total,
            f.buttons_untested,
            w("chain_broken") if f.id in broken else w("chain_ok"),
        )
        for rank, f in enumerate(report.ranked, start=1)
    ]
    chart = Chart(w("overdue_calls"), "bar", 0, 2, (7,), limit=CHART_FACILITIES)
    return Section(
        "ranking",
        w("s.ranking"),
        w("note.ranking"),
        [Table(None, header, rows, complete=True)],
        [chart],
    )


def _daily(report: MonthlyReport, lang: Language) -> Section:
    w = partial(word, lang)
    figures = report.figures
    kinds = [kind for kind in ALERT_KINDS if any(row.kind == kind for row in figures.daily)]
    by_day: dict[tuple[date, str], int] = {}
    by_facility: dict[tuple[str, str], int] = {}
    for row in figures.daily:
        by_day[row.day, row.kind] = by_day.get((row.day, row.kind), 0) + row.alerts
        key = (row.facility_id, row.kind)
        by_facility[key] = by_facility.get(key, 0) + row.alerts
    day_rows: list[tuple[Cell, ...]] = []
    for midnight in day_span(report):
        day = midnight.date()
        counts = [by_day.get((day, kind), 0) for kind in kinds]
        day_rows.append((day, *counts, sum(counts)))
    kind_names = tuple(coded(lang, "kind", kind) for kind in kinds)
    facility_rows: list[tuple[Cell, ...]] = []
    for f in report.ranked:
        counts = [by_facility.get((f.id, kind), 0) for kind in kinds]
        facility_rows.append((f.id, f.name, *counts, sum(counts)))
    # Each facility's days with alerts, in ranking order (whole in the XLSX).
    per_facility_day: dict[tuple[str, date], dict[str, int]] = {}
    for row in figures.daily:
        per_facility_day.setdefault((row.facility_id, row.day), {})[row.kind] = row.alerts
    place = {f.id: (rank, f.name) for rank, f in enumerate(report.ranked)}
    facility_day_rows: list[tuple[Cell, ...]] = []
    for (facility_id, day), counted in sorted(
        per_facility_day.items(), key=lambda item: (place[item[0][0]][0], item[0][1])
    ):
        counts = [counted.get(kind, 0) for kind in kinds]
        facility_day_rows.append((facility_id, place[facility_id][1], day, *counts, sum(counts)))
    tables = [
        Table(w("day"), (w("day"), *kind_names, w("total")), day_rows),
        Table(w("facility"), (w("id"), w("name"), *kind_names, w("total")), facility_rows),
        Table(
            f"{w('facility')} / {w('day')}",
            (w("id"), w("name"), w("day"), *kind_names, w("total")),
            facility_day_rows,
        ),
    ]
    charts = (
        [Chart(w("s.daily"), "stacked", 0, 0, tuple(range(1, len(kinds) + 1)))] if kinds else []
    )
    note = word(lang, "note.daily", tz=figures.timezone)
    return Section("daily", w("s.daily"), note, tables, charts)


def _bin_label(low: int, high: int | None) -> str:
    return f"{low}–{high}" if high is not None else f"> {low}"


def _response(report: MonthlyReport, lang: Language) -> Section:
    w = partial(word, lang)
    k = report.figures.kpis
    header = words(
        lang,
        "id",
        "name",
        "high_alerts",
        "ack60",
        "ack180",
        "ack_median",
        "ack_p90",
        "attend_median",
        "attend_p90",
    )

    def row(ident: str, name: str, figures: ResponseFigures) -> tuple[Cell, ...]:
        times = (figures.time_to_ack, figures.time_to_attend)
        return (
            ident,
            name,
            figures.high_alerts,
            _share(figures.ack_within_60s_share),
            _share(figures.ack_within_180s_share),
            *(_seconds(value) for time in times for value in (time.median_s, time.p90_s)),
        )

    rows = [row("", w("total"), k), *(row(f.id, f.name, f) for f in report.ranked)]
    bins: list[tuple[Cell, ...]] = [
        (_bin_label(b.low_s, b.high_s), b.acknowledged, b.attended)
        for b in report.figures.response_bins
    ]
    bins.append((w("never"), report.figures.never_acknowledged, report.figures.never_attended))
    distribution = Table(w("seconds"), (w("seconds"), w("acknowledged_n"), w("attended_n")), bins)
    targets = (
        f"{w('target')}: {w('ack60')} ≥ {TARGET_60S:.1%}, {w('ack180')} ≥ {TARGET_180S:.0%}"
        f" ({ACK_FAST_S} s / {ACK_SLOW_S} s; {', '.join(map(str, RESPONSE_BINS_S))} s)"
    )
    return Section(
        "response",
        w("s.response"),
        w("note.response"),
        [distribution, Table(w("facility"), header, rows)],
        [Chart(w("s.response"), "column", 0, 0, (1, 2))],
        lead=(targets,),
    )


def _time(value: datetime | None, report: MonthlyReport) -> datetime | None:
    return None if value is None else value.astimezone(report.generated_at.tzinfo)


def _overdue(report: MonthlyReport, lang: Language) -> Section:
    w = partial(word, lang)
    header = words(
        lang,
        "facility",
        "zone",
        "device",
        "kind",
        "raised",
        "acknowledged",
        "acknowledged_by",
        "attended",
        "resolved",
        "disposition",
    )
    rows: list[tuple[Cell, ...]] = [
        (
            call.facility_name,
            call.zone_name or call.zone_id,
            call.device_id,
            coded(lang, "kind", call.kind),
            _time(call.raised_at, report),
            _time(call.acknowledged_at, report),
            call.acknowledged_by,
            _time(call.attended_at, report),
            _time(call.resolved_at, report),
            coded(lang, "disp", call.disposition) if call.disposition else None,
        )
        for call in report.figures.overdue
    ]
    return Section(
        "overdue", w("s.overdue"), w("note.overdue"), [Table(None, header, rows, complete=True)]
    )


def _false_alarms(report: MonthlyReport, lang: Language) -> Section:
    w = partial(word, lang)
    k = report.figures.kpis
    names = {f.id: f.name for f in report.figures.facilities}
    by_kind: list[tuple[Cell, ...]] = [
        (coded(lang, "kind", rate.subject), rate.resolved, rate.false_alarms, Share(rate.share))
        for rate in k.false_alarms_by_kind
    ]
    devices: list[tuple[Cell, ...]] = []
    for rate in report.figures.worst_devices:
        place = report.figures.places.get(rate.subject)
        devices.append(
            (
                rate.subject,
                names.get(place.facility_id, place.facility_id) if place else None,
                place.zone_id if place else None,
                rate.resolved,
                rate.false_alarms,
                Share(rate.share),
            )
        )
    counts = (w("judged"), w("false_alarms"), w("false_share"))
    tables = [
        Table(w("kind"), (w("kind"), *counts), by_kind),
        Table(w("worst_devices"), (w("device"), w("facility"), w("zone"), *counts), devices),
    ]
    charts = [Chart(w("false_share"), "bar", 0, 0, (3,), shares=True)] if by_kind else []
    return Section("false_alarms", w("s.false_alarms"), w("note.false_alarms"), tables, charts)


def _devices(report: MonthlyReport, lang: Language) -> Section:
    w = partial(word, lang)
    names = {f.id: f.name for f in report.figures.facilities}
    rows: list[tuple[Cell, ...]] = [
        (
            f.id,
            f.name,
            f.devices_online,
            f.devices_total - f.devices_online,
            f.devices_total,
            f.buttons_untested,
        )
        for f in report.ranked
    ]
    untested: list[tuple[Cell, ...]] = [
        (button.device_id, names.get(button.facility_id, button.facility_id), button.zone_id)
        for button in report.figures.untested
    ]
    offline = word(lang, "devices_total") + " − " + word(lang, "devices_online")
    header = (
        w("id"),
        w("name"),
        w("devices_online"),
        offline,
        w("devices_total"),
        w("buttons_untested"),
    )
    return Section(
        "devices",
        w("s.devices"),
        w("note.devices"),
        [
            Table(None, header, rows),
            Table(w("untested_list"), (w("device"), w("facility"), w("zone")), untested),
        ],
        [Chart(w("devices_online"), "stacked", 0, 1, (2, 3), limit=CHART_FACILITIES)],
    )


def _occupancy(report: MonthlyReport, lang: Language) -> Section:
    w = partial(word, lang)
    capacity = report.figures.kpis.capacity
    scope = {day.day: day for day in report.figures.occupancy if day.facility_id is None}
    days: list[tuple[Cell, ...]] = []
    for midnight in day_span(report):
        day = scope.get(midnight.date())
        days.append(
            (midnight.date(), day.peak if day else None, day.mean if day else None, capacity)
        )
    present: dict[str, int] = {}
    for zone in report.figures.kpis.zones:
        present[zone.facility_id] = present.get(zone.facility_id, 0) + zone.present
    facilities: list[tuple[Cell, ...]] = [
        (f.id, f.name, f.occupancy_peak, f.occupancy_mean, present.get(f.id, 0), f.capacity)
        for f in report.ranked
    ]
    return Section(
        "occupancy",
        w("s.occupancy"),
        w("note.occupancy"),
        [
            Table(w("day"), (w("day"), w("peak"), w("mean"), w("capacity")), days),
            Table(
                w("facility"),
                (
                    w("id"),
                    w("name"),
                    w("occupancy_peak"),
                    w("occupancy_mean"),
                    w("people_now"),
                    w("capacity"),
                ),
                facilities,
            ),
        ],
        [Chart(w("s.occupancy"), "line", 0, 0, (1, 2, 3))],
    )


def _staff_ratio(report: MonthlyReport, lang: Language) -> Section:
    w = partial(word, lang)
    names = {f.id: f.name for f in report.figures.facilities}
    rows: list[tuple[Cell, ...]] = [
        (
            names.get(b.facility_id, b.facility_id),
            b.zone_name or b.zone_id,
            b.class_type,
            b.breaches,
        )
        for b in report.figures.staff_ratio
    ]
    per_type: dict[str, int] = {}
    for b in report.figures.staff_ratio:
        type_name = b.class_type or "—"
        per_type[type_name] = per_type.get(type_name, 0) + b.breaches
    types: list[tuple[Cell, ...]] = [(name, count) for name, count in sorted(per_type.items())]
    return Section(
        "staff_ratio",
        w("s.staff_ratio"),
        w("note.staff_ratio"),
        [
            Table(w("class_type"), (w("class_type"), w("breaches")), types),
            Table(w("class"), (w("facility"), w("class"), w("class_type"), w("breaches")), rows),
        ],
        [Chart(w("breaches"), "column", 0, 0, (1,))] if types else [],
    )


def _audit(report: MonthlyReport, lang: Language) -> Section:
    w = partial(word, lang)
    header = words(
        lang,
        "id",
        "name",
        "chain_status",
        "chain_rows",
        "chain_last_id",
        "chain_last_hash",
        "chain_problem",
    )
    rows: list[tuple[Cell, ...]] = [
        (
            chain.facility_id,
            chain.facility_name,
            w("chain_ok") if chain.intact else w("chain_broken"),
            chain.rows,
            chain.last_id,
            chain.last_hash,
            chain.problem,
        )
        for chain in sorted(report.chains, key=lambda c: (c.intact, c.facility_id))
    ]
    return Section(
        "audit",
        w("s.audit"),
        w("note.audit"),
        [Table(None, header, rows, complete=True)],
        lead=(audit_verdict(report, lang),),
    )
