"""List cursors (docs/api.md Lists): they round-trip, and anything else is refused."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hub.api.pagination import CURSOR_MAX, decode_cursor, encode_cursor
from hub.errors import CursorError


@given(st.text(min_size=1, max_size=64))
def test_a_text_cursor_round_trips(key: str) -> None:
    """Any id, unicode included, comes back as it went in."""
    cursor = encode_cursor("text", key)
    assert cursor.isascii() and "=" not in cursor
    if len(cursor) <= CURSOR_MAX:
        assert decode_cursor("text", cursor) == key


@given(st.integers(min_value=-(2**63), max_value=2**63 - 1))
def test_an_int_cursor_round_trips(key: int) -> None:
    """Any bigint id comes back as it went in."""
    assert decode_cursor("int", encode_cursor("int", key)) == key


def test_a_time_and_id_cursor_keeps_the_offset() -> None:
    """(raised_at, id) keeps its instant exactly."""
    at = datetime(2026, 11, 22, 8, 15, 0, 120000, tzinfo=timezone(timedelta(hours=8)))
    decoded = decode_cursor("time_id", encode_cursor("time_id", (at, 42)))
    assert decoded == (at, 42)
    assert isinstance(decoded, tuple) and decoded[0].utcoffset() == timedelta(hours=8)


def _raw(value: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    ("kind", "cursor"),
    [
        ("text", ""),
        ("text", "!!!"),
        ("text", "é"),
        ("text", "a" * (CURSOR_MAX + 1)),
        ("text", _raw("just a string")),
        ("text", _raw([2, "text", "f-sun"])),  # another version
        ("text", _raw([1, "int", 5])),  # another list's cursor
        ("text", _raw([1, "text", ""])),
        ("text", _raw([1, "text", 5])),
        ("int", _raw([1, "int", True])),
        ("int", _raw([1, "int", 2**70])),
        ("int", _raw([1, "int", "5"])),
        ("time_id", _raw([1, "time_id", ["yesterday", 1]])),
        ("time_id", _raw([1, "time_id", ["2026-01-01T00:00:00", 1]])),  # no offset
        ("time_id", _raw([1, "time_id", ["2026-01-01T00:00:00+00:00"]])),
        ("time_id", _raw([1, "time_id", ["2026-01-01T00:00:00+00:00", "1"]])),
        ("time_id", "eyJ"),  # truncated
    ],
)
def test_a_cursor_this_api_did_not_make_is_refused(kind: str, cursor: str) -> None:
    """Bad cursors raise CursorError (a 400 naming query.cursor), never anything else."""
    with pytest.raises(CursorError):
        decode_cursor(kind, cursor)  # type: ignore[arg-type]


def test_a_cursor_of_one_kind_is_not_read_as_another() -> None:
    """An alerts cursor handed to the facilities list is refused."""
    cursor = encode_cursor("time_id", (datetime.now(UTC), 7))
    with pytest.raises(CursorError):
        decode_cursor("text", cursor)
