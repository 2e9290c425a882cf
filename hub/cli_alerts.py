"""`carehub audit verify`, `rules import|show` and `webhooks add|list|disable`: alert evidence,
rule tuning and where staff notifications go."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from devices import RULE_PARAMS
from hub.alerts import verify_audit
from hub.errors import RuleError
from hub.notify import FORMATS, NotifyError, add_webhook, redact_url
from hub.rules import parse_overrides_toml
from hub.settings import Settings
from hub.storage.pool import connect
from hub.storage.rules import load_rule_params, save_overrides


def _cmd_audit_verify(settings: Settings, args: argparse.Namespace) -> int:
    async def run() -> int:
        async with await connect(settings) as conn:
            problems = await verify_audit(conn, args.facility)
            cur = await conn.execute(
                "SELECT count(*), count(DISTINCT facility_id) FROM alert_audit"
                + (" WHERE facility_id = %s" if args.facility else ""),
                (args.facility,) if args.facility else (),
            )
            row = await cur.fetchone()
        rows, facilities = (int(row[0]), int(row[1])) if row else (0, 0)
        if not problems:
            print(f"audit trail intact: {rows} rows, {facilities} facilities")
            return 0
        for problem in problems:
            where = f"row {problem.row_id}" if problem.row_id is not None else "its head"
            print(f"facility {problem.facility_id}: chain broken at {where}: {problem.why}")
        return 1

    return asyncio.run(run())


def _cmd_rules_import(settings: Settings, args: argparse.Namespace) -> int:
    path = Path(args.file)
    try:
        text = path.read_text("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise RuleError(f"cannot read {path}: {exc}") from exc
    overrides = parse_overrides_toml(text)

    async def run() -> int:
        async with await connect(settings) as conn:
            return await save_overrides(conn, overrides, args.actor)

    saved = asyncio.run(run())
    print(f"{saved} rule overrides stored; running hubs apply them within 30 s")
    return 0


def _cmd_rules_show(settings: Settings, args: argparse.Namespace) -> int:
    async def run() -> dict[str, dict[str, float]]:
        async with await connect(settings) as conn:
            params = await load_rule_params(conn)
        return {kind: params.get(kind, args.facility, args.zone) for kind in RULE_PARAMS}

    shown = asyncio.run(run())
    if args.json:
        print(json.dumps(shown, ensure_ascii=False, indent=2))
        return 0
    for kind, params in shown.items():
        values = ", ".join(f"{name}={value:g}" for name, value in params.items()) or "-"
        print(f"{kind:15} {values}")
    return 0


def _cmd_webhooks_add(settings: Settings, args: argparse.Namespace) -> int:
    # A robot's secret is a credential: read from stdin, never from the command line.
    secret = sys.stdin.readline().strip() if args.secret_stdin else ""

    async def run() -> int:
        async with await connect(settings) as conn:
            return await add_webhook(conn, args.facility, args.url, args.format, secret)

    try:
        webhook_id = asyncio.run(run())
    except NotifyError as exc:
        print(f"carehub: {exc}", file=sys.stderr)
        return 2
    print(f"webhook {webhook_id} added for {args.facility} ({args.format}, {redact_url(args.url)})")
    return 0


def _cmd_webhooks_list(settings: Settings, args: argparse.Namespace) -> int:
    async def run() -> list[tuple[Any, ...]]:
        async with await connect(settings) as conn:
            cur = await conn.execute(
                "SELECT id, facility_id, format, url, enabled, consecutive_failures, last_error,"
                " last_success_at FROM webhooks"
                + (" WHERE facility_id = %s" if args.facility else "")
                + " ORDER BY facility_id, id",
                (args.facility,) if args.facility else (),
            )
            return await cur.fetchall()

    rows = asyncio.run(run())
    if args.json:
        listed = [
            {
                "id": row[0],
                "facility_id": row[1],
                "format": row[2],
                "url": redact_url(row[3]),
                "enabled": row[4],
                "consecutive_failures": row[5],
                "last_error": row[6],
                "last_success_at": row[7].isoformat() if row[7] else None,
            }
            for row in rows
        ]
        print(json.dumps(listed, ensure_ascii=False, indent=2))
        return 0
    for wid, facility, fmt, url, enabled, failures, error, _ in rows:
        health = "disabled" if not enabled else ("ok" if not failures else f"failing x{failures}")
        line = f"{wid:>5}  {facility:20} {fmt:9} {health:14} {redact_url(url)}"
        print(line + (f"  ({error})" if failures and error else ""))
    return 0


def _cmd_webhooks_disable(settings: Settings, args: argparse.Namespace) -> int:
    async def run() -> int:
        async with await connect(settings) as conn:
            cur = await conn.execute(
                "UPDATE webhooks SET enabled = false WHERE id = %s", (args.webhook_id,)
            )
            return cur.rowcount

    if asyncio.run(run()) == 0:
        print(f"carehub: there is no webhook {args.webhook_id}", file=sys.stderr)
        return 2
    print(f"webhook {args.webhook_id} disabled; its queued notices are dropped")
    return 0


def add_alert_commands(sub: Any) -> None:
    """Register `audit` and `rules` on the `carehub` command's subparsers."""
    audit = sub.add_parser("audit", help="the tamper-evident alert audit trail")
    audit_actions = audit.add_subparsers(dest="action", required=True, metavar="ACTION")
    verify = audit_actions.add_parser("verify", help="check the hash chain; name the first break")
    verify.add_argument("--facility", default=None, help="one facility (default: all)")
    verify.set_defaults(handler=_cmd_audit_verify)

    rules = sub.add_parser("rules", help="alert rule parameters per facility and zone")
    rule_actions = rules.add_subparsers(dest="action", required=True, metavar="ACTION")
    importer = rule_actions.add_parser("import", help="store overrides from a TOML file")
    importer.add_argument("file")
    importer.add_argument("--actor", default="cli", help="who made the change (recorded)")
    importer.set_defaults(handler=_cmd_rules_import)
    show = rule_actions.add_parser("show", help="the parameters in force at a facility or zone")
    show.add_argument("--facility", required=True)
    show.add_argument("--zone", default=None)
    show.add_argument("--json", action="store_true")
    show.set_defaults(handler=_cmd_rules_show)

    webhooks = sub.add_parser("webhooks", help="where each facility's staff notifications go")
    hook_actions = webhooks.add_subparsers(dest="action", required=True, metavar="ACTION")
    add = hook_actions.add_parser("add", help="send a facility's alerts to a webhook")
    add.add_argument("facility", help="facility id")
    add.add_argument("url", help="http(s) URL; a robot's key or access_token stays in it")
    add.add_argument("--format", choices=FORMATS, default="json", help="body format (json)")
    add.add_argument(
        "--secret-stdin",
        action="store_true",
        help="read a signing secret (钉钉 SEC..., or a json HMAC key) from stdin",
    )
    add.set_defaults(handler=_cmd_webhooks_add)
    listing = hook_actions.add_parser("list", help="webhooks and how their endpoints are doing")
    listing.add_argument("--facility", default=None)
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(handler=_cmd_webhooks_list)
    disable = hook_actions.add_parser("disable", help="stop sending to a webhook")
    disable.add_argument("webhook_id", type=int)
    disable.set_defaults(handler=_cmd_webhooks_disable)
