"""The monthly supervision report downloads from the regulator's screen, beside the CSV:
PDF in Chinese by default, XLSX in English one click away, and the hub's refusal shown."""

from __future__ import annotations

import asyncio
import io
import re
import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import openpyxl
import pytest
from playwright.async_api import Browser, Locator, Page, expect

from bench.dashboard import seed_registry
from bench.report import previous_month, seed_month
from tests.e2e.conftest import SCREEN, Site, sign_in
from tests.fix_hub import connect_db

pytestmark = [pytest.mark.browser, pytest.mark.mqtt, pytest.mark.db]


def _pdf_text(path: Path) -> str:
    tool = shutil.which("pdftotext")
    if tool is None:
        return ""
    return subprocess.run([tool, str(path), "-"], capture_output=True, check=True).stdout.decode()


async def _download(page: Page, control: Locator, target: Path) -> str:
    """Click `control`, save what downloads at `target`; the file name the page suggested."""
    async with page.expect_download() as download_info:
        await control.click()
    download = await download_info.value
    await download.save_as(target)
    return download.suggested_filename


async def test_regulator_downloads_the_monthly_report(
    site: Site, browser: Browser, tmp_path: Path
) -> None:
    """The regulator picks last month and gets their district's report as PDF, then XLSX."""
    now = datetime.now(UTC)
    month, start, end = previous_month(now, site.hub.settings.report_timezone)
    async with await connect_db(site.hub.settings) as conn:
        # Three more facilities of the regulator's district, with a month of history.
        await seed_registry(conn, 3, "鹿城区")
        await seed_month(conn, ["bench-00000", "bench-00001", "bench-00002"], start, end, now)

    page = await browser.new_page(viewport=SCREEN, accept_downloads=True)
    await sign_in(page, f"{site.base}/", "regulator")
    button = page.get_by_test_id("report-download")
    await expect(button).to_have_text("下载月度报告")
    # Beside the CSV export, in the same panel.
    await expect(page.locator(".exports").get_by_test_id("export-csv")).to_be_visible()
    await expect(page.get_by_test_id("report-month")).to_have_value(month)

    pdf = tmp_path / "report.pdf"
    assert await _download(page, button, pdf) == f"carehub-report-{month}.pdf"
    assert pdf.read_bytes().startswith(b"%PDF-")
    text = await asyncio.to_thread(_pdf_text, pdf)
    if text:  # poppler-utils installed (scripts/ensure-chromium installs it)
        flat = " ".join(text.split())
        assert "月度监管报告" in flat
        assert "鹿城区" in flat
        assert "基准机构 1" in flat

    # The CSV beside it still downloads (both forms share one download path).
    csv_path = tmp_path / "kpis.csv"
    csv_name = await _download(page, page.get_by_test_id("export-csv"), csv_path)
    assert re.fullmatch(r"carehub-kpis-\d{4}-\d\d-\d\d-\d{4}-\d\d-\d\d\.csv", csv_name)
    assert csv_path.read_text(encoding="utf-8-sig").startswith("figure,value")

    # English, one click away: the report follows the screen's language.
    await page.get_by_test_id("lang-toggle").click()
    await expect(button).to_have_text("Download the monthly report")
    await page.get_by_test_id("report-format").select_option("xlsx")
    xlsx = tmp_path / "report.xlsx"
    assert await _download(page, button, xlsx) == f"carehub-report-{month}.xlsx"
    book = openpyxl.load_workbook(io.BytesIO(xlsx.read_bytes()))
    assert book.sheetnames[:2] == ["Summary", "Facilities ranked"]
    ranked = [row[2] for row in book["Facilities ranked"].iter_rows(values_only=True)]
    assert {"基准机构 1", "阳光托育养老中心", "月亮湾颐养院"} <= set(ranked)

    # A month that has not begun: the hub's reason, on the screen.
    await page.get_by_test_id("report-month").evaluate("input => { input.max = ''; }")
    await page.get_by_test_id("report-month").fill(f"{now.year + 1}-01")
    await button.click()
    await expect(page.get_by_test_id("report-error")).to_contain_text("has not begun")
    await expect(button).to_be_enabled()
