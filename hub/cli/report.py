"""`carehub report monthly`: the monthly supervision report of a district or a facility."""

from __future__ import annotations

import argparse
import sys

from hub.cli.commands import Subcommands, add_actions, run_on_database
from hub.settings import Settings


def _cmd_monthly(settings: Settings, args: argparse.Namespace) -> int:
    import time
    from datetime import UTC, datetime
    from pathlib import Path

    from hub.reports.files import render
    from hub.reports.monthly import hub_report

    began = time.perf_counter()
    now = datetime.now(UTC)
    report = run_on_database(
        settings,
        lambda conn: hub_report(
            conn,
            settings,
            facility=args.facility,
            district=args.district,
            month=args.month,
            now=now,
        ),
    )
    read = time.perf_counter()
    content = render(report, args.format, args.lang)
    written = time.perf_counter()
    target = Path(args.output)
    try:
        # Written whole, then moved into place: a reader never sees half a report.
        partial = target.with_name(f".{target.name}.partial")
        partial.write_bytes(content)
        partial.replace(target)
    except OSError as exc:
        print(f"carehub: cannot write {target}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    facilities = len(report.figures.facilities)
    verdict = "audit chains intact" if report.chains_intact else "AUDIT CHAIN BROKEN"
    print(
        f"wrote {target} ({args.format}, {len(content):,} bytes): {report.scope_kind} "
        f"{report.title}, {report.month}, {facilities} "
        f"{'facility' if facilities == 1 else 'facilities'}, {verdict}"
    )
    print(
        f"built in {written - began:.2f} s (figures and audit {read - began:.2f} s, "
        f"{args.format} {written - read:.2f} s)"
    )
    return 0


def add_report_commands(sub: Subcommands) -> None:
    """Register `carehub report monthly` on the subcommands."""
    actions = add_actions(sub, "report", "supervision reports")
    monthly = actions.add_parser(
        "monthly", help="the monthly supervision report (月度监管报告), PDF or XLSX"
    )
    scope = monthly.add_mutually_exclusive_group(required=True)
    scope.add_argument("--district", help="every facility of a district, by name")
    scope.add_argument("--facility", help="one facility, by id")
    monthly.add_argument("--month", required=True, metavar="YYYY-MM", help="the month to report")
    monthly.add_argument("--format", choices=("pdf", "xlsx"), default="pdf")
    monthly.add_argument(
        "--lang", choices=("zh", "en"), default="zh", help="the report's language (default zh)"
    )
    monthly.add_argument("-o", "--output", required=True, metavar="FILE", help="where to write it")
    monthly.set_defaults(handler=_cmd_monthly)
