"""The SQL seam: the one module that owns a database connection.

The engine talks to a `Database`, which talks to a `Driver`. `Sqlite3Driver` (the standard library) is the
only driver a device uses; a power-loss test can pass another factory (e.g. an APSW connection over a
recording VFS) without the engine noticing, as long as it executes the same SQL and classifies its errors.

Durability settings are asserted, not assumed: WAL journal and `synchronous=FULL` are read back after being
set (a commit then returns only after the WAL is fsynced), and `integrity_check` runs at every open.
`secure_delete` zeroes freed content so erased rows and keys do not linger in free pages.

Schema (format 3; `application_id` and `user_version` mark the file as ours). Format 3 has the tables of
format 2; its sealed records carry their own header (`_crypto`), of which `seq`, `key_id`, `created` and
`expires` are the index:

    meta(name PRIMARY KEY, value)                    format, store_id, kek_check, seq_reserved
    data_keys(key_id AUTOINCREMENT, namespace, wrapped, created, seals, active)
    records(seq PRIMARY KEY, namespace, key, key_id, created, expires, sealed)

A record costs two b-tree entries: its row (by `seq`) and one in `records_key`, which serves both kinds:
keyed records by (namespace, key), queue entries (key NULL, and NULLs are distinct in a UNIQUE index) by
(namespace, NULL, seq), so a queue is read and acknowledged in order from the index. Records with an expiry
also have an entry in `records_expires`. `seq` has no AUTOINCREMENT (its counter would be a third page per
write): `meta.seq_reserved` bounds the numbers ever issued, see `_lifecycle`. `data_keys.seals` bounds the
seals each key has made, see `_keyring`.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import logging
import sqlite3
from collections.abc import Callable, Generator, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

from device_agent.errors import IntegrityError, StorageError

logger = logging.getLogger(__name__)

APPLICATION_ID = 0x44414753  # "DAGS"
SCHEMA_VERSION = 3
SYNCHRONOUS_FULL = 2
BUSY_TIMEOUT = 5.0
# The meta row bounding every sequence number ever issued (an integer).
SEQ_RESERVED = "seq_reserved"
# integrity_check stops after this many problems: one is enough to decide, the rest only costs time.
_INTEGRITY_ROWS = 8

ErrorKind = Literal["corrupt", "full", "io", "busy", "access", "other"]
# Errors of the environment, not of the file's content: never a reason to move a store aside.
_ENVIRONMENT_ERRNO: dict[str, int] = {"busy": errno.EBUSY, "access": errno.EACCES}
Row = tuple[Any, ...]

_SCHEMA = (
    "CREATE TABLE meta (name TEXT PRIMARY KEY, value BLOB NOT NULL) WITHOUT ROWID",
    """CREATE TABLE data_keys (
        key_id INTEGER PRIMARY KEY AUTOINCREMENT,
        namespace TEXT NOT NULL,
        wrapped BLOB NOT NULL,
        created REAL NOT NULL,
        seals INTEGER NOT NULL,
        active INTEGER NOT NULL)""",
    "CREATE INDEX data_keys_namespace ON data_keys(namespace)",
    """CREATE TABLE records (
        seq INTEGER PRIMARY KEY,
        namespace TEXT NOT NULL,
        key TEXT,
        key_id INTEGER NOT NULL,
        created REAL NOT NULL,
        expires REAL,
        sealed BLOB NOT NULL)""",
    "CREATE UNIQUE INDEX records_key ON records(namespace, key)",
    "CREATE INDEX records_expires ON records(expires) WHERE expires IS NOT NULL",
)


class DatabaseFailureError(StorageError):
    """A driver error that is neither I/O, space, locking nor access: our SQL or the file's content.

    At open, where the SQL is fixed and known good, it means the file is damaged (a flipped header byte
    gives "unsupported file format", a flipped schema byte "no such column").
    """


class CorruptStoreError(Exception):
    """Internal: the file failed a check at open. `reason` is short and safe to log."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Driver(Protocol):
    """A database connection as the engine needs it. Rows are tuples; parameters are positional.

    That is all a driver needs; one may also be a `ReusingDriver`, which `Database` then uses for the
    statements whose rows it takes all at once.
    """

    def execute(self, sql: str, params: Sequence[object] = ()) -> Iterator[Row]: ...
    def close(self) -> None: ...
    def classify(self, error: BaseException) -> ErrorKind | None:
        """`None` if `error` is not this driver's; otherwise what kind of failure it is."""
        ...


