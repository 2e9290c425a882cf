"""An embedded PostgreSQL (pgserver's wheel-shipped binaries), reached over a unix socket.

pgserver never listens on TCP, so it cannot collide with a PostgreSQL the machine runs.
Run as root, pgserver starts the server as a system user `pgserver` (created with
`useradd` if missing) and widens the mode of every parent of the data directory to o+rx.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import os
import tempfile
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Self
from urllib.parse import quote

import psycopg
from psycopg import sql

if TYPE_CHECKING:
    from pgserver.postgres_server import PostgresServer

logger = logging.getLogger(__name__)

DEFAULT_DATA_DIR = Path(".carehub/pgdata")
DEFAULT_DATABASE = "carehub"
_SUPERUSER = "postgres"  # pgserver's initdb names it so; local connections are trusted
_RUNTIME_DIR_MODE = 0o700  # what platformdirs requires of XDG_RUNTIME_DIR
# pgserver falls back to a socket below the runtime dir when the data directory's path is
# too long for one (a unix socket path holds 107 bytes); its own suffix takes 47 of them.
_MAX_RUNTIME_DIR_LEN = 107 - len("/python_PostgresServer/0123456789/.s.PGSQL.5432")


def _prepare_runtime_dir(data_dir: Path) -> None:
    """Give platformdirs a valid XDG_RUNTIME_DIR before pgserver reads it at import.

    pgserver keeps an inter-process lock there (and the socket, for data directories whose
    path is too long for one). Without the variable platformdirs warns, and our tests turn
    warnings into errors. An XDG_RUNTIME_DIR the caller set is left alone.
    """
    if os.environ.get("XDG_RUNTIME_DIR"):
        return
    runtime_dir = data_dir.parent / "run"
    if len(str(runtime_dir)) > _MAX_RUNTIME_DIR_LEN:
        runtime_dir = Path(tempfile.gettempdir()) / f"carehub-run-{os.geteuid()}"
    runtime_dir.mkdir(mode=_RUNTIME_DIR_MODE, parents=True, exist_ok=True)
    runtime_dir.chmod(_RUNTIME_DIR_MODE)
    os.environ["XDG_RUNTIME_DIR"] = str(runtime_dir)


def _start_server(data_dir: Path, *, delete_on_stop: bool) -> PostgresServer:
    _prepare_runtime_dir(data_dir)
    with warnings.catch_warnings():
        # Only when the caller's own XDG_RUNTIME_DIR is unusable (say, a shared /tmp):
        # platformdirs then falls back to a private directory, which is all pgserver needs.
        warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
        from pgserver.postgres_server import get_server  # noqa: PLC0415  # after the env set-up

    data_dir.parent.mkdir(parents=True, exist_ok=True)
    # One server object per data directory and process: pgserver hands back the same one.
    return get_server(data_dir, cleanup_mode="delete" if delete_on_stop else "stop")


class EmbeddedPostgres:
    """A PostgreSQL server for one data directory, started on enter and stopped on exit.

    Stopping leaves the data in place unless `delete_on_stop` (for tests). When another
    process uses the same data directory, the server keeps running until the last one stops.
    """

    def __init__(
        self,
        data_dir: Path | str = DEFAULT_DATA_DIR,
        *,
        database: str = DEFAULT_DATABASE,
        delete_on_stop: bool = False,
    ) -> None:
        self.data_dir = Path(data_dir).expanduser().resolve()
        self.database = database
        self.delete_on_stop = delete_on_stop
        self._server: PostgresServer | None = None
        self._socket_dir: Path | None = None

    @property
    def url(self) -> str:
        """A libpq URL for the database, over the server's unix socket (psycopg 3, psycopg_pool)."""
        return self.url_for(self.database)

    def url_for(self, database: str) -> str:
        """A libpq URL for another database on the same server."""
        if self._socket_dir is None:
            raise RuntimeError("the embedded PostgreSQL is not running")
        host = quote(str(self._socket_dir), safe="")
        return f"postgresql://{_SUPERUSER}@/{quote(database, safe='')}?host={host}"

    def start(self) -> None:
        """Initialise the data directory if new, start the server, create the database."""
        if self._server is not None:
            return
        server = _start_server(self.data_dir, delete_on_stop=self.delete_on_stop)
        socket_dir = server.get_postmaster_info().socket_dir
        if socket_dir is None:  # only on Windows, which carehub does not support
            server.cleanup()
            raise RuntimeError("pgserver started without a unix socket")
        self._server = server
        self._socket_dir = Path(socket_dir)
        self._create_database()
        logger.info("embedded PostgreSQL ready in %s", self.data_dir)

    def stop(self) -> None:
        """Stop the server (if this process is its last user); keep the data unless asked."""
        server, self._server = self._server, None
        if server is None:
            return
        server.cleanup()
        # pgserver also stops at interpreter exit, for a process that never called stop().
        atexit.unregister(server._cleanup)  # the handler it registered
        self._socket_dir = None
        logger.info("embedded PostgreSQL in %s stopped", self.data_dir)

    def _create_database(self) -> None:
        with psycopg.connect(self.url_for("postgres"), autocommit=True) as conn:
            exists = conn.execute(
                "select 1 from pg_database where datname = %s", (self.database,)
            ).fetchone()
            if exists is None:
                conn.execute(sql.SQL("create database {}").format(sql.Identifier(self.database)))
                logger.info("created database %s", self.database)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *_exc_info: object) -> None:
        self.stop()

    async def __aenter__(self) -> Self:
        # initdb and pg_ctl take seconds; keep the event loop free meanwhile.
        await asyncio.to_thread(self.start)
        return self

    async def __aexit__(self, *_exc_info: object) -> None:
        await asyncio.to_thread(self.stop)
