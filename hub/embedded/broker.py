"""An in-process MQTT 3.1.1 broker (amqtt) for running carehub with no services installed.

amqtt 0.12 breaks two things the hub's at-least-once guarantee (SPEC §8) rests on, and this
module corrects them on the broker it builds, without touching amqtt's own classes:

- A QoS 1 message sent to a client is forgotten when the connection drops before the
  PUBACK, or when the PUBACK takes longer than 5 s; MQTT 3.1.1 (4.4.0-1) requires it to be
  sent again on reconnect. Here it stays in flight until acknowledged.
- Messages queued for a persistent session while it was away, and in-flight resends, are
  pushed before the broker reads the client's SUBSCRIBE, and the broker waits for their
  PUBACKs first: a client that acks only after storing stalls 5 s on every reconnect.
  Here they are sent in the background, and queued ones without the RETAIN flag (3.3.1-9).

Plus: amqtt's anonymous-auth plugin marks every session anonymous, and amqtt then neither
keeps nor queues for it, so `clean_session=False` would mean nothing; our plugin doesn't.

Given a `Gate`, the broker enforces identity (SPEC §7): a CONNECT is checked before amqtt
touches any session (amqtt itself would let a refused client take over, or wipe, the
session of the client id it claims), and every PUBLISH and SUBSCRIBE is checked against
the `Grant` the gate gave that connection. `disconnect` drops a client whose credentials
were revoked or rotated. Without a gate every client is admitted, as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import threading
from collections.abc import Awaitable, Callable
from typing import Any, Self

from amqtt.broker import Broker
from amqtt.contexts import Action
from amqtt.errors import AMQTTError, BrokerError
from amqtt.mqtt.constants import QOS_1
from amqtt.mqtt.protocol.broker_handler import BrokerProtocolHandler
from amqtt.plugins.base import BaseAuthPlugin
from amqtt.session import OUTGOING

from hub.acl import Grant

logger = logging.getLogger(__name__)

HOST = "127.0.0.1"
# amqtt logs every connection at INFO and every packet at DEBUG; warnings are enough.
_CHATTY_LOGGERS = ("amqtt", "transitions")
# Long enough for a cold start on a slow CI machine; the broker normally starts in ~10 ms.
_THREAD_START_TIMEOUT_S = 30.0
# How long one delivery task waits for its PUBACK before leaving the message in flight
# (sent again on reconnect; a later PUBACK still clears it). It only ends the task: amqtt
# keeps finished broadcast tasks queued behind unfinished ones, so none may wait forever.
_PUBACK_PATIENCE_S = 60.0
_PORT_ATTEMPTS = 3  # a probed free port can be taken before the broker binds it
_STOP_TIMEOUT_S = 10.0  # amqtt waits on every session handler; Ctrl-C must still end

# Who may connect, and what they may do: (username, password, client id) -> their grant,
# or None to refuse the connection.
Gate = Callable[[str | None, str | None, str | None], Awaitable[Grant | None]]


class _AcceptEveryClient(BaseAuthPlugin):  # type: ignore[misc]  # amqtt ships no type hints
    """Admit every client, and without marking its session anonymous."""

    async def authenticate(self, *, session: Any) -> bool:
        """Admit the client; leaving `is_anonymous` unset is what keeps its session."""
        return True


class _AtLeastOnceHandler(BrokerProtocolHandler):  # type: ignore[misc]
    """amqtt's per-connection protocol handler, keeping QoS 1 messages until PUBACK."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._resends: set[asyncio.Task[None]] = set()

    def background(self, flow: Any) -> None:
        """Run a delivery flow owned by this connection; it ends, at the latest, with it."""
        task: asyncio.Task[None] = asyncio.ensure_future(flow)
        self._resends.add(task)
        task.add_done_callback(self._resends.discard)
        task.add_done_callback(_log_failure)

    async def _retry_deliveries(self) -> None:
        # amqtt awaits every resend here, before it reads the client's SUBSCRIBE.
        for message in list(self.session.inflight_out.values()):
            self.background(self._handle_message_flow(message))
        for message in list(self.session.inflight_in.values()):
            self.background(self._handle_message_flow(message))

    async def stop(self) -> None:
        for task in list(self._resends):
            task.cancel()
        await super().stop()

    async def _handle_qos1_message_flow(self, app_message: Any) -> None:
        if app_message.direction != OUTGOING:
            await super()._handle_qos1_message_flow(app_message)
            return
        session = self.session
        packet_id: int = app_message.packet_id
        session.inflight_out[packet_id] = app_message
        # Register before sending: the PUBACK can come back before the send returns.
        waiter: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._puback_waiters[packet_id] = waiter
        try:
            resend = app_message.publish_packet is not None
            app_message.publish_packet = app_message.build_publish_packet(dup=resend)
            await self._send_packet(app_message.publish_packet)
            async with asyncio.timeout(_PUBACK_PATIENCE_S):
                app_message.puback_packet = await waiter
        except TimeoutError:
            return  # still in flight: sent again on reconnect
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise
            return  # the connection closed (amqtt cancels the waiters): still in flight
        finally:
            if self._puback_waiters.get(packet_id) is waiter:
                del self._puback_waiters[packet_id]
        session.inflight_out.pop(packet_id, None)

    async def handle_puback(self, puback: Any) -> None:
        packet_id: int = puback.packet_id
        waiter = self._puback_waiters.get(packet_id)
        if waiter is not None and not waiter.done():
            waiter.set_result(puback)
        elif self.session is not None:
            # A PUBACK after its task stopped waiting: delivered all the same.
            self.session.inflight_out.pop(packet_id, None)


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and (exc := task.exception()) is not None:
        logger.warning("embedded broker: a redelivery failed: %r", exc)


