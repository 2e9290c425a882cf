"""A Mosquitto of a test's own, on a free port, for tests that need their own broker config."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

START_S = 10.0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def mosquitto_binary() -> str:
    """Debian's mosquitto, or skip saying how to get it."""
    binary = shutil.which("mosquitto")
    if binary is None:
        pytest.skip("needs Debian's mosquitto on PATH (apt-get install mosquitto)")
    return binary


@contextlib.contextmanager
def run_mosquitto(conf: Path, port: int) -> Iterator[subprocess.Popen[bytes]]:
    """Run `mosquitto -c conf` (listening on `port`) until the block ends; its log beside it."""
    binary = mosquitto_binary()
    log = conf.with_suffix(".log")
    with log.open("ab") as out:
        broker = subprocess.Popen([binary, "-c", str(conf)], stdout=out, stderr=out)
    try:
        deadline = time.monotonic() + START_S
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
                break
            if broker.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"private mosquitto did not start: {log.read_text()[-2000:]}")
            time.sleep(0.05)
        yield broker
    finally:
        broker.terminate()
        try:
            broker.wait(5)
        except subprocess.TimeoutExpired:
            broker.kill()
            broker.wait()


@contextlib.contextmanager
def private_mosquitto(directory: Path, *config: str) -> Iterator[str]:
    """Run `mosquitto` with `config` lines added to a local listener; yield its mqtt:// URL."""
    port = free_port()
    conf = directory / "mosquitto.conf"
    conf.write_text(
        "\n".join((f"listener {port} 127.0.0.1", "allow_anonymous true", *config)) + "\n"
    )
    with run_mosquitto(conf, port):
        yield f"mqtt://127.0.0.1:{port}"
