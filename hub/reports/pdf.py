"""The report as PDF (reportlab): A4 landscape, 简体中文 or English, with charts.

The text is set in reportlab's built-in Adobe CID font STSong-Light (宋体): every PDF
reader with the Adobe-GB1 fonts (Acrobat, poppler with poppler-data, pdf.js) shows it,
and nothing is fetched or embedded at run time. Charts are reportlab.graphics drawings.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from datetime import date, datetime
from typing import Any

from reportlab.graphics.charts.barcharts import HorizontalBarChart, VerticalBarChart
from reportlab.graphics.charts.legends import Legend
from reportlab.graphics.charts.linecharts import HorizontalLineChart
from reportlab.graphics.shapes import Drawing, String
from reportlab.lib import colors
from reportlab.lib.pagesizes import A4, landscape
from reportlab.lib.styles import ParagraphStyle
from reportlab.lib.units import mm
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.cidfonts import UnicodeCIDFont
from reportlab.platypus import (
    CondPageBreak,
    KeepTogether,
    PageBreak,
    Paragraph,
    SimpleDocTemplate,
    Spacer,
    TableStyle,
)
from reportlab.platypus import Table as PdfTable

from hub.reports.labels import Language, word
from hub.reports.monthly import MonthlyReport
from hub.reports.sections import Cell, Chart, Seconds, Section, Share, Table, sections

FONT = "STSong-Light"
_PAGE = landscape(A4)
_MARGIN = 14 * mm
_FRAME_WIDTH = _PAGE[0] - 2 * _MARGIN
_PALETTE = (
    colors.HexColor("#2F6DB5"),
    colors.HexColor("#E07B39"),
    colors.HexColor("#3A9D5D"),
    colors.HexColor("#C23B3B"),
    colors.HexColor("#8561C5"),
    colors.HexColor("#8C6D46"),
    colors.HexColor("#D16BA5"),
    colors.HexColor("#7F7F7F"),
)
_TABLE_FONT_SIZE = 7.5
_CELL_PAD = 3
# A PDF table shows at most this many rows; the XLSX has them all.
_PDF_ROWS = 120
_CHUNK = 60
_registered = False


def _font() -> None:
    global _registered  # noqa: PLW0603 - register the font once per process
    if not _registered:
        pdfmetrics.registerFont(UnicodeCIDFont(FONT))
        _registered = True


def _styles() -> dict[str, ParagraphStyle]:
    base = ParagraphStyle("base", fontName=FONT, fontSize=9.5, leading=13, wordWrap="CJK")
    return {
        "title": ParagraphStyle("title", parent=base, fontSize=22, leading=30, spaceAfter=6),
        "subtitle": ParagraphStyle("subtitle", parent=base, fontSize=12, leading=18),
        "h1": ParagraphStyle(
            "h1",
            parent=base,
            fontSize=15,
            leading=20,
            spaceBefore=4,
            spaceAfter=4,
            textColor=colors.HexColor("#1F3B5A"),
        ),
        "h2": ParagraphStyle("h2", parent=base, fontSize=11, leading=15, spaceBefore=6),
        "note": ParagraphStyle(
            "note", parent=base, fontSize=8.5, textColor=colors.HexColor("#555555")
        ),
        "body": base,
        "cell": ParagraphStyle("cell", parent=base, fontSize=_TABLE_FONT_SIZE, leading=9.5),
    }


def render_pdf(report: MonthlyReport, lang: Language) -> bytes:
    """The PDF's bytes."""
    _font()
    styles = _styles()
    out = io.BytesIO()
    # STSong-Light has no middle dot (U+00B7): separators are ASCII.
    # The running header stays on one line: a long facility name is cut there.
    name = report.title if len(report.title) <= 40 else report.title[:39] + "…"
    title = f"{word(lang, 'title')} / {name} / {report.month}"
    doc = SimpleDocTemplate(
        out,
        pagesize=_PAGE,
        leftMargin=_MARGIN,
        rightMargin=_MARGIN,
        topMargin=_MARGIN + 4 * mm,
        bottomMargin=_MARGIN,
        title=title,
        author="carehub",
        subject=report.scope_name,
        lang="zh-CN" if lang == "zh" else "en",
    )

    def page_furniture(canvas: Any, doc: Any) -> None:
        canvas.saveState()
        canvas.setFont(FONT, 8)
        canvas.setFillColor(colors.HexColor("#555555"))
        canvas.drawString(_MARGIN, _PAGE[1] - _MARGIN, title)
        canvas.drawRightString(
            _PAGE[0] - _MARGIN, _MARGIN - 6 * mm, word(lang, "page", page=doc.page)
        )
        canvas.restoreState()

    story: list[Any] = []
    chapters = sections(report, lang)
    by_key = {section.key: section for section in chapters}
    cover_charts = [
        (section.charts[0], section.tables[section.charts[0].table])
        for section in (by_key["daily"], by_key["response"])
        if section.charts
    ]
    for index, section in enumerate(chapters):
        if index == 0:
            story += _cover(report, lang, styles)
        else:
            story.append(PageBreak())
        story += _section(section, styles, lang, cover=index == 0, cover_charts=cover_charts)
    doc.build(story, onFirstPage=page_furniture, onLaterPages=page_furniture)
    return out.getvalue()


