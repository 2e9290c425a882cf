"""The monthly supervision report: a seeded month, built as PDF and XLSX, checked against
SQL written here, read back with pdftotext, pdftoppm and openpyxl; the command and the API.
"""

from __future__ import annotations

import asyncio
import io
import shutil
import statistics
import subprocess
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import openpyxl
import pytest

from bench.dashboard import seed_registry
from bench.report import previous_month, seed_month
from hub.errors import QueryError
from hub.reports.files import render
from hub.reports.monthly import MonthlyReport, build_report, month_period
from hub.reports.sections import sections
from hub.settings import Settings
from hub.storage.kpis import district_kpis
from tests.child_process import database_env, run_carehub
from tests.fix_api import Api
from tests.fix_hub import DB, connect_db

pytestmark = [pytest.mark.db]

DISTRICT = "基准区"
FACILITIES = 4
SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
NOW = datetime.now(UTC)
ZONE = "Asia/Shanghai"
MONTH, START, END = previous_month(NOW, ZONE)
POPPLER = shutil.which("pdftotext") is not None and shutil.which("pdftoppm") is not None
needs_poppler = pytest.mark.skipif(
    not POPPLER,
    reason="pdftotext/pdftoppm missing: apt-get install poppler-utils poppler-data "
    "(scripts/ensure-chromium installs them)",
)


async def _seeded(settings: Settings) -> list[str]:
    """FACILITIES facilities of DISTRICT with a month of history; their ids."""
    async with await connect_db(settings) as conn:
        await seed_registry(conn, FACILITIES, DISTRICT)
        cur = await conn.execute(
            "SELECT id FROM facilities WHERE district = %s ORDER BY id", (DISTRICT,)
        )
        ids = [row[0] for row in await cur.fetchall()]
        await seed_month(conn, ids, START, END, NOW, seed=7)
        # Someone took over calls under a name of their own.
        await conn.execute(
            "INSERT INTO users (username, password_hash, role, facility_id, display_name)"
            " VALUES ('staff-bench-00000', 'x', 'staff', 'bench-00000', '王护理员')"
        )
    return ids


async def _report(settings: Settings, **scope: str | None) -> MonthlyReport:
    async with await connect_db(settings) as conn:
        return await build_report(
            conn,
            facility=scope.get("facility"),
            district=scope.get("district"),
            month=MONTH,
            zone=ZONE,
            now=NOW,
        )


async def _one(db: DB, query: str, *params: object) -> Any:
    cur = await db.execute(query.encode(), params)
    row = await cur.fetchone()
    assert row is not None
    return row[0]


