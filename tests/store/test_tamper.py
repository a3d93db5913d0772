"""Tampering (ST-5, CR-2, CR-3): bit flips and truncations at 10,000 sampled positions, ciphertexts moved
between rows, edited columns, and nonce uniqueness over 200,000 seals.

The invariant everywhere: a read gives the record exactly as written, or a typed error (`IntegrityError`,
`NotFoundError`); never other plaintext, never an untyped exception, never a hang.
"""

from __future__ import annotations

import random
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from device_agent.errors import IntegrityError, NotFoundError
from device_agent.store import Store, StoreEvent, _crypto
from tests.store.conftest import raw_db, secret_kek

FLIP_CHUNKS = 4
FLIPS_PER_CHUNK = 2_000
TRUNCATIONS = 2_000
OPEN_BOUND = 5.0  # seconds for one open and full read of a tampered store; a hang is far beyond it
NOW = 1_800_000_000.0

Expected = tuple[dict[tuple[str, str], bytes], dict[int, bytes]]


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, Expected]:
    """A small closed store (its WAL folded in) and what it holds."""
    directory = tmp_path_factory.mktemp("pristine") / "store"
    rng = random.Random(7)  # noqa: S311
    keyed: dict[tuple[str, str], bytes] = {}
    queued: dict[int, bytes] = {}
    with Store.open(directory, kek=secret_kek(), clock=lambda: NOW) as store:
        for i in range(10):
            namespace = ("alpha", "beta")[i % 2]
            value = rng.randbytes(40 + 25 * i)
            store.put(namespace, f"key-{i}", value, ttl=10_000 if i % 3 == 0 else None)
            keyed[namespace, f"key-{i}"] = value
        values = [rng.randbytes(60 + 10 * i) for i in range(10)]
        queued = dict(zip(store.append_many("queue", values), values, strict=True))
    assert sorted(p.name for p in directory.iterdir()) == ["store.db"]
    return (directory / "store.db").read_bytes(), (keyed, queued)


def check_tampered(work: Path, content: bytes, expected: Expected, outcomes: dict[str, int]) -> None:
    """Open a store made of `content` and read everything: intact records or typed errors, in bounded time."""
    keyed, queued = expected
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(mode=0o700)
    (work / "store.db").write_bytes(content)
    (work / "store.db").chmod(0o600)
    events: list[StoreEvent] = []
    started = time.monotonic()
    with Store.open(work, kek=secret_kek(), clock=lambda: NOW, on_event=events.append) as store:
        names = {namespace for namespace, _ in keyed}
        for namespace in names:
            for key in {k for ns, k in keyed if ns == namespace} | set(store.keys(namespace)):
                try:
                    value = store.get(namespace, key)
                except (IntegrityError, NotFoundError) as error:
                    outcomes[type(error).__name__] = outcomes.get(type(error).__name__, 0) + 1
                    continue
                assert value == keyed[namespace, key]
                outcomes["intact"] = outcomes.get("intact", 0) + 1
        for seq, value in store.read_batch("queue", max_records=1000, max_bytes=1 << 30):
            assert value == queued[seq]
            outcomes["intact"] = outcomes.get("intact", 0) + 1
    assert time.monotonic() - started < OPEN_BOUND
    for event in events:
        outcomes[event.name] = outcomes.get(event.name, 0) + 1


def sample_offsets(content: bytes, count: int, seed: int) -> list[int]:
    """Half uniform over the file, half over its non-zero bytes (headers, cells): where flips matter most."""
    rng = random.Random(seed)  # noqa: S311
    live = [i for i, byte in enumerate(content) if byte]
    return [rng.randrange(len(content)) if i % 2 else rng.choice(live) for i in range(count)]


@pytest.mark.parametrize("chunk", range(FLIP_CHUNKS))
def test_single_bit_flips(pristine, scratch, chunk):
    content, expected = pristine
    rng = random.Random(1000 + chunk)  # noqa: S311
    outcomes: dict[str, int] = {}
    for offset in sample_offsets(content, FLIPS_PER_CHUNK, seed=chunk):
        damaged = bytearray(content)
        damaged[offset] ^= 1 << rng.randrange(8)
        check_tampered(scratch / "work", bytes(damaged), expected, outcomes)
    # The sample must exercise every path: intact reads, failed tags, and whole-file recovery.
    assert outcomes.get("intact", 0) > 0
    assert outcomes.get("store.integrity_failed", 0) > 0
    assert outcomes.get("store.corrupt_replaced", 0) > 0


def test_truncations(pristine, scratch):
    content, expected = pristine
    rng = random.Random(5)  # noqa: S311
    offsets = [0, 1, 99, 100, 4095, 4096, len(content) - 1]
    offsets += [rng.randrange(len(content)) for _ in range(TRUNCATIONS - len(offsets))]
    outcomes: dict[str, int] = {}
    for offset in offsets:
        check_tampered(scratch / "work", content[:offset], expected, outcomes)
    assert outcomes.get("store.corrupt_replaced", 0) > 0


