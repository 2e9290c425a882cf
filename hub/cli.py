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
    print(f"schema {settings.database_schema}: applied {', '.join(applied) or 'nothing (up to date)'}")
    return 0


def _cmd_serve(settings: Settings, _args: argparse.Namespace) -> int:
    import uvicorn

    from hub.app import create_app

    print(f"carehub serving on http://{settings.http_host}:{settings.http_port} "
          f"(broker {settings.mqtt.host}:{settings.mqtt.port}, schema {settings.database_schema})",
          flush=True)
    uvicorn.run(
        create_app(settings),
        host=settings.http_host,
        port=settings.http_port,
        log_level=settings.log_level.lower(),
    )
    return 0


def _cmd_demo(settings: Settings, args: argparse.Namespace) -> int:
    from hub.demo import run_demo

    return asyncio.run(
        run_demo(settings, data_dir=args.data_dir, facilities=args.facilities, time_scale=args.time_scale)
    )


def _cmd_import(settings: Settings, args: argparse.Namespace) -> int:
    from hub.registry import import_file

    report = asyncio.run(import_file(settings, args.registry, Path(args.file), progress=not args.quiet))
    for error in report.errors:
        print(f"{args.file}: {error}", file=sys.stderr)
    print(f"{args.registry}: {report.imported} rows imported, {len(report.errors)} rows refused")
    return 1 if report.errors else 0


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
    from hub.bench import run_bench

    return run_bench(settings, args.which, duration_s=args.duration, devices=args.devices, rate=args.rate)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for every `carehub` subcommand."""
    parser = argparse.ArgumentParser(
        prog="carehub",
        description="Monitoring hub for elderly-care and childcare facilities. "
        "Settings come from CAREHUB_* environment variables (see the README).",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = sub.add_parser("demo", help="embedded broker + PostgreSQL + hub + simulated district")
    demo.add_argument("--data-dir", type=Path, default=Path(".carehub"),
                      help="where the embedded database and spool live (default ./.carehub)")
    demo.add_argument("--facilities", type=int, default=20)
    demo.add_argument("--time-scale", type=float, default=30.0,
                      help="simulated seconds per real second for heartbeats (default 30)")
    demo.set_defaults(handler=_cmd_demo)

    serve = sub.add_parser("serve", help="the hub alone, on the configured broker and database")
    serve.set_defaults(handler=_cmd_serve)

    migrate = sub.add_parser("migrate", help="apply the database schema (idempotent)")
    migrate.set_defaults(handler=_cmd_migrate)

    for registry in ("facilities", "zones", "devices"):
        group = sub.add_parser(registry, help=f"the {registry} registry")
        actions = group.add_subparsers(dest="action", required=True, metavar="ACTION")
        importer = actions.add_parser("import", help=f"import {registry} from CSV or XLSX (SPEC §5)")
        importer.add_argument("file")
        importer.add_argument("--quiet", action="store_true", help="no progress bar")
        importer.set_defaults(handler=_cmd_import, registry=registry)

    simulate = sub.add_parser("simulate", help="simulated devices on the configured broker")
    simulate.add_argument("--facilities", type=int, default=20)
    simulate.add_argument("--scenario", action="append", default=[],
                          help="inject a scenario: fall, sos, over_capacity, dropout, garbage (repeatable)")
    simulate.add_argument("--duration", type=float, default=None, help="seconds to run (default: until Ctrl-C)")
    simulate.add_argument("--time-scale", type=float, default=30.0)
    simulate.add_argument("--seed", type=int, default=7)
    simulate.add_argument("--no-register", action="store_true",
                          help="do not register the simulated district in the database first")
    simulate.set_defaults(handler=_cmd_simulate)

    bench = sub.add_parser("bench", help="benchmarks that print their figures")
    bench.add_argument("which", choices=["ingest"])
    bench.add_argument("--duration", type=float, default=60.0, help="seconds of sustained load (default 60)")
    bench.add_argument("--devices", type=int, default=10_000)
    bench.add_argument("--rate", type=float, default=10_000.0, help="messages per second offered")
    bench.set_defaults(handler=_cmd_bench)
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