async def test_figures_match_sql_written_here(migrated: Settings) -> None:
    """Every figure the report prints, recomputed from the rows with SQL of this test's own."""
    ids = await _seeded(migrated)
    report = await _report(migrated, district=DISTRICT)
    figures = report.figures
    assert [f.id for f in figures.facilities] == ids
    period = (START, END)

    async with await connect_db(migrated) as db:
        for f in figures.facilities:
            scope = (f.id, *period)
            where = "facility_id = %s AND raised_at >= %s AND raised_at < %s"
            assert f.alerts == await _one(db, f"SELECT count(*) FROM alerts WHERE {where}", *scope)
            assert f.calls == await _one(
                db, f"SELECT count(*) FROM alerts WHERE {where} AND kind = 'sos'", *scope
            )
            high = await _one(
                db, f"SELECT count(*) FROM alerts WHERE {where} AND priority = 'high'", *scope
            )
            fast = await _one(
                db,
                f"SELECT count(*) FROM alerts WHERE {where} AND priority = 'high'"
                " AND acknowledged_at - raised_at <= interval '1 minute'",
                *scope,
            )
            assert (f.high_alerts, f.ack_within_60s) == (high, fast)
            assert f.ack_within_60s_share == pytest.approx(fast / high)
            cur = await db.execute(
                f"SELECT extract(epoch FROM acknowledged_at - raised_at)::float8 FROM alerts"
                f" WHERE {where} AND priority = 'high' AND acknowledged_at IS NOT NULL".encode(),
                scope,
            )
            waits = [row[0] for row in await cur.fetchall()]
            assert f.time_to_ack.median_s == pytest.approx(statistics.median(waits))
            assert f.overdue_calls == await _one(
                db, f"SELECT count(*) FROM alerts WHERE {where} AND overdue_at IS NOT NULL", *scope
            )
            # Judged by staff: resolved, except what resolved by itself.
            judged = await _one(
                db,
                f"SELECT count(*) FROM alerts WHERE {where} AND state = 'resolved'"
                " AND resolved_by <> 'system'",
                *scope,
            )
            false = await _one(
                db,
                f"SELECT count(*) FROM alerts WHERE {where} AND disposition = 'false_alarm'",
                *scope,
            )
            assert (f.judged, f.false_alarms) == (judged, false)
            assert f.devices_total == 3

        # The district's totals are the /kpis figures of the month, and add up.
        async with await connect_db(migrated) as conn:
            kpis = await district_kpis(conn, DISTRICT, START, END, NOW)
        assert figures.kpis == kpis
        assert kpis.high_alerts == sum(f.high_alerts for f in figures.facilities)
        assert kpis.overdue_calls == sum(f.overdue_calls for f in figures.facilities)
        self_resolved = await _one(
            db,
            "SELECT count(*) FROM alerts"
            " WHERE disposition = 'self_resolved' AND facility_id = ANY(%s)",
            ids,
        )
        assert self_resolved > 0
        judged_by_kind = sum(rate.resolved for rate in kpis.false_alarms_by_kind)
        assert judged_by_kind == sum(f.judged for f in figures.facilities)

        # By day (China's days), by kind: the same count as the rows.
        per_day: dict[Any, int] = defaultdict(int)
        for row in figures.daily:
            per_day[row.day] += row.alerts
        cur = await db.execute(
            "SELECT (raised_at AT TIME ZONE 'Asia/Shanghai')::date, count(*) FROM alerts"
            " WHERE facility_id = ANY(%s) AND raised_at >= %s AND raised_at < %s GROUP BY 1",
            (ids, *period),
        )
        assert dict(per_day) == dict(await cur.fetchall())
        assert len(per_day) == (END - START).days

        # The distribution holds every high alert once: timed bins plus never.
        assert sum(b.acknowledged for b in figures.response_bins) + figures.never_acknowledged == (
            kpis.high_alerts
        )
        # Overdue calls: listed one by one.
        assert [call.alert_id for call in figures.overdue] == [
            row[0]
            for row in await (
                await db.execute(
                    "SELECT id FROM alerts WHERE facility_id = ANY(%s) AND raised_at >= %s"
                    " AND raised_at < %s AND overdue_at IS NOT NULL ORDER BY raised_at, id",
                    (ids, *period),
                )
            ).fetchall()
        ]
        named = [c for c in figures.overdue if c.facility_id == "bench-00000" and c.acknowledged_by]
        assert named and all(c.acknowledged_by == "王护理员 (staff-bench-00000)" for c in named)

        # Occupancy: per day, the highest sum over the facilities' counters at once.
        cur = await db.execute(
            "SELECT ts, count FROM readings WHERE facility_id = ANY(%s) AND ts >= %s AND ts < %s",
            (ids, *period),
        )
        at_once: dict[datetime, int] = defaultdict(int)
        for ts, count in await cur.fetchall():
            at_once[ts] += count
        peaks: dict[Any, int] = defaultdict(int)
        for ts, total in at_once.items():
            day = ts.astimezone(START.tzinfo).date()
            peaks[day] = max(peaks[day], total)
        district_days = {d.day: d.peak for d in figures.occupancy if d.facility_id is None}
        assert district_days == dict(peaks)

    # Ranked worst first: the chains are intact, so overdue calls decide first.
    assert report.chains_intact
    overdue = [f.overdue_calls for f in report.ranked]
    assert overdue == sorted(overdue, reverse=True)
    assert all(chain.rows > 0 and chain.last_hash for chain in report.chains)


