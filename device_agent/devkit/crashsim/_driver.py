"""An APSW connection shaped like the store's SQL seam (`device_agent.store._db.Driver`), for crash tests.

The seam is structural, so nothing here imports the store: `execute(sql, params)` yields rows as tuples and
runs in autocommit (the caller issues BEGIN and COMMIT itself, as with `sqlite3`'s `isolation_level=None`),
`close()`, and `classify(error)` that sorts this driver's exceptions into corrupt / full / io / other.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, Literal

import apsw

ErrorKind = Literal["corrupt", "full", "io", "other"]
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
        if not isinstance(error, apsw.Error):
            return None
        if isinstance(error, apsw.CorruptError | apsw.NotADBError | apsw.FormatError):
            return "corrupt"
        if isinstance(error, apsw.FullError):
            return "full"
        if isinstance(error, apsw.IOError):
            return "io"
        return "other"
