"""`bench sweep` end to end: a registry written, the timers' device sweep timed on it."""

from __future__ import annotations

import psycopg
import pytest

from bench.sweep import run_sweep_bench
from hub.settings import load_settings
from tests.bench_output import NUMBER, number, report_line

pytestmark = [pytest.mark.db]


def test_the_sweep_finds_exactly_the_silent_and_the_low_devices_and_leaves_no_schema(
    database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = load_settings(database_url=database_url)

    code = run_sweep_bench(settings, devices=4_500)

    report = capsys.readouterr().out
    assert code == 0, report
    assert "4,500 devices registered" in report
    sweep = report_line(report, rf"^sweep .* ({NUMBER}) devices to check \(expected ({NUMBER})\)$")
    # One in 1,000 silent, one in 1,500 low, one in 3,000 both: 4 + 3 - 1.
    assert number(sweep[1]) == number(sweep[2]) == 6, report
    report_line(report, r"^cadence +every [\d.,]+ s \(5% of the timer leader's time\)")
    report_line(report, r"^(PASS|MISS) +offline alerts late by ≤ 30 s")
    schema = report_line(report, r"^  dropped schema (bench_[0-9a-f]+)$")[1]
    with psycopg.connect(database_url) as conn:
        left = conn.execute(
            "SELECT count(*) FROM information_schema.schemata WHERE schema_name = %s", (schema,)
        ).fetchone()
    assert left == (0,)
