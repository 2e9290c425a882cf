"""Alerts (SPEC §4): `lifecycle` (the AlertStore) and `audit` (the hash chain per facility)."""

from hub.alerts.audit import AuditProblem, verify_audit
from hub.alerts.lifecycle import NOTE_MAX, AlertStore, ChangeListener, TransactionHook

__all__ = [
    "NOTE_MAX",
    "AlertStore",
    "AuditProblem",
    "ChangeListener",
    "TransactionHook",
    "verify_audit",
]
