"""`carehub webhooks add|list|disable`: where each facility's staff notifications go."""

from __future__ import annotations

import argparse
import json
import sys

from hub.cli.commands import Subcommands, add_actions, refuse, refuses, run_on_database
from hub.notify import FORMATS, NotifyError, add_webhook, redact_url
from hub.settings import Settings
from hub.storage.notifications import disable_webhook, list_webhooks


@refuses(NotifyError)
def _cmd_webhooks_add(settings: Settings, args: argparse.Namespace) -> int:
    # A robot's secret is a credential: read from stdin, never from the command line.
    secret = sys.stdin.readline().strip() if args.secret_stdin else ""
    webhook_id = run_on_database(
        settings, lambda conn: add_webhook(conn, args.facility, args.url, args.format, secret)
    )
    print(f"webhook {webhook_id} added for {args.facility} ({args.format}, {redact_url(args.url)})")
    return 0


def _cmd_webhooks_list(settings: Settings, args: argparse.Namespace) -> int:
    rows = run_on_database(settings, lambda conn: list_webhooks(conn, args.facility))
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
    if not run_on_database(settings, lambda conn: disable_webhook(conn, args.webhook_id)):
        return refuse(f"there is no webhook {args.webhook_id}")
    print(f"webhook {args.webhook_id} disabled; its queued notices are dropped")
    return 0


def add_webhook_commands(sub: Subcommands) -> None:
    """Register `webhooks` on the `carehub` command's subparsers."""
    hook_actions = add_actions(sub, "webhooks", "where each facility's staff notifications go")
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
