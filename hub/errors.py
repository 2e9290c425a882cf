"""One error tree for the hub: every failure it raises on purpose is a HubError."""

import asyncio
from datetime import datetime


class HubError(Exception):
    """Base of every error the hub raises on purpose."""


class SettingsError(HubError):
    """A CAREHUB_* setting is missing or malformed."""


class DecodeError(HubError):
    """A message could not be turned into a typed value (carries a reason code)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class StorageError(HubError):
    """The database refused or could not be reached."""


class ImportRowError(HubError):
    """A registry import row is invalid; names the row and the column."""

    def __init__(self, row: int, column: str, message: str) -> None:
        super().__init__(f"row {row}, column {column!r}: {message}")
        self.row = row
        self.column = column
        self.message = message


class RegistryError(HubError):
    """A registry change was refused: an unknown device, facility or zone, or a bad value."""


class ImportFileError(RegistryError):
    """A registry file cannot be read as a whole: unreadable, wrong format or wrong header."""


class RuleError(HubError):
    """A rule override is invalid; the message names the facility, zone, kind and field."""


class CodedError(HubError):
    """An error with a `code` (invalid, not_found, conflict, ...) that says what kind of
    refusal it is, and `field` naming the bad input when there is one."""

    def __init__(self, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.field = field


class AlertError(CodedError):
    """An alert action cannot be taken: `code` is not_found, conflict or invalid."""


class AuthError(CodedError):
    """Signing in or managing an account failed: `code` is unauthorized, invalid, not_found
    or conflict; `field` names the bad input when there is one."""


class SignInLimitError(AuthError):
    """Too many failed sign-ins for the account or the client address: no check until
    `until` (`retry_after_s` from now); `locked` when it is a lock, not a backoff."""

    def __init__(self, message: str, *, retry_after_s: int, until: datetime, locked: bool) -> None:
        super().__init__("limited", message)
        self.retry_after_s = retry_after_s
        self.until = until
        self.locked = locked


class CredentialError(CodedError):
    """Device credentials cannot be issued or revoked as asked: `code` is not_found,
    conflict or invalid, and the message says what to do instead."""


class BrokerAdminError(HubError):
    """The broker's account store (Mosquitto dynamic security) refused or did not answer."""


class QueryError(CodedError):
    """A report cannot be computed as asked: `code` is not_found or invalid."""


class CursorError(QueryError):
    """A `cursor` parameter this API did not hand out."""

    def __init__(self) -> None:
        super().__init__(
            "invalid",
            "cursor: not a cursor this list returned; start without one",
            "query.cursor",
        )


class NotifyError(HubError):
    """A webhook cannot be configured as asked; the message says why."""


class VendorCheckError(HubError):
    """`carehub vendor-check` cannot run: an unregistered device, an unreachable broker."""


class ApiError(HubError):
    """An error answer of the HTTP API: its status, its message, the field at fault if any."""

    def __init__(self, status: int, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field


def raise_if_cancelled() -> None:
    """Re-raise a cancellation that an error on the way out, or a wait, has swallowed.

    aiomqtt's context exit raises MqttError when its DISCONNECT times out, and psycopg may
    turn a cancelled wait into its own error. Raised while a CancelledError unwinds, such
    an error replaces it: a reconnect loop that catches it would carry on after being
    told to stop, and the hub's shutdown would hang. Call this first in such handlers.

    On Python 3.11, `asyncio.wait_for` returns the result instead of raising when the
    awaited thing completes in the same tick as the cancellation; aiomqtt waits on every
    CONNACK, SUBACK and PUBACK that way. Call this after each such await in a loop.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