def _cover(report: MonthlyReport, lang: Language, styles: dict[str, ParagraphStyle]) -> list[Any]:
    scope = word(lang, "district" if report.scope_kind == "district" else "facility")
    end = report.end.astimezone(report.start.tzinfo)
    lines = [
        f"{scope}: {report.title}"
        + (f" ({report.scope_name})" if report.scope_kind == "facility" else ""),
        f"{word(lang, 'period')}: {report.start:%Y-%m-%d %H:%M} {word(lang, 'to')} "
        f"{end:%Y-%m-%d %H:%M} ({report.figures.timezone})",
        f"{word(lang, 'generated')}: {report.generated_at:%Y-%m-%d %H:%M:%S %z}",
    ]
    return [
        Paragraph(f"{word(lang, 'title')} {report.month}", styles["title"]),
        *(Paragraph(_escape(line), styles["subtitle"]) for line in lines),
        Spacer(1, 4 * mm),
    ]


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _section(
    section: Section,
    styles: dict[str, ParagraphStyle],
    lang: Language,
    *,
    cover: bool = False,
    cover_charts: Sequence[tuple[Chart, Table]] = (),
) -> list[Any]:
    story: list[Any] = [Paragraph(_escape(section.title), styles["h1"])]
    for line in (section.note, *section.lead):
        if line:
            story.append(Paragraph(_escape(line), styles["note"]))
    if cover:
        # Page 1: the summary's figures, and beside them the month's calls and alerts by
        # day and the response-time distribution.
        left = _FRAME_WIDTH * 0.40
        summary = _table(section.tables[0], styles, lang, width=left)[0]
        side = [
            drawing
            for chart, table in cover_charts
            if (
                drawing := _drawing(
                    chart, table, lang, width=_FRAME_WIDTH - left - 6 * mm, height=58 * mm
                )
            )
            is not None
        ]
        layout = PdfTable([[summary, side]], colWidths=[left + 6 * mm, None], hAlign="LEFT")
        layout.setStyle(
            TableStyle([("VALIGN", (0, 0), (-1, -1), "TOP"), ("LEFTPADDING", (0, 0), (-1, -1), 0)])
        )
        return [*story, Spacer(1, 2 * mm), layout]
    charts = [_drawing(chart, section.tables[chart.table], lang) for chart in section.charts]
    for drawing in charts:
        if drawing is not None:
            story.append(KeepTogether([drawing, Spacer(1, 3 * mm)]))
    for table in section.tables:
        block: list[Any] = []
        if table.title:
            block.append(Paragraph(_escape(table.title), styles["h2"]))
        block += _table(table, styles, lang)
        story.append(CondPageBreak(30 * mm))
        story += block
    return story


