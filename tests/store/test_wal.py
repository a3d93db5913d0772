"""The WAL check at open (`device_agent.store._wal`): a damaged frame that would make SQLite drop committed
transactions is found before SQLite replays the WAL; what a crash leaves is not mistaken for it.

The sampled flips are in tests/store/test_tamper.py; these are the cases one by one.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from device_agent.errors import UnsafeFileError
from device_agent.store import Store, StoreEvent, _wal
from tests.store.conftest import secret_kek

NOW = 1_800_000_000.0


def crashed_store(directory: Path, transactions: int = 6) -> tuple[bytes, bytes]:
    """The database and WAL of a store that committed `transactions` puts and never closed (as a crash
    leaves them)."""
    store = Store.open(directory, kek=secret_kek(), clock=lambda: NOW)
    for i in range(transactions):
        store.put("ns", f"k{i}", f"value {i}".encode())
    files = (directory / "store.db").read_bytes(), (directory / "store.db-wal").read_bytes()
    store.close()
    return files


def frame_offset(wal: bytes, frame: int) -> int:
    return _wal.HEADER_BYTES + frame * (_wal.FRAME_HEADER_BYTES + int.from_bytes(wal[8:12], "big"))


def write(directory: Path, database: bytes, wal: bytes) -> Path:
    directory.mkdir(mode=0o700)
    for name, content in (("store.db", database), ("store.db-wal", wal)):
        (directory / name).write_bytes(content)
        (directory / name).chmod(0o600)
    return directory / "store.db-wal"


def test_a_whole_wal_and_what_a_crash_leaves_are_not_damage(tmp_path):
    database, wal = crashed_store(tmp_path / "source")
    assert _wal.damage(write(tmp_path / "whole", database, wal)) is None
    assert _wal.damage(tmp_path / "whole" / "missing-wal") is None
    for cut in (0, 5, _wal.HEADER_BYTES, frame_offset(wal, 3) + 100, len(wal) - 1):
        assert _wal.damage(write(tmp_path / f"cut-{cut}", database, wal[:cut])) is None


def test_a_damaged_frame_with_committed_transactions_after_it_is_found(tmp_path):
    database, wal = crashed_store(tmp_path / "source")
    damaged = bytearray(wal)
    damaged[frame_offset(wal, 1) + _wal.FRAME_HEADER_BYTES + 200] ^= 0x10  # a page bit of an early frame
    reason = _wal.damage(write(tmp_path / "work", database, bytes(damaged)))
    assert reason is not None
    assert "committed transactions behind a damaged frame" in reason


def test_the_store_recovers_a_damaged_wal_and_reports_it(tmp_path):
    database, wal = crashed_store(tmp_path / "source")
    damaged = bytearray(wal)
    damaged[frame_offset(wal, 1) + 20] ^= 0x01  # the stored checksum of an early frame
    write(tmp_path / "work", database, bytes(damaged))
    events: list[StoreEvent] = []
    with Store.open(tmp_path / "work", kek=secret_kek(), clock=lambda: NOW, on_event=events.append) as store:
        [event] = events
        assert event.name == "store.corrupt_replaced"
        assert "WAL" in str(event.details["reason"])
        survivors = store.keys("ns")
    assert len(survivors) < 6  # the transactions behind the damage are lost, but not silently
    # The damaged files are kept aside, WAL included, for whoever looks into it.
    assert any(p.name.endswith("-wal") and ".corrupt-" in p.name for p in (tmp_path / "work").iterdir())


def test_an_unsafe_wal_file_is_refused_not_read(tmp_path):
    database, wal = crashed_store(tmp_path / "source")
    path = write(tmp_path / "work", database, wal)
    path.chmod(0o644)
    with pytest.raises(UnsafeFileError):
        _wal.damage(path)
