"""`carehub doctor`: check the broker and the database for settings that lose data."""

from __future__ import annotations

import argparse
import asyncio
import json
from dataclasses import asdict
from pathlib import Path

from hub.cli.commands import Subcommands, refuse
from hub.settings import Settings

# Used to size the broker's queue when --rate is not given: a small site's heartbeats.
DEFAULT_RATE = 1000


def _cmd_doctor(settings: Settings, args: argparse.Namespace) -> int:
    from hub.doctor import examine

    conf: Path | None = args.mosquitto_conf
    if conf is not None and not conf.is_file():
        return refuse(f"--mosquitto-conf: no such file: {conf}")
    if args.rate < 1:
        return refuse("--rate: must be at least 1 msg/s")
    findings = asyncio.run(examine(settings, conf, args.rate))
    if args.json:
        print(json.dumps([asdict(f) for f in findings], ensure_ascii=False, indent=2))
    else:
        for finding in findings:
            print(f"{finding.level.upper():4}  {finding.part:14}  {finding.what}")
            if finding.advice:
                print(f"{'':4}  {'':14}  -> {finding.advice}")
    return 1 if any(f.level == "fail" for f in findings) else 0


def add_doctor_command(sub: Subcommands) -> None:
    doctor = sub.add_parser(
        "doctor",
        help="check the broker and the database for settings that lose data or slow alerts",
        description="Checks the database (durability, checkpoints, TimescaleDB jobs), the"
        " broker ($SYS drop counter) and, given its file, Mosquitto's queue limits and"
        " persistence. Exits 1 when a setting can lose acknowledged messages.",
    )
    doctor.add_argument(
        "--mosquitto-conf", type=Path, metavar="FILE", help="the broker's mosquitto.conf"
    )
    doctor.add_argument(
        "--rate",
        type=int,
        default=DEFAULT_RATE,
        help=f"the site's messages per second, to size the broker's queue (default {DEFAULT_RATE})",
    )
    doctor.add_argument("--json", action="store_true", help="print the findings as JSON")
    doctor.set_defaults(handler=_cmd_doctor)
