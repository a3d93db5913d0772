"""Reserved counters: a data key's seal count and the sequence numbers are written a block ahead, once per
block, and a store that opens goes on past the written bound, so neither is ever under-counted or reused,
whatever crashed (a kill, which keeps every write, and a power loss, which keeps only the synced ones)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from device_agent.devkit.crashsim import Exploration, Session, materialised, run_workload
from device_agent.errors import StorageError
from device_agent.store import KeyFile, Store, StoreEvent, _keyring, _lifecycle
from tests.store.conftest import InterceptingDriver, raw_db


class Watching(InterceptingDriver):
    """The real driver, keeping every statement in `seen` and failing the `fail_at`-th INSERT INTO records."""

    seen: list[str]
    fail_at = 0
    inserts = 0

    def intercept(self, sql: str) -> None:
        self.seen.append(sql)
        if sql.startswith("INSERT INTO records"):
            type(self).inserts += 1
            if type(self).inserts == self.fail_at:
                raise StorageError("injected failure of an INSERT")


def watching(**settings: object) -> type[Watching]:
    return type("Configured", (Watching,), {"seen": [], **settings})


def crash_copy(store_dir: Path, target: Path) -> Path:
    """The store's files as a `kill -9` leaves them (every committed write, no checkpoint), elsewhere."""
    target.mkdir(mode=0o700)
    for name in ("store.db", "store.db-wal", "store.key"):
        shutil.copy2(store_dir / name, target / name)
    return target


def seals_written(path: Path) -> dict[str, int]:
    with raw_db(path) as connection:
        return dict(connection.execute("SELECT namespace, seals FROM data_keys WHERE active = 1").fetchall())


def seq_reserved(path: Path) -> int:
    with raw_db(path) as connection:
        (value,) = connection.execute("SELECT value FROM meta WHERE name = 'seq_reserved'").fetchone()
    return int(value)


# ---- seals ----------------------------------------------------------------------------------------------


def test_a_seal_count_is_written_once_per_reservation(open_store, monkeypatch):
    monkeypatch.setattr(_keyring, "SEAL_RESERVATION", 10)
    driver = watching()
    store = open_store(driver=driver)
    for i in range(25):
        store.append("q", b"%d" % i)
    store.put_many("kv", [(f"k{i}", b"v") for i in range(7)])
    updates = [sql for sql in driver.seen if sql.startswith("UPDATE data_keys SET seals")]
    assert len(updates) == 4  # q: bounds 10, 20, 30; kv: 7 seals within its first bound of 16
    assert seals_written(store.path) == {"q": 30, "kv": 16}


