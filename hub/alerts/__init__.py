"""Alerts (SPEC §4): `lifecycle` (the AlertStore) and `audit` (the hash chain per facility)."""

from hub.alerts.audit import AuditProblem, verify_audit
from hub.alerts.lifecycle import NOTE_MAX, AlertStore, ChangeListener, TransactionHook
from hub.storage.alerts import open_alerts
from hub.storage.live import live_channel

__all__ = [
    "NOTE_MAX",
    "AlertStore",
    "AuditProblem",
    "ChangeListener",
    "TransactionHook",
    "live_channel",
    "open_alerts",
    "verify_audit",
]
