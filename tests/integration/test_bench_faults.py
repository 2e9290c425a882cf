"""`bench faults` end to end: its own broker restarted, the hub killed, the database cut."""

from __future__ import annotations

import re
import shutil

import pytest

from bench.faults import run_faults_bench
from hub.settings import load_settings

pytestmark = [
    pytest.mark.db,
    pytest.mark.slow,
    pytest.mark.skipif(
        shutil.which("mosquitto") is None,
        reason="the fault bench runs a Mosquitto of its own: apt-get install mosquitto",
    ),
]

_NUMBER = r"[\d,]+"


def test_fault_bench_survives_all_three_faults_and_loses_nothing(
    database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A short run at a low rate: every fault recovered from, nothing lost or duplicated."""
    settings = load_settings(database_url=database_url)

    code = run_faults_bench(settings, duration_s=24.0, rate=300.0, cut_s=4.0, devices=90)

    report = capsys.readouterr().out
    assert code == 0, report
    for fault in ("broker restart", "hub SIGKILL", "database cut 4 s"):
        line = re.search(
            rf"^fault +{fault} +at +[\d.]+ s, over at +[\d.]+ s; hub ready [\d.]+ s later, "
            r"caught up ([\d.]+) s later$",
            report,
            re.MULTILINE,
        )
        assert line is not None, (fault, report)
    offered = re.search(rf"^offered .*: ({_NUMBER}) sent, ({_NUMBER}) PUBACKed", report, re.M)
    assert offered is not None, report
    assert int(offered.group(2).replace(",", "")) > 0, report
    assert re.search(r"^lost +0 ", report, re.MULTILINE), report
    assert re.search(r"^duplicated +0 ", report, re.MULTILINE), report
    # The database cut made the hub spool, and the replay stored it.
    spooled = re.search(rf"^hub counters spooled ({_NUMBER}), replayed ({_NUMBER})", report, re.M)
    assert spooled is not None, report
    assert int(spooled.group(1).replace(",", "")) > 0, report
    assert spooled.group(1) == spooled.group(2), report
    assert re.search(r"^PASS ", report, re.MULTILINE), report