def _text(value: Cell, lang: Language) -> str:  # noqa: PLR0911 - one return per cell type
    if value is None:
        return ""
    if isinstance(value, Share):
        return f"{value:.1%}"
    if isinstance(value, Seconds):
        return f"{value:.0f}"
    if isinstance(value, float):
        return f"{value:.1f}"
    if isinstance(value, datetime):
        return f"{value:%m-%d %H:%M:%S}"
    if isinstance(value, date):
        return f"{value:%m-%d}"
    return str(value)


def _table(
    table: Table, styles: dict[str, ParagraphStyle], lang: Language, width: float = _FRAME_WIDTH
) -> list[Any]:
    """The table as PDF tables of at most _CHUNK rows each (one column layout for all):
    reportlab splits small tables across pages quickly, a table of thousands slowly."""
    rows = table.rows if table.complete else table.rows[:_PDF_ROWS]
    header = [Paragraph(_escape(text), styles["cell"]) for text in table.header]
    body = [[_text(value, lang) for value in cells] for cells in rows]
    if not body:
        body = [[word(lang, "none"), *([""] * (len(table.header) - 1))]]
    widths = _column_widths(table.header, body, width)
    # Long text (names, hashes) wraps inside its column; short cells stay plain strings.
    wrapped = [
        [
            Paragraph(_escape(text), styles["cell"])
            if pdfmetrics.stringWidth(text, FONT, _TABLE_FONT_SIZE) > widths[i] - 2 * _CELL_PAD
            else text
            for i, text in enumerate(cells)
        ]
        for cells in body
    ]
    if len(table.rows) > len(rows):
        more = f"… +{len(table.rows) - len(rows)} (XLSX)"
        wrapped.append([more, *([""] * (len(table.header) - 1))])
    numeric = [
        i
        for i in range(len(table.header))
        if any(isinstance(cells[i], int | float) for cells in rows)
    ]
    style = [
        ("FONT", (0, 0), (-1, -1), FONT, _TABLE_FONT_SIZE),
        ("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#DDE7F0")),
        ("GRID", (0, 0), (-1, -1), 0.3, colors.HexColor("#9AA9B8")),
        ("VALIGN", (0, 0), (-1, -1), "MIDDLE"),
        ("LEFTPADDING", (0, 0), (-1, -1), _CELL_PAD),
        ("RIGHTPADDING", (0, 0), (-1, -1), _CELL_PAD),
        ("TOPPADDING", (0, 0), (-1, -1), 1.5),
        ("BOTTOMPADDING", (0, 0), (-1, -1), 1.5),
        *(("ALIGN", (i, 1), (i, -1), "RIGHT") for i in numeric),
    ]
    made = []
    for first in range(0, len(wrapped), _CHUNK):
        chunk = wrapped[first : first + _CHUNK]
        part = PdfTable([header, *chunk], colWidths=widths, repeatRows=1, hAlign="LEFT")
        stripes = [
            ("BACKGROUND", (0, row), (-1, row), colors.HexColor("#F5F7FA"))
            for row in range(2, len(chunk) + 1, 2)
        ]
        part.setStyle(TableStyle([*style, *stripes]))
        made.append(part)
    return made


def _column_widths(header: tuple[str, ...], body: list[list[str]], width: float) -> list[float]:
    """Each column as wide as its text wants (headers may wrap), scaled to fit `width`."""

    def measure(text: str) -> float:
        width: float = pdfmetrics.stringWidth(text, FONT, _TABLE_FONT_SIZE)
        return width + 2 * _CELL_PAD + 1

    wants = []
    for i, title in enumerate(header):
        cells = max((measure(row[i]) for row in body), default=0.0)
        # A header may wrap to a few lines; it asks for a third of its length.
        wants.append(max(cells, min(measure(title), max(measure(title) / 3, 28.0)), 24.0))
    total = sum(wants)
    if total <= width:
        return wants
    # Shrink the widest columns first: names and hashes wrap, numbers do not.
    cap = width / len(wants)
    for _ in range(30):
        over = sum(wants) - width
        if over <= 0:
            break
        widest = max(wants)
        if widest <= cap:
            break
        wants = [w - min(over, w - cap) * (w / sum(wants)) if w > cap else w for w in wants]
    scale = width / sum(wants) if sum(wants) > width else 1.0
    return [w * scale for w in wants]