async def test_a_tampered_chain_ranks_its_facility_first_and_says_where(
    migrated: Settings,
) -> None:
    """An edited audit row fails verification; that facility heads the ranking."""
    ids = await _seeded(migrated)
    victim = ids[-1]
    async with await connect_db(migrated) as db:
        await db.execute(
            "UPDATE alert_audit SET actor = 'nobody' WHERE id ="
            " (SELECT min(id) + 3 FROM alert_audit WHERE facility_id = %s)",
            (victim,),
        )
        last = await _one(db, "SELECT last_hash FROM audit_heads WHERE facility_id = %s", victim)
    report = await _report(migrated, district=DISTRICT)
    assert not report.chains_intact
    assert report.ranked[0].id == victim
    broken = next(chain for chain in report.chains if chain.facility_id == victim)
    assert not broken.intact
    assert broken.problem is not None and "content was changed" in broken.problem
    assert broken.last_hash == last
    text = _pdf_text(render(report, "pdf", "en"))
    assert "BROKEN" in text
    assert "failed verification" in text


def _poppler(tool: str, *args: str, content: bytes | None = None) -> str:
    """Run a poppler tool (pdftotext, pdfinfo, pdftoppm) and return what it printed."""
    path = shutil.which(tool)
    assert path is not None, f"{tool} is not installed"
    done = subprocess.run([path, *args], input=content, capture_output=True, check=True)
    return done.stdout.decode()


def _pdf_text(content: bytes) -> str:
    return _poppler("pdftotext", "-layout", "-", "-", content=content)


def _render_pages(content: bytes, folder: Path) -> tuple[int, list[int]]:
    """(pages pdfinfo counts, sizes of the PNGs pdftoppm renders); page 1 into SCREENSHOTS."""
    pdf = folder / "report.pdf"
    pdf.write_bytes(content)
    info = _poppler("pdfinfo", str(pdf))
    pages = int(next(line for line in info.splitlines() if line.startswith("Pages:")).split()[1])
    assert "841.89 x 595.276 pts (A4)" in info  # A4 landscape
    _poppler("pdftoppm", "-r", "60", "-png", str(pdf), str(folder / "page"))
    sizes = [image.stat().st_size for image in sorted(folder.glob("page-*.png"))]
    # Page 1 for the README, at print-preview resolution.
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    target = SCREENSHOTS / "report-page1"
    _poppler(
        "pdftoppm", "-r", "110", "-png", "-f", "1", "-l", "1", "-singlefile", str(pdf), str(target)
    )
    return pages, sizes


@needs_poppler
async def test_pdf_carries_names_and_counts_and_renders_every_page(
    migrated: Settings, tmp_path: Path
) -> None:
    """pdftotext finds the facilities and the figures; pdftoppm renders each page."""
    await _seeded(migrated)
    report = await _report(migrated, district=DISTRICT)
    content = render(report, "pdf", "zh")
    assert content.startswith(b"%PDF-")
    text = _pdf_text(content)
    # pdftotext may break a line between columns; whitespace does not matter here.
    flat = " ".join(text.split())
    assert "月度监管报告" in flat
    assert f"辖区: {DISTRICT}" in flat
    for f in report.figures.facilities:
        assert f.name in flat
    total = sum(row.alerts for row in report.figures.daily)
    kpis = report.figures.kpis
    assert f"告警 {total}" in flat
    assert f"超时呼叫 {kpis.overdue_calls}" in flat
    assert f"60 秒内接管率 {kpis.ack_within_60s_share:.1%} 97.5%" in flat
    # Every overdue call is listed, with the staff member who took it over.
    assert "王护理员 (staff-bench-00000)" in flat
    for chain in report.chains:
        assert chain.last_hash is not None
        assert chain.last_hash[:24] in flat.replace(" ", "")

    pages, sizes = await asyncio.to_thread(_render_pages, content, tmp_path)
    assert len(sizes) == pages >= len(sections(report, "zh"))
    assert all(size > 5_000 for size in sizes)
    assert (SCREENSHOTS / "report-page1.png").stat().st_size > 20_000

    english = " ".join(_pdf_text(render(report, "pdf", "en")).split())
    assert "Monthly supervision report" in english
    assert "Acknowledged within 60 s" in english
    assert "月度监管报告" not in english