def test_the_suite_samples_at_least_10000_positions():
    assert FLIP_CHUNKS * FLIPS_PER_CHUNK + TRUNCATIONS >= 10_000


# ---- rows edited on purpose (CR-3) ---------------------------------------------------------------------


@pytest.fixture
def edited(open_store, store_dir) -> Callable[[str, tuple[object, ...]], Store]:
    """A store with known rows; `edited(sql, params)` applies one raw edit to the closed file and reopens."""
    store = open_store(kek=secret_kek())
    store.put("one", "a", b"secret of a")
    store.put("one", "b", b"secret of b")
    store.put("two", "a", b"secret of two/a")
    store.append_many("queue", [b"first", b"second"])
    store.close()

    def edit(sql: str, params: tuple[object, ...] = ()) -> Store:
        with raw_db(store_dir / "store.db") as connection:
            connection.execute(sql, params)
        reopened: Store = open_store(kek=secret_kek())
        return reopened

    return edit


def fails(store: Store, namespace: str, key: str) -> bool:
    try:
        store.get(namespace, key)
    except IntegrityError:
        return True
    return False


def test_ciphertext_moved_to_another_key_fails(edited):
    store = edited(
        "UPDATE records SET sealed = (SELECT sealed FROM records WHERE key = 'a' AND namespace = 'one')"
        " WHERE key = 'b'"
    )
    assert fails(store, "one", "b")
    assert store.get("one", "a") == b"secret of a"
    assert store.stats().namespaces["one"].integrity_failures == 1


def test_ciphertext_moved_to_another_namespace_fails(edited):
    store = edited(
        "UPDATE records SET sealed = (SELECT sealed FROM records WHERE namespace = 'one' AND key = 'a'),"
        " key_id = (SELECT key_id FROM records WHERE namespace = 'one' AND key = 'a')"
        " WHERE namespace = 'two' AND key = 'a'"
    )
    assert fails(store, "two", "a")


def test_queue_entry_moved_onto_another_is_dropped_not_returned(edited):
    store = edited(
        "UPDATE records SET sealed = (SELECT sealed FROM records WHERE key IS NULL ORDER BY seq LIMIT 1)"
        " WHERE seq = (SELECT max(seq) FROM records WHERE key IS NULL)"
    )
    events: list[str] = []
    store._on_event = lambda event: events.append(event.name)
    assert [value for _, value in store.read_batch("queue")] == [b"first"]
    assert events == ["store.integrity_failed"]
    assert store.read_batch("queue") == store.read_batch("queue")  # the bad entry is gone, not met again
    assert store.stats().namespaces["queue"].dropped_records == 1


@pytest.mark.parametrize(
    "sql",
    [
        "UPDATE records SET key = 'moved' WHERE namespace = 'one' AND key = 'a'",
        "UPDATE records SET namespace = 'two', key = 'c' WHERE namespace = 'one' AND key = 'a'",
        "UPDATE records SET created = created + 1 WHERE key IS NOT NULL",
        "UPDATE records SET expires = 9e18 WHERE key IS NOT NULL",
        "UPDATE records SET seq = seq + 1000 WHERE key IS NOT NULL",
        "UPDATE records SET key_id = key_id + 1 WHERE key IS NOT NULL",
        "UPDATE records SET key_id = -1 WHERE key IS NOT NULL",
        "UPDATE records SET sealed = x'02' || substr(sealed, 2) WHERE key IS NOT NULL",  # format byte
        "UPDATE records SET sealed = substr(sealed, 1, 28) WHERE key IS NOT NULL",  # shorter than a tag
        "UPDATE records SET sealed = CAST(sealed AS TEXT) WHERE key IS NOT NULL",  # type flip
        "UPDATE records SET sealed = 42 WHERE key IS NOT NULL",
        # A record's kind is whether it has a key: keyed records turned into queue entries, and back.
        "UPDATE records SET key = NULL WHERE key IS NOT NULL",
        "UPDATE records SET key = 'k' WHERE seq = (SELECT min(seq) FROM records WHERE key IS NULL)",
        "UPDATE data_keys SET wrapped = (SELECT wrapped FROM data_keys WHERE namespace = 'two')",
        "UPDATE data_keys SET namespace = 'two' WHERE namespace = 'one'",
    ],
)
def test_edited_columns_never_yield_plaintext(edited, sql):
    store = edited(sql)
    every_row = "WHERE key IS NOT NULL" in sql or sql.startswith("UPDATE data_keys")
    originals = {("one", "a"): b"secret of a", ("one", "b"): b"secret of b", ("two", "a"): b"secret of two/a"}
    for namespace, key in (*originals, ("one", "moved"), ("two", "c"), ("queue", "k")):
        try:
            value = store.get(namespace, key)
        except (IntegrityError, NotFoundError):
            continue
        assert value == originals[namespace, key]
        assert not (every_row and namespace == "one")
    for namespace in ("one", "two", "queue"):  # nor as a queue entry
        assert all(value in (b"first", b"second") for _, value in store.read_batch(namespace))


