"""Staff notifications: new, escalated and overdue alerts to each facility's webhooks.

`formats` renders notices (json, wecom, dingtalk) and signs them, `outbox` queues them in
the alert's own transaction and groups floods, `delivery` (the Notifier) sends them with
retries and reports each endpoint's health, and `webhooks` registers the endpoints.
"""

from hub.errors import NotifyError
from hub.notify.delivery import Notifier
from hub.notify.formats import FORMATS, redact_url
from hub.notify.webhooks import add_webhook

__all__ = ["FORMATS", "Notifier", "NotifyError", "add_webhook", "redact_url"]