class _Broker(Broker):  # type: ignore[misc]
    """amqtt's Broker with the corrections described in the module docstring."""

    def __init__(self, config: dict[str, Any], gate: Gate | None = None) -> None:
        super().__init__(config)
        self._gate = gate
        # The grant of each connected client, by client id.
        self._grants: dict[str, Grant] = {}

    async def _initialize_client_session(
        self, reader: Any, writer: Any, *args: Any
    ) -> tuple[Any, Any]:
        try:
            if self._gate is None:
                handler, session = await super()._initialize_client_session(reader, writer, *args)
            else:
                handler, session = await self._admit(reader, writer)
        except Exception:
            # amqtt leaves the socket open when the first packet is no CONNECT (a port probe).
            with contextlib.suppress(OSError):
                await writer.close()
            raise
        # amqtt builds the handler itself; ours only overrides methods and adds no slots.
        handler.__class__ = _AtLeastOnceHandler
        handler._resends = set()
        return handler, session

    async def _admit(self, reader: Any, writer: Any) -> tuple[Any, Any]:
        """Read the CONNECT, ask the gate, and only then find or make the client's session.

        amqtt 0.12's own order (session first, authentication after) is kept otherwise:
        a clean session replaces the old one, a persistent one takes the new connection's
        will and keep-alive.
        """
        assert self._gate is not None  # noqa: S101  # only called with a gate
        try:
            handler, session = await BrokerProtocolHandler.init_from_connect(
                reader, writer, self.plugins_manager
            )
        except Exception as exc:  # amqtt's own errors; re-raised as its own
            raise AMQTTError(f"no CONNECT: {exc}") from exc
        grant = await self._gate(session.username, session.password, session.client_id)
        # amqtt publishes a will without asking _topic_filtering: a device could otherwise
        # leave its last word on another device's topic.
        will_refused = (
            grant is not None and session.will_flag and not grant.may_publish(session.will_topic)
        )
        if grant is None or will_refused or not session.client_id:
            logger.info(
                "embedded broker: refused client %r (username %r): %s",
                session.client_id,
                session.username,
                "a last will on a topic it may not publish to"
                if will_refused
                else "bad credentials",
            )
            handler.attach(session, reader, writer)
            await handler.mqtt_connack_authorize(False)
            raise AMQTTError("not authorized")
        self._grants[session.client_id] = grant
        if session.clean_session:
            await self._delete_session(session.client_id)
            session.parent = 0
        elif session.client_id in self._sessions:
            existing, _ = self._sessions[session.client_id]
            for name in (
                "will_flag",
                "will_message",
                "will_topic",
                "will_qos",
                "keep_alive",
                "username",
                "password",
            ):
                setattr(existing, name, getattr(session, name))
            session = existing
            session.parent = 1
        else:
            session.parent = 0
        return handler, session

    async def _topic_filtering(self, session: Any, topic: str, action: Any) -> bool:
        if self._gate is None:
            return True
        grant = self._grants.get(session.client_id)
        if grant is None:
            return False  # revoked while connected
        if action == Action.PUBLISH:
            allowed = grant.may_publish(topic)
        elif action == Action.SUBSCRIBE:
            allowed = grant.may_subscribe(topic)
        else:
            return True  # RECEIVE: the subscription was checked when it was made
        if not allowed:
            logger.info("embedded broker: %s may not %s %r", session.client_id, action.value, topic)
        return allowed

    async def disconnect_client(self, client_id: str) -> bool:
        """Drop a client's connection (its will is sent) and its grant; False if not connected."""
        self._grants.pop(client_id, None)
        _, handler = self._sessions.get(client_id, (None, None))
        writer = getattr(handler, "writer", None)
        if writer is None:
            return False
        with contextlib.suppress(OSError, AttributeError):
            await writer.close()
        return True

    async def _publish_session_retained_messages(self, session: Any) -> None:
        # The messages queued while the session was away (amqtt calls them "retained").
        handler = self._get_handler(session)
        if not isinstance(handler, _AtLeastOnceHandler):
            await super()._publish_session_retained_messages(session)
            return
        while not session.retained_messages.empty():
            queued = session.retained_messages.get_nowait()
            qos = queued.qos if queued.qos is not None else QOS_1
            handler.background(handler.mqtt_publish(queued.topic, queued.data, qos, retain=False))

    async def _publish_retained_messages_for_subscription(
        self, subscription: tuple[str, int], session: Any
    ) -> None:
        # On reconnect amqtt replays retained messages for every filter anyone holds;
        # only the session's own filters are its business.
        topic_filter = subscription[0]
        holders = self._subscriptions.get(topic_filter, [])
        if any(held.client_id == session.client_id for held, _ in holders):
            await super()._publish_retained_messages_for_subscription(subscription, session)


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
        # No $SYS publisher and no packet or event loggers: they cost throughput and tell
        # the hub nothing. Only an auth plugin, without which amqtt admits no one.
        "plugins": {f"{__name__}.{_AcceptEveryClient.__name__}": {}},
    }


