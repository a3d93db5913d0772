"""Recovery and the SQL seam: corrupt files are moved aside, salvaged and replaced (once, never in a loop);
errors of the environment (I/O, locks, access) are typed and never mistaken for corruption."""

from __future__ import annotations

import errno
import os
import shutil
import sqlite3
import stat
from pathlib import Path

import pytest

from device_agent.errors import StorageError, UnsafeFileError
from device_agent.store import StoreEvent, _crypto
from device_agent.store._db import Row, Sqlite3Driver
from tests.store.conftest import Clock, InterceptingDriver, raw_db, secret_kek

PAGE = 4096


def corrupt_names(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if ".corrupt-" in p.name)


def test_damaged_page_is_salvaged_around(open_store, store_dir, clock: Clock):
    store = open_store()
    values = {f"k{i:03d}": os.urandom(150) for i in range(300)}
    store.put_many("ns", values.items())
    queued = dict(zip(store.append_many("q", [os.urandom(150) for _ in range(100)]), range(100), strict=True))
    last_seq = max(queued)
    store.close()
    path = store_dir / "store.db"
    content = bytearray(path.read_bytes())
    middle = (len(content) // PAGE // 2) * PAGE
    content[middle : middle + PAGE] = os.urandom(PAGE)
    path.write_bytes(content)

    events: list[StoreEvent] = []
    store = open_store(on_event=events.append)
    [event] = [e for e in events if e.name == "store.corrupt_replaced"]
    salvaged = int(event.details["salvaged"])
    assert 0 < salvaged < 400
    moved = str(event.details["moved_to"])
    # The copy stays as it was found, its -wal and -shm beside it (salvage reads it read-only).
    assert corrupt_names(store_dir) == [moved, f"{moved}-shm", f"{moved}-wal"]
    readable = set(store.keys("ns"))
    for key in readable:
        assert store.get("ns", key) == values[key]
    batch = store.read_batch("q", max_records=1000)
    assert len(readable) + len(batch) == salvaged
    assert store.append("q", b"new") > last_seq  # numbers go on past the old store's
    assert store.stats().recoveries == 1
    store.close()

    again: list[StoreEvent] = []
    open_store(on_event=again.append)
    assert again == []  # recovered once; the new store is healthy


FORMAT_2_STORE = Path(__file__).parent / "fixtures" / "store-format-2.db"


def test_a_store_of_format_2_is_migrated_with_every_live_record(open_store, store_dir, clock: Clock):
    """`fixtures/store-format-2.db` was written by the previous release of the engine (store format 2,
    records sealed with their columns as associated data) under `secret_kek()`, at 1.8e9 s: keyed values in
    two namespaces (one under a non-ASCII key), one with a 60 s lifetime, one with a long one, and a queue
    of three entries. Opening it recovers it into format 3: every record that is still live, re-sealed."""
    store_dir.mkdir(mode=0o700)
    shutil.copyfile(FORMAT_2_STORE, store_dir / "store.db")
    (store_dir / "store.db").chmod(0o600)
    clock.advance(120)  # past the short record's lifetime
    events: list[StoreEvent] = []
    store = open_store(kek=secret_kek(), on_event=events.append)
    [event] = events
    assert (event.name, event.details["reason"]) == ("store.corrupt_replaced", "unsupported store format 2")
    assert (event.details["salvaged"], event.details["unreadable"], event.details["scan_failed"]) == (7, 0, 0)
    assert {key: store.get("settings", key) for key in store.keys("settings")} == {
        "plain": b"a value kept for good",
        "lasting": b"a value with a long life",
    }
    assert store.get("other", "k") == "non-ascii k\u00e9y value".encode()
    assert store.get("other", "cl\u00e9") == b"under a non-ASCII key"
    assert [value for _, value in store.read_batch("spool")] == [
        b"first sample",
        b"second sample",
        b"third sample",
    ]
    with raw_db(store_dir / "store.db") as connection:
        assert connection.execute("PRAGMA user_version").fetchone() == (3,)
        headers = [
            _crypto.read_header(sealed) for (sealed,) in connection.execute("SELECT sealed FROM records")
        ]
    assert len(headers) == 7  # each re-sealed in record format 2: its header reads


def test_a_damaged_cell_pointer_that_hands_salvage_a_record_twice_keeps_it_once(open_store, store_dir):
    """A leaf page whose first cell pointer was damaged into a copy of another: salvage meets that record
    twice, and recovery must keep it once (it failed the open with a UNIQUE error before)."""
    store = open_store()
    values = {f"k{i}": f"value {i}".encode() for i in range(6)}
    store.put_many("ns", values.items())
    store.close()
    path = store_dir / "store.db"
    with sqlite3.connect(path) as connection:
        [(root,)] = connection.execute("SELECT rootpage FROM sqlite_schema WHERE name = 'records'")
    connection.close()
    content = bytearray(path.read_bytes())
    page = (root - 1) * PAGE
    assert content[page] == 0x0D  # a table leaf: its cell pointers start at byte 8
    pointers = page + 8
    content[pointers : pointers + 2] = content[pointers + 6 : pointers + 8]  # the 1st cell is now the 4th
    path.write_bytes(content)

    events: list[StoreEvent] = []
    store = open_store(on_event=events.append)
    [event] = [e for e in events if e.name == "store.corrupt_replaced"]
    assert event.details["reason"] == "integrity_check failed"
    assert sorted(store.keys("ns")) == ["k1", "k2", "k3", "k4", "k5"]  # k0's cell is gone, k3 kept once
    assert {key: store.get("ns", key) for key in store.keys("ns")} == {k: values[k] for k in store.keys("ns")}
    assert store.stats().namespaces["ns"].records == 5


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"", "store file has no content"),
        (b"not a database at all" * 300, "unreadable database"),
        (b"SQLite format 3\x00" + bytes(PAGE - 16), "unreadable database"),
    ],
)
def test_unusable_files_are_replaced(open_store, store_dir, content, reason):
    store_dir.mkdir(mode=0o700)
    (store_dir / "store.db").write_bytes(content)
    (store_dir / "store.db").chmod(0o600)
    events: list[StoreEvent] = []
    store = open_store(on_event=events.append)
    assert [(e.name, e.details["reason"]) for e in events] == [("store.corrupt_replaced", reason)]
    store.put("ns", "k", b"v")
    assert store.get("ns", "k") == b"v"


