"""A hub that is its own process settles the garbage collector; in a child process here,
since what it freezes stays frozen for the life of the process."""

from __future__ import annotations

import subprocess
import sys

from hub.runtime import GC_THRESHOLDS


def test_settling_freezes_start_up_and_raises_the_thresholds() -> None:
    probe = (
        "import gc\n"
        "from hub.runtime import settle_garbage_collector\n"
        "assert gc.get_freeze_count() == 0\n"
        "settle_garbage_collector()\n"
        "print(gc.get_freeze_count(), *gc.get_threshold())\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    ).stdout.split()
    frozen, *thresholds = (int(value) for value in out)
    assert frozen > 1000  # what importing the hub built
    assert tuple(thresholds) == GC_THRESHOLDS
