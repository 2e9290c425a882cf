"""`carehub serve` and `carehub migrate`: the hub alone, and its database schema."""

from __future__ import annotations

import argparse
import asyncio

from hub.cli.commands import Subcommands
from hub.settings import Settings


def _cmd_migrate(settings: Settings, _args: argparse.Namespace) -> int:
    from hub.storage.migrate import migrate

    applied = asyncio.run(migrate(settings))
    print(
        f"schema {settings.database_schema}: applied {', '.join(applied) or 'nothing (up to date)'}"
    )
    return 0


def _cmd_serve(settings: Settings, _args: argparse.Namespace) -> int:
    import uvicorn

    from hub.app import SERVER_OPTIONS, create_app

    print(
        f"carehub serving on http://{settings.http_host}:{settings.http_port} "
        f"(broker {settings.mqtt.host}:{settings.mqtt.port}, schema {settings.database_schema})",
        flush=True,
    )
    uvicorn.run(
        create_app(settings, own_process=True),
        host=settings.http_host,
        port=settings.http_port,
        log_level=settings.log_level.lower(),
        **SERVER_OPTIONS,
    )
    return 0


def add_serve_command(sub: Subcommands) -> None:
    """Register `carehub serve` on the subcommands."""
    serve = sub.add_parser("serve", help="the hub alone, on the configured broker and database")
    serve.set_defaults(handler=_cmd_serve)


def add_migrate_command(sub: Subcommands) -> None:
    """Register `carehub migrate` on the subcommands."""
    migrate = sub.add_parser("migrate", help="apply the database schema (idempotent)")
    migrate.set_defaults(handler=_cmd_migrate)
