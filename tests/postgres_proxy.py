"""A TCP proxy in front of the test PostgreSQL, for tests of a database outage (SPEC §8)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from urllib.parse import parse_qs, quote, urlsplit

from hub.settings import Settings


class PostgresProxy:
    """A TCP proxy in front of PostgreSQL that the test can cut, like a pulled cable."""

    def __init__(self, database_url: str) -> None:
        parts = urlsplit(database_url)
        socket_dir = parse_qs(parts.query).get("host", [parts.hostname or ""])[0]
        self._unix = f"{socket_dir}/.s.PGSQL.{parts.port or 5432}" if "/" in socket_dir else None
        self._tcp = (parts.hostname or "127.0.0.1", parts.port or 5432)
        self._user = parts.username or "postgres"
        self._database = parts.path.lstrip("/")
        self._server: asyncio.Server | None = None
        self._pipes: set[asyncio.StreamWriter] = set()
        self.cut = False

    @property
    def url(self) -> str:
        assert self._server is not None
        port = self._server.sockets[0].getsockname()[1]
        return f"postgresql://{quote(self._user)}@127.0.0.1:{port}/{quote(self._database)}"

    def settings_through(self, settings: Settings, spool_dir: Path) -> Settings:
        """`settings` with the database reached through this proxy, and a spool of its own."""
        return settings.model_copy(update={"database_url": self.url, "spool_dir": spool_dir})

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)

    async def __aenter__(self) -> PostgresProxy:
        await self.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.stop()

    async def stop(self) -> None:
        self.sever()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def sever(self) -> None:
        """Refuse new connections and drop every open one."""
        self.cut = True
        for writer in list(self._pipes):
            writer.transport.abort()
        self._pipes.clear()

    def restore(self) -> None:
        self.cut = False

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.cut:
            writer.transport.abort()
            return
        if self._unix:
            up_reader, up_writer = await asyncio.open_unix_connection(self._unix)
        else:
            up_reader, up_writer = await asyncio.open_connection(*self._tcp)
        self._pipes |= {writer, up_writer}
        await asyncio.gather(
            self._pipe(reader, up_writer), self._pipe(up_reader, writer), return_exceptions=True
        )

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                if self.cut:
                    break
                writer.write(data)
                await writer.drain()
        finally:
            self._pipes.discard(writer)
            writer.transport.abort()
