"""`bench ingest --find-max` end to end: a hub child, a ramp of offered rates, the highest held."""

from __future__ import annotations

import pytest

from bench.ingest import run_bench
from hub.settings import load_settings
from tests.bench_output import MQTT5_BENCH, NUMBER, number, report_line

pytestmark = MQTT5_BENCH


def test_find_max_ramps_until_its_ceiling_and_prints_the_highest_rate_held(
    mqtt_url: str, database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Three short steps far below capacity are all held; the last one is the figure."""
    settings = load_settings(mqtt_url=mqtt_url, database_url=database_url, mqtt_protocol=5)

    code = run_bench(
        settings,
        find_max=True,
        rate=300.0,
        duration_s=3.0,
        devices=60,
        connections=2,
        ceiling=450.0,
    )

    report = capsys.readouterr().out
    assert code == 0, report
    steps = [line for line in report.splitlines() if line.startswith("step ")]
    assert len(steps) == 3, report  # 300, 360, 432 asked; 518 would pass the ceiling
    for line, asked in zip(steps, ("300", "360", "432"), strict=True):
        step = report_line(
            line,
            rf"^step +{asked} asked +({NUMBER}) offered +({NUMBER}) stored msgs/s +lost 0 .*held$",
        )
        offered, stored = (number(group) for group in step.groups())
        assert abs(offered - float(asked)) < float(asked) * 0.05, line
        assert stored >= offered * 0.97, line
    best = report_line(
        report,
        rf"^find-max +highest rate held: ({NUMBER}) msgs/s stored of ({NUMBER}) offered, "
        r"nothing lost \(the ramp's ceiling was reached\)",
    )
    assert 400 <= number(best.group(2)) <= 450, report