async def test_xlsx_has_a_sheet_per_section_with_numbers_and_charts(migrated: Settings) -> None:
    """openpyxl finds one sheet per section, numbers stored as numbers, and the charts."""
    await _seeded(migrated)
    report = await _report(migrated, district=DISTRICT)
    book = openpyxl.load_workbook(io.BytesIO(render(report, "xlsx", "zh")))
    chapters = sections(report, "zh")
    assert book.sheetnames == [section.title for section in chapters]
    for section in chapters:
        sheet = book[section.title]
        # openpyxl keeps the charts it reads on the sheet (one per chart of the section).
        assert len(sheet._charts) == len(section.charts), section.key
    ranking = book["机构排名"]
    header = next(row for row in ranking.iter_rows(values_only=True) if row and row[0] == "排名")
    rows = [row for row in ranking.iter_rows(values_only=True) if isinstance(row[0], int)]
    assert [row[1] for row in rows] == [f.id for f in report.ranked]
    overdue_column = header.index("超时呼叫")
    assert [row[overdue_column] for row in rows] == [f.overdue_calls for f in report.ranked]
    share_column = header.index("60 秒内接管率")
    first = ranking.cell(row=ranking.max_row, column=share_column + 1)
    assert isinstance(first.value, float) and first.number_format == "0.0%"
    summary = {row[0]: row[1] for row in book["概要"].iter_rows(values_only=True) if row[0]}
    assert summary["超时呼叫"] == report.figures.kpis.overdue_calls
    assert summary["高优先级告警"] == report.figures.kpis.high_alerts
    # Calls and alerts per facility per day: every alert of the month, once.
    daily = list(book["呼叫与告警"].iter_rows(values_only=True))
    start = daily.index(next(row for row in daily if row[0] == "机构 / 日期")) + 2
    per_day = [row for row in daily[start:] if row[0]]
    assert {row[0] for row in per_day} == {f.id for f in report.figures.facilities}
    assert all(isinstance(row[2], datetime) for row in per_day)
    assert sum(row[-1] for row in per_day) == sum(f.alerts for f in report.figures.facilities)
    overdue_sheet = list(book["超时呼叫"].iter_rows(values_only=True))
    assert sum(isinstance(row[4], datetime) for row in overdue_sheet) == len(report.figures.overdue)


