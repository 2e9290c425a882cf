"""`carehub rules import|show`: alert rule parameters per facility and zone."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from devices import RULE_PARAMS
from hub.cli.commands import Subcommands, add_actions, run_on_database
from hub.errors import RuleError
from hub.rules import parse_overrides_toml
from hub.settings import Settings
from hub.storage.rules import load_rule_params, save_overrides


def _cmd_rules_import(settings: Settings, args: argparse.Namespace) -> int:
    path = Path(args.file)
    try:
        text = path.read_text("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise RuleError(f"cannot read {path}: {exc}") from exc
    overrides = parse_overrides_toml(text)

    saved = run_on_database(settings, lambda conn: save_overrides(conn, overrides, args.actor))
    print(f"{saved} rule overrides stored; running hubs apply them within 30 s")
    return 0


def _cmd_rules_show(settings: Settings, args: argparse.Namespace) -> int:
    rule_params = run_on_database(settings, load_rule_params)
    shown = {kind: rule_params.get(kind, args.facility, args.zone) for kind in RULE_PARAMS}
    if args.json:
        print(json.dumps(shown, ensure_ascii=False, indent=2))
        return 0
    for kind, params in shown.items():
        values = ", ".join(f"{name}={value:g}" for name, value in params.items()) or "-"
        print(f"{kind:15} {values}")
    return 0


def add_rules_commands(sub: Subcommands) -> None:
    """Register `rules` on the `carehub` command's subparsers."""
    rule_actions = add_actions(sub, "rules", "alert rule parameters per facility and zone")
    importer = rule_actions.add_parser("import", help="store overrides from a TOML file")
    importer.add_argument("file")
    importer.add_argument("--actor", default="cli", help="who made the change (recorded)")
    importer.set_defaults(handler=_cmd_rules_import)
    show = rule_actions.add_parser("show", help="the parameters in force at a facility or zone")
    show.add_argument("--facility", required=True)
    show.add_argument("--zone", default=None)
    show.add_argument("--json", action="store_true")
    show.set_defaults(handler=_cmd_rules_show)
