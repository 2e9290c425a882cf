"""Reading what a bench printed, in the tests: its report's lines and their figures."""

from __future__ import annotations

import os
import re

import pytest

from tests.fix_services import MQTT_URL_ENV

# The marks of a bench test whose hub child speaks MQTT 5, which the embedded amqtt broker
# (MQTT 3.1.1 only) cannot serve.
MQTT5_BENCH = [
    pytest.mark.mqtt,
    pytest.mark.db,
    pytest.mark.slow,
    pytest.mark.skipif(
        not os.environ.get(MQTT_URL_ENV),
        reason="this bench needs a broker with MQTT 5 such as Mosquitto; set CAREHUB_TEST_MQTT_URL",
    ),
]

# A count as the benches print it: 12,345.
NUMBER = r"[\d,]+"


def report_line(report: str, pattern: str) -> re.Match[str]:
    """The first line of `report` that `pattern` matches from its start; fail, showing the
    report, when none does."""
    found = re.search(pattern, report, re.MULTILINE)
    assert found is not None, f"no line matches {pattern!r} in:\n{report}"
    return found


def number(text: str) -> int:
    """A printed count (12,345) as an int."""
    return int(text.replace(",", ""))
