"""`bench live` end to end: a hub child, websocket clients, alert changes, printed figures."""

from __future__ import annotations

import re

import pytest

from bench.live import run_live_bench
from hub.settings import load_settings

pytestmark = [pytest.mark.mqtt, pytest.mark.db, pytest.mark.slow]

_SPREAD = r"p50 ([\d.]+) ms, p99 ([\d.]+) ms, max ([\d.]+) ms \(n=([\d,]+)\)"


def _number(text: str) -> int:
    return int(text.replace(",", ""))


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
    clients = re.search(r"^clients +(\d+) connected in [\d.]+ s; (\d+) closed early", report, re.M)
    assert clients is not None, report
    assert clients.groups() == ("3", "0"), report
    changes = re.search(r"^changes +([\d,]+) committed", report, re.M)
    assert changes is not None, report
    committed = _number(changes.group(1))
    assert committed >= 10, report
    delivered = re.search(
        r"^delivered +([\d,]+) of ([\d,]+) messages .*; lost ([\d,]+)", report, re.M
    )
    assert delivered is not None, report
    got, expected, lost = (_number(group) for group in delivered.groups())
    assert (got, expected, lost) == (3 * committed, 3 * committed, 0), report
    latency = re.search(rf"^latency +commit→client {_SPREAD}", report, re.M)
    assert latency is not None, report
    p50, p99, worst = (float(group) for group in latency.groups()[:3])
    assert 0 <= p50 <= p99 <= worst, report
    assert _number(latency.group(4)) == got, report
    assert re.search(r"^hub CPU +[\d.]+ % of one core", report, re.M), report
    assert re.search(r"^hub RSS +peak [\d.]+ MB", report, re.M), report
    # The verdict is printed either way; the target itself is never a test failure.
    assert re.search(r"^(PASS|FAIL) +", report, re.M), report
    assert "driver       error" not in report, report
