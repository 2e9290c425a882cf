"""The check's verdicts: a clause each, the messages behind them, and the report as text."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any, Final, Literal

from hub.models import DeviceInfo

Clause = Literal[
    "credentials", "topics", "status", "heartbeat", "seq", "ts", "payload", "test_press"
]
# The clauses of SPEC §1 in the order the report lists them, with the words it uses.
CLAUSES: Final[dict[Clause, str]] = {
    "credentials": "credentials and client id",
    "topics": "topics",
    "status": "retained status and last will",
    "heartbeat": "telemetry within heartbeat_s",
    "seq": "seq increasing",
    "ts": "ts within the allowed skew",
    "payload": "every payload valid for the device's type",
    "test_press": "a test press answered on ack",
}
Verdict = Literal["pass", "fail", "not_checked", "not_applicable"]

# Each clause keeps this many failing messages as evidence (the count says how many more).
MAX_EVIDENCE: Final = 5
# Payloads are quoted this long at most in the report.
QUOTE_CHARS: Final = 240


@dataclass(frozen=True, slots=True)
class Evidence:
    """One message behind a verdict, and why it counts."""

    topic: str
    payload: str
    received_at: datetime
    why: str

    def as_json(self) -> dict[str, Any]:
        """The evidence as a JSON object."""
        return {
            "topic": self.topic,
            "payload": self.payload,
            "received_at": self.received_at.isoformat(timespec="milliseconds"),
            "why": self.why,
        }


@dataclass(slots=True)
class ClauseResult:
    """The verdict on one clause: a summary, and the failing messages (at most MAX_EVIDENCE)."""

    clause: Clause
    verdict: Verdict = "pass"
    summary: str = ""
    failures: int = 0
    evidence: list[Evidence] = field(default_factory=list)

    @property
    def title(self) -> str:
        """The clause in the report's words."""
        return CLAUSES[self.clause]

    def fail(self, evidence: Evidence) -> None:
        """Count one failing message, keeping the first few as evidence."""
        self.verdict = "fail"
        self.failures += 1
        if len(self.evidence) < MAX_EVIDENCE:
            self.evidence.append(evidence)

    def conclude(self, *, broken: str, judged: int, unjudged: str, ok: str) -> None:
        """Say `broken` if a message failed; else not checked (`unjudged`) if `judged` is 0;
        else `ok`."""
        if self.verdict == "fail":
            self.summary = broken
        elif judged == 0:
            self.verdict = "not_checked"
            self.summary = unjudged
        else:
            self.summary = ok

    def as_json(self) -> dict[str, Any]:
        """The verdict as a JSON object."""
        return {
            "clause": self.clause,
            "title": self.title,
            "verdict": self.verdict,
            "summary": self.summary,
            "failures": self.failures,
            "evidence": [item.as_json() for item in self.evidence],
        }


@dataclass(frozen=True, slots=True)
class Report:
    """The whole conformance report of one run."""

    device: DeviceInfo
    watched: str
    started_at: datetime
    duration_s: float
    messages: int
    clauses: tuple[ClauseResult, ...]
    hub_rejections: tuple[Evidence, ...]

    @property
    def passed(self) -> bool:
        """True when no clause failed."""
        return not self.failed

    @property
    def failed(self) -> list[Clause]:
        """The clauses that failed, in report order."""
        return [result.clause for result in self.clauses if result.verdict == "fail"]

    def clause(self, name: Clause) -> ClauseResult:
        """The verdict on one clause."""
        return next(result for result in self.clauses if result.clause == name)

    def as_json(self) -> dict[str, Any]:
        """The report as one JSON object (`carehub vendor-check --json`)."""
        return {
            # The registry's DeviceInfo, field for field.
            "device": asdict(self.device),
            "passed": self.passed,
            "failed": self.failed,
            "watched": self.watched,
            "started_at": self.started_at.isoformat(timespec="seconds"),
            "duration_s": round(self.duration_s, 1),
            "messages": self.messages,
            "clauses": [result.as_json() for result in self.clauses],
            "hub_rejections": [item.as_json() for item in self.hub_rejections],
        }


def quote(payload: bytes) -> str:
    """A payload as the report shows it: text, cut to QUOTE_CHARS."""
    text = payload.decode("utf-8", "replace")
    return text if len(text) <= QUOTE_CHARS else text[: QUOTE_CHARS - 1] + "…"


VERDICT_WORDS: Final[dict[Verdict, str]] = {
    "pass": "PASS",
    "fail": "FAIL",
    "not_checked": "NOT CHECKED",
    "not_applicable": "N/A",
}


def render(report: Report) -> str:
    """The report as text, clause by clause, each failure with its message and why."""
    device = report.device
    lines = [
        f"carehub vendor-check {device.id}: {device.type} at {device.facility_id}"
        f" (zone {device.zone_id or '-'}), heartbeat_s {device.heartbeat_s}",
        f"watched {report.watched} from {report.started_at:%Y-%m-%d %H:%M:%S%z}"
        f" for {report.duration_s:.0f} s: {report.messages} message(s) from the device",
        "",
    ]
    for result in report.clauses:
        lines.append(f"{VERDICT_WORDS[result.verdict]:11}  {result.title}: {result.summary}")
        for item in result.evidence:
            lines.append(f"             {item.received_at:%H:%M:%S} {item.topic}")
            if item.payload:
                lines.append(f"               {item.payload}")
            lines.append(f"               -> {item.why}")
        if result.failures > len(result.evidence):
            lines.append(f"             ... and {result.failures - len(result.evidence)} more")
    if report.hub_rejections:
        lines.extend(["", "the hub answered on rejected:"])
        lines.extend(
            f"  {item.received_at:%H:%M:%S} {item.topic}: {item.why}"
            for item in report.hub_rejections[:MAX_EVIDENCE]
        )
    failed = report.failed
    lines.append("")
    if failed:
        names = ", ".join(CLAUSES[name] for name in failed)
        lines.append(f"result: FAIL ({len(failed)} of {len(CLAUSES)} clauses: {names})")
    else:
        unchecked = [r.title for r in report.clauses if r.verdict == "not_checked"]
        suffix = f"; not checked: {', '.join(unchecked)}" if unchecked else ""
        lines.append(f"result: PASS{suffix}")
    return "\n".join(lines)
