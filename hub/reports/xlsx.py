"""The report as XLSX (xlsxwriter): one sheet per section, numbers as numbers, native charts."""

from __future__ import annotations

import io
import re
from datetime import date, datetime
from typing import Any

import xlsxwriter
from xlsxwriter.workbook import Workbook
from xlsxwriter.worksheet import Worksheet

from hub.reports.labels import Language, word
from hub.reports.monthly import MonthlyReport
from hub.reports.sections import Cell, Chart, Seconds, Section, Share, Table, sections

_SHEET_FORBIDDEN = re.compile(r"[\[\]:*?/\\]")
_SHEET_MAX = 31
_CHART_TYPES: dict[str, dict[str, str]] = {
    "column": {"type": "column"},
    "stacked": {"type": "column", "subtype": "stacked"},
    "bar": {"type": "bar"},
    "line": {"type": "line"},
}


def render_xlsx(report: MonthlyReport, lang: Language) -> bytes:
    """The workbook's bytes."""
    out = io.BytesIO()
    # in_memory: no temporary files; the whole workbook is small enough.
    book = xlsxwriter.Workbook(out, {"in_memory": True, "remove_timezone": True})
    book.set_properties(
        {
            "title": f"{word(lang, 'title')} {report.title} {report.month}",
            "subject": report.scope_name,
            "company": "carehub",
            "created": report.generated_at.replace(tzinfo=None),
        }
    )
    styles = _Styles(book)
    for section in sections(report, lang):
        _sheet(book, styles, report, lang, section)
    book.close()
    return out.getvalue()


class _Styles:
    def __init__(self, book: Workbook) -> None:
        self.title = book.add_format({"bold": True, "font_size": 14})
        self.heading = book.add_format({"bold": True, "font_size": 11})
        self.note = book.add_format({"italic": True, "font_color": "#555555"})
        self.header = book.add_format(
            {"bold": True, "bg_color": "#DDE7F0", "border": 1, "text_wrap": True}
        )
        self.share = book.add_format({"num_format": "0.0%"})
        self.seconds = book.add_format({"num_format": "0"})
        self.decimal = book.add_format({"num_format": "0.0"})
        self.when = book.add_format({"num_format": "yyyy-mm-dd hh:mm:ss"})
        self.day = book.add_format({"num_format": "yyyy-mm-dd"})


def _sheet_name(title: str, used: set[str]) -> str:
    name = _SHEET_FORBIDDEN.sub(" ", title)[:_SHEET_MAX].strip() or "sheet"
    base, n = name, 2
    while name in used:
        suffix = f" {n}"
        name = base[: _SHEET_MAX - len(suffix)] + suffix
        n += 1
    used.add(name)
    return name


def _sheet(
    book: Workbook, styles: _Styles, report: MonthlyReport, lang: Language, section: Section
) -> None:
    used = {sheet.get_name() for sheet in book.worksheets()}
    sheet = book.add_worksheet(_sheet_name(section.title, used))
    sheet.write(
        0,
        0,
        f"{word(lang, 'title')} / {report.title} / {report.month} / {section.title}",
        styles.title,
    )
    row = 1
    for line in (section.note, *section.lead):
        if line:
            sheet.write(row, 0, line, styles.note)
            row += 1
    row += 1
    # (header row, first data row, rows) of each table, for the charts.
    placed: list[tuple[int, int, int]] = []
    widths: dict[int, int] = {}
    for table in section.tables:
        if table.title:
            sheet.write(row, 0, table.title, styles.heading)
            row += 1
        placed.append((row, row + 1, len(table.rows)))
        row = _table(sheet, styles, table, row, widths) + 1
    for column, width in widths.items():
        sheet.set_column(column, column, min(max(width, 6), 48))
    if section.tables:
        sheet.freeze_panes(0, 0)
    chart_column = max((len(t.header) for t in section.tables), default=1) + 1
    chart_row = 1
    for chart in section.charts:
        header_row, first, count = placed[chart.table]
        if count == 0:
            continue
        made = _chart(book, sheet.get_name(), chart, (header_row, first, count))
        sheet.insert_chart(chart_row, chart_column, made, {"x_scale": 1.6, "y_scale": 1.4})
        chart_row += 23


def _table(
    sheet: Worksheet, styles: _Styles, table: Table, row: int, widths: dict[int, int]
) -> int:
    for column, text in enumerate(table.header):
        sheet.write_string(row, column, text, styles.header)
        widths[column] = max(widths.get(column, 0), _width(text))
    for cells in table.rows:
        row += 1
        for column, value in enumerate(cells):
            _cell(sheet, styles, row, column, value)
            widths[column] = max(widths.get(column, 0), _width(value))
    return row + 1


def _width(value: Cell) -> int:
    if isinstance(value, datetime):
        return 19
    text = "" if value is None else str(value)
    # A CJK character is about two columns wide.
    return sum(2 if ord(char) > 0x2E80 else 1 for char in text) + 1


def _cell(sheet: Worksheet, styles: _Styles, row: int, column: int, value: Cell) -> None:
    if value is None:
        sheet.write_blank(row, column, None)
    elif isinstance(value, Share):
        sheet.write_number(row, column, float(value), styles.share)
    elif isinstance(value, Seconds):
        sheet.write_number(row, column, float(value), styles.seconds)
    elif isinstance(value, bool):
        sheet.write_boolean(row, column, value)
    elif isinstance(value, int):
        sheet.write_number(row, column, value)
    elif isinstance(value, float):
        sheet.write_number(row, column, value, styles.decimal)
    elif isinstance(value, datetime):
        sheet.write_datetime(row, column, value.replace(tzinfo=None), styles.when)
    elif isinstance(value, date):
        sheet.write_datetime(row, column, datetime(value.year, value.month, value.day), styles.day)
    else:
        # write_string: text that looks like a formula or a number stays text.
        sheet.write_string(row, column, value)


def _chart(book: Workbook, sheet_name: str, chart: Chart, placed: tuple[int, int, int]) -> Any:
    """A native chart of the table placed at (header row, first data row, rows)."""
    header_row, first, count = placed
    made = book.add_chart(_CHART_TYPES[chart.kind])
    last = first + (count if chart.limit is None else min(count, chart.limit)) - 1
    for column in chart.series:
        made.add_series(
            {
                "name": [sheet_name, header_row, column],
                "categories": [sheet_name, first, chart.categories, last, chart.categories],
                "values": [sheet_name, first, column, last, column],
            }
        )
    made.set_title({"name": chart.title})
    made.set_legend({"position": "bottom"})
    if chart.shares:
        axis = {"num_format": "0%", "min": 0, "max": 1}
        (made.set_x_axis if chart.kind == "bar" else made.set_y_axis)(axis)
    if chart.kind == "bar":
        made.set_y_axis({"reverse": True})
    return made
