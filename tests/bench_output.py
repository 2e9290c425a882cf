"""Reading what a bench printed, in the tests: its report's lines and their figures."""

from __future__ import annotations

import re

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
