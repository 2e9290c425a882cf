"""The MQTT part of the check: watch the device on the broker, ask the vendor, and judge."""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Final, Literal

import aiomqtt

from devices import topics
from hub.errors import VendorCheckError
from hub.ingest import make_client
from hub.models import DeviceInfo
from hub.settings import Settings
from hub.storage.credentials import CredentialsState, device_credentials
from hub.storage.pool import connect
from hub.storage.registry import find_device
from hub.vendor_check.judge import ACK_WAIT_S, TEST_PRESSES, Judge, WillOutcome, said_online
from hub.vendor_check.report import Evidence, Report, quote

# How long a new subscriber waits for the broker to hand it the retained status.
RETAINED_WAIT_S: Final = 3.0

PromptKind = Literal["info", "test_press", "cut_power", "restore_power"]


@dataclass(frozen=True, slots=True)
class Prompt:
    """Something the check tells the vendor, or asks them to do now."""

    kind: PromptKind
    text: str


OnPrompt = Callable[[Prompt], Awaitable[None] | None]


class _Watch:
    """The check's MQTT connection: every message goes to the judge, and wakes the waiters."""

    def __init__(self, judge: Judge) -> None:
        self.judge = judge
        self.live = True
        self._changed = asyncio.Condition()

    async def listen(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            payload = message.payload if isinstance(message.payload, bytes) else b""
            self.judge.observe(
                str(message.topic),
                payload,
                datetime.now().astimezone(),
                retained=bool(message.retain),
                live=self.live,
                qos=message.qos,
            )
            async with self._changed:
                self._changed.notify_all()

    async def until(self, condition: Callable[[], bool], timeout_s: float) -> bool:
        """Wait until `condition` holds (True) or `timeout_s` passes (False)."""
        try:
            async with asyncio.timeout(max(0.0, timeout_s)), self._changed:
                await self._changed.wait_for(condition)
        except TimeoutError:
            return condition()
        return True


async def _say(on_prompt: OnPrompt, kind: PromptKind, text: str) -> None:
    outcome = on_prompt(Prompt(kind, text))
    if outcome is not None:
        await outcome


async def read_retained(settings: Settings, topic: str) -> tuple[bytes, datetime] | None:
    """What the broker hands a new subscriber of `topic` as retained, or None."""
    client = make_client(
        settings, identifier=f"carehub-vendor-check-{uuid.uuid4().hex[:8]}", persistent=False
    )
    async with client:
        await client.subscribe(topic, qos=1)
        try:
            async with asyncio.timeout(RETAINED_WAIT_S):
                async for message in client.messages:
                    if message.retain:
                        payload = message.payload if isinstance(message.payload, bytes) else b""
                        return payload, datetime.now().astimezone()
        except TimeoutError:
            return None
    return None


async def _will_phase(
    settings: Settings, watch: _Watch, on_prompt: OnPrompt, will_wait_s: float
) -> WillOutcome:
    """Ask for a power cut; the broker must publish the will, and the device come back."""
    judge = watch.judge
    device = judge.device
    status_topic = topics.topic(settings.topic_root, device.facility_id, device.id, "status")
    problems: list[Evidence] = []
    notes: list[str] = []
    seen = len(judge.statuses)
    watch.live = False
    cut_at = datetime.now().astimezone()
    await _say(
        on_prompt,
        "cut_power",
        f"Now cut {device.id}'s power (or pull its network cable): do not switch it off"
        f" cleanly. Waiting up to {will_wait_s:.0f} s for its last will on {status_topic}"
        " (a broker sends it at once when the connection drops, or after 1.5 x the"
        " device's keepalive when the network just goes quiet).",
    )

    def said(online: bool, after: int) -> Callable[[], bool]:
        return lambda: any(s[1] is online for s in judge.statuses[after:])

    def problem(payload: str, why: str) -> None:
        problems.append(Evidence(status_topic, payload, datetime.now().astimezone(), why))

    if not await watch.until(said(False, seen), will_wait_s):
        problem(
            "",
            f"no offline status within {will_wait_s:.0f} s of the power cut: connect with"
            ' a last will of {"online": false} on status, qos 1, retained',
        )
        return WillOutcome(tuple(problems), tuple(notes))
    offline_at = next(at for at, online, _ in judge.statuses[seen:] if online is False)
    notes.append(f"the last will came {(offline_at - cut_at).total_seconds():.1f} s after the cut")
    back = len(judge.statuses)
    retained = await read_retained(settings, status_topic)
    if retained is None or said_online(retained[0]) is None:
        problem(
            quote(retained[0]) if retained else "",
            "the last will is not retained: a screen that connects later still cannot"
            " tell the device is offline (set the will's retain flag)",
        )
    elif said_online(retained[0]) is False:
        notes.append("the will is retained")
    await _say(
        on_prompt,
        "restore_power",
        f"Power {device.id} up again. Waiting up to {will_wait_s:.0f} s for it to say online.",
    )
    if not await watch.until(said(True, back), will_wait_s):
        problem(
            "",
            f"no online status within {will_wait_s:.0f} s of power coming back: publish"
            ' {"online": true}, retained, on every connection',
        )
    else:
        notes.append("it said online again when it came back")
    return WillOutcome(tuple(problems), tuple(notes))


def opening_notes(judge: Judge, duration_s: float) -> list[str]:
    """Notes for the vendor before the watch: a device that is not up, a watch too short."""
    device = judge.device
    notes: list[str] = []
    if not any(online for _, online, _ in judge.statuses):
        said = "says offline" if judge.statuses else "holds no status"
        notes.append(
            f"Note: the broker {said} for {device.id}: power it up now, or it will fail"
            " most clauses."
        )
    if duration_s < 2 * device.heartbeat_s:
        notes.append(
            f"Note: {duration_s:.0f} s is less than two heartbeats (heartbeat_s"
            f" {device.heartbeat_s}): run with --duration {2 * device.heartbeat_s} or more"
            " to judge the heartbeat fully."
        )
    return notes


async def load_device(settings: Settings, device_id: str) -> tuple[DeviceInfo, CredentialsState]:
    """The registered device and its credentials; VendorCheckError when it is not registered."""
    async with await connect(settings) as conn:
        device = await find_device(conn, device_id)
        if device is None:
            raise VendorCheckError(
                f"device {device_id!r} is not registered: the hub would answer everything it"
                " sends with unknown_device. Register it first (carehub devices import FILE,"
                f" or carehub devices register {device_id} --type TYPE --zone ZONE)"
            )
        return device, await device_credentials(conn, device_id)


async def run_vendor_check(
    settings: Settings,
    device_id: str,
    *,
    duration_s: float,
    will_wait_s: float,
    on_prompt: OnPrompt,
) -> Report:
    """Watch the device for `duration_s`, ask for a test press and a power cut; the report."""
    if not all(math.isfinite(s) and s > 0 for s in (duration_s, will_wait_s)):
        raise VendorCheckError("--duration and --will-wait must be positive numbers of seconds")
    device, credentials = await load_device(settings, device_id)
    judge = Judge(device, settings.topic_root, credentials)
    watch = _Watch(judge)
    watched = f"{topics.prefix(settings.topic_root)}+/{device.id}/#"
    status_topic = topics.topic(settings.topic_root, device.facility_id, device.id, "status")
    client = make_client(
        settings, identifier=f"carehub-vendor-check-{uuid.uuid4().hex[:8]}", persistent=False
    )
    try:
        async with client, asyncio.TaskGroup() as tasks:
            # QoS 2, so that each message comes at the QoS its publisher chose. (amqtt, the
            # embedded broker, raises every delivery to the subscription's QoS: there a
            # QoS 0 call looks like QoS 2, and only this part of the check is blind.)
            await client.subscribe(watched, qos=2)
            listener = tasks.create_task(watch.listen(client))
            started_at = datetime.now().astimezone()
            started = time.monotonic()
            await _say(
                on_prompt,
                "info",
                f"Watching {watched} for {duration_s:.0f} s ({device.type} at"
                f" {device.facility_id}, heartbeat_s {device.heartbeat_s}).",
            )
            # The broker hands over the retained status at once, if it holds one.
            await watch.until(lambda: bool(judge.statuses), RETAINED_WAIT_S)
            for note in opening_notes(judge, duration_s):
                await _say(on_prompt, "info", note)
            if device.type in TEST_PRESSES:
                await _say(
                    on_prompt,
                    "test_press",
                    f"Within the next {duration_s:.0f} s, {TEST_PRESSES[device.type]}.",
                )
            await asyncio.sleep(duration_s)
            watch_end = datetime.now().astimezone()
            await watch.until(lambda: judge.presses_answered, ACK_WAIT_S)
            retained = await read_retained(settings, status_topic)
            will = await _will_phase(settings, watch, on_prompt, will_wait_s)
            listener.cancel()
    except (aiomqtt.MqttError, ExceptionGroup) as exc:
        # The listener's lost connection comes wrapped by the task group; anything else
        # that went wrong is a bug, and is raised as it is.
        if isinstance(exc, ExceptionGroup) and exc.split(aiomqtt.MqttError)[1] is not None:
            raise
        raise VendorCheckError(
            f"lost or refused by the broker at {settings.mqtt.host}:{settings.mqtt.port}: {exc}"
        ) from exc
    clauses = judge.finish(
        watch_start=started_at, watch_end=watch_end, retained_status=retained, will=will
    )
    return Report(
        device,
        watched,
        started_at,
        time.monotonic() - started,
        judge.messages,
        clauses,
        tuple(judge.hub_rejections),
    )