def test_the_seal_limit_holds_across_a_crash(open_store, store_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(_keyring, "SEAL_RESERVATION", 10)
    store = open_store(seal_limit=25)
    for _ in range(13):
        store.append("q", b"x")
    first = store.stats().active_key_ids["q"]
    assert seals_written(store.path) == {"q": 20}
    crashed = open_store(directory=crash_copy(store_dir, tmp_path / "crashed"), seal_limit=25)
    # The crashed store cannot know that only 13 of its 20 reserved seals were used: it goes on from 20,
    # so the key seals 5 more records, never 12 (25 - 13) and certainly never 25.
    for _ in range(6):
        crashed.append("q", b"y")
    assert crashed.stats().active_key_ids["q"] == first + 1
    with raw_db(crashed.path) as connection:
        per_key = dict(connection.execute("SELECT key_id, count(*) FROM records GROUP BY key_id").fetchall())
    assert per_key == {first: 13 + 5, first + 1: 1}


def test_seals_of_a_rolled_back_transaction_still_count(open_store):
    driver = watching(fail_at=2)
    store = open_store(seal_limit=3, driver=driver)
    store.append("q", b"1")
    first = store.stats().active_key_ids["q"]
    with pytest.raises(StorageError, match="injected"):
        store.append("q", b"2")  # sealed (a nonce drawn), then rolled back
    store.append("q", b"3")
    assert store.stats().active_key_ids["q"] == first  # three seals so far: at the limit, not past it
    store.append("q", b"4")
    assert store.stats().active_key_ids["q"] == first + 1
    assert [value for _, value in store.read_batch("q")] == [b"1", b"3", b"4"]


# ---- sequence numbers -----------------------------------------------------------------------------------


def test_sequence_numbers_are_reserved_once_per_block(open_store, monkeypatch):
    monkeypatch.setattr(_lifecycle, "SEQ_RESERVATION", 8)
    driver = watching()
    store = open_store(driver=driver)
    issued = [store.append("q", b"x") for _ in range(20)]
    assert issued == list(range(1, 21))
    updates = [sql for sql in driver.seen if sql.startswith("UPDATE meta SET value")]
    assert len(updates) == 3  # bounds 8, 16, 24
    assert seq_reserved(store.path) == 24


def test_sequence_numbers_go_on_past_the_bound_after_a_crash(open_store, store_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(_lifecycle, "SEQ_RESERVATION", 8)
    store = open_store()
    issued = store.append_many("q", [b"a", b"b", b"c"])
    assert store.ack("q", issued[-1]) == 3  # nothing left in the file remembers these numbers but the bound
    assert seq_reserved(store.path) == 3 + 8 - 1
    crashed = open_store(directory=crash_copy(store_dir, tmp_path / "crashed"))
    after = crashed.append("q", b"d")
    assert after == 11  # past the bound: numbers 4 to 10 are skipped, none reused
    assert crashed.read_batch("q") == [(after, b"d")]
    assert seq_reserved(crashed.path) >= after


def test_a_batch_reserves_what_it_needs_at_once(open_store, monkeypatch):
    monkeypatch.setattr(_lifecycle, "SEQ_RESERVATION", 8)
    store = open_store()
    assert store.append_many("q", [b"x"] * 30) == list(range(1, 31))
    assert seq_reserved(store.path) == 30 + 8 - 1


def test_a_damaged_sequence_bound_is_treated_as_corruption(open_store, store_dir):
    store = open_store()
    issued = store.append_many("q", [b"a", b"b"])
    store.put("ns", "k", b"v")
    store.close()
    with raw_db(store_dir / "store.db") as connection:
        connection.execute("UPDATE meta SET value = 'x' WHERE name = 'seq_reserved'")
    events: list[StoreEvent] = []
    store = open_store(on_event=events.append)
    [event] = [e for e in events if e.name == "store.corrupt_replaced"]
    assert (event.details["reason"], event.details["salvaged"]) == ("metadata is damaged", 3)
    assert store.read_batch("q") == [(issued[0], b"a"), (issued[1], b"b")]
    assert store.get("ns", "k") == b"v"
    assert store.append("q", b"c") > issued[-1]


# ---- power loss ----------------------------------------------------------------------------------------


def _setup(directory: Path) -> None:
    Store.open(directory / "store", kek=KeyFile(directory / "kek")).close()


def _workload(session: Session) -> None:
    with Store.open(
        session.directory / "store", kek=KeyFile(session.directory / "kek"), driver=session.driver_factory()
    ) as store:
        seq = 0
        for i in range(30):
            if i % 3 == 2:
                store.put("state", f"k{i}", b"v")
                session.acknowledge(("state", i))
            else:
                seq = store.append("spool", b"v")
                session.acknowledge(("spool", seq))
            if i == 15:
                store.ack("spool", seq)  # acknowledged numbers vanish from the table; never reissued


def test_reserved_bounds_cover_every_acknowledged_write_in_every_power_loss_image(monkeypatch):
    monkeypatch.setattr(_keyring, "SEAL_RESERVATION", 3)
    monkeypatch.setattr(_lifecycle, "SEQ_RESERVATION", 3)
    checked = 0
    exploration = Exploration(exhaustive_limit=3, prefixes=4, torn=2, random=2)
    for image in run_workload(_workload, seed=23, setup=_setup, exploration=exploration):
        acknowledged: list[tuple[str, int]] = list(image.acknowledged)  # type: ignore[arg-type]
        spool = [seq for kind, seq in acknowledged if kind == "spool"]
        with materialised(image) as directory:
            events: list[StoreEvent] = []
            kek = KeyFile(directory / "kek")
            with Store.open(directory / "store", kek=kek, on_event=events.append) as store:
                assert events == [], image.label
                db = store._db
                bounds: dict[str, int] = dict(
                    db.query("SELECT namespace, seals FROM data_keys WHERE active = 1")
                )
                per_namespace: dict[str, int] = dict(
                    db.query("SELECT namespace, count(*) FROM records GROUP BY namespace")
                )
                reserved = db.scalar("SELECT value FROM meta WHERE name = 'seq_reserved'")
                highest = db.scalar("SELECT max(seq) FROM records") or 0
                for namespace in ("state", "spool"):
                    sealed = sum(1 for kind, _ in acknowledged if kind == namespace)
                    assert bounds.get(namespace, 0) >= max(sealed, per_namespace.get(namespace, 0)), (
                        image.label
                    )
                assert reserved >= max([highest, *spool]), image.label
                assert store.append("spool", b"after") > max(spool, default=0), image.label
        checked += 1
    assert checked >= 250