async def test_a_facility_a_quiet_month_and_bad_months(migrated: Settings) -> None:
    """One facility's report; an empty month still builds; bad months say why."""
    ids = await _seeded(migrated)
    report = await _report(migrated, facility=ids[0])
    assert [f.id for f in report.figures.facilities] == [ids[0]]
    assert report.title == "基准机构 1" and report.scope_kind == "facility"
    # Its chain's last hash is on page 1, to file as evidence.
    summary = sections(report, "en")[0].tables[0].rows
    assert ("Last row's hash (SHA-256)", report.chains[0].last_hash, None, None) in summary
    # f-sun (the fixture's site) has no history at all: zeros and dashes, not errors; and
    # a name full of markup, formula and length prints as text.
    hostile = '<b>阳光</b> & =HYPERLINK("x") ' + "长" * 300
    async with await connect_db(migrated) as db:
        await db.execute("UPDATE facilities SET name = %s WHERE id = 'f-sun'", (hostile,))
    quiet = await _report(migrated, facility="f-sun")
    assert quiet.figures.kpis.high_alerts == 0
    assert quiet.filename("pdf") == f"carehub-report-f-sun-{MONTH}.pdf"
    for fmt in ("pdf", "xlsx"):
        assert len(render(quiet, fmt, "zh")) > 1000  # type: ignore[arg-type]
    book = openpyxl.load_workbook(io.BytesIO(render(quiet, "xlsx", "en")))
    names = [row[2] for row in book["Facilities ranked"].iter_rows(values_only=True)]
    assert hostile in names  # a string, not a formula
    if POPPLER:
        assert "<b>阳光</b> &" in _pdf_text(render(quiet, "pdf", "zh"))

    for month, why in (
        ("2026-13", "no month 13"),
        ("2026-00", "no month 0"),
        ("2026-1", "expected YYYY-MM"),
        ("２０２６-１１", "expected YYYY-MM"),
        ("2026-11-01", "expected YYYY-MM"),
        ("", "expected YYYY-MM"),
        ("1999-12", "outside 2000 to 2099"),
        (f"{NOW.year + 1}-01", "has not begun"),
        ("'; DROP TABLE alerts; --", "expected YYYY-MM"),
    ):
        with pytest.raises(QueryError, match=why) as refused:
            month_period(month, ZONE, NOW)
        assert refused.value.code == "invalid"
    # The month under way ends now; December runs into the next year.
    start, end = month_period(f"{NOW:%Y-%m}", ZONE, NOW)
    assert end == NOW and start <= NOW
    start, end = month_period("2025-12", ZONE, NOW)
    assert (start.month, end.year, end.month) == (12, 2026, 1)
    async with await connect_db(migrated) as conn:
        with pytest.raises(QueryError, match="no facility 'f-nowhere'"):
            await build_report(
                conn, facility="f-nowhere", district=None, month=MONTH, zone=ZONE, now=NOW
            )
        with pytest.raises(QueryError, match="not both"):
            await build_report(
                conn, facility=ids[0], district=DISTRICT, month=MONTH, zone=ZONE, now=NOW
            )


def _cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return run_carehub("report", "monthly", *args, **database_env(settings))


async def test_report_command_writes_both_formats_and_prints_the_time(
    migrated: Settings, tmp_path: Path
) -> None:
    """`carehub report monthly` writes the file, says what and how long; refusals exit 1."""
    await _seeded(migrated)
    district_month = ("--district", DISTRICT, "--month", MONTH)
    for fmt in ("pdf", "xlsx"):
        target = tmp_path / f"report.{fmt}"
        done = await asyncio.to_thread(
            _cli, migrated, *district_month, "--format", fmt, "-o", str(target)
        )
        assert done.returncode == 0, done.stderr
        assert f"wrote {target} ({fmt}," in done.stdout
        assert (
            f"district {DISTRICT}, {MONTH}, {FACILITIES} facilities, audit chains intact"
            in done.stdout
        )
        assert "built in " in done.stdout and " s (figures and audit " in done.stdout
        assert target.stat().st_size > 5_000
    assert not list(tmp_path.glob(".*.partial"))  # noqa: ASYNC240
    english = await asyncio.to_thread(
        _cli,
        migrated,
        "--facility",
        "bench-00001",
        "--month",
        MONTH,
        "--lang",
        "en",
        "-o",
        str(tmp_path / "en.pdf"),
    )
    assert english.returncode == 0, english.stderr
    assert (tmp_path / "en.pdf").read_bytes().startswith(b"%PDF-")

    for args, code, message in (
        (("--district", "龙湾区", "--month", MONTH), 1, "no facility in district '龙湾区'"),
        (("--district", DISTRICT, "--month", "2026/11"), 1, "month: expected YYYY-MM"),
        ((*district_month, "--format", "docx"), 2, "invalid choice"),
        (("--district", DISTRICT, "--facility", "x", "--month", MONTH), 2, "not allowed with"),
        (("--month", MONTH), 2, "one of the arguments --district --facility is required"),
    ):
        done = await asyncio.to_thread(_cli, migrated, *args, "-o", str(tmp_path / "x.pdf"))
        assert done.returncode == code, done.stderr
        assert message in done.stderr
    unwritable = await asyncio.to_thread(
        _cli, migrated, *district_month, "-o", str(tmp_path / "no" / "x.pdf")
    )
    assert unwritable.returncode == 1
    assert "cannot write" in unwritable.stderr