def test_a_foreign_sqlite_database_is_not_ours(open_store, store_dir):
    store_dir.mkdir(mode=0o700)
    with sqlite3.connect(store_dir / "store.db") as connection:
        connection.execute("CREATE TABLE other (x)")
    connection.close()
    (store_dir / "store.db").chmod(0o600)
    events: list[StoreEvent] = []
    open_store(on_event=events.append)
    assert events[0].details["reason"] == "not a device-agent store"


def test_only_the_newest_corrupt_copies_are_kept(open_store, store_dir):
    for _ in range(4):
        open_store(keep_corrupt=2).close()
        (store_dir / "store.db").write_bytes(b"garbage" * 1000)
    open_store(keep_corrupt=2).close()
    copies = [name for name in corrupt_names(store_dir) if not name.endswith(("-wal", "-shm"))]
    assert len(copies) == 2  # each with its -wal and -shm
    assert all(name.startswith("store.db.corrupt-") for name in copies)


def test_a_symlink_at_the_database_path_is_refused(open_store, store_dir, tmp_path):
    store_dir.mkdir(mode=0o700)
    target = tmp_path / "elsewhere"
    target.write_bytes(b"precious")
    (store_dir / "store.db").symlink_to(target)
    with pytest.raises(UnsafeFileError):
        open_store()
    assert target.read_bytes() == b"precious"
    assert corrupt_names(store_dir) == []


def test_files_exist_private_before_sqlite_opens_them(open_store, store_dir):
    seen: list[dict[str, int]] = []

    def watching(path: Path) -> Sqlite3Driver:
        files = [p for p in path.parent.iterdir() if "store.db" in p.name]
        seen.append({p.name: stat.S_IMODE(p.stat().st_mode) for p in files})
        return Sqlite3Driver(path)

    old = os.umask(0)
    try:
        open_store(driver=watching).close()
    finally:
        os.umask(old)
    assert seen[0] == {"store.db": 0o600, "store.db-wal": 0o600, "store.db-shm": 0o600}


# ---- the driver seam: environment errors ------------------------------------------------------------------


class FaultyDriver(InterceptingDriver):
    """The real driver, failing one statement with a given SQLite error code, or lying about a pragma."""

    fail_on: str = ""
    code: int = sqlite3.SQLITE_IOERR
    journal_mode: str | None = None

    def intercept(self, sql: str) -> list[Row] | None:
        if self.fail_on and sql.startswith(self.fail_on):
            error = sqlite3.OperationalError("injected")
            error.sqlite_errorcode = self.code
            raise error
        if self.journal_mode is not None and sql == "PRAGMA journal_mode=WAL":
            return [(self.journal_mode,)]
        return None


def driver(**settings: object) -> type[FaultyDriver]:
    return type("Configured", (FaultyDriver,), dict(settings))


def test_an_io_error_at_commit_is_not_acknowledged_and_closes_the_handle(open_store, caplog):
    store = open_store()
    store.put("ns", "kept", b"1")
    store.close()
    faulty = driver(code=sqlite3.SQLITE_IOERR_FSYNC)
    store = open_store(driver=faulty)
    faulty.fail_on = "COMMIT"  # the fsync of the next commit fails
    with pytest.raises(StorageError) as failure:
        store.put("ns", "lost", b"2")
    assert failure.value.errno == errno.EIO
    assert store.closed
    assert "store.io_failed" in caplog.messages
    with pytest.raises(StorageError):
        store.put("ns", "after", b"3")  # no silent retry on a handle whose fsync failed
    store = open_store()
    assert store.keys("ns") == ["kept"]


def test_a_full_disk_is_enospc_and_rolls_back(open_store):
    store = open_store(driver=driver(fail_on="INSERT INTO records", code=sqlite3.SQLITE_FULL))
    with pytest.raises(StorageError) as failure:
        store.append("q", b"x")
    assert failure.value.no_space
    assert not store.closed
    assert store.stats().namespaces == {}


@pytest.mark.parametrize(
    ("code", "expected"), [(sqlite3.SQLITE_BUSY, errno.EBUSY), (sqlite3.SQLITE_CANTOPEN, errno.EACCES)]
)
def test_lock_and_access_errors_at_open_never_move_the_store_aside(open_store, store_dir, code, expected):
    open_store().put("ns", "k", b"v")
    with pytest.raises(StorageError) as failure:
        open_store(driver=driver(fail_on="PRAGMA integrity_check", code=code))
    assert failure.value.errno == expected
    assert corrupt_names(store_dir) == []


def test_journal_mode_is_asserted(open_store, store_dir):
    with pytest.raises(StorageError, match="journal_mode"):
        open_store(driver=driver(journal_mode="delete"))
    assert corrupt_names(store_dir) == []
