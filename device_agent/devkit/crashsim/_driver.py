"""An APSW connection shaped like the store's SQL seam (`device_agent.store._db.Driver`), for crash tests.

The seam is structural: `execute(sql, params)` yields rows as tuples and runs in autocommit (the caller issues
BEGIN and COMMIT itself, as with `sqlite3`'s `isolation_level=None`), `close()`, and `classify(error)` that
sorts this driver's exceptions into the engine's kinds of failure (`device_agent.store.ErrorKind`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import apsw

# The devkit may use the library (only the other direction is forbidden): one definition of the kinds.
from device_agent.store import ErrorKind

_KINDS: tuple[tuple[tuple[type[apsw.Error], ...], ErrorKind], ...] = (
    ((apsw.CorruptError, apsw.NotADBError, apsw.FormatError), "corrupt"),
    ((apsw.FullError,), "full"),
    ((apsw.IOError,), "io"),
    ((apsw.BusyError, apsw.LockedError), "busy"),
    ((apsw.CantOpenError, apsw.PermissionsError, apsw.ReadOnlyError, apsw.NoMemError), "access"),
)
Row = tuple[Any, ...]


class ApswDriver:
    """APSW is in autocommit unless told otherwise, which is what the store's `Database` expects."""

    def __init__(self, connection: apsw.Connection, busy_timeout: float = 5.0) -> None:
        self._connection = connection
        connection.set_busy_timeout(int(busy_timeout * 1000))

    @property
    def connection(self) -> apsw.Connection:
        return self._connection

    def execute(self, sql: str, params: Sequence[object] = ()) -> Iterator[Row]:
        cursor = self._connection.cursor()
        try:
            yield from cursor.execute(sql, tuple(params))
        finally:
            cursor.close()

    def close(self) -> None:
        self._connection.close()

    def classify(self, error: BaseException) -> ErrorKind | None:
        if isinstance(error, UnicodeDecodeError):
            return "corrupt"  # damaged TEXT (or a message quoting it) that cannot be decoded
        if not isinstance(error, apsw.Error):
            return None
        for types, kind in _KINDS:
            if isinstance(error, types):
                return kind
        return "other"
