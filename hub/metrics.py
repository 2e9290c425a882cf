"""Process counters, rendered in the Prometheus text format at /metrics."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from devices import REASON_CODES

# The tables whose new rows carehub_messages_stored_total counts, in the order it lists them.
STORED_TABLES = ("readings", "events", "status_changes")


@dataclass(slots=True)
class Metrics:
    """Counters one hub process keeps about its own work."""

    received: int = 0
    # Messages newly stored, by table (STORED_TABLES), as each batch's result counts them.
    stored: Counter[str] = field(default_factory=Counter)
    duplicates: int = 0
    batches: int = 0
    batch_failures: int = 0
    spooled_batches: int = 0
    spooled_messages: int = 0
    replayed_messages: int = 0
    replay_failures: int = 0
    replies_dropped: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    last_batch_seconds: float = 0.0
    spool_pending: int = 0
    database_up: bool = False
    mqtt_connected: bool = False

    def render(self) -> str:
        """The Prometheus exposition text for these counters."""
        lines = [
            "# HELP carehub_messages_received_total MQTT messages taken off the broker.",
            "# TYPE carehub_messages_received_total counter",
            f"carehub_messages_received_total {self.received}",
            "# HELP carehub_messages_stored_total Messages newly stored, by table.",
            "# TYPE carehub_messages_stored_total counter",
        ]
        lines += [
            f'carehub_messages_stored_total{{table="{table}"}} {self.stored[table]}'
            for table in STORED_TABLES
        ]
        lines += [
            "# HELP carehub_messages_duplicate_total Redelivered messages already stored.",
            "# TYPE carehub_messages_duplicate_total counter",
            f"carehub_messages_duplicate_total {self.duplicates}",
            "# HELP carehub_messages_rejected_total Messages refused, by reason code.",
            "# TYPE carehub_messages_rejected_total counter",
        ]
        lines += [
            f'carehub_messages_rejected_total{{reason="{reason}"}} {self.rejected[reason]}'
            for reason in REASON_CODES
        ]
        # The plain series, one (name, type, value) each: every one is a TYPE line then its value.
        series: list[tuple[str, str, object]] = [
            ("carehub_batches_total", "counter", self.batches),
            ("carehub_batch_failures_total", "counter", self.batch_failures),
            ("carehub_spooled_messages_total", "counter", self.spooled_messages),
            ("carehub_replayed_messages_total", "counter", self.replayed_messages),
            ("carehub_replay_failures_total", "counter", self.replay_failures),
            ("carehub_replies_dropped_total", "counter", self.replies_dropped),
            ("carehub_spool_pending_batches", "gauge", self.spool_pending),
            ("carehub_last_batch_seconds", "gauge", f"{self.last_batch_seconds:.6f}"),
            ("carehub_database_up", "gauge", int(self.database_up)),
            ("carehub_mqtt_connected", "gauge", int(self.mqtt_connected)),
        ]
        for name, kind, value in series:
            lines += [f"# TYPE {name} {kind}", f"{name} {value}"]
        return "\n".join(lines) + "\n"
