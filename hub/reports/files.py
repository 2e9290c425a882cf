"""The report as a file: PDF or XLSX."""

from __future__ import annotations

from hub.reports.labels import Language
from hub.reports.monthly import Format, MonthlyReport
from hub.reports.pdf import render_pdf
from hub.reports.xlsx import render_xlsx


def render(report: MonthlyReport, fmt: Format, lang: Language) -> bytes:
    """The report's bytes in `fmt`, its words in `lang`."""
    if fmt == "pdf":
        return render_pdf(report, lang)
    return render_xlsx(report, lang)
