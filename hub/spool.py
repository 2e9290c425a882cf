"""A durable local spool for messages that arrive while the database is unreachable.

Raw messages are spooled, not decoded ones, so replay goes through the very same decode
path; each file is fsynced before the broker is acked, and deleted after its commit.
"""

from __future__ import annotations

import base64
import logging
import os
from collections.abc import Iterator, Sequence
from datetime import datetime
from pathlib import Path

import msgspec

from hub.models import Inbound

logger = logging.getLogger(__name__)


class _Line(msgspec.Struct, array_like=True):
    topic: str
    payload: str
    received_at: str


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(_Line)


class Spool:
    """Append-only spool files under one directory; one file per spooled batch."""

    def __init__(self, directory: Path) -> None:
        self._dir = directory
        self._counter = 0

    def write(self, messages: Sequence[Inbound]) -> Path:
        """Write a batch durably (fsync of file and folder); return its path."""
        self._dir.mkdir(parents=True, exist_ok=True)
        self._counter += 1
        stamp = datetime.now().strftime("%Y%m%dT%H%M%S%f")
        final = self._dir / f"{stamp}-{os.getpid()}-{self._counter:06d}.spool"
        partial = final.with_suffix(".partial")
        with partial.open("wb") as file:
            for message in messages:
                line = _Line(
                    message.topic,
                    base64.b64encode(message.payload).decode(),
                    message.received_at.isoformat(),
                )
                file.write(_encoder.encode(line) + b"\n")
            file.flush()
            os.fsync(file.fileno())
        partial.rename(final)
        directory_fd = os.open(self._dir, os.O_RDONLY)
        try:
            os.fsync(directory_fd)
        finally:
            os.close(directory_fd)
        return final

    def files(self) -> list[Path]:
        """Spooled batches, oldest first."""
        if not self._dir.exists():
            return []
        return sorted(self._dir.glob("*.spool"))

    def read(self, path: Path) -> Iterator[Inbound]:
        """The messages of one spooled batch (not acked again: qos 0)."""
        with path.open("rb") as file:
            for raw in file:
                if not raw.strip():
                    continue
                line = _decoder.decode(raw)
                yield Inbound(
                    topic=line.topic,
                    payload=base64.b64decode(line.payload),
                    qos=0,
                    retain=False,
                    mid=0,
                    generation=-1,
                    received_at=datetime.fromisoformat(line.received_at),
                )

    def remove(self, path: Path) -> None:
        """Forget a batch once it is committed."""
        path.unlink(missing_ok=True)
