"""`bench live` end to end: a hub child, websocket clients, alert changes, printed figures."""

from __future__ import annotations

import pytest

from bench.live import run_live_bench
from hub.settings import load_settings
from tests.bench_output import NUMBER, number, report_line

pytestmark = [pytest.mark.mqtt, pytest.mark.db, pytest.mark.slow]

_SPREAD = r"p50 ([\d.]+) ms, p99 ([\d.]+) ms, max ([\d.]+) ms \(n=([\d,]+)\)"


def test_live_bench_prints_its_figures_and_every_client_gets_every_change(
    mqtt_url: str, mqtt_protocol: int, database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A short run prints commit→client figures, with every change on every client."""
    settings = load_settings(
        mqtt_url=mqtt_url, database_url=database_url, mqtt_protocol=mqtt_protocol
    )

    code = run_live_bench(settings, clients=3, rate=10.0, duration_s=2.0, devices=30)

    report = capsys.readouterr().out
    assert code == 0, report
    clients = report_line(report, r"^clients +(\d+) connected in [\d.]+ s; (\d+) closed early")
    assert clients.groups() == ("3", "0"), report
    committed = number(report_line(report, rf"^changes +({NUMBER}) committed").group(1))
    assert committed >= 10, report
    delivered = report_line(
        report, rf"^delivered +({NUMBER}) of ({NUMBER}) messages .*; lost ({NUMBER})"
    )
    got, expected, lost = (number(group) for group in delivered.groups())
    assert (got, expected, lost) == (3 * committed, 3 * committed, 0), report
    latency = report_line(report, rf"^latency +commit→client {_SPREAD}")
    p50, p99, worst = (float(group) for group in latency.groups()[:3])
    assert 0 <= p50 <= p99 <= worst, report
    assert number(latency.group(4)) == got, report
    report_line(report, r"^hub CPU +[\d.]+ % of one core")
    report_line(report, r"^hub RSS +peak [\d.]+ MB")
    # The verdict is printed either way; the target itself is never a test failure.
    report_line(report, r"^(PASS|FAIL) +")
    assert "driver       error" not in report, report
