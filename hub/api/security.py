"""Security headers on every HTTP answer: the dashboards, the API, the docs, health.

Nothing the hub serves may be framed (clickjacking a care worker's "resolve" button),
sniffed into another type, or tell other sites where it was opened from. The pages get a
Content-Security-Policy of their own origin only, plus the map tile server when one is
configured; every other answer (JSON, text) gets a policy that allows nothing at all.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import logging
import re
from urllib.parse import urlsplit

from starlette.types import ASGIApp, Message, Receive, Scope, Send

logger = logging.getLogger(__name__)

# What is not a page needs nothing: if a browser ever renders an API answer, it runs nothing.
API_POLICY = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
# The built dashboards load scripts, styles, fonts and images from the hub only; they talk
# to the API and the live websocket on the same origin ('self' covers ws: and wss: there).
_PAGE_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; font-src 'self';"
    " img-src 'self' data:{tiles}; connect-src 'self'; manifest-src 'self';"
    " frame-ancestors 'none'; base-uri 'none'; form-action 'self'; object-src 'none'"
)
HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
)
_CSP = b"content-security-policy"
# A tile URL template's placeholders ({s}, {z}, ...).
_PLACEHOLDER = re.compile(r"\{[^}]*\}")
_HOST = re.compile(r"^[A-Za-z0-9.-]+$")
_INLINE_SCRIPT = re.compile(r"<script>(.*?)</script>", re.DOTALL)


def tile_source(template: str | None) -> str | None:
    """The CSP source that admits a tile URL template's images, or None.

    `https://{s}.tile.example.org/{z}/{x}/{y}.png` gives `https://*.tile.example.org`: a
    placeholder in the first label of the host is any subdomain; one elsewhere in the
    host cannot be written in CSP, so that template is refused (and logged).
    """
    if not template:
        return None
    parts = urlsplit(template)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        logger.warning("map tiles: %r is not an http(s) URL; the pages will not load it", template)
        return None
    host, _, port = parts.netloc.rpartition("@")[2].partition(":")
    first, dot, rest = host.partition(".")
    if _PLACEHOLDER.search(first) and dot:
        first = "*"
    if not _HOST.match(rest or "x") or not (first == "*" or _HOST.match(first)):
        logger.warning("map tiles: cannot allow the host of %r in the page policy", template)
        return None
    if port and not port.isdigit():
        logger.warning("map tiles: cannot allow the port of %r in the page policy", template)
        return None
    origin = f"{parts.scheme}://{first}{dot}{rest}"
    return f"{origin}:{port}" if port else origin


# Once per template: a template the policy cannot admit is logged once, not on every load.
@functools.cache
def page_policy(tile_url: str | None) -> str:
    """The dashboards' Content-Security-Policy, admitting the tile server if configured."""
    tiles = tile_source(tile_url)
    return _PAGE_POLICY.format(tiles=f" {tiles}" if tiles else "")


def docs_policy(html: str) -> str:
    """The policy of the API's browsable docs: Swagger UI from its CDN, and its one inline
    script by hash (nothing else inline runs)."""
    hashes = " ".join(
        "'sha256-" + base64.b64encode(hashlib.sha256(script.encode()).digest()).decode() + "'"
        for script in _INLINE_SCRIPT.findall(html)
    )
    return (
        f"default-src 'none'; script-src https://cdn.jsdelivr.net {hashes};"
        " style-src https://cdn.jsdelivr.net; img-src 'self' data: https://fastapi.tiangolo.com;"
        " connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
    )


class SecurityHeaders:
    """ASGI middleware: the headers above on every HTTP answer; a route's own CSP stays."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve `scope`, adding the headers to its answer."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                names = {name.lower() for name, _ in headers}
                headers += [(name, value) for name, value in HEADERS if name not in names]
                if _CSP not in names:
                    headers.append((_CSP, API_POLICY.encode()))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)