@runtime_checkable
class ReusingDriver(Driver, Protocol):
    """A driver with more ways to run a statement, on cursors it keeps (one for reads, one for writes:
    making a cursor costs more than the Python of a short statement): without them, `Database` uses
    `execute`, and asks `SELECT changes()` after a write (a second statement)."""

    def fetch(self, sql: str, params: Sequence[object] = ()) -> list[Row]:
        """All the rows of one statement (it has run to its end when this returns)."""
        ...

    def fetch_one(self, sql: str, params: Sequence[object] = ()) -> Row | None:
        """The row of a statement that has at most one (a lookup by a unique key), or None; it has run to
        its end when this returns."""
        ...

    def write(self, sql: str, params: Sequence[object] = ()) -> int:
        """Run one INSERT, UPDATE or DELETE; how many rows it changed."""
        ...


DriverFactory = Callable[[Path], Driver]


class Sqlite3Driver:
    """The standard library's sqlite3, in autocommit mode: the `Database` issues BEGIN and COMMIT itself."""

    def __init__(self, path: Path) -> None:
        self._connection = sqlite3.connect(
            path, timeout=BUSY_TIMEOUT, isolation_level=None, check_same_thread=False
        )
        # A damaged row may hold invalid UTF-8 where text belongs. The default factory would fail the whole
        # statement with the raw bytes in its message; this keeps them (as surrogates) for the row checks,
        # which turn them into an IntegrityError about that one row.
        self._connection.text_factory = lenient_text
        # Kept for `fetch` and `write`: each statement they run is over when they return (all rows read,
        # the statement reset), so nothing holds on to a cursor between two of them.
        self._reader = self._connection.cursor()
        self._writer = self._connection.cursor()

    def execute(self, sql: str, params: Sequence[object] = ()) -> Iterator[Row]:
        # The cursor itself: `Database` drains it or closes it (a generator around it costs a microsecond).
        cursor: Iterator[Row] = self._connection.execute(sql, params)
        return cursor

    def fetch(self, sql: str, params: Sequence[object] = ()) -> list[Row]:
        return self._reader.execute(sql, params).fetchall()

    def fetch_one(self, sql: str, params: Sequence[object] = ()) -> Row | None:
        # sqlite3 steps on after the row it returns: at the end of a one-row statement, it resets it.
        row: Row | None = self._reader.execute(sql, params).fetchone()
        return row

    def write(self, sql: str, params: Sequence[object] = ()) -> int:
        # sqlite3 reads `sqlite3_changes()` after a write statement: its rowcount is SQLite's own count.
        writer = self._writer
        writer.execute(sql, params)
        return writer.rowcount

    def close(self) -> None:
        self._connection.close()

    def classify(self, error: BaseException) -> ErrorKind | None:
        return classify_sqlite3(error)


def classify_sqlite3(error: BaseException) -> ErrorKind | None:
    """What kind of failure a `sqlite3` error is; `None` if `error` is not one (any sqlite3 driver's)."""
    if isinstance(error, UnicodeDecodeError):
        # sqlite3 cannot decode SQLite's own message when it quotes damaged text (a corrupt schema).
        return "corrupt"
    if not isinstance(error, sqlite3.Error):
        return None
    code = getattr(error, "sqlite_errorcode", 0) & 0xFF
    if code in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB, sqlite3.SQLITE_FORMAT):
        return "corrupt"
    if code == sqlite3.SQLITE_FULL:
        return "full"
    if code == sqlite3.SQLITE_IOERR:
        return "io"
    if code in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
        return "busy"
    # Out of memory joins access: the environment's fault, never the file's.
    if code in _ACCESS_CODES:
        return "access"
    return "other"


_ACCESS_CODES = frozenset(
    (sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_PERM, sqlite3.SQLITE_READONLY, sqlite3.SQLITE_NOMEM)
)


def lenient_text(data: bytes) -> str:
    """sqlite3's text factory for a store's files: damaged UTF-8 kept as surrogates, for the row checks."""
    return data.decode("utf-8", "surrogateescape")


