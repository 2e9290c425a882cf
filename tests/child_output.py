"""A child process's output lines, read in a thread so waiting on them never blocks a loop."""

from __future__ import annotations

import threading
import time
from typing import IO

import pytest


class ChildOutput:
    """Collect a child's output lines in a thread, so waiting on them never blocks the loop."""

    def __init__(self, stream: IO[str]) -> None:
        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            self.lines.append(line.rstrip("\n"))

    def text(self) -> str:
        """Everything read so far, one line each."""
        return "\n".join(self.lines)

    def join(self) -> None:
        """Wait (briefly) for the child's output to end."""
        self._thread.join(timeout=10)

    def wait_for(self, text: str, timeout: float) -> None:
        """Return once a line holds `text`; fail the test after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while not any(text in line for line in self.lines):
            if time.monotonic() > deadline:
                pytest.fail(f"{text!r} not printed within {timeout} s:\n" + "\n".join(self.lines))
            time.sleep(0.1)