def _drawing(
    chart: Chart,
    table: Table,
    lang: Language,
    width: float = _FRAME_WIDTH,
    height: float | None = None,
) -> Any | None:
    rows = table.rows if chart.limit is None else table.rows[: chart.limit]
    if not rows:
        return None
    categories = [_text(cells[chart.categories], lang) for cells in rows]
    series = [[_number(cells[column]) for cells in rows] for column in chart.series]
    names = [table.header[column] for column in chart.series]
    if height is None:
        height = 62 * mm if chart.kind != "bar" else max(40 * mm, 5.2 * mm * len(rows) + 18 * mm)
    drawing = Drawing(width, height)
    plot_left = 48 if chart.kind != "bar" else 150
    plot = _plot(chart, categories, series)
    plot.x, plot.y = plot_left, 28
    plot.width, plot.height = width - plot_left - 130, height - 46
    drawing.add(plot)
    legend = Legend()
    legend.x, legend.y = width - 120, height - 20
    legend.columnMaximum = 12
    legend.fontName = FONT
    legend.fontSize = 7.5
    legend.alignment = "right"
    legend.colorNamePairs = [(_PALETTE[i % len(_PALETTE)], name) for i, name in enumerate(names)]
    drawing.add(legend)
    drawing.add(String(plot_left, height - 10, chart.title, fontName=FONT, fontSize=9))
    return drawing


def _plot(chart: Chart, categories: list[str], series: list[list[float]]) -> Any:
    """The chart's plot: bars, stacked bars or lines, in the report's font and colours."""
    plot: Any
    if chart.kind == "bar":
        plot = HorizontalBarChart()
    elif chart.kind == "line":
        plot = HorizontalLineChart()
    else:
        plot = VerticalBarChart()
    plot.data = series
    plot.categoryAxis.categoryNames = categories
    plot.categoryAxis.labels.fontName = FONT
    plot.categoryAxis.labels.fontSize = 6.5
    plot.valueAxis.labels.fontName = FONT
    plot.valueAxis.labels.fontSize = 7
    _value_axis(plot.valueAxis, chart, series)
    if chart.kind == "bar":
        plot.categoryAxis.reverseDirection = True
        plot.categoryAxis.labels.boxAnchor = "e"
    elif len(categories) > 12:
        # A month of days: every other one labelled.
        plot.categoryAxis.categoryNames = [
            label if i % 2 == 0 else "" for i, label in enumerate(categories)
        ]
    if chart.kind == "stacked":
        plot.categoryAxis.style = "stacked"
    for index in range(len(series)):
        color = _PALETTE[index % len(_PALETTE)]
        if chart.kind == "line":
            plot.lines[index].strokeColor = color
            plot.lines[index].strokeWidth = 1.5
        else:
            plot.bars[index].fillColor = color
            plot.bars[index].strokeColor = None
    return plot


def _value_axis(axis: Any, chart: Chart, series: list[list[float]]) -> None:
    """From 0; percentages for shares; whole steps when the counts are small."""
    axis.valueMin = 0
    if chart.kind == "stacked":
        top = max((sum(column) for column in zip(*series, strict=True)), default=0.0)
    else:
        top = max((value for values in series for value in values), default=0.0)
    if chart.shares:
        axis.valueMax = 1.0
        axis.valueStep = 0.2
        axis.labelTextFormat = lambda value: f"{value:.0%}"
    elif top <= 5:
        axis.valueMax = 5
        axis.valueStep = 1


def _number(value: Cell) -> float:
    return float(value) if isinstance(value, int | float) else 0.0
