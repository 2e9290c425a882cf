"""`carehub bench ingest|latency|live|dashboard|report|faults|sweep`: parser and dispatch.

`register` is this package's entry in the `carehub.commands` entry-point group: the hub's
CLI finds it there and calls it with its subparsers. Each bench is imported only when it
runs, so the rest of `carehub` starts as fast without the benchmarks as with them.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hub.cli.commands import Subcommands
from hub.settings import Settings

# Each bench's keywords, which the parser stores under the same names but for these two.
# An option not given is left out, so the bench's own default (in its signature) applies.
_OPTIONS = {
    "ingest": ("duration_s", "devices", "rate", "connections", "hubs", "keep", "find_max"),
    "latency": ("duration_s", "rate", "presses_per_s", "devices"),
    "live": ("clients", "rate", "duration_s", "devices"),
    "dashboard": ("facilities", "loads", "chromium", "keep"),
    "report": ("facilities", "keep"),
    "faults": ("duration_s", "rate", "cut_s", "devices", "connections"),
    "sweep": ("devices", "keep"),
}
_OPTION_NAMES = {"duration_s": "duration", "presses_per_s": "presses", "cut_s": "cut"}


def _options(args: argparse.Namespace) -> dict[str, Any]:
    """The keywords given for the chosen bench."""
    given = vars(args)
    names = ((name, _OPTION_NAMES.get(name, name)) for name in _OPTIONS[args.which])
    return {name: given[option] for name, option in names if option in given}


# Each bench's module and entry function, imported only when that bench runs.
_BENCHES = {
    "ingest": ("bench.ingest", "run_bench"),
    "latency": ("bench.latency", "run_latency_bench"),
    "live": ("bench.live", "run_live_bench"),
    "dashboard": ("bench.dashboard", "run_dashboard_bench"),
    "report": ("bench.report", "run_report_bench"),
    "faults": ("bench.faults", "run_faults_bench"),
    "sweep": ("bench.sweep", "run_sweep_bench"),
}


def _cmd_bench(settings: Settings, args: argparse.Namespace) -> int:
    module, function = _BENCHES[args.which]
    run: Callable[..., int] = getattr(importlib.import_module(module), function)
    return run(settings, **_options(args))


def register(sub: Subcommands) -> None:
    """Register `carehub bench` on the subcommands (the `carehub.commands` entry point)."""
    # No option has a default here: the bench that runs takes its own (see _OPTIONS).
    bench = sub.add_parser(
        "bench", help="benchmarks that print their figures", argument_default=argparse.SUPPRESS
    )
    bench.add_argument(
        "which",
        choices=list(_BENCHES),
    )
    bench.add_argument(
        "--duration",
        type=float,
        help="seconds of sustained load (default 60 for ingest, 30 for latency and live, "
        "240 for faults; --duration 1800 is the soak)",
    )
    bench.add_argument(
        "--devices", type=int, help="devices simulated, or registered (sweep: default 1,000,000)"
    )
    bench.add_argument(
        "--rate",
        type=float,
        help="telemetry messages per second offered (default 20,000 for ingest, 5,000 latency); "
        "live: alert changes per second (default 100)",
    )
    bench.add_argument("--presses", type=float, help="latency: button presses per second")
    bench.add_argument(
        "--cut", type=float, help="faults: seconds the database is cut off (default 60)"
    )
    bench.add_argument("--clients", type=int, help="live: websocket clients (default 500)")
    bench.add_argument(
        "--connections", type=int, help="MQTT connections the devices are spread over (default 8)"
    )
    bench.add_argument(
        "--hubs",
        type=int,
        help="ingest: hub processes on one shared subscription (default 1)",
    )
    bench.add_argument(
        "--facilities",
        type=int,
        help="dashboard, report: facilities seeded (default 500)",
    )
    bench.add_argument("--loads", type=int, help="dashboard: cold page loads measured (default 3)")
    bench.add_argument(
        "--chromium",
        type=Path,
        help="dashboard: the Chromium binary (default /usr/bin/chromium)",
    )
    bench.add_argument(
        "--keep", action="store_true", help="keep the bench schema (bench_<hex>) for inspection"
    )
    bench.add_argument(
        "--find-max",
        action="store_true",
        help="ingest: a ramp from --rate (default 5,000 msgs/s), a fifth more every --duration "
        "(default 20 s), until a step loses a message; prints the highest rate held",
    )
    bench.set_defaults(handler=_cmd_bench)