async def test_api_scopes_the_report_to_the_caller(api: Api) -> None:
    """Regulator: their district; manager: their facility; staff: 403; bad input: 400/422."""
    month = MONTH
    pdf = await api.request("GET", f"/reports/monthly?month={month}", "regulator")
    assert pdf.status_code == 200, pdf.text
    assert pdf.headers["content-type"] == "application/pdf"
    assert pdf.content.startswith(b"%PDF-")
    disposition = pdf.headers["content-disposition"]
    assert disposition.startswith(f'attachment; filename="carehub-report-district-{month}.pdf"')
    assert "filename*=UTF-8''" in disposition
    assert float(pdf.headers["x-carehub-build-seconds"]) > 0
    if POPPLER:
        assert "鹿城区" in _pdf_text(pdf.content)

    xlsx = await api.request(
        "GET", f"/reports/monthly?month={month}&format=xlsx&lang=en", "manager"
    )
    assert xlsx.status_code == 200, xlsx.text
    book = openpyxl.load_workbook(io.BytesIO(xlsx.content))
    assert book.sheetnames[0] == "Summary"
    ranking = [
        row[1]
        for row in book["Facilities ranked"].iter_rows(values_only=True)
        if isinstance(row[0], int)
    ]
    assert ranking == ["f-sun"]  # the manager's own facility only

    # Without a month: last month.
    assert (await api.request("GET", "/reports/monthly", "regulator")).status_code == 200

    async def refused(
        path: str, who: str, status: int, words: str, field: str | None = None
    ) -> None:
        response = await api.request("GET", path, who)
        assert response.status_code == status, response.text
        body = response.json()
        assert words in body["message"], body
        if field is not None:
            assert body["field"] == field

    await refused(f"/reports/monthly?month={month}", "staff", 403, "monthly supervision report")
    await refused(f"/reports/monthly?month={month}", None, 401, "")
    await refused(f"/reports/monthly?district=瓯海区&month={month}", "regulator", 404, "瓯海区")
    await refused(f"/reports/monthly?facility=f-star&month={month}", "regulator", 404, "f-star")
    await refused(f"/reports/monthly?district=鹿城区&month={month}", "manager", 404, "鹿城区")
    await refused(f"/reports/monthly?facility=f-moon&month={month}", "manager", 404, "f-moon")
    await refused(
        f"/reports/monthly?facility=f-sun&district=鹿城区&month={month}", "admin", 400, "not both"
    )
    for bad in ("2026-13", "2026-1", "26-11", "abcdefg", "1999-01", f"{NOW.year + 1}-01"):
        await refused(f"/reports/monthly?month={bad}", "regulator", 400, "month", "query.month")
    await refused(f"/reports/monthly?month={'9' * 40}", "regulator", 422, "", "query.month")
    await refused(
        f"/reports/monthly?month={month}&format=docx", "regulator", 422, "", "query.format"
    )
    await refused(f"/reports/monthly?month={month}&lang=fr", "regulator", 422, "", "query.lang")

    # A regulator's report of one facility is a read of its detail: logged.
    one = await api.request("GET", f"/reports/monthly?facility=f-moon&month={month}", "regulator")
    assert one.status_code == 200
    async with await connect_db(api.hub.settings) as db:
        logged = await _one(
            db,
            "SELECT count(*) FROM access_log WHERE username = 'regulator'"
            " AND facility_id = 'f-moon' AND route LIKE %s",
            "%/reports/monthly",
        )
    assert logged == 1
