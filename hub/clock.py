"""The hub's sense of time: the system clock, or one a test can move forward."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    """Where rules and timers read the time; never `datetime.now()` directly."""

    def now(self) -> datetime:
        """The current time, timezone-aware (UTC)."""
        ...


class SystemClock:
    """The real time."""

    def now(self) -> datetime:
        """The current time, timezone-aware (UTC)."""
        return datetime.now(UTC)


class ManualClock:
    """Real time plus an offset that only moves forward: long timers in seconds of test."""

    def __init__(self) -> None:
        self._offset = timedelta()

    def now(self) -> datetime:
        """The real time, shifted by everything `advance` was given."""
        return datetime.now(UTC) + self._offset

    def advance(self, seconds: float) -> None:
        """Jump forward by `seconds`."""
        if seconds < 0:
            raise ValueError("a clock only moves forward")
        self._offset += timedelta(seconds=seconds)
