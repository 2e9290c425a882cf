"""`carehub` run as a child process by the tests: its environment, its start, its output."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO

import pytest

from hub.settings import Settings


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without the test run's CAREHUB_* settings, plus `extra`."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("CAREHUB_")}
    env.update(extra)
    return env


def database_env(settings: Settings) -> dict[str, str]:
    """The CAREHUB_* settings that point a child `carehub` at this test's database."""
    return {
        "CAREHUB_DATABASE_URL": settings.database_url,
        "CAREHUB_DATABASE_SCHEMA": settings.database_schema,
    }


def run_carehub(*args: str, timeout: float = 120, **env: str) -> subprocess.CompletedProcess[str]:
    """`carehub ARGS` run to its end in a clean environment plus `env`; its UTF-8 output."""
    return subprocess.run(
        [sys.executable, "-m", "hub.cli", *args],
        env=clean_env(PYTHONIOENCODING="utf-8", **env),
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=timeout,
        check=False,
    )


def start_demo(data_dir: Path, *options: str) -> subprocess.Popen[str]:
    """`carehub demo` on free ports with its data in `data_dir`; output on one text pipe."""
    return subprocess.Popen(
        [sys.executable, "-m", "hub.cli", "demo", "--data-dir", str(data_dir), *options],
        env=clean_env(CAREHUB_HTTP_PORT="0", CAREHUB_LOG_LEVEL="WARNING"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


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
