"""The store's behaviour: round trips, namespaces, TTL, quotas and overflow, queues, pragmas, file modes."""

from __future__ import annotations

import errno
import inspect
import os
import stat
from pathlib import Path

import pytest

from device_agent.errors import InvalidInputError, NotFoundError, StorageError
from device_agent.store import NamespacePolicy, Store, StoreEvent
from tests.store.conftest import Clock


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def test_round_trip_and_namespaces(open_store):
    store = open_store()
    store.put("alpha", "k", b"one")
    store.put("beta", "k", b"two")
    store.put("alpha", "k2", b"")
    store.put_many("alpha", [("x", b"\x00" * 1000), ("y", bytearray(b"by"))])
    assert store.get("alpha", "k") == b"one"
    assert store.get("beta", "k") == b"two"
    assert store.get("alpha", "k2") == b""
    assert store.get("alpha", "y") == b"by"
    assert store.keys("alpha") == ["k", "k2", "x", "y"]
    store.put("alpha", "k", b"replaced")
    assert store.get("alpha", "k") == b"replaced"
    assert store.delete("alpha", "k") is True
    assert store.delete("alpha", "k") is False
    with pytest.raises(NotFoundError):
        store.get("alpha", "k")
    with pytest.raises(NotFoundError):
        store.get("gamma", "k")
    stats = store.stats().namespaces
    assert stats["alpha"].records == 3
    assert stats["alpha"].value_bytes == 1002


def test_survives_reopen(open_store):
    store = open_store()
    store.put("ns", "a", b"1")
    seq = store.append("q", b"first")
    store.close()
    again = open_store()
    assert again.get("ns", "a") == b"1"
    assert again.read_batch("q") == [(seq, b"first")]


def test_every_key_length_and_expiry_reads_back(open_store, clock):
    """A get builds its associated data apart from a put's (one `struct` per key length): both must agree
    for keys of any size in UTF-8 bytes, with and without an expiry, written alone or in a batch."""
    store = open_store()
    keys = ["k", "clé", "ключ-日本", "x" * 512, "é" * 256]
    for number, key in enumerate(keys):
        store.put("ns", key, b"alone %d" % number, ttl=None if number % 2 else 60)
    store.put_many("batch", [(key, b"batched") for key in keys], ttl=30)
    assert [store.get("ns", key) for key in keys] == [b"alone %d" % n for n in range(len(keys))]
    assert {store.get("batch", key) for key in keys} == {b"batched"}
    clock.advance(45)  # the batch has expired; the alone records with a ttl have not
    with pytest.raises(NotFoundError):
        store.get("batch", "clé")
    assert store.get("ns", "x" * 512) == b"alone 3"


@pytest.mark.parametrize("namespace", ["", "a/b", "+", "#", "x" * 65, "-lead", "spa ce", 7, None])
def test_invalid_namespaces_are_refused(open_store, namespace):
    store = open_store()
    with pytest.raises(InvalidInputError):
        store.put(namespace, "k", b"v")


@pytest.mark.parametrize("key", ["", "nul\x00", "x" * 513, 5, "\ud800"])
def test_invalid_keys_are_refused(open_store, key):
    store = open_store()
    with pytest.raises(InvalidInputError):
        store.put("ns", key, b"v")


def test_invalid_values_and_arguments_are_refused(open_store):
    store = open_store(max_value_bytes=10)
    with pytest.raises(InvalidInputError):
        store.put("ns", "k", "text")
    with pytest.raises(InvalidInputError):
        store.put("ns", "k", b"x" * 11)
    for ttl in (0, -1, float("nan"), float("inf"), True):
        with pytest.raises(InvalidInputError):
            store.put("ns", "k", b"v", ttl=ttl)
    with pytest.raises(InvalidInputError):
        store.read_batch("ns", max_records=0)
    with pytest.raises(InvalidInputError):
        store.ack("ns", -1)
    with pytest.raises(InvalidInputError):
        NamespacePolicy(max_records=0)
    with pytest.raises(InvalidInputError):
        NamespacePolicy(overflow="sometimes")  # type: ignore[arg-type]
    assert store.keys("ns") == []


