"""Tampering (ST-5, CR-2, CR-3): 10,000 distinct single-bit flips and 2,000 distinct truncations of a store
file, bit flips in a WAL that was never checkpointed, ciphertexts moved between rows, edited columns, and
nonce uniqueness over 200,000 seals.

The invariant everywhere: a read gives the record exactly as written, or a typed error (`IntegrityError`,
`NotFoundError`); never other plaintext, never an untyped exception, never a hang.
"""

from __future__ import annotations

import dataclasses
import random
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from device_agent.errors import IntegrityError, NotFoundError
from device_agent.store import Store, StoreEvent, _crypto
from tests.store.conftest import raw_db, secret_kek

FLIP_CHUNKS = 5
FLIPS_PER_CHUNK = 2_000
TRUNCATIONS = 2_000
WAL_FRAME_HEADER_FLIPS = 250
WAL_PAGE_FLIPS = 300
WAL_HEADER_SALTS = range(16, 24)
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


def flip_positions(content: bytes, count: int, seed: int) -> list[tuple[int, int]]:
    """`count` distinct (offset, bit) positions: half among the bits of non-zero bytes (headers, cells:
    where flips matter most), half among all the others, uniformly, none drawn twice."""
    rng = random.Random(seed)  # noqa: S311
    live = [8 * offset + bit for offset, byte in enumerate(content) if byte for bit in range(8)]
    chosen = rng.sample(live, count // 2)
    taken = set(chosen)
    while len(chosen) < count:
        position = rng.randrange(8 * len(content))
        if position not in taken:
            taken.add(position)
            chosen.append(position)
    rng.shuffle(chosen)
    return [divmod(position, 8) for position in chosen]


def truncation_offsets(content: bytes, count: int, seed: int) -> list[int]:
    """`count` distinct offsets to cut the file at: the edges of the header and first page, then uniform."""
    edges = [0, 1, 99, 100, 4095, 4096, len(content) - 1]
    rest = sorted(set(range(len(content))) - set(edges))
    return edges + random.Random(seed).sample(rest, count - len(edges))  # noqa: S311


@pytest.fixture(scope="module")
def flips(pristine: tuple[bytes, Expected]) -> list[tuple[int, int]]:
    return flip_positions(pristine[0], FLIP_CHUNKS * FLIPS_PER_CHUNK, seed=11)


@pytest.mark.parametrize("chunk", range(FLIP_CHUNKS))
def test_single_bit_flips(pristine, flips, scratch, chunk):
    content, expected = pristine
    outcomes: dict[str, int] = {}
    for offset, bit in flips[chunk * FLIPS_PER_CHUNK : (chunk + 1) * FLIPS_PER_CHUNK]:
        damaged = bytearray(content)
        damaged[offset] ^= 1 << bit
        check_tampered(scratch / "work", bytes(damaged), expected, outcomes)
    # The sample must exercise every path: intact reads, failed tags, and whole-file recovery.
    assert outcomes.get("intact", 0) > 0
    assert outcomes.get("store.integrity_failed", 0) > 0
    assert outcomes.get("store.corrupt_replaced", 0) > 0


def test_truncations(pristine, scratch):
    content, expected = pristine
    outcomes: dict[str, int] = {}
    for offset in truncation_offsets(content, TRUNCATIONS, seed=5):
        check_tampered(scratch / "work", content[:offset], expected, outcomes)
    assert outcomes.get("store.corrupt_replaced", 0) > 0


def test_the_suite_samples_at_least_10000_distinct_positions(pristine, flips):
    content, _ = pristine
    assert len(set(flips)) == len(flips) >= 10_000
    assert all(0 <= offset < len(content) and 0 <= bit < 8 for offset, bit in flips)
    cuts = truncation_offsets(content, TRUNCATIONS, seed=5)
    assert len(set(cuts)) == len(cuts) == TRUNCATIONS


# ---- a WAL that was never checkpointed ------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class WalImage:
    """A store as a crash leaves it: the database, and a WAL holding the last transactions, committed."""

    database: bytes
    wal: bytes
    expected: Expected
    last_frames_at: int  # where the frames of the WAL's last transaction start
    last_records: frozenset[tuple[str, object]]  # what that transaction wrote


@pytest.fixture(scope="module")
def wal_image(tmp_path_factory: pytest.TempPathFactory) -> WalImage:
    directory = tmp_path_factory.mktemp("wal") / "store"
    rng = random.Random(17)  # noqa: S311
    keyed: dict[tuple[str, str], bytes] = {}
    queued: dict[int, bytes] = {}
    with Store.open(directory, kek=secret_kek(), clock=lambda: NOW) as store:
        for i in range(6):
            keyed["alpha", f"base-{i}"] = rng.randbytes(50)
            store.put("alpha", f"base-{i}", keyed["alpha", f"base-{i}"])
    store = Store.open(directory, kek=secret_kek(), clock=lambda: NOW)
    written: list[set[tuple[str, object]]] = []
    for t in range(10):  # ten acknowledged transactions, all in the WAL
        if t % 2:
            values = [rng.randbytes(40) for _ in range(3)]
            seqs = store.append_many("queue", values)
            queued.update(zip(seqs, values, strict=True))
            written.append({("queue", seq) for seq in seqs})
        else:
            keyed["alpha", f"wal-{t}"] = rng.randbytes(60)
            store.put("alpha", f"wal-{t}", keyed["alpha", f"wal-{t}"])
            written.append({("alpha", f"wal-{t}")})
    # Copied while the store is open: a crash leaves these files (a clean close would fold the WAL in).
    database = (directory / "store.db").read_bytes()
    wal = (directory / "store.db-wal").read_bytes()
    store.close()
    commits = wal_commit_frames(wal)
    assert len(commits) == 10
    return WalImage(
        database, wal, (keyed, queued), wal_frame_offset(wal, commits[-2] + 1), frozenset(written[-1])
    )


def wal_frame_offset(wal: bytes, frame: int) -> int:
    page_size = int.from_bytes(wal[8:12], "big")
    return 32 + frame * (24 + page_size)


def wal_commit_frames(wal: bytes) -> list[int]:
    """The frames whose header gives a database size: the last frame of each transaction."""
    page_size = int.from_bytes(wal[8:12], "big")
    count = (len(wal) - 32) // (24 + page_size)
    return [i for i in range(count) if int.from_bytes(wal[wal_frame_offset(wal, i) + 4 :][:4], "big")]


def wal_positions(image: WalImage, seed: int) -> list[tuple[int, int]]:
    """Every bit of the WAL header, and distinct random bits of the frame headers and of the pages."""
    rng = random.Random(seed)  # noqa: S311
    page_size = int.from_bytes(image.wal[8:12], "big")
    frame_bytes = 24 + page_size
    headers: list[int] = []
    pages: list[int] = []
    for position in range(32 * 8, len(image.wal) * 8):
        (headers if (position // 8 - 32) % frame_bytes < 24 else pages).append(position)
    chosen = (
        list(range(32 * 8)) + rng.sample(headers, WAL_FRAME_HEADER_FLIPS) + rng.sample(pages, WAL_PAGE_FLIPS)
    )
    return [divmod(position, 8) for position in chosen]


def test_bit_flips_in_an_unchecked_wal_never_lose_acknowledged_records_silently(wal_image, scratch):
    """SQLite replays a WAL up to its first damaged frame and drops every transaction after it without an
    error. The store checks the WAL before SQLite replays it: a flip that would drop committed transactions
    is reported (the store is recovered as a damaged file). Only a flip in the last transaction's frames,
    which looks exactly like a power cut's torn last write, can lose that transaction without a report, and
    a flip in the WAL header's salts can lose the whole WAL without one."""
    keyed, queued = wal_image.expected
    outcomes: dict[str, int] = {}
    for offset, bit in wal_positions(wal_image, seed=23):
        work = scratch / "work"
        if work.exists():
            shutil.rmtree(work)
        work.mkdir(mode=0o700)
        damaged = bytearray(wal_image.wal)
        damaged[offset] ^= 1 << bit
        for name, content in (("store.db", wal_image.database), ("store.db-wal", bytes(damaged))):
            (work / name).write_bytes(content)
            (work / name).chmod(0o600)
        events: list[StoreEvent] = []
        lost: set[tuple[str, object]] = set()
        with Store.open(work, kek=secret_kek(), clock=lambda: NOW, on_event=events.append) as store:
            for (namespace, key), value in keyed.items():
                try:
                    assert store.get(namespace, key) == value
                except NotFoundError:
                    lost.add((namespace, key))
                except IntegrityError:
                    pass  # reported as it happens
            found = dict(store.read_batch("queue", max_records=1000, max_bytes=1 << 30))
            for seq, value in queued.items():
                if seq not in found:
                    lost.add(("queue", seq))
                else:
                    assert found[seq] == value
        reported = {e.name for e in events} & {"store.corrupt_replaced", "store.integrity_failed"}
        if not lost:
            outcomes["nothing lost"] = outcomes.get("nothing lost", 0) + 1
        elif reported:
            outcomes["loss reported"] = outcomes.get("loss reported", 0) + 1
        elif offset in WAL_HEADER_SALTS:
            # The header's salts say which frames belong to it: with one flipped, SQLite replays nothing,
            # and no frame can be told from one a crash left behind (docs/encrypted-store.md).
            outcomes["header salts"] = outcomes.get("header salts", 0) + 1
        else:
            assert offset >= wal_image.last_frames_at, f"flip at {offset}.{bit} lost {sorted(lost)} silently"
            assert lost <= wal_image.last_records
            outcomes["last transaction"] = outcomes.get("last transaction", 0) + 1
    assert outcomes.get("loss reported", 0) > 0.8 * sum(outcomes.values()), outcomes


def test_a_torn_last_transaction_is_not_mistaken_for_damage(wal_image, scratch):
    """What a power cut leaves: the last transaction's frames cut short, or its commit frame written while
    an earlier frame of it was not. The store opens without a recovery and keeps every earlier record."""
    keyed, queued = wal_image.expected
    page_size = int.from_bytes(wal_image.wal[8:12], "big")
    start = wal_image.last_frames_at
    cut = wal_image.wal[: start + 24 + page_size // 2]
    hole = bytearray(wal_image.wal)
    hole[start : start + 24 + page_size] = bytes(24 + page_size)  # its first frame never reached the disk
    for wal in (cut, bytes(hole)):
        work = scratch / "torn"
        if work.exists():
            shutil.rmtree(work)
        work.mkdir(mode=0o700)
        for name, content in (("store.db", wal_image.database), ("store.db-wal", wal)):
            (work / name).write_bytes(content)
            (work / name).chmod(0o600)
        events: list[StoreEvent] = []
        with Store.open(work, kek=secret_kek(), clock=lambda: NOW, on_event=events.append) as store:
            assert events == []
            survivors: set[tuple[str, object]] = {("alpha", key) for key in store.keys("alpha")}
            survivors |= {("queue", seq) for seq, _ in store.read_batch("queue", max_records=1000)}
        everything: set[tuple[str, object]] = {("alpha", key) for _, key in keyed}
        everything |= {("queue", seq) for seq in queued}
        assert everything - survivors == wal_image.last_records


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


def flip(offset: int) -> str:
    """SQL for the sealed record with its byte at `offset` changed, whatever it was (0 becomes 1, else 0)."""
    byte = f"substr(sealed, {offset + 1}, 1)"
    changed = f"(CASE WHEN {byte} = x'00' THEN x'01' ELSE x'00' END)"
    return f"CAST(substr(sealed, 1, {offset}) || {changed} || substr(sealed, {offset + 2}) AS BLOB)"


def splice(offset: int, hex_byte: str) -> str:
    """SQL for the sealed record with its byte at `offset` replaced (a blob: `||` alone makes text)."""
    return f"CAST(substr(sealed, 1, {offset}) || x'{hex_byte}' || substr(sealed, {offset + 2}) AS BLOB)"


ORIGINALS = {("one", "a"): b"secret of a", ("one", "b"): b"secret of b", ("two", "a"): b"secret of two/a"}


def read_everything(store: Store) -> dict[tuple[str, str], bytes]:
    """Every keyed record a get still gives (asked under the names an edit might have made), checked to be
    its original, and every queue entry checked to be one that was written."""
    found = {}
    for namespace, key in (*ORIGINALS, ("one", "moved"), ("two", "c"), ("queue", "k")):
        try:
            value = store.get(namespace, key)
        except (IntegrityError, NotFoundError):
            continue
        assert value == ORIGINALS[namespace, key]
        found[namespace, key] = value
    for namespace in ("one", "two", "queue"):  # nor as a queue entry
        assert all(value in (b"first", b"second") for _, value in store.read_batch(namespace))
    return found


@pytest.mark.parametrize(
    "sql",
    [
        # What a get reads: the row it finds by namespace and key, and its sealed record.
        "UPDATE records SET key = 'moved' WHERE namespace = 'one' AND key = 'a'",
        "UPDATE records SET namespace = 'two', key = 'c' WHERE namespace = 'one' AND key = 'a'",
        # (`||` makes text: CAST makes the edited record a blob again.)
        f"UPDATE records SET sealed = {splice(0, '01')} WHERE key IS NOT NULL",  # noqa: S608 - the format
        f"UPDATE records SET sealed = {splice(9, '07')} WHERE key IS NOT NULL",  # noqa: S608 - header seq
        "UPDATE records SET sealed = substr(sealed, 1, 62) WHERE key IS NOT NULL",  # shorter than overhead
        "UPDATE records SET sealed = CAST(sealed AS TEXT) WHERE key IS NOT NULL",  # type flip
        "UPDATE records SET sealed = 42 WHERE key IS NOT NULL",
        # A record's kind is whether it has a key: keyed records turned into queue entries, and back.
        "UPDATE records SET key = NULL WHERE key IS NOT NULL",
        "UPDATE records SET key = 'k' WHERE seq = (SELECT min(seq) FROM records WHERE key IS NULL)",
        "UPDATE data_keys SET wrapped = (SELECT wrapped FROM data_keys WHERE namespace = 'two')",
        "UPDATE data_keys SET namespace = 'two' WHERE namespace = 'one'",
    ],
)
def test_edited_records_never_yield_plaintext(edited, sql):
    store = edited(sql)
    found = read_everything(store)
    if "WHERE key IS NOT NULL" in sql or sql.startswith("UPDATE data_keys"):  # every keyed row of "one"
        assert not [key for key in found if key[0] == "one"]


# The columns a sealed record's header also holds: an index for purges, listings, queue order and
# re-encryption. A get reads the header (authenticated with the value), so it gives exactly what was written
# or nothing; every whole-row read checks the columns against the header and treats a row that disagrees as
# damaged, as it would a failed tag: reported and dropped. What each edit of one record's index leads to:
#   "found"    a get still gives the record, until re-encryption reads the row whole and drops it;
#   "purged"   the index says it expired, and the purge at open removes it (a purge trusts the index);
#   "orphaned" the index names another namespace's active key: re-encryption passes the row by, retires the
#              key that sealed it, and a get then fails with an IntegrityError.
INDEX_EDITS = [
    ("created = created + 1", "found"),
    ("expires = 9e18", "found"),
    ("seq = seq + 1000", "found"),
    ("seq = -seq", "found"),
    ("key_id = -1", "found"),
    ("key_id = key_id + 1", "orphaned"),
    # Columns of the wrong type or range.
    ("key_id = 'x'", "found"),
    ("key_id = key_id + 0.5", "found"),
    ("created = 'x'", "found"),
    ("created = x'00'", "found"),
    ("created = 1e999", "found"),  # infinity
    ("expires = 'x'", "found"),
    ("expires = -1e999", "purged"),
]


@pytest.mark.parametrize(("change", "outcome"), INDEX_EDITS)
def test_an_edited_index_column_never_changes_what_a_get_gives(edited, change, outcome):
    store = edited(f"UPDATE records SET {change} WHERE namespace = 'one' AND key = 'a'")  # noqa: S608
    others = {name: value for name, value in ORIGINALS.items() if name != ("one", "a")}
    assert read_everything(store) == (others if outcome == "purged" else ORIGINALS)
    events: list[StoreEvent] = []
    store._on_event = events.append
    store.rotate("one")
    store.reencrypt_all()  # reads every row of "one" still under its old key, whole
    reported = [("store.integrity_failed", "reencrypt")] if outcome == "found" else []
    assert [(e.name, e.details["operation"]) for e in events] == reported
    if outcome == "found":
        assert read_everything(store) == others
        assert store.stats().namespaces["one"].dropped_records == 1
    elif outcome == "orphaned":
        with pytest.raises(IntegrityError, match="no data key"):
            store.get("one", "a")
    assert store.get("one", "b") == b"secret of b"  # the other record moved to the new key


@pytest.mark.parametrize("change", ["created = created + 1", "expires = 9e18", "key_id = 'x'"])
def test_an_edited_index_column_of_a_queue_entry_drops_it_with_a_report(edited, change):
    store = edited(
        f"UPDATE records SET {change} WHERE seq = (SELECT min(seq) FROM records WHERE key IS NULL)"  # noqa: S608
    )
    events: list[StoreEvent] = []
    store._on_event = events.append
    assert [value for _, value in store.read_batch("queue")] == [b"second"]
    assert [e.name for e in events] == ["store.integrity_failed"]


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


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ("sealed = 42", "sealed value is malformed"),
        ("sealed = substr(sealed, 1, 40)", "sealed value is malformed"),
        ("sealed = CAST(x'07' || substr(sealed, 2) AS BLOB)", "sealed value has unknown format 7"),
        ("sealed = CAST(sealed AS TEXT)", "sealed value is malformed"),
        (f"sealed = {splice(1, '01')}", "sealed value is malformed"),  # a keyed value's kind made a queue's
        (f"sealed = {splice(26, '07')}", "sealed value is malformed"),  # has-expiry neither 0 nor 1
        (f"sealed = {splice(17, '02')}", "no data key 2"),  # the key id (1 → 2): another namespace's key
        (f"sealed = {splice(20, '01')}", "failed authentication"),  # created
        (
            f"sealed = {flip(40)}",
            "failed authentication",
        ),  # the nonce (random bytes: changed, whatever it was)
    ],
)
def test_a_malformed_record_is_an_integrity_error_that_says_so(edited, change, reason):
    store = edited(f"UPDATE records SET {change} WHERE namespace = 'one' AND key = 'a'")  # noqa: S608
    events: list[StoreEvent] = []
    store._on_event = events.append
    with pytest.raises(IntegrityError, match=reason):
        store.get("one", "a")
    assert store.stats().namespaces["one"].integrity_failures == 1
    # The report names the row, which the get did not read: it looks its number up.
    with raw_db(store._path) as connection:
        [(seq,)] = connection.execute("SELECT seq FROM records WHERE namespace = 'one' AND key = 'a'")
    assert [(e.name, e.details) for e in events] == [
        ("store.integrity_failed", {"namespace": "one", "seq": seq, "operation": "get"})
    ]
    assert store.get("one", "b") == b"secret of b"


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
            "SELECT substr(sealed, 1, 1), substr(sealed, ?, ?), key_id FROM records",
            (_crypto.HEADER_BYTES + 1, _crypto.NONCE_BYTES),
        ).fetchall()
    assert len(rows) == NONCE_SEALS
    assert {fmt for fmt, _, _ in rows} == {bytes([_crypto.RECORD_FORMAT])}
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
        rows = connection.execute("SELECT sealed, seq, key_id, created, expires FROM records").fetchall()
    blobs = [sealed for sealed, *_ in rows]
    assert all(len(blob) == len(b"same value") + _crypto.RECORD_OVERHEAD for blob in blobs)
    nonce = slice(_crypto.HEADER_BYTES, _crypto.HEADER_BYTES + _crypto.NONCE_BYTES)
    assert len({blob[nonce] for blob in blobs}) == len(blobs)
    # Each record's header holds what its columns index.
    for sealed, *columns in rows:
        header = _crypto.read_header(sealed)
        assert (header.seq, header.key_id, header.created, header.expires) == tuple(columns)


def test_sealed_values_hide_the_plaintext(open_store, store_dir):
    store = open_store()
    store.put("ns", "k", b"PLAINTEXT-MARKER" * 4)
    store.close()
    assert b"PLAINTEXT-MARKER" not in (store_dir / "store.db").read_bytes()
