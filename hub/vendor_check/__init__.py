"""The vendor's conformance check (SPEC §1, §3): one device's real traffic, judged clause by clause.

The check connects to the broker as a client of its own, with the hub's settings, and
listens under `{root}/v1/+/{device}/#`: everything the device publishes on its own
topics (or under a wrong facility), and the hub's `ack` and `rejected` answers to it.
Payloads are judged by the hub's own decoder, so the check and the hub never disagree
on what is valid. Then it asks the vendor for two things it cannot see by itself: a
test press, and a power cut that makes the broker send the device's last will.

`judge.Judge` is the pure part (messages in, verdicts out), `watch.run_vendor_check` the MQTT
part around it, and `report` the verdicts and their text.
"""

from __future__ import annotations

from hub.vendor_check.judge import Judge, WillOutcome
from hub.vendor_check.report import (
    CLAUSES,
    MAX_EVIDENCE,
    QUOTE_CHARS,
    Clause,
    ClauseResult,
    Evidence,
    Report,
    render,
)
from hub.vendor_check.watch import Prompt, opening_notes, run_vendor_check

__all__ = [
    "CLAUSES",
    "MAX_EVIDENCE",
    "QUOTE_CHARS",
    "Clause",
    "ClauseResult",
    "Evidence",
    "Judge",
    "Prompt",
    "Report",
    "WillOutcome",
    "opening_notes",
    "render",
    "run_vendor_check",
]