class Database:
    """One connection, its transactions, and the translation of driver errors into the library's tree.

    An I/O error closes the handle for good (an fsync that failed may have dropped the dirty pages: retrying
    it and reporting success would acknowledge data that is not on disk). Reopen the store to go on.
    """

    def __init__(self, driver: Driver, path: Path) -> None:
        self._driver: Driver | None = driver
        self.path = path
        self._in_transaction = False
        self._fetch: Callable[[str, Sequence[object]], list[Row]]
        self._write: Callable[[str, Sequence[object]], int]
        # The read fast path (see `one`): the driver's own method, with no layer of ours around it, so a
        # caller translates its errors itself (`translate`). It raises the closed error once the handle is.
        self.read_one: Callable[[str, Sequence[object]], Row | None]
        if isinstance(driver, ReusingDriver):
            self._fetch, self.read_one, self._write = driver.fetch, driver.fetch_one, driver.write
        else:
            self._fetch = functools.partial(_fetch_by_execute, driver)
            self.read_one = functools.partial(_fetch_one_by_execute, driver)
            self._write = functools.partial(_write_by_execute, driver)

    @property
    def closed(self) -> bool:
        return self._driver is None

    def _closed(self) -> StorageError:
        return StorageError(f"{self.path}: the store is closed", errno_value=errno.EBADF)

    def _read_closed(self, _sql: str, _params: Sequence[object] = ()) -> Row | None:
        raise self._closed()

    def _detach(self) -> Driver | None:
        """Forget the driver (closed, or failed for good); returns it."""
        driver, self._driver = self._driver, None
        self.read_one = self._read_closed
        return driver

    def query(self, sql: str, params: Sequence[object] = ()) -> list[Row]:
        """All the rows of one statement."""
        if self._driver is None:
            raise self._closed()
        try:
            return self._fetch(sql, params)
        except Exception as error:
            self._raise_translated(error)
            raise

    def one(self, sql: str, params: Sequence[object] = ()) -> Row | None:
        """The row of a statement that has at most one (a lookup by a unique key), or None."""
        try:
            return self.read_one(sql, params)
        except Exception as error:
            self.translate(error)
            raise

    def translate(self, error: Exception) -> None:
        """Raise the library's error for an `error` of `read_one`; return if it is one of the library's."""
        self._raise_translated(error)

    def write(self, sql: str, params: Sequence[object] = ()) -> int:
        """Run one INSERT, UPDATE or DELETE; how many rows it changed."""
        if self._driver is None:
            raise self._closed()
        try:
            return self._write(sql, params)
        except Exception as error:
            self._raise_translated(error)
            raise

    def rows(self, sql: str, params: Sequence[object] = ()) -> Generator[Row, None, None]:
        """Rows one at a time (for salvage: a corrupt page fails the row that reaches it, not the others)."""
        driver = self._driver
        if driver is None:
            raise self._closed()
        cursor = None
        try:
            cursor = driver.execute(sql, params)
            yield from cursor
        except Exception as error:
            self._raise_translated(error)
            raise
        finally:
            close = getattr(cursor, "close", None)
            if close is not None:
                with contextlib.suppress(Exception):
                    close()

    def scalar(self, sql: str, params: Sequence[object] = ()) -> Any:
        rows = self.query(sql, params)
        return rows[0][0] if rows else None

    def begin(self) -> None:
        """BEGIN IMMEDIATE: the write lock is taken now, not at the first write."""
        if self._in_transaction:
            raise RuntimeError("transactions do not nest")
        self.query("BEGIN IMMEDIATE")
        self._in_transaction = True

    def commit(self) -> None:
        """COMMIT; when this returns the transaction is durable (synchronous=FULL). Rolls back if it fails."""
        try:
            self.query("COMMIT")
        except BaseException:
            self.rollback()
            raise
        self._in_transaction = False

    def rollback(self) -> None:
        """ROLLBACK, best effort: it runs while another error is on its way to the caller."""
        self._in_transaction = False
        if self._driver is not None:
            with contextlib.suppress(Exception):
                list(self._driver.execute("ROLLBACK"))

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """`begin` … `commit`, or `rollback` if the body raises."""
        self.begin()
        try:
            yield
        except BaseException:
            self.rollback()
            raise
        self.commit()

    def close(self) -> None:
        driver = self._detach()
        if driver is not None:
            try:
                driver.close()
            except Exception as error:
                self._raise_translated(error, driver)
                raise

    def _raise_translated(self, error: Exception, driver: Driver | None = None) -> None:
        """Raise the library's error for a driver's `error`; return if `error` is not the driver's."""
        driver = driver if driver is not None else self._driver
        kind = driver.classify(error) if driver is not None else None
        if kind is None:
            return
        name = type(error).__name__
        if kind == "corrupt":
            logger.warning("store.corrupt", extra={"path": str(self.path), "error": name})
            corrupt = IntegrityError(f"{self.path}: the store file is corrupt")
            # A decoding error holds the damaged bytes themselves: they do not travel on.
            raise corrupt from (None if isinstance(error, UnicodeError) else error)
        if kind == "full":
            raise StorageError(f"{self.path}: no space left", errno_value=errno.ENOSPC) from error
        if kind == "io":
            # No traceback in the log: the cause is chained to the error the caller gets.
            logger.error("store.io_failed", extra={"path": str(self.path), "error": name})
            self._detach()
            if driver is not None:
                with contextlib.suppress(Exception):
                    driver.close()
            raise StorageError(
                f"{self.path}: I/O error; the store is closed", errno_value=errno.EIO
            ) from error
        if kind in _ENVIRONMENT_ERRNO:
            raise StorageError(
                f"{self.path}: database unavailable ({name})", errno_value=_ENVIRONMENT_ERRNO[kind]
            ) from error
        raise DatabaseFailureError(f"{self.path}: database error ({name})") from error