class EmbeddedBroker:
    """An amqtt broker on 127.0.0.1, running in the current event loop while entered."""

    def __init__(self, port: int = 0, *, gate: Gate | None = None) -> None:
        """Without a `gate`, every client is admitted and may do anything."""
        self._requested_port = port
        self._gate = gate
        self._port: int | None = None
        self._broker: _Broker | None = None

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
        """Start listening; with port 0, on a port that was free a moment ago."""
        quiet_amqtt_logging()
        for attempt in range(1, _PORT_ATTEMPTS + 1):
            port = self._requested_port or free_port()
            broker = _Broker(_broker_config(port), self._gate)
            try:
                await broker.start()
                break
            except BrokerError:
                # Another process took the probed port before we bound it; probe again.
                if self._requested_port or attempt == _PORT_ATTEMPTS:
                    raise
        self._broker = broker
        self._port = port
        logger.info("embedded MQTT broker listening on %s", self.url)

    async def disconnect(self, client_id: str) -> bool:
        """Drop the client's connection (revoked credentials); False when it is not connected."""
        if self._broker is None:
            return False
        return await self._broker.disconnect_client(client_id)

    async def stop(self) -> None:
        """Close every connection and the listener; sessions and queued messages are lost."""
        broker, self._broker = self._broker, None
        if broker is not None:
            try:
                async with asyncio.timeout(_STOP_TIMEOUT_S):
                    await broker.shutdown()
            except TimeoutError:
                logger.warning(
                    "the embedded MQTT broker on port %s did not shut down within %g s;"
                    " its remaining connections are abandoned",
                    self._port,
                    _STOP_TIMEOUT_S,
                )
            else:
                logger.info("embedded MQTT broker on port %s stopped", self._port)
        self._port = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *_exc_info: object) -> None:
        await self.stop()


class BrokerThread:
    """An EmbeddedBroker in its own thread and event loop, for callers without a lasting loop."""

    def __init__(self, port: int = 0, *, gate: Gate | None = None) -> None:
        self._broker = EmbeddedBroker(port, gate=gate)
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._failure: BaseException | None = None
        # Created here, set from other threads through the loop, awaited only inside it.
        self._stop_requested = asyncio.Event()
        self._thread = threading.Thread(
            target=self._run, name="carehub-embedded-broker", daemon=True
        )

    @property
    def port(self) -> int:
        """The TCP port the broker listens on."""
        return self._broker.port

    @property
    def url(self) -> str:
        """The broker's address as an mqtt:// URL."""
        return self._broker.url

    def start(self) -> None:
        """Start the thread and return once the broker accepts connections."""
        self._thread.start()
        if not self._ready.wait(_THREAD_START_TIMEOUT_S):
            raise RuntimeError("the embedded broker did not start in time")
        if self._failure is not None:
            self._thread.join()
            raise RuntimeError("the embedded broker failed to start") from self._failure

    def stop(self) -> None:
        """Shut the broker down and end its thread; calling it again does nothing."""
        if not self._thread.is_alive():
            return
        with contextlib.suppress(RuntimeError):  # the loop closed in between: nothing to stop
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
        except Exception as exc:  # noqa: BLE001  # re-raised by start(), in the caller's thread
            self._failure = exc
            self._ready.set()
            return
        self._ready.set()
        try:
            await self._stop_requested.wait()
        finally:
            await self._broker.stop()


def run_broker_in_thread(port: int = 0, *, gate: Gate | None = None) -> BrokerThread:
    """Start an EmbeddedBroker in a dedicated thread with its own event loop and return it."""
    thread = BrokerThread(port, gate=gate)
    thread.start()
    return thread
