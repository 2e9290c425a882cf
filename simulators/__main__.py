"""`python -m simulators`: run a simulated district without the hub (for vendors and checks)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import sys

from simulators.district import build_district
from simulators.run import SCENARIOS, run_simulation


def main(argv: list[str] | None = None) -> int:
    """Parse arguments and run the simulation until Ctrl-C or --duration."""
    parser = argparse.ArgumentParser(prog="python -m simulators", description=__doc__)
    parser.add_argument(
        "--mqtt-url", default=os.environ.get("CAREHUB_MQTT_URL", "mqtt://127.0.0.1:1883")
    )
    parser.add_argument("--topic-root", default=os.environ.get("CAREHUB_TOPIC_ROOT", "carehub"))
    parser.add_argument("--protocol", type=int, choices=(311, 5), default=5)
    parser.add_argument("--facilities", type=int, default=20)
    parser.add_argument("--district", default="鹿城区")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--time-scale", type=float, default=60.0)
    parser.add_argument(
        "--duration", type=float, default=None, help="seconds (default: until Ctrl-C)"
    )
    parser.add_argument("--telemetry-qos", type=int, choices=(0, 1), default=1)
    parser.add_argument(
        "--scenario",
        action="append",
        default=[],
        choices=sorted(SCENARIOS),
        help="; ".join(f"{name}: {text}" for name, text in SCENARIOS.items()),
    )
    parser.add_argument("--csv", metavar="DIR", help="also write the district's import CSVs here")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
    )
    district = build_district(args.facilities, seed=args.seed, district=args.district)
    if args.csv:
        for path in district.write_csv(args.csv):
            print(f"wrote {path}")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(
            run_simulation(
                district,
                mqtt_url=args.mqtt_url,
                topic_root=args.topic_root,
                protocol=args.protocol,
                time_scale=args.time_scale,
                scenarios=args.scenario,
                duration_s=args.duration,
                seed=args.seed,
                telemetry_qos=args.telemetry_qos,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
