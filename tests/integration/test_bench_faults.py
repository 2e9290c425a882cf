"""`bench faults` end to end: its own broker restarted, the hub killed, the database cut."""

from __future__ import annotations

import shutil

import pytest

from bench.faults import run_faults_bench
from hub.settings import load_settings
from tests.bench_output import NUMBER, number, report_line

pytestmark = [
    pytest.mark.db,
    pytest.mark.slow,
    pytest.mark.skipif(
        shutil.which("mosquitto") is None,
        reason="the fault bench runs a Mosquitto of its own: apt-get install mosquitto",
    ),
]


def test_fault_bench_survives_all_three_faults_and_loses_nothing(
    database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A short run at a low rate: every fault recovered from, nothing lost or duplicated."""
    settings = load_settings(database_url=database_url)

    code = run_faults_bench(settings, duration_s=24.0, rate=300.0, cut_s=4.0, devices=90)

    report = capsys.readouterr().out
    assert code == 0, report
    for fault in ("broker restart", "hub SIGKILL", "database cut 4 s"):
        report_line(
            report,
            rf"^fault +{fault} +at +[\d.]+ s, over at +[\d.]+ s; hub ready [\d.]+ s later, "
            r"caught up ([\d.]+) s later$",
        )
    offered = report_line(report, rf"^offered .*: ({NUMBER}) sent, ({NUMBER}) PUBACKed")
    assert number(offered.group(2)) > 0, report
    report_line(report, r"^lost +0 ")
    report_line(report, r"^duplicated +0 ")
    spooled = report_line(report, rf"^hub counters spooled ({NUMBER}), replayed ({NUMBER})")
    # A 4 s cut may pass while the hub's writes wait for a connection (nothing to spool);
    # whatever it did spool, it replayed (tests/integration/test_outage.py drives the spool).
    assert spooled.group(1) == spooled.group(2), report
    report_line(report, r"^PASS ")
