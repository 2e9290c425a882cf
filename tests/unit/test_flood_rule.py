"""The SPEC §4 flood rule: one definition, one setting pair, read by the screen and the phone."""

from __future__ import annotations

import pytest

from hub.rules import FloodRule
from hub.settings import load_settings

FLOOD_ENV = (
    "CAREHUB_FLOOD_THRESHOLD",
    "CAREHUB_FLOOD_WINDOW_S",
    "CAREHUB_NOTIFY_FLOOD_THRESHOLD",
    "CAREHUB_NOTIFY_FLOOD_WINDOW_S",
)


def test_the_defaults_are_the_spec_s_ten_alerts_in_ten_minutes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Without settings, more than 10 alerts within 600 s at one facility are a flood."""
    for name in FLOOD_ENV:
        monkeypatch.delenv(name, raising=False)
    rule = FloodRule.of(load_settings())
    assert (rule.threshold, rule.window_s) == (10, 600)
    assert rule.window.total_seconds() == 600
    assert not rule.groups("medium", 10)
    assert rule.groups("medium", 11)
    assert rule.groups("low", 11)


def test_a_high_alert_is_never_grouped() -> None:
    """A fall or a press during a flood is still heard on its own."""
    assert not FloodRule(10, 600).groups("high", 1000)


@pytest.mark.parametrize("prefix", ["CAREHUB_FLOOD_", "CAREHUB_NOTIFY_FLOOD_"])
def test_the_flood_settings_come_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, prefix: str
) -> None:
    """CAREHUB_FLOOD_* set the rule; the names earlier READMEs gave still work."""
    monkeypatch.setenv(f"{prefix}THRESHOLD", "3")
    monkeypatch.setenv(f"{prefix}WINDOW_S", "60")
    assert FloodRule.of(load_settings()) == FloodRule(3, 60)
