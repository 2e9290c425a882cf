"""The hub's shutdown: a stage told to stop stops, and one that does not is named."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import pytest

from hub import runtime
from hub.errors import raise_if_cancelled


async def test_a_cancellation_swallowed_by_a_wait_is_raised_again() -> None:
    """On 3.11, wait_for returns when its future completes in the cancel's own tick.

    aiomqtt waits for every PUBACK that way: a reply worker whose PUBACK lands with the
    shutdown's cancel must still stop, or the hub never does.
    """
    loop = asyncio.get_running_loop()
    answers: list[asyncio.Future[int]] = []
    served = 0

    async def worker() -> None:
        nonlocal served
        while True:
            answer = loop.create_future()
            answers.append(answer)
            await asyncio.wait_for(answer, 10)
            raise_if_cancelled()
            served += 1

    task = asyncio.create_task(worker())
    await asyncio.sleep(0)
    answers[-1].set_result(1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 2)
    assert task.cancelled()
    assert served == 0


async def test_a_stage_that_ignores_its_cancellation_is_named_with_where_it_waits(
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(runtime, "STOP_S", 0.2)
    release = asyncio.Event()

    async def stubborn_wait() -> None:
        while not release.is_set():
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.sleep(30)

    async def stubborn() -> None:
        await stubborn_wait()

    task = asyncio.create_task(stubborn(), name="carehub-stubborn")
    await asyncio.sleep(0)
    with caplog.at_level(logging.CRITICAL, logger="hub.runtime"):
        await runtime._stop_tasks([task])
    release.set()
    task.cancel()
    await asyncio.wait_for(task, 2)
    assert "carehub-stubborn did not stop within 0.2 s" in caplog.text
    where = capsys.readouterr().err
    assert "carehub-stubborn waits at:" in where
    # Down to the coroutine that swallows the cancel, not only the task's own frame.
    assert "in stubborn_wait" in where
    assert "in sleep" in where


async def test_a_stage_that_lost_its_cancellation_once_is_asked_again_and_stops(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A cancel dropped in a race (3.11's wait_for) must not hang the hub's shutdown."""
    monkeypatch.setattr(runtime, "STOP_S", 0.2)
    lost = 0

    async def stage() -> None:
        nonlocal lost
        while True:
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                if lost:
                    raise
                lost += 1  # as a wait that returned instead of raising

    task = asyncio.create_task(stage(), name="carehub-racy")
    await asyncio.sleep(0)
    with caplog.at_level(logging.CRITICAL, logger="hub.runtime"):
        await runtime._stop_tasks([task])
    assert task.cancelled()
    assert lost == 1
    assert "carehub-racy did not stop within 0.2 s" in caplog.text
    assert "did not stop when asked again" not in caplog.text
