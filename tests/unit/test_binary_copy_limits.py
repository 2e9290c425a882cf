"""The batch writer copies readings in binary, and a binary `integer` or `real` does not
refuse an out-of-range value as text does: it wraps or turns to infinity. What keeps them
out is the contract's own limits; this checks that every measured field has limits that
fit its column."""

from __future__ import annotations

import numbers

import pytest

from devices import CATALOGUE
from hub.storage.writer import STATE_FIELDS

INT4 = (-(2**31), 2**31 - 1)
# The largest float4 is about 3.4e38; the contract's limits are far inside it.
FLOAT4_MAX = 3.4e38


@pytest.mark.parametrize("type_name", sorted(CATALOGUE))
def test_every_stored_number_of_the_contract_is_bounded_within_its_column(type_name: str) -> None:
    stored = [spec for spec in CATALOGUE[type_name].telemetry if spec.name in STATE_FIELDS]
    assert stored, f"{type_name} stores none of {STATE_FIELDS}"
    for spec in stored:
        if spec.kind == "bool":
            continue
        assert isinstance(spec.minimum, numbers.Real), f"{type_name}.{spec.name} has no minimum"
        assert isinstance(spec.maximum, numbers.Real), f"{type_name}.{spec.name} has no maximum"
        if spec.kind == "int":
            assert INT4[0] <= spec.minimum <= spec.maximum <= INT4[1], spec
        else:
            assert -FLOAT4_MAX < spec.minimum <= spec.maximum < FLOAT4_MAX, spec
