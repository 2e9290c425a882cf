"""A live client's queue: alerts go out before statuses, frames hold what is waiting."""

from __future__ import annotations

import asyncio

from hub.live import LiveClient, encode_message


def _alert(change_id: int) -> dict[str, object]:
    return {"type": "alert", "change_id": change_id, "alert": {"facility_id": "f-1"}}


async def test_take_hands_out_alerts_first_in_order_up_to_the_limit() -> None:
    client = LiveClient(None, 100)
    status = encode_message({"type": "facility_status", "facility_id": "f-1"}, "f-1")
    client.offer(status)
    for change_id in (1, 2, 3):
        client.offer(encode_message(_alert(change_id), "f-1"))
    first = await client.take(2)
    assert [m.change_id for m in first] == [1, 2]
    rest = await client.take(64)
    assert [m.change_id for m in rest] == [3, None]
    assert rest[1].text == status.text
    assert client.backlog == 0


async def test_take_waits_for_a_message_and_a_full_queue_marks_the_client_lagging() -> None:
    client = LiveClient(frozenset({"f-1"}), 2)
    waiting = asyncio.create_task(client.take(64))
    await asyncio.sleep(0)
    assert not waiting.done()
    client.offer(encode_message(_alert(7), "f-2"))  # another facility: not for this client
    client.offer(encode_message(_alert(8), "f-1"))
    assert [m.change_id for m in await waiting] == [8]
    for change_id in (9, 10, 11):
        client.offer(encode_message(_alert(change_id), "f-1"))
    assert client.lagging.is_set()
    assert client.backlog == 2