def _fetch_by_execute(driver: Driver, sql: str, params: Sequence[object]) -> list[Row]:
    return list(driver.execute(sql, params))


def _fetch_one_by_execute(driver: Driver, sql: str, params: Sequence[object]) -> Row | None:
    rows = list(driver.execute(sql, params))
    return rows[0] if rows else None


def _write_by_execute(driver: Driver, sql: str, params: Sequence[object]) -> int:
    list(driver.execute(sql, params))
    [(changes,)] = list(driver.execute("SELECT changes()"))
    return int(changes)


def connect(factory: DriverFactory, path: Path) -> Database:
    """Open a driver on `path`; a failure to even open is a `StorageError` (never a driver's own type)."""
    try:
        driver = factory(path)
    except Exception as error:  # any driver's failure to open, translated at the seam
        raise StorageError(f"{path}: cannot open the database ({type(error).__name__})") from error
    return Database(driver, path)


def configure(db: Database) -> None:
    """Set and read back the durability pragmas; anything else is refused, not silently accepted."""
    mode = db.scalar("PRAGMA journal_mode=WAL")
    if str(mode).lower() != "wal":
        raise StorageError(f"{db.path}: journal_mode is {mode!r}, not wal")
    db.query("PRAGMA synchronous=FULL")
    synchronous = db.scalar("PRAGMA synchronous")
    if synchronous != SYNCHRONOUS_FULL:
        raise StorageError(f"{db.path}: synchronous is {synchronous!r}, not FULL")
    for pragma in ("secure_delete=ON", "cell_size_check=ON", "trusted_schema=OFF", "foreign_keys=OFF"):
        db.query(f"PRAGMA {pragma}")


def pragmas(db: Database) -> dict[str, object]:
    """The settings that matter for durability, as the database reports them (for tests and stats)."""
    return {
        "journal_mode": db.scalar("PRAGMA journal_mode"),
        "synchronous": db.scalar("PRAGMA synchronous"),
        "secure_delete": db.scalar("PRAGMA secure_delete"),
    }


def check(db: Database) -> bool:
    """Integrity and identity at open. Returns False for a file with no schema yet (a new store).

    Raises `CorruptStoreError` when the file is damaged or not ours.
    """
    try:
        problems = [str(row[0]) for row in db.query(f"PRAGMA integrity_check({_INTEGRITY_ROWS})")]
        if problems != ["ok"]:
            raise CorruptStoreError("integrity_check failed")
        application_id = db.scalar("PRAGMA application_id")
        version = db.scalar("PRAGMA user_version")
        tables = db.scalar("SELECT count(*) FROM sqlite_schema")
    except (IntegrityError, DatabaseFailureError) as error:
        raise CorruptStoreError("unreadable database") from error
    if application_id == 0 and version == 0 and tables == 0:
        return False
    if application_id != APPLICATION_ID:
        raise CorruptStoreError("not a device-agent store")
    if version != SCHEMA_VERSION:
        raise CorruptStoreError(f"unsupported store format {version}")
    # integrity_check does not read the schema's text: a flipped bit in it renames a column and every
    # query fails. The schema must be exactly the one this version creates.
    try:
        schema = set(db.query("SELECT type, name, tbl_name, sql FROM sqlite_schema"))
    except (IntegrityError, DatabaseFailureError) as error:
        raise CorruptStoreError("unreadable schema") from error
    if schema != expected_schema():
        raise CorruptStoreError("schema does not match")
    return True


@functools.cache
def expected_schema() -> frozenset[Row]:
    """The `sqlite_schema` rows of a new store, made once in memory."""
    connection = sqlite3.connect(":memory:", isolation_level=None)
    try:
        for statement in _SCHEMA:
            connection.execute(statement)
        return frozenset(connection.execute("SELECT type, name, tbl_name, sql FROM sqlite_schema"))
    finally:
        connection.close()


def create_schema(db: Database, meta: dict[str, bytes], first_seq: int) -> None:
    with db.transaction():
        for statement in _SCHEMA:
            db.query(statement)
        db.query(f"PRAGMA application_id={APPLICATION_ID}")
        db.query(f"PRAGMA user_version={SCHEMA_VERSION}")
        db.query("INSERT INTO meta(name, value) VALUES (?, ?)", ("format", str(SCHEMA_VERSION).encode()))
        for name, value in meta.items():
            db.query("INSERT INTO meta(name, value) VALUES (?, ?)", (name, value))
        # Nothing issued yet, but every number below `first_seq` counts as used (a replacement starts past
        # the store it replaces).
        db.query("INSERT INTO meta(name, value) VALUES (?, ?)", (SEQ_RESERVED, first_seq - 1))