def test_no_public_method_takes_a_nonce():
    for name, member in inspect.getmembers(Store, inspect.isfunction):
        if not name.startswith("_"):
            parameters = inspect.signature(member).parameters
            assert not any("nonce" in p or p in ("iv", "key_id") for p in parameters), name


def test_pragmas_are_asserted(open_store):
    store = open_store()
    assert store.pragmas() == {"journal_mode": "wal", "synchronous": 2, "secure_delete": 1}


@pytest.mark.parametrize("umask", [0o022, 0o000])
def test_files_are_private_whatever_the_umask(tmp_path, clock, umask):
    old = os.umask(umask)
    try:
        directory = tmp_path / "deep" / "store"
        with Store.open(directory, clock=clock) as store:
            store.put("ns", "k", b"v")
            names = {p.name: mode_of(p) for p in directory.iterdir()}
            assert set(names) == {"store.db", "store.db-wal", "store.db-shm", "store.key"}
            assert set(names.values()) == {0o600}
        assert mode_of(directory) == 0o700
        assert mode_of(directory.parent) == 0o700
    finally:
        os.umask(old)


def test_ttl_hides_then_purges(open_store, clock: Clock):
    events: list[StoreEvent] = []
    store = open_store(policies={"short": NamespacePolicy(ttl=5)}, on_event=events.append)
    store.put("ns", "lives", b"1")
    store.put("ns", "dies", b"2", ttl=10)
    store.append("short", b"q")
    clock.advance(6)
    assert store.read_batch("short") == []
    assert store.get("ns", "dies") == b"2"
    clock.advance(5)
    with pytest.raises(NotFoundError):
        store.get("ns", "dies")
    assert store.keys("ns") == ["lives"]
    assert store.purge_expired() == 2
    assert store.purge_expired() == 0
    stats = store.stats().namespaces
    assert stats["ns"].expired == 1
    assert stats["short"].expired == 1
    assert stats["ns"].records == 1


def test_expired_records_are_purged_at_open(open_store, clock: Clock):
    store = open_store()
    store.put("ns", "k", b"v", ttl=1)
    store.close()
    clock.advance(2)
    again = open_store()
    assert again.stats().namespaces["ns"].expired == 1


def test_reject_policy_refuses_with_edquot_and_counts(open_store):
    store = open_store(policies={"q": NamespacePolicy(max_records=3)})
    seqs = [store.append("q", b"x") for _ in range(3)]
    with pytest.raises(StorageError) as refused:
        store.append("q", b"y")
    assert refused.value.errno == errno.EDQUOT
    assert refused.value.no_space
    with pytest.raises(StorageError):
        store.append_many("q", [b"a", b"b"])
    assert [seq for seq, _ in store.read_batch("q")] == seqs
    stats = store.stats().namespaces["q"]
    assert stats.rejected == 3
    assert stats.records == 3
    store.ack("q", seqs[0])
    store.append("q", b"fits")


def test_reject_policy_bytes_and_oversized_values(open_store):
    store = open_store(
        policies={
            "b": NamespacePolicy(max_bytes=10),
            "d": NamespacePolicy(max_bytes=10, overflow="drop_oldest"),
        }
    )
    store.put("b", "k", b"12345678")
    store.put("b", "k", b"1234567890")  # replacing frees the old value's room first
    with pytest.raises(StorageError):
        store.put("b", "other", b"1")
    for namespace in ("b", "d"):
        with pytest.raises(StorageError):
            store.append(namespace, b"x" * 11)  # can never fit, whatever the policy
    assert store.get("b", "k") == b"1234567890"


