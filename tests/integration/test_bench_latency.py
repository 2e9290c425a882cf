"""`bench latency` end to end: a hub child, telemetry, button presses, and the printed figures."""

from __future__ import annotations

import re

import pytest

from bench.latency import run_latency_bench
from hub.settings import load_settings
from tests.bench_output import MQTT5_BENCH, NUMBER, number, report_line

pytestmark = MQTT5_BENCH

_SPREAD = r"p50 [\d.]+ ms, p99 [\d.]+ ms, max [\d.]+ ms \(n=[\d,]+\)"


def test_latency_bench_prints_its_figures_and_every_press_is_acked(
    mqtt_url: str, database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A short run prints press→commit and press→ack figures, with an ack for every press."""
    settings = load_settings(mqtt_url=mqtt_url, database_url=database_url, mqtt_protocol=5)

    code = run_latency_bench(settings, duration_s=4.0, rate=300.0, presses_per_s=5.0, devices=60)

    report = capsys.readouterr().out
    assert code == 0, report
    presses = report_line(
        report, rf"^presses +({NUMBER}) sent .*; ({NUMBER}) `received` acks; ({NUMBER}) missing"
    )
    sent, acked, missing = (number(group) for group in presses.groups())
    assert sent > 0, report
    assert (acked, missing) == (sent, 0), report
    report_line(report, rf"^commit +press→alert committed +{_SPREAD}")
    report_line(report, rf"^ack +press→`received` ack +{_SPREAD}")
    # Where the time goes inside the hub, from its own /metrics: every stage saw every press.
    for stage in ("rule decided", "alert transaction", "ack handed over ", "→PUBACK"):
        line = report_line(
            report,
            rf"^  hub stage +.*{re.escape(stage)}.* p50 [\d.]+ ms, p90 [\d.]+ ms, p99 [\d.]+ ms"
            rf" \(({NUMBER})\)$",
        )
        assert number(line.group(1)) >= sent, report
    report_line(report, r"^telemetry +[\d,.]+ msgs/s offered .* stored while pressing")
    report_line(report, r"^hub CPU +[\d.]+ % of one core")
    report_line(report, r"^hub RSS +peak [\d.]+ MB")
    # The verdict is printed either way; the target itself is never a test failure.
    report_line(report, r"^(PASS|MISS) +")
    assert "generator    error" not in report, report
