"""`carehub audit verify`: check the tamper-evident hash chain of the alert audit trail."""

from __future__ import annotations

import argparse
import asyncio

from hub.alerts.audit import verify_audit
from hub.cli.commands import Subcommands, add_actions
from hub.settings import Settings
from hub.storage.audit import audit_totals
from hub.storage.pool import connect


def _cmd_audit_verify(settings: Settings, args: argparse.Namespace) -> int:
    async def run() -> int:
        async with await connect(settings) as conn:
            problems = await verify_audit(conn, args.facility)
            rows, facilities = await audit_totals(conn, args.facility)
        if not problems:
            print(f"audit trail intact: {rows} rows, {facilities} facilities")
            return 0
        for problem in problems:
            where = f"row {problem.row_id}" if problem.row_id is not None else "its head"
            print(f"facility {problem.facility_id}: chain broken at {where}: {problem.why}")
        return 1

    return asyncio.run(run())


def add_audit_commands(sub: Subcommands) -> None:
    """Register `audit` on the `carehub` command's subparsers."""
    audit_actions = add_actions(sub, "audit", "the tamper-evident alert audit trail")
    verify = audit_actions.add_parser("verify", help="check the hash chain; name the first break")
    verify.add_argument("--facility", default=None, help="one facility (default: all)")
    verify.set_defaults(handler=_cmd_audit_verify)
