"""Writes in bulk: `put_many` and `append_many` give the same result as the same records written one by one
(values, order, statistics, quotas), whatever mix of new and taken keys, sizes, expiry and batch lengths."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import pytest

from device_agent.errors import StorageError
from device_agent.store import NamespacePolicy, Store
from tests.store.conftest import Clock, InterceptingDriver


class FailingInsert(InterceptingDriver):
    """The real driver, failing the `fail_at`-th INSERT INTO records (counted per configured class)."""

    fail_at = 0
    inserts = 0

    def intercept(self, sql: str) -> None:
        if sql.startswith("INSERT INTO records"):
            type(self).inserts += 1
            if type(self).inserts == self.fail_at:
                raise StorageError("injected failure of an INSERT")


def failing_insert(fail_at: int) -> type[FailingInsert]:
    return type("Configured", (FailingInsert,), {"fail_at": fail_at})


def contents(store: Store, namespaces: Sequence[str]) -> dict[str, Any]:
    """Everything a caller can see of `namespaces`, to compare two stores."""
    seen: dict[str, Any] = {}
    for ns in namespaces:
        seen[ns] = {key: store.get(ns, key) for key in store.keys(ns)}
        stats = store.stats().namespaces.get(ns)
        seen[ns + "/stats"] = None if stats is None else (stats.records, stats.value_bytes)
    return seen


def test_a_key_given_twice_keeps_its_last_value_in_the_place_of_its_last_occurrence(open_store):
    store = open_store()
    store.put_many("ns", [("a", b"1"), ("b", b"2"), ("a", b"3")])
    assert store.get("ns", "a") == b"3"
    assert store.stats().namespaces["ns"].records == 2
    store.set_policy("ns", NamespacePolicy(max_records=2, overflow="drop_oldest"))
    store.put("ns", "c", b"4")  # one by one, "a" was written after "b": "b" is the oldest
    assert store.keys("ns") == ["a", "c"]


def test_batches_match_the_same_writes_one_by_one(open_store, store_dir, tmp_path, clock: Clock):
    batched = open_store()
    single = open_store(directory=tmp_path / "single")
    rng = random.Random(7)  # noqa: S311 - reproducible test data
    names = [f"k{i}" for i in range(300)]
    for step in range(40):
        ns = rng.choice(("one", "two"))
        # New keys, taken keys, repeated keys, in batches across the 64-row statements.
        count = rng.choice((1, 2, 63, 64, 65, 150))
        items = [(rng.choice(names), rng.randbytes(rng.randrange(0, 300))) for _ in range(count)]
        ttl = rng.choice((None, None, 50.0))
        batched.put_many(ns, items, ttl=ttl)
        for key, value in items:
            single.put(ns, key, value, ttl=ttl)
        if step % 7 == 3:
            batched.delete(ns, items[0][0])
            single.delete(ns, items[0][0])
        if step % 5 == 4:
            clock.advance(20.0)
        assert contents(batched, ("one", "two")) == contents(single, ("one", "two")), step
    assert batched.purge_expired() == single.purge_expired()
    expected = contents(single, ("one", "two"))
    batched.close()
    assert contents(open_store(), ("one", "two")) == expected  # the usage recounted from the file agrees


def test_appends_in_bulk_keep_their_order_and_numbers(open_store):
    store = open_store()
    values = [b"%d" % i for i in range(150)]
    seqs = store.append_many("q", values, ttl=60)
    assert seqs == list(range(seqs[0], seqs[0] + 150))
    assert store.read_batch("q", max_records=1000) == list(zip(seqs, values, strict=True))
    assert store.stats().namespaces["q"].value_bytes == sum(map(len, values))


def test_bulk_writes_near_a_quota_follow_it_record_by_record(open_store):
    policy = NamespacePolicy(max_records=100, overflow="drop_oldest")
    store = open_store(policies={"q": policy, "kv": policy})
    first = store.append_many("q", [b"x"] * 90)
    later = store.append_many("q", [b"y"] * 30)  # 20 of the oldest make room, one at a time
    assert [seq for seq, _ in store.read_batch("q", max_records=1000)] == first[20:] + later
    assert store.stats().namespaces["q"].dropped_records == 20
    store.put_many("kv", [(f"k{i}", b"v") for i in range(100)])
    store.put_many("kv", [("k0", b"new"), ("k100", b"w")])  # k0 is replaced, not dropped; k1 makes room
    assert store.get("kv", "k0") == b"new"
    assert "k1" not in store.keys("kv")
    assert len(store.keys("kv")) == 100


def test_a_batch_that_fails_part_way_leaves_nothing(open_store):
    store = open_store(driver=failing_insert(4))
    store.put_many("ns", [(f"a{i}", b"v") for i in range(10)])  # INSERTs 1 and 2 (pieces of 8 and 2 rows)
    before = store.stats().namespaces["ns"]
    with pytest.raises(StorageError, match="injected"):
        store.put_many("ns", [(f"b{i}", b"v") for i in range(100)])  # 64 rows go in, the next 32 fail
    assert store.stats().namespaces["ns"] == before
    assert store.keys("ns") == [f"a{i}" for i in range(10)]
    seqs = store.append_many("q", [b"1", b"2"])
    assert seqs == sorted(seqs)
    store.put_many("ns", [(f"b{i}", b"v") for i in range(100)])
    assert len(store.keys("ns")) == 110