def test_drop_oldest_counts_what_it_dropped(open_store):
    events: list[StoreEvent] = []
    policy = NamespacePolicy(max_records=5, max_bytes=40, overflow="drop_oldest")
    store = open_store(policies={"q": policy}, on_event=events.append)
    seqs = [store.append("q", bytes([i]) * 4) for i in range(5)]
    more = store.append_many("q", [b"a" * 4, b"b" * 4])
    remaining = store.read_batch("q")
    assert [seq for seq, _ in remaining] == seqs[2:] + more
    store.append("q", b"z" * 30)  # bytes now bind: 5 records of 4 + 30 > 40
    stats = store.stats().namespaces["q"]
    assert stats.records * 4 + 26 == stats.value_bytes
    assert stats.dropped_records == 2 + 3
    assert stats.dropped_bytes == 20
    assert stats.value_bytes <= 40
    drops = [e for e in events if e.name == "store.records_dropped"]
    assert sum(int(e.details["records"]) for e in drops) == 5


def test_quota_purges_expired_before_refusing(open_store, clock: Clock):
    store = open_store(policies={"q": NamespacePolicy(max_records=2)})
    store.append("q", b"old", ttl=1)
    store.append("q", b"old", ttl=1)
    clock.advance(2)
    store.append("q", b"new")
    assert [value for _, value in store.read_batch("q")] == [b"new"]


def test_set_policy_applies_to_the_next_write(open_store):
    store = open_store()
    store.append("q", b"1")
    store.set_policy("q", NamespacePolicy(max_records=1))
    with pytest.raises(StorageError):
        store.append("q", b"2")
    store.set_policy("q", None)
    store.append("q", b"2")


def test_queue_order_batches_and_ack(open_store):
    store = open_store()
    values = [bytes([i]) * (i + 1) for i in range(10)]
    seqs = store.append_many("q", values)
    assert seqs == sorted(seqs)
    assert len(set(seqs)) == 10
    assert store.read_batch("q", max_records=3) == list(zip(seqs[:3], values[:3], strict=True))
    assert store.read_batch("q", max_bytes=6) == list(zip(seqs[:3], values[:3], strict=True))
    assert store.read_batch("q", max_bytes=1) == [(seqs[0], values[0])]
    assert store.ack("q", seqs[3]) == 4
    assert store.ack("q", seqs[3]) == 0
    assert store.read_batch("q", max_records=100)[0] == (seqs[4], values[4])
    big = store.append("big", b"x" * 100)
    assert store.read_batch("big", max_bytes=10) == [(big, b"x" * 100)]  # never stalls on one big entry
    assert store.read_batch("empty") == []


def test_queue_and_keys_do_not_mix(open_store):
    store = open_store()
    store.put("ns", "k", b"keyed")
    seq = store.append("ns", b"queued")
    assert store.read_batch("ns") == [(seq, b"queued")]
    assert store.keys("ns") == ["k"]
    store.ack("ns", seq + 100)
    assert store.get("ns", "k") == b"keyed"


def test_sequence_numbers_never_repeat(open_store, store_dir):
    store = open_store(policies={"q": NamespacePolicy(max_records=2, overflow="drop_oldest")})
    issued = store.append_many("q", [b"1", b"2", b"3"])
    store.ack("q", issued[-1])
    store.close()
    store = open_store()
    issued.append(store.append("q", b"4"))
    store.put("ns", "k", b"v")
    issued.append(store.append("other", b"5"))
    store.ack("q", issued[-1])
    store.close()
    store = open_store()
    issued.append(store.append("q", b"6"))
    assert issued == sorted(issued)
    assert len(set(issued)) == len(issued)


def test_store_repr_and_closed_state(open_store, store_dir):
    store = open_store()
    assert "open" in repr(store)
    assert store.path == store_dir / "store.db"
    store.close()
    store.close()
    assert store.closed
    with pytest.raises(StorageError):
        store.put("ns", "k", b"v")


def test_event_hook_failures_do_not_break_the_store(open_store):
    def broken(event: StoreEvent) -> None:
        raise RuntimeError("observer bug")

    policy = NamespacePolicy(max_records=1, overflow="drop_oldest")
    store = open_store(policies={"q": policy}, on_event=broken)
    store.append("q", b"1")
    store.append("q", b"2")
    assert len(store.read_batch("q")) == 1


def test_a_database_name_cannot_leave_the_directory(tmp_path):
    for name in ("../x.db", "a/b.db", "", "..", "x.corrupt-1"):
        with pytest.raises(ValueError):
            Store.open(tmp_path / "s", name=name)
