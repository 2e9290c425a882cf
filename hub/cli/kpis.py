"""`carehub kpis`: alert, device and occupancy KPIs of a facility or district over a period."""

from __future__ import annotations

import argparse

from hub.cli.commands import Subcommands, run_on_database
from hub.settings import Settings


def _cmd_kpis(settings: Settings, args: argparse.Namespace) -> int:
    import json
    from datetime import datetime, timedelta

    from hub.errors import QueryError
    from hub.storage.kpis import district_kpis, facility_kpis, kpis_as_dict

    def when(text: str | None, option: str, default: datetime) -> datetime:
        if text is None:
            return default
        try:
            value = datetime.fromisoformat(text)
        except ValueError:
            raise QueryError("invalid", f"{option}: not an ISO 8601 time: {text!r}") from None
        # A time without an offset is this machine's local time, as a person typing it means.
        return value if value.tzinfo is not None else value.astimezone()

    now = datetime.now().astimezone()
    end = when(args.to, "--to", now)
    start = when(args.start, "--from", end - timedelta(days=30))

    if args.facility is not None:
        kpis = run_on_database(
            settings, lambda conn: facility_kpis(conn, args.facility, start, end, now)
        )
    else:
        kpis = run_on_database(
            settings, lambda conn: district_kpis(conn, args.district, start, end, now)
        )
    if args.json:
        print(json.dumps(kpis_as_dict(kpis), ensure_ascii=False, indent=2))
        return 0

    def share(count: int, value: float | None, target: str) -> str:
        shown = "-" if value is None else f"{value:.1%}"
        return f"{shown} ({count} of {kpis.high_alerts}; target {target})"

    def seconds(value: float | None) -> str:
        return "-" if value is None else f"{value:.0f} s"

    # Long lists are cut here, for a terminal; --json has them all.
    shown = 20
    count = len(kpis.scope.facility_ids)
    print(
        f"KPIs of {kpis.scope.kind} {kpis.scope.name}"
        + (f" ({count} {'facility' if count == 1 else 'facilities'})" if args.district else "")
        + f", {kpis.start:%Y-%m-%d %H:%M%z} to {kpis.end:%Y-%m-%d %H:%M%z}"
    )
    untested = ", ".join(kpis.buttons_untested[:shown])
    if len(kpis.buttons_untested) > shown:
        untested += ", ..."
    rows = [
        ("high-priority alerts", str(kpis.high_alerts)),
        (
            "acknowledged within 60 s",
            share(kpis.ack_within_60s, kpis.ack_within_60s_share, "97.5%"),
        ),
        (
            "acknowledged within 180 s",
            share(kpis.ack_within_180s, kpis.ack_within_180s_share, "99%"),
        ),
        (
            "time to acknowledge",
            f"median {seconds(kpis.time_to_ack.median_s)}, p90 {seconds(kpis.time_to_ack.p90_s)}",
        ),
        (
            "time to attend",
            f"median {seconds(kpis.time_to_attend.median_s)}, "
            f"p90 {seconds(kpis.time_to_attend.p90_s)}",
        ),
        ("overdue calls", str(kpis.overdue_calls)),
        ("staff-ratio breaches", str(kpis.staff_ratio_breaches)),
        ("devices online now", f"{kpis.devices_online} of {kpis.devices_total}"),
        ("people present now", f"{kpis.people_present} of {kpis.capacity} licensed"),
        *(
            (
                f"  {zone.facility_id}/{zone.zone_id}",
                f"{zone.present} of {'-' if zone.capacity is None else zone.capacity}",
            )
            for zone in kpis.zones[:shown]
        ),
        (
            "buttons untested for 30 days",
            f"{len(kpis.buttons_untested)}" + (f": {untested}" if untested else ""),
        ),
    ]
    for label, value in rows:
        print(f"  {label:32} {value}")
    for title, rates in (
        ("kind", kpis.false_alarms_by_kind),
        ("device", kpis.false_alarms_by_device),
    ):
        if rates:
            print(f"false alarms by {title}, of resolved alerts")
        for rate in rates[:shown]:
            print(f"  {rate.subject:32} {rate.share:.1%} ({rate.false_alarms} of {rate.resolved})")
        if len(rates) > shown:
            print(f"  ... and {len(rates) - shown} more (see --json)")
    return 0


def add_kpis_command(sub: Subcommands) -> None:
    """Register `carehub kpis` on the subcommands."""
    kpis = sub.add_parser("kpis", help="alert, device and occupancy KPIs over a period")
    scope = kpis.add_mutually_exclusive_group(required=True)
    scope.add_argument("--facility", help="one facility, by id")
    scope.add_argument("--district", help="every facility of a district, by name")
    kpis.add_argument(
        "--from",
        dest="start",
        metavar="ISO",
        help="start of the period, ISO 8601; local time without an offset (default: --to - 30 d)",
    )
    kpis.add_argument("--to", metavar="ISO", help="end of the period, excluded (default: now)")
    kpis.add_argument("--json", action="store_true", help="print JSON instead of a table")
    kpis.set_defaults(handler=_cmd_kpis)
