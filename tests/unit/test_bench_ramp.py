"""The ramp of `bench ingest --find-max`: its rates, and what makes a step held."""

from __future__ import annotations

import pytest

from bench.ingest import RampStep, ramp_rates


def test_the_ramp_grows_by_a_fifth_and_stops_at_its_ceiling() -> None:
    assert ramp_rates(5_000, 12_000) == [5_000, 6_000, 7_200, 8_640, 10_400]
    assert ramp_rates(5_000, 4_000) == [5_000]


@pytest.mark.parametrize(
    ("step", "held"),
    [
        (RampStep(10_000, 9_990, 9_800, lost=0, forgone=0, p99_ms=80), True),
        (RampStep(10_000, 9_990, 9_990, lost=1, forgone=0, p99_ms=80), False),
        (RampStep(10_000, 9_990, 9_000, lost=0, forgone=0, p99_ms=900), False),
        (RampStep(10_000, 8_000, 8_000, lost=0, forgone=2_000, p99_ms=80), False),
    ],
    ids=["kept up", "lost one", "fell behind", "offer not made"],
)
def test_a_step_is_held_only_when_nothing_is_lost_and_the_hub_kept_up(
    step: RampStep, held: bool
) -> None:
    assert step.held is held
