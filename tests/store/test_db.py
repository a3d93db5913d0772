"""The SQL seam runs a statement two ways: on the cursors the standard library's driver keeps (`fetch`,
`fetch_one`, `write`), or through `execute` alone, as a driver with nothing more (APSW's, in the crash
tests) offers. `Database` gives the same answers either way, and a kept cursor never holds on to a
statement."""

from __future__ import annotations

import errno
import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from device_agent.errors import StorageError
from device_agent.store._db import (
    Database,
    DatabaseFailureError,
    ErrorKind,
    ReusingDriver,
    Row,
    Sqlite3Driver,
    connect,
)


class ExecuteOnly:
    """Only what `Driver` requires, from the standard library's driver: `execute`, `close`, `classify`."""

    def __init__(self, path: Path) -> None:
        self._inner = Sqlite3Driver(path)

    def execute(self, sql: str, params: Sequence[object] = ()) -> Iterator[Row]:
        return self._inner.execute(sql, params)

    def close(self) -> None:
        self._inner.close()

    def classify(self, error: BaseException) -> ErrorKind | None:
        return self._inner.classify(error)


@pytest.fixture(params=[Sqlite3Driver, ExecuteOnly], ids=["kept-cursors", "execute-only"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    database = connect(request.param, tmp_path / "seam.db")
    database.query("PRAGMA journal_mode=WAL")
    database.query("CREATE TABLE t (k TEXT PRIMARY KEY, v INTEGER)")
    yield database
    database.close()


def test_only_the_standard_library_driver_keeps_cursors(tmp_path: Path) -> None:
    keeping, plain = Sqlite3Driver(tmp_path / "a.db"), ExecuteOnly(tmp_path / "b.db")
    try:
        assert isinstance(keeping, ReusingDriver)
        assert not isinstance(plain, ReusingDriver)
    finally:
        keeping.close()
        plain.close()


def test_a_write_returns_how_many_rows_it_changed(db: Database) -> None:
    skip_taken = "INSERT INTO t VALUES (?, ?) ON CONFLICT(k) DO NOTHING"
    assert db.write(skip_taken, ("a", 1)) == 1
    assert db.write(skip_taken, ("a", 2)) == 0  # taken: skipped, and the count says so
    assert db.write("INSERT INTO t VALUES (?, ?), (?, ?)", ("b", 2, "c", 3)) == 2
    assert db.write("UPDATE t SET v = v + 10 WHERE k <> ?", ("a",)) == 2
    assert db.write("DELETE FROM t WHERE k = ?", ("absent",)) == 0
    assert db.query("SELECT k, v FROM t ORDER BY k") == [("a", 1), ("b", 12), ("c", 13)]


def test_a_failed_write_is_translated_and_the_next_one_runs(db: Database) -> None:
    db.write("INSERT INTO t VALUES (?, ?)", ("a", 1))
    with pytest.raises(DatabaseFailureError):
        db.write("INSERT INTO t VALUES (?, ?)", ("a", 2))  # the key is taken: a constraint error
    assert db.write("INSERT INTO t VALUES (?, ?)", ("b", 2)) == 1
    assert db.query("SELECT k, v FROM t ORDER BY k") == [("a", 1), ("b", 2)]


def no_read_open(db: Database) -> bool:
    """Whether no statement of `db` still reads: a TRUNCATE checkpoint is refused (busy) while any
    connection still reads from the WAL."""
    other = sqlite3.connect(db.path, isolation_level=None)
    try:
        busy, _, _ = other.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    finally:
        other.close()
    return bool(busy == 0)


def test_a_query_leaves_no_read_open(db: Database) -> None:
    for key in "abcdef":
        db.write("INSERT INTO t VALUES (?, ?)", (key, 1))
    assert len(db.query("SELECT k FROM t")) == 6
    assert db.query("SELECT k FROM t ORDER BY k LIMIT 1") == [("a",)]
    assert no_read_open(db)


def test_a_lookup_gives_its_row_or_none_and_leaves_no_read_open(db: Database) -> None:
    for key in "abc":
        db.write("INSERT INTO t VALUES (?, ?)", (key, ord(key)))
    lookup = "SELECT k, v FROM t WHERE k = ?"
    assert db.one(lookup, ("b",)) == ("b", 98)
    assert db.one(lookup, ("absent",)) is None
    assert db.read_one(lookup, ("c",)) == ("c", 99)  # the fast path: the same answer
    assert no_read_open(db)


def test_a_failed_lookup_is_translated_on_both_paths(db: Database) -> None:
    with pytest.raises(DatabaseFailureError):
        db.one("SELECT k FROM missing WHERE k = ?", ("a",))
    with pytest.raises(sqlite3.Error) as raw:  # the fast path raises the driver's own error…
        db.read_one("SELECT k FROM missing WHERE k = ?", ("a",))
    with pytest.raises(DatabaseFailureError):  # …and its caller has it translated
        db.translate(raw.value)
    assert db.one("SELECT count(*) FROM t") == (0,)


def test_the_read_fast_path_ends_with_an_io_error(tmp_path: Path) -> None:
    class FailingRead(Sqlite3Driver):
        def fetch_one(self, sql: str, params: Sequence[object] = ()) -> Row | None:
            error = sqlite3.OperationalError("injected")
            error.sqlite_errorcode = sqlite3.SQLITE_IOERR_READ
            raise error

    database = connect(FailingRead, tmp_path / "seam.db")
    with pytest.raises(StorageError) as failure:
        database.one("SELECT 1")
    assert failure.value.errno == errno.EIO
    assert database.closed
    with pytest.raises(StorageError) as closed:
        database.read_one("SELECT 1", ())  # no longer the driver's: the handle is closed for good
    assert closed.value.errno == errno.EBADF


def test_a_closed_database_refuses_both_ways(db: Database) -> None:
    db.close()
    with pytest.raises(Exception, match="closed"):
        db.query("SELECT 1")
    with pytest.raises(Exception, match="closed"):
        db.write("DELETE FROM t")
    for read in (db.one, db.read_one):
        with pytest.raises(StorageError, match="closed") as failure:
            read("SELECT 1", ())
        assert failure.value.errno == errno.EBADF
