"""Opaque list cursors (docs/api.md Lists): the last row's sort key, encoded; pure."""

from __future__ import annotations

import base64
import binascii
import json
from datetime import datetime
from typing import Literal

from hub.errors import CursorError

CursorKind = Literal["text", "int", "time_id"]
# A cursor longer than this was not made by us.
CURSOR_MAX = 512
DEFAULT_LIMIT = 100
MAX_LIMIT = 500
_VERSION = 1


def encode_cursor(kind: CursorKind, key: str | int | tuple[datetime, int]) -> str:
    """The cursor after a row whose sort key is `key`."""
    value: object
    if kind == "time_id":
        if not isinstance(key, tuple):
            raise TypeError("a time_id cursor takes (datetime, id)")
        value = [key[0].isoformat(), key[1]]
    else:
        value = key
    raw = json.dumps([_VERSION, kind, value], separators=(",", ":"), ensure_ascii=False)
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(kind: CursorKind, cursor: str) -> str | int | tuple[datetime, int]:
    """The sort key a cursor of `kind` carries; QueryError invalid when it is not one."""
    bad = CursorError()
    if not cursor or len(cursor) > CURSOR_MAX or not cursor.isascii():
        raise bad
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        version, found_kind, value = json.loads(raw.decode())
    except (binascii.Error, ValueError, TypeError, UnicodeDecodeError):
        raise bad from None
    if version != _VERSION or found_kind != kind:
        raise bad
    if kind == "text" and isinstance(value, str) and value:
        return value
    if kind == "int" and isinstance(value, int) and not isinstance(value, bool):
        if -(2**63) <= value < 2**63:
            return value
        raise bad
    if (
        kind == "time_id"
        and isinstance(value, list)
        and len(value) == 2
        and isinstance(value[0], str)
        and isinstance(value[1], int)
        and not isinstance(value[1], bool)
        and -(2**63) <= value[1] < 2**63
    ):
        try:
            at = datetime.fromisoformat(value[0])
        except ValueError:
            raise bad from None
        if at.tzinfo is None:
            raise bad
        return at, value[1]
    raise bad