def test_a_record_from_another_store_fails(tmp_path, clock):
    with Store.open(tmp_path / "x", kek=secret_kek(), clock=clock) as first:
        first.put("ns", "k", b"from x")
    with Store.open(tmp_path / "y", kek=secret_kek(), clock=clock) as second:
        second.put("ns", "k", b"from y")
    with raw_db(tmp_path / "x" / "store.db") as source:
        sealed, key_id = source.execute("SELECT sealed, key_id FROM records").fetchone()
    with raw_db(tmp_path / "y" / "store.db") as target:
        target.execute("UPDATE records SET sealed = ?, key_id = ?", (sealed, key_id))
    with Store.open(tmp_path / "y", kek=secret_kek(), clock=clock) as second, pytest.raises(IntegrityError):
        second.get("ns", "k")


def test_the_integrity_error_carries_no_bytes(edited):
    store = edited("UPDATE records SET sealed = CAST(sealed AS TEXT) WHERE key IS NOT NULL")
    with pytest.raises(IntegrityError) as failure:
        store.get("one", "a")
    assert failure.value.__cause__ is None
    assert "\\x" not in str(failure.value)
    assert "secret" not in str(failure.value)


# ---- nonces (CR-2) ---------------------------------------------------------------------------------------


NONCE_SEALS = 200_000
# Seals per write path: single puts and appends (one statement each, `seal_record`), and batches of 100
# through put_many and append_many (one `os.urandom` call for the nonces of a batch, `seal_records`).
SINGLE_PUTS, SINGLE_APPENDS, BATCH = 10_000, 10_000, 100


def test_no_nonce_repeats_over_200000_seals_through_the_write_paths(scratch):
    """Every seal the engine makes for a record, through each of its write paths, leaves its nonce in the
    row; 200,000 rows, read back from SQLite, hold 200,000 distinct 12-byte nonces."""
    batches = (NONCE_SEALS - SINGLE_PUTS - SINGLE_APPENDS) // BATCH
    with Store.open(scratch / "nonces", kek=secret_kek(), clock=lambda: NOW) as store:
        for i in range(SINGLE_PUTS):
            store.put("keyed", f"single-{i}", b"v")
        for _ in range(SINGLE_APPENDS):
            store.append("queue", b"v")
        for b in range(batches):
            if b == batches // 2:
                store.rotate()  # a new data key half-way: both keys' seals must still differ
            if b % 2:
                store.put_many("keyed", [(f"batch-{b}-{i}", b"v") for i in range(BATCH)])
            else:
                store.append_many("queue", [b"v"] * BATCH)
        # Every record is still there (no key was replaced): each row is one seal.
        assert store.stats().namespaces["keyed"].records + store.stats().namespaces["queue"].records == (
            NONCE_SEALS
        )
    with raw_db(scratch / "nonces" / "store.db") as connection:
        rows = connection.execute(
            "SELECT substr(sealed, 1, 1), substr(sealed, 2, ?), key_id FROM records", (_crypto.NONCE_BYTES,)
        ).fetchall()
    assert len(rows) == NONCE_SEALS
    assert {fmt for fmt, _, _ in rows} == {bytes([_crypto.FORMAT_VERSION])}
    nonces = {nonce for _, nonce, _ in rows}
    assert len(nonces) == NONCE_SEALS
    assert {len(nonce) for nonce in nonces} == {_crypto.NONCE_BYTES}
    assert len({key_id for _, _, key_id in rows}) == 4  # two namespaces, each before and after rotation


def test_stored_records_carry_a_fresh_12_byte_nonce(open_store, store_dir):
    store = open_store()
    for _ in range(50):
        store.put("ns", "same", b"same value")  # same key and value: a fresh nonce every time
        store.append("q", b"same value")
    store.close()
    with raw_db(store_dir / "store.db") as connection:
        blobs = [row[0] for row in connection.execute("SELECT sealed FROM records")]
    assert all(len(blob) == len(b"same value") + _crypto.OVERHEAD for blob in blobs)
    assert len({blob[1:13] for blob in blobs}) == len(blobs)


def test_sealed_values_hide_the_plaintext(open_store, store_dir):
    store = open_store()
    store.put("ns", "k", b"PLAINTEXT-MARKER" * 4)
    store.close()
    assert b"PLAINTEXT-MARKER" not in (store_dir / "store.db").read_bytes()
