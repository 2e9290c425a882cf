"""Process counters, rendered in the Prometheus text format at /metrics."""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass, field

from devices import REASON_CODES

# The tables whose new rows carehub_messages_stored_total counts, in the order it lists them.
STORED_TABLES = ("readings", "events", "status_changes")


# The stages of an emergency's path through the hub, in order (carehub_emergency_seconds).
EMERGENCY_STAGES = ("decide", "commit", "ack_queued", "ack_published")
# The most recent timings each stage keeps for its quantiles.
STAGE_WINDOW = 10_000
QUANTILES = (0.5, 0.9, 0.99)


@dataclass(slots=True)
class StageTimes:
    """Recent durations of each stage of the emergency path, for /metrics quantiles.

    decide: hub receive -> the rule's decision; commit: the alert's own transaction;
    ack_queued: hub receive -> the `received` ack handed to the urgent publisher;
    ack_published: handed over -> the broker's PUBACK for it.
    """

    recent: dict[str, deque[float]] = field(
        default_factory=lambda: {stage: deque(maxlen=STAGE_WINDOW) for stage in EMERGENCY_STAGES}
    )
    counts: Counter[str] = field(default_factory=Counter)

    def record(self, stage: str, seconds: float) -> None:
        """Note one duration of `stage` (one of EMERGENCY_STAGES)."""
        self.recent[stage].append(max(seconds, 0.0))
        self.counts[stage] += 1

    def render(self) -> list[str]:
        """The summary's lines: quantiles over the window, and counts since start."""
        name = "carehub_emergency_seconds"
        lines = [
            f"# HELP {name} Where an emergency's time goes in the hub, by stage "
            f"(quantiles of the last {STAGE_WINDOW:,}).",
            f"# TYPE {name} summary",
        ]
        for stage in EMERGENCY_STAGES:
            ordered = sorted(self.recent[stage])
            for q in QUANTILES:
                if ordered:
                    value = ordered[min(len(ordered) - 1, int(q * len(ordered)))]
                    lines.append(f'{name}{{stage="{stage}",quantile="{q}"}} {value:.6f}')
            lines.append(f'{name}_count{{stage="{stage}"}} {self.counts[stage]}')
        return lines


@dataclass(slots=True)
class Metrics:
    """Counters one hub process keeps about its own work."""

    received: int = 0
    # QoS 1 messages acknowledged to the broker: always after they are stored or spooled.
    acked: int = 0
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
    # The broker's own count of messages it dropped for its queue limits, as last seen
    # (None: not heard yet), and how many it dropped while this hub was watching.
    broker_dropped: int | None = None
    broker_dropped_seen: int = 0
    # False when the broker refused the hub its $SYS drop counter.
    broker_drops_visible: bool = True
    emergency: StageTimes = field(default_factory=StageTimes)

    def broker_dropped_now(self, total: int, *, retained: bool) -> int:
        """Take the broker's total; return the drops it adds (a restarted broker counts anew).

        The retained value, sent on subscribing, counts drops from before the hub watched.
        Mosquitto publishes nothing while the count is 0, so a first live value counts whole.
        """
        last, self.broker_dropped = self.broker_dropped, total
        if last is None:
            if retained:
                return 0
            last = 0
        added = total - last if total >= last else total
        self.broker_dropped_seen += added
        return added

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
            ("carehub_messages_acked_total", "counter", self.acked),
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
            ("carehub_broker_dropped_seen_total", "counter", self.broker_dropped_seen),
        ]
        if self.broker_dropped is not None:
            series.append(("carehub_broker_dropped_messages", "gauge", self.broker_dropped))
        for name, kind, value in series:
            lines += [f"# TYPE {name} {kind}", f"{name} {value}"]
        lines += self.emergency.render()
        return "\n".join(lines) + "\n"
