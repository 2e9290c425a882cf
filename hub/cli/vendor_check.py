"""`carehub vendor-check DEVICE_ID`: a device's conformance to the contract, clause by clause."""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import TYPE_CHECKING

from hub.cli.commands import Subcommands, refuse
from hub.settings import Settings

if TYPE_CHECKING:
    from hub.vendor_check import Prompt

# A vendor's staging run: long enough for a few heartbeats of a 300 s device and a press.
DEFAULT_DURATION_S = 600.0
# Enough for a broker to notice a silent device (1.5 x a keepalive of up to 60 s) and for
# it to boot again.
DEFAULT_WILL_WAIT_S = 180.0
# Exit codes: 0 every clause passed (or could not be checked here), 1 a clause failed,
# 2 the check could not run (refuse(): an unregistered device, an unreachable broker).
FAILED = 1


def _cmd_vendor_check(settings: Settings, args: argparse.Namespace) -> int:
    import json

    from hub.errors import HubError
    from hub.vendor_check import render, run_vendor_check

    # With --json the one object is all stdout holds; what to do now goes to stderr.
    prompts = sys.stderr if args.json else sys.stdout

    def on_prompt(prompt: Prompt) -> None:
        marker = "" if prompt.kind == "info" else ">>> "
        print(f"{marker}{prompt.text}", file=prompts, flush=True)

    try:
        report = asyncio.run(
            run_vendor_check(
                settings,
                args.device_id,
                duration_s=args.duration,
                will_wait_s=args.will_wait,
                on_prompt=on_prompt,
            )
        )
    except HubError as exc:
        return refuse(exc)
    if args.json:
        print(json.dumps(report.as_json(), ensure_ascii=False, indent=2))
    else:
        print()
        print(render(report))
    return 0 if report.passed else FAILED


def add_vendor_check_command(sub: Subcommands) -> None:
    """Register `carehub vendor-check` on the subcommands."""
    check = sub.add_parser(
        "vendor-check",
        help="watch one device on the broker and judge it against the contract",
        description="Watch a registered device's real traffic on the configured broker,"
        " ask for a test press and a power cut, and report clause by clause; exit 1 if any"
        " clause fails. The hub must be running on the same broker and database (it"
        " answers the test press).",
    )
    check.add_argument("device_id", metavar="DEVICE_ID")
    check.add_argument(
        "--duration",
        type=float,
        default=DEFAULT_DURATION_S,
        metavar="S",
        help=f"seconds to watch before the power cut (default {DEFAULT_DURATION_S:.0f})",
    )
    check.add_argument(
        "--will-wait",
        type=float,
        default=DEFAULT_WILL_WAIT_S,
        metavar="S",
        help="seconds to wait for the last will after the power cut, and again for the"
        f" device to come back (default {DEFAULT_WILL_WAIT_S:.0f})",
    )
    check.add_argument("--json", action="store_true", help="print the report as one JSON object")
    check.set_defaults(handler=_cmd_vendor_check)
