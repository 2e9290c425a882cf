"""What a page under test did, seen from outside its code: its live sockets and its tones."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from playwright.async_api import ConsoleMessage, Page, WebSocket

# Installed before the page's own scripts run. The tone is WebAudio oscillators (see
# dashboards/src/console/sound.ts): each one started is a note heard. Every WebSocket the
# page opens is kept, so a test can cut the live link as a dead network would.
INIT_SCRIPT = """
(() => {
  const watch = { oscillators: 0, sockets: [] };
  Object.defineProperty(window, "__pageWatch", { value: watch });
  const start = OscillatorNode.prototype.start;
  OscillatorNode.prototype.start = function (...args) {
    watch.oscillators += 1;
    return start.apply(this, args);
  };
  const NativeWebSocket = window.WebSocket;
  window.WebSocket = class extends NativeWebSocket {
    constructor(...args) {
      super(...args);
      watch.sockets.push(this);
    }
  };
})();
"""
LIVE_PATH = "/api/v1/live"
# The live socket's close code for "the client gave up on this link" (src/common/live.ts
# closes with it when the hub falls silent); the page reconnects after it.
CLOSE_GAVE_UP = 4000


@dataclass
class PageWatch:
    """The live sockets a page opened and the notes it played, seen from outside the page."""

    page: Page
    live_sockets: list[WebSocket] = field(default_factory=list)

    @classmethod
    async def on(cls, page: Page) -> PageWatch:
        """Watch `page` from its next navigation on."""
        watch = cls(page)
        await page.add_init_script(script=INIT_SCRIPT)
        page.on("websocket", watch._opened)
        return watch

    def _opened(self, socket: WebSocket) -> None:
        if LIVE_PATH in socket.url:
            self.live_sockets.append(socket)

    @property
    def live_url(self) -> str:
        """The URL of the live socket opened last, its token left out."""
        assert self.live_sockets, "the page opened no live socket"
        return re.sub(r"token=[^&]*", "token=…", self.live_sockets[-1].url)

    async def notes_played(self) -> int:
        """How many notes of the alert tone the page has started."""
        played: int = await self.page.evaluate("window.__pageWatch.oscillators")
        return played

    async def drop_live_socket(self) -> None:
        """Close the page's open live sockets, as a link that went dead would end."""
        await self.page.evaluate(
            f"""window.__pageWatch.sockets
                .filter((s) => s.url.includes({LIVE_PATH!r}) && s.readyState <= 1)
                .forEach((s) => s.close({CLOSE_GAVE_UP}))"""
        )


def policy_refusals(page: Page) -> list[str]:
    """Every Content-Security-Policy refusal `page` reports from now on, as it comes."""
    refused: list[str] = []

    def seen(message: ConsoleMessage) -> None:
        if "Content Security Policy" in message.text:
            refused.append(message.text)

    page.on("console", seen)
    return refused
