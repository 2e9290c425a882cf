"""One error tree for the hub: every failure it raises on purpose is a HubError."""


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
