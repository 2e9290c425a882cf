"""An in-process MQTT 3.1.1 broker (amqtt) for running carehub with no services installed."""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
from types import TracebackType
from typing import Any, Self

from amqtt.broker import Broker
from amqtt.plugins.base import BaseAuthPlugin

logger = logging.getLogger(__name__)

HOST = "127.0.0.1"
# amqtt logs every connection and packet at INFO; its warnings are all we want to see.
_CHATTY_LOGGERS = ("amqtt", "transitions")
# Long enough for a cold start on a slow CI machine; the broker normally starts in ~10 ms.
_THREAD_START_TIMEOUT_S = 30.0


class _AcceptEveryClient(BaseAuthPlugin):
    """Let every client in, and treat it as identified so its persistent session is kept.

    amqtt's own AnonymousAuthPlugin marks each session it admits as anonymous, and amqtt
    then neither queues QoS 1 messages for it while it is away nor keeps its session: the
    hub's `clean_session=False` would silently mean nothing.
    """

    async def authenticate(self, *, session: Any) -> bool:
        """Admit the client without marking its session anonymous."""
        return True


def free_port(host: str = HOST) -> int:
    """Return a TCP port on `host` that nothing listens on right now (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
        return port


def quiet_amqtt_logging() -> None:
    """Raise amqtt's loggers to WARNING so a demo or test run is not drowned in packets."""
    for name in _CHATTY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


def _broker_config(port: int) -> dict[str, Any]:
    return {
        "listeners": {"default": {"type": "tcp", "bind": f"{HOST}:{port}"}},
        # No $SYS publisher and no packet/event loggers: they cost throughput and say
        # nothing the hub needs. Only the auth plugin, which amqtt requires.
        "plugins": {f"{__name__}._AcceptEveryClient": {}},
    }


class EmbeddedBroker:
    """An amqtt broker on 127.0.0.1, running in the current event loop while entered."""

    def __init__(self, port: int = 0) -> None:
        self._requested_port = port
        self._port: int | None = None
        self._broker: Broker | None = None

    @property
    def port(self) -> int:
        """The TCP port the broker listens on."""
        if self._port is None:
            raise RuntimeError("the embedded broker is not running")
        return self._port

    @property
    def url(self) -> str:
        """The broker's address as an mqtt:// URL."""
        return f"mqtt://{HOST}:{self.port}"

    async def start(self) -> None:
        """Start listening; with port 0, on a free port the kernel chose."""
        quiet_amqtt_logging()
        port = self._requested_port or free_port()
        broker = Broker(_broker_config(port))
        await broker.start()
        self._broker = broker
        self._port = port
        logger.info("embedded MQTT broker listening on %s", self.url)

    async def stop(self) -> None:
        """Close every session and the listener."""
        broker, self._broker = self._broker, None
        if broker is not None:
            await broker.shutdown()
            logger.info("embedded MQTT broker on port %s stopped", self._port)
        self._port = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()


class BrokerThread:
    """An EmbeddedBroker in its own thread and event loop, for callers without a lasting loop."""

    def __init__(self, port: int = 0) -> None:
        self._broker = EmbeddedBroker(port)
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._failure: BaseException | None = None
        # Created here, set from any thread through the loop, awaited only inside it.
        self._stop_requested = asyncio.Event()
        self._thread = threading.Thread(target=self._run, name="carehub-embedded-broker", daemon=True)

    @property
    def port(self) -> int:
        """The TCP port the broker listens on."""
        return self._broker.port

    @property
    def url(self) -> str:
        """The broker's address as an mqtt:// URL."""
        return self._broker.url

    def start(self) -> None:
        """Start the thread and wait until the broker accepts connections."""
        self._thread.start()
        if not self._ready.wait(_THREAD_START_TIMEOUT_S):
            raise RuntimeError("the embedded broker did not start in time")
        if self._failure is not None:
            self._thread.join()
            raise RuntimeError("the embedded broker failed to start") from self._failure

    def stop(self) -> None:
        """Shut the broker down and end the thread; safe to call twice."""
        if not self._thread.is_alive():
            return
        self._loop.call_soon_threadsafe(self._stop_requested.set)
        self._thread.join()

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._serve())
        finally:
            self._loop.close()

    async def _serve(self) -> None:
        try:
            await self._broker.start()
        except BaseException as exc:
            self._failure = exc
            self._ready.set()
            return
        self._ready.set()
        try:
            await self._stop_requested.wait()
        finally:
            await self._broker.stop()


def run_broker_in_thread(port: int = 0) -> BrokerThread:
    """Start an EmbeddedBroker in a dedicated thread with its own event loop and return it."""
    thread = BrokerThread(port)
    thread.start()
    return thread
