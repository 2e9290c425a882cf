"""The `carehub` command: demo, serve, migrate, registry import, simulate, bench."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from hub.errors import HubError
from hub.settings import Settings, load_settings

logger = logging.getLogger("carehub")


def _configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def _cmd_migrate(settings: Settings, _args: argparse.Namespace) -> int:
    from hub.storage.migrate import migrate

    applied = asyncio.run(migrate(settings))
    print(
        f"schema {settings.database_schema}: applied {', '.join(applied) or 'nothing (up to date)'}"
    )
    return 0


def _cmd_serve(settings: Settings, _args: argparse.Namespace) -> int:
    import uvicorn

    from hub.app import SERVER_OPTIONS, create_app

    print(
        f"carehub serving on http://{settings.http_host}:{settings.http_port} "
        f"(broker {settings.mqtt.host}:{settings.mqtt.port}, schema {settings.database_schema})",
        flush=True,
    )
    uvicorn.run(
        create_app(settings),
        host=settings.http_host,
        port=settings.http_port,
        log_level=settings.log_level.lower(),
        **SERVER_OPTIONS,
    )
    return 0


def _cmd_demo(settings: Settings, args: argparse.Namespace) -> int:
    from hub.demo import run_demo

    return asyncio.run(
        run_demo(
            settings, data_dir=args.data_dir, facilities=args.facilities, time_scale=args.time_scale
        )
    )


def _cmd_import(settings: Settings, args: argparse.Namespace) -> int:
    from hub.importer import import_file

    report = asyncio.run(
        import_file(settings, args.registry, Path(args.file), progress=not args.quiet)
    )
    # Enough to fix a file in one pass; a file wrong on every row would flood the terminal.
    shown = 200
    for error in report.errors[:shown]:
        print(f"{args.file}: {error}", file=sys.stderr)
    if len(report.errors) > shown:
        print(f"{args.file}: ... and {len(report.errors) - shown} more errors", file=sys.stderr)
    print(f"{args.registry}: {report.imported} rows imported, {report.refused} rows refused")
    return 1 if report.errors else 0


def _cmd_pending(settings: Settings, _args: argparse.Namespace) -> int:
    from hub.storage.registry import list_pending

    pending = asyncio.run(list_pending(settings))
    if not pending:
        print("no pending devices")
        return 0
    header = ("device_id", "facility_id", "first_seen", "last_seen", "messages", "last_topic")
    rows = [
        (
            p.device_id,
            p.facility_id,
            f"{p.first_seen:%Y-%m-%d %H:%M:%S%z}",
            f"{p.last_seen:%Y-%m-%d %H:%M:%S%z}",
            str(p.messages),
            p.last_topic,
        )
        for p in pending
    ]
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]
    for row in (header, *rows):
        cells = (cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        print("  ".join(cells).rstrip())
    return 0


def _cmd_register(settings: Settings, args: argparse.Namespace) -> int:
    from hub.storage.registry import register_pending

    asyncio.run(register_pending(settings, args.device_id, args.type, args.zone, args.heartbeat_s))
    print(f"device {args.device_id} registered as {args.type}")
    return 0


def _cmd_simulate(settings: Settings, args: argparse.Namespace) -> int:
    from hub.simulate import run_simulate

    return asyncio.run(
        run_simulate(
            settings,
            facilities=args.facilities,
            scenarios=args.scenario,
            duration_s=args.duration,
            time_scale=args.time_scale,
            register=not args.no_register,
            seed=args.seed,
        )
    )


def _cmd_bench(settings: Settings, args: argparse.Namespace) -> int:
    if args.which == "dashboard":
        from hub.bench_dashboard import run_dashboard_bench

        return run_dashboard_bench(
            settings,
            facilities=args.facilities,
            loads=args.loads,
            chromium=args.chromium,
            keep=args.keep,
        )
    if args.which == "live":
        from hub.bench_live import run_live_bench

        return run_live_bench(
            settings,
            clients=args.clients,
            rate=args.rate if args.rate is not None else 100.0,
            duration_s=args.duration if args.duration is not None else 30.0,
            devices=args.devices,
        )
    if args.which == "latency":
        from hub.bench_latency import run_latency_bench

        return run_latency_bench(
            settings,
            duration_s=args.duration if args.duration is not None else 30.0,
            rate=args.rate if args.rate is not None else 5000.0,
            presses_per_s=args.presses,
            devices=args.devices,
        )
    from hub.bench import run_bench

    return run_bench(
        settings,
        args.which,
        duration_s=args.duration if args.duration is not None else 60.0,
        devices=args.devices,
        rate=args.rate if args.rate is not None else 10_000.0,
        connections=args.connections,
        keep=args.keep,
    )


def _cmd_kpis(settings: Settings, args: argparse.Namespace) -> int:
    import json
    from datetime import datetime, timedelta

    from hub.errors import QueryError
    from hub.storage.kpis import Kpis, district_kpis, facility_kpis, kpis_as_dict
    from hub.storage.pool import connect

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

    async def run() -> Kpis:
        async with await connect(settings) as conn:
            if args.facility is not None:
                return await facility_kpis(conn, args.facility, start, end, now)
            return await district_kpis(conn, args.district, start, end, now)

    kpis = asyncio.run(run())
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


def _add_kpis_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
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


def _add_bench_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `carehub bench` on the subcommands."""
    bench = sub.add_parser("bench", help="benchmarks that print their figures")
    bench.add_argument("which", choices=["ingest", "latency", "live", "dashboard"])
    bench.add_argument(
        "--duration",
        type=float,
        default=None,
        help="seconds of sustained load (default 60 for ingest, 30 for latency and live)",
    )
    bench.add_argument("--devices", type=int, default=10_000)
    bench.add_argument(
        "--rate",
        type=float,
        default=None,
        help="telemetry messages per second offered (default 10,000 for ingest, 5,000 latency); "
        "live: alert changes per second (default 100)",
    )
    bench.add_argument(
        "--presses", type=float, default=10.0, help="latency: button presses per second"
    )
    bench.add_argument(
        "--clients", type=int, default=500, help="live: websocket clients (default 500)"
    )
    bench.add_argument(
        "--connections",
        type=int,
        default=8,
        help="MQTT connections the devices are spread over (default 8)",
    )
    bench.add_argument(
        "--facilities",
        type=int,
        default=500,
        help="dashboard: facilities seeded for the regulator's screen (default 500)",
    )
    bench.add_argument(
        "--loads", type=int, default=3, help="dashboard: cold page loads measured (default 3)"
    )
    bench.add_argument(
        "--chromium",
        type=Path,
        default=Path("/usr/bin/chromium"),
        help="dashboard: the Chromium binary (default /usr/bin/chromium)",
    )
    bench.add_argument(
        "--keep", action="store_true", help="keep the bench schema (bench_<hex>) for inspection"
    )
    bench.set_defaults(handler=_cmd_bench)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for every `carehub` subcommand."""
    parser = argparse.ArgumentParser(
        prog="carehub",
        description="Monitoring hub for elderly-care and childcare facilities. "
        "Settings come from CAREHUB_* environment variables (see the README).",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = sub.add_parser("demo", help="embedded broker + PostgreSQL + hub + simulated district")
    demo.add_argument(
        "--data-dir",
        type=Path,
        default=Path(".carehub"),
        help="where the embedded database and spool live (default ./.carehub)",
    )
    demo.add_argument("--facilities", type=int, default=20)
    demo.add_argument(
        "--time-scale",
        type=float,
        default=30.0,
        help="simulated seconds per real second for heartbeats (default 30)",
    )
    demo.set_defaults(handler=_cmd_demo)

    serve = sub.add_parser("serve", help="the hub alone, on the configured broker and database")
    serve.set_defaults(handler=_cmd_serve)

    migrate = sub.add_parser("migrate", help="apply the database schema (idempotent)")
    migrate.set_defaults(handler=_cmd_migrate)

    for registry in ("facilities", "zones", "devices"):
        group = sub.add_parser(registry, help=f"the {registry} registry")
        actions = group.add_subparsers(dest="action", required=True, metavar="ACTION")
        importer = actions.add_parser("import", help=f"import {registry} from CSV or XLSX")
        importer.add_argument("file")
        importer.add_argument("--quiet", action="store_true", help="no progress bar")
        importer.set_defaults(handler=_cmd_import, registry=registry)
        if registry == "devices":
            from devices import CATALOGUE

            pending = actions.add_parser("pending", help="devices heard but not registered")
            pending.set_defaults(handler=_cmd_pending)
            register = actions.add_parser("register", help="register a pending device")
            register.add_argument("device_id")
            register.add_argument("--type", required=True, choices=sorted(CATALOGUE))
            register.add_argument("--zone", default=None, help="zone id at the device's facility")
            register.add_argument(
                "--heartbeat-s",
                type=int,
                default=None,
                help="seconds between heartbeats (default: the type's)",
            )
            register.set_defaults(handler=_cmd_register)

    simulate = sub.add_parser("simulate", help="simulated devices on the configured broker")
    simulate.add_argument("--facilities", type=int, default=20)
    simulate.add_argument(
        "--scenario",
        action="append",
        default=[],
        help="inject a scenario: fall, sos, over_capacity, dropout, garbage (repeatable)",
    )
    simulate.add_argument(
        "--duration", type=float, default=None, help="seconds to run (default: until Ctrl-C)"
    )
    simulate.add_argument("--time-scale", type=float, default=30.0)
    simulate.add_argument("--seed", type=int, default=7)
    simulate.add_argument(
        "--no-register",
        action="store_true",
        help="do not register the simulated district in the database first",
    )
    simulate.set_defaults(handler=_cmd_simulate)

    _add_bench_command(sub)

    _add_kpis_command(sub)

    from hub.cli_alerts import add_alert_commands

    add_alert_commands(sub)

    from hub.cli_users import add_user_commands

    add_user_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `carehub` console script."""
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings()
    except HubError as exc:
        print(f"carehub: bad setting: {exc}", file=sys.stderr)
        return 2
    _configure_logging(settings.log_level)
    try:
        code: int = args.handler(settings, args)
    except KeyboardInterrupt:
        return 130
    except HubError as exc:
        print(f"carehub: {exc}", file=sys.stderr)
        return 1
    return code


if __name__ == "__main__":
    sys.exit(main())
