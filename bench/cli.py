"""`carehub bench ingest|latency|live|dashboard`: the benchmarks' parser and dispatch.

`register` is this package's entry in the `carehub.commands` entry-point group: the hub's
CLI finds it there and calls it with its subparsers. Each bench is imported only when it
runs, so the rest of `carehub` starts as fast without the benchmarks as with them.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from hub.cli.commands import Subcommands
from hub.settings import Settings

# Each bench's own defaults for --duration and --rate, which the parser leaves None when not
# given: a latency run wants a shorter load than ingest, and live's rate is alert changes.
_DEFAULT_DURATION_S = {"ingest": 60.0, "latency": 30.0, "live": 30.0}
_DEFAULT_RATE = {"ingest": 10_000.0, "latency": 5000.0, "live": 100.0}


# Each bench's keywords, which the parser stores under the same names but for these two.
_OPTIONS = {
    "ingest": ("duration_s", "devices", "rate", "connections", "keep"),
    "latency": ("duration_s", "rate", "presses_per_s", "devices"),
    "live": ("clients", "rate", "duration_s", "devices"),
    "dashboard": ("facilities", "loads", "chromium", "keep"),
}
_OPTION_NAMES = {"duration_s": "duration", "presses_per_s": "presses"}


def _options(args: argparse.Namespace) -> dict[str, Any]:
    """The chosen bench's keywords, with its own duration and rate where none was given."""
    options = {name: getattr(args, _OPTION_NAMES.get(name, name)) for name in _OPTIONS[args.which]}
    for name, defaults in (("duration_s", _DEFAULT_DURATION_S), ("rate", _DEFAULT_RATE)):
        if name in options and options[name] is None:
            options[name] = defaults[args.which]
    return options


def _cmd_bench(settings: Settings, args: argparse.Namespace) -> int:
    options = _options(args)
    if args.which == "dashboard":
        from bench.dashboard import run_dashboard_bench

        return run_dashboard_bench(settings, **options)
    if args.which == "live":
        from bench.live import run_live_bench

        return run_live_bench(settings, **options)
    if args.which == "latency":
        from bench.latency import run_latency_bench

        return run_latency_bench(settings, **options)
    from bench.ingest import run_bench

    return run_bench(settings, args.which, **options)


def register(sub: Subcommands) -> None:
    """Register `carehub bench` on the subcommands (the `carehub.commands` entry point)."""
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
