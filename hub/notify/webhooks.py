"""A facility's webhooks: registering one, checked before anything is stored."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from psycopg import AsyncConnection

from hub.errors import NotifyError
from hub.notify.formats import FORMATS
from hub.storage import notifications as outbox

# Longest URL and secret a webhook may have: a robot URL with its key is far shorter.
URL_MAX = 2000
SECRET_MAX = 500


async def add_webhook(
    conn: AsyncConnection[Any],
    facility_id: str,
    url: str,
    format: str,
    secret: str = "",
) -> int:
    """Register a webhook for a facility; its id. NotifyError names what is wrong."""
    url = url.strip()
    secret = secret.strip()
    if format not in FORMATS:
        raise NotifyError(f"webhook format must be one of {', '.join(FORMATS)}, not {format!r}")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise NotifyError(f"webhook URL must be http:// or https:// with a host, not {url!r}")
    if len(url) > URL_MAX or any(ch.isspace() for ch in url):
        raise NotifyError(f"webhook URL must be at most {URL_MAX} characters, without spaces")
    if format == "wecom" and secret:
        raise NotifyError("a 企业微信 robot has no signing secret: its key is part of the URL")
    if len(secret) > SECRET_MAX:
        raise NotifyError(f"webhook secret must be at most {SECRET_MAX} characters")
    webhook_id = await outbox.insert_webhook(conn, facility_id, url, format, secret)
    if webhook_id is None:
        raise NotifyError(f"there is no facility {facility_id!r}")
    return webhook_id
