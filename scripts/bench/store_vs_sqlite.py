"""Benchmark: the encrypted store against plain SQLite with the same journal and sync settings, same run.

Plain SQLite here is the floor: a table (namespace, key, value) in WAL mode with synchronous=FULL, no
encryption; both settings are read back from each connection before anything is measured. The store's
connection also sets `secure_delete` and `cell_size_check` (what the store must do: erased content is
zeroed, a damaged page is caught when read); plain SQLite keeps SQLite's defaults there, unless
`--plain-pragmas` gives it the store's. Cases: durable single puts (one transaction each), batched puts
(100 per transaction), gets, and queue append plus acknowledge. Each prints throughput for both and the
ratio (store / plain), and the bytes written to disk per record (from /proc/self/io, so fsync'd WAL and
checkpoint writes count). The two run in turns, `--rounds` times each, which of them goes first alternating
from round to round; the best round of each counts (noise only ever slows a round down).

`--alternate N` adds a steadier reading: one operation of plain, then one of the store (or the other way
round, in turns), N single puts, N gets (of the keys those puts wrote) and N // 10 batches of 100, so that
both meet the same moments of the disk and of the machine; the ratio of their mean times per record.

`--profile CASE:ENGINE:COUNT` only does COUNT operations of one case on one engine (see `profile`) and
prints nothing: for a profiler. The instructions of one operation are those of `valgrind --tool=cachegrind`
with COUNT=N minus COUNT=0, divided by the operations (records, for batches: N // 10 * 100). With `--cold`,
4 MiB are copied before each operation (a batch, for batch_put), so that a cache simulator with a smaller
last level (e.g. `--cache-sim=yes --LL=2097152,16,64`) starts each with cold caches, as a single put after
waiting for the disk does on a busy machine; `--dry` does the same but leaves the operations out: the
misses of one operation are those of a run minus those of its dry run, divided by COUNT.

Usage: python scripts/bench/store_vs_sqlite.py [--records 400] [--rounds 2] [--alternate N] [--dir DIR]
          [--profile CASE:ENGINE:COUNT [--cold [--dry]]] [--plain-pragmas]
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from device_agent.store import KeyFile, Store

VALUE = b"x" * 200  # about one telemetry sample
ACK_EVERY = 10  # a drain acknowledges in batches


def written_bytes() -> int:
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("write_bytes:"):
            return int(line.split()[1])
    return 0


def measure(action: Callable[[], int]) -> tuple[float, float]:
    """(operations per second, bytes written per operation)."""
    before, start = written_bytes(), time.perf_counter()
    count = action()
    elapsed = time.perf_counter() - start
    return count / elapsed, (written_bytes() - before) / count


# The store's settings that are not about durability (see `device_agent.store._db.configure`).
STORE_PRAGMAS = ("secure_delete=ON", "cell_size_check=ON", "trusted_schema=OFF", "foreign_keys=OFF")
WAL, FULL = "wal", 2


class Plain:
    pragmas: tuple[str, ...] = ()  # `--plain-pragmas` sets STORE_PRAGMAS

    def __init__(self, path: Path) -> None:
        self.db = sqlite3.connect(path, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        for pragma in self.pragmas:
            self.db.execute(f"PRAGMA {pragma}")
        settings = (
            self.db.execute("PRAGMA journal_mode").fetchone()[0],
            self.db.execute("PRAGMA synchronous").fetchone()[0],
        )
        if settings != (WAL, FULL):
            raise RuntimeError(f"plain SQLite is not in WAL mode with synchronous=FULL: {settings}")
        self.db.execute("CREATE TABLE kv (ns TEXT, key TEXT, value BLOB, PRIMARY KEY (ns, key))")
        # AUTOINCREMENT is how plain SQLite never reuses a sequence number, as the store promises (which
        # reserves them in blocks instead): it writes sqlite_sequence on every append.
        self.db.execute("CREATE TABLE q (seq INTEGER PRIMARY KEY AUTOINCREMENT, ns TEXT, value BLOB)")

    def put(self, key: str, value: bytes) -> None:
        self.db.execute("INSERT OR REPLACE INTO kv VALUES ('b', ?, ?)", (key, value))

    def put_many(self, items: list[tuple[str, bytes]]) -> None:
        self.db.execute("BEGIN")
        self.db.executemany("INSERT OR REPLACE INTO kv VALUES ('b', ?, ?)", items)
        self.db.execute("COMMIT")

    def get(self, key: str) -> bytes:
        row = self.db.execute("SELECT value FROM kv WHERE ns = 'b' AND key = ?", (key,)).fetchone()
        return bytes(row[0])

    def append(self, value: bytes) -> int:
        return int(self.db.execute("INSERT INTO q(ns, value) VALUES ('q', ?)", (value,)).lastrowid or 0)

    def ack(self, seq: int) -> None:
        self.db.execute("DELETE FROM q WHERE ns = 'q' AND seq <= ?", (seq,))

    def close(self) -> None:
        self.db.close()


class Encrypted:
    def __init__(self, directory: Path) -> None:
        self.store = Store.open(directory, kek=KeyFile(directory.parent / "bench.key"))
        pragmas = self.store.pragmas()
        if (pragmas["journal_mode"], pragmas["synchronous"]) != (WAL, FULL):
            raise RuntimeError(f"the store is not in WAL mode with synchronous=FULL: {pragmas}")

    def put(self, key: str, value: bytes) -> None:
        self.store.put("b", key, value)

    def put_many(self, items: list[tuple[str, bytes]]) -> None:
        self.store.put_many("b", items)

    def get(self, key: str) -> bytes:
        return self.store.get("b", key)

    def append(self, value: bytes) -> int:
        return self.store.append("q", value)

    def ack(self, seq: int) -> None:
        self.store.ack("q", seq)

    def close(self) -> None:
        self.store.close()


def operations(engine: Plain | Encrypted, records: int) -> dict[str, Callable[[], int]]:
    """Each case as a function doing `records` units of it (gets read the keys `singles` wrote)."""

    def singles() -> int:
        for i in range(records):
            engine.put(f"s{i}", VALUE)
        return records

    def batches() -> int:
        for b in range(records // 10):
            engine.put_many([(f"m{b}-{i}", VALUE) for i in range(100)])
        return (records // 10) * 100

    def gets() -> int:
        for _ in range(5):
            for i in range(records):
                engine.get(f"s{i}")
        return 5 * records

    def queue() -> int:
        for i in range(records):
            seq = engine.append(VALUE)
            if i % ACK_EVERY == ACK_EVERY - 1:
                engine.ack(seq)
        return records

    return {"single_put": singles, "batch_put": batches, "get": gets, "append_ack": queue}


def cases(engine: Plain | Encrypted, records: int) -> dict[str, tuple[float, float]]:
    return {case: measure(action) for case, action in operations(engine, records).items()}


def step(engine: Plain | Encrypted, case: str, number: int, records: int) -> int:
    """Operation `number` of `case` (a put, a get, a batch of 100 puts, or an append, with an ack after
    every ACK_EVERY); returns the records it handled. Gets read the keys of the first `records` puts."""
    if case == "single_put":
        engine.put(f"s{number}", VALUE)
        return 1
    if case == "batch_put":
        engine.put_many([(f"m{number}-{i}", VALUE) for i in range(100)])
        return 100
    if case == "get":
        engine.get(f"s{number % records}")
        return 1
    seq = engine.append(VALUE)
    if number % ACK_EVERY == ACK_EVERY - 1:
        engine.ack(seq)
    return 1


def alternate(base: Path, count: int) -> dict[str, tuple[float, float]]:
    """Mean seconds per record of each case, (plain, store), taking turns operation by operation (which of
    the two goes first alternates too): `count` single puts, then `count` gets of those keys, then
    `count // 10` batches."""
    engines: dict[str, Plain | Encrypted] = {
        "plain": Plain(base / "alternate.db"),
        "store": Encrypted(base / "alternate"),
    }
    order = list(engines.items())
    means = {}
    try:
        for case, operations_ in (("single_put", count), ("get", count), ("batch_put", max(1, count // 10))):
            times = {"plain": 0.0, "store": 0.0}
            handled = 0
            for number in range(operations_):
                for name, engine in order if number % 2 == 0 else order[::-1]:
                    start = time.perf_counter()
                    handled += step(engine, case, number, count)
                    times[name] += time.perf_counter() - start
            per_record = handled / 2
            means[case] = (times["plain"] / per_record, times["store"] / per_record)
    finally:
        for engine in engines.values():
            engine.close()
    return means


def evictor() -> Callable[[], None]:
    """Copies 4 MiB when called: more than a simulated last-level cache (see `--cold`), so that what an
    operation then touches comes from memory."""
    source = bytes(range(256)) * (16 << 12)
    target = memoryview(bytearray(len(source)))

    def evict() -> None:
        target[:] = source

    return evict


def profile(base: Path, spec: str, records: int, *, cold: bool = False, dry: bool = False) -> None:
    """COUNT operations of CASE on ENGINE ("plain" or "store"): puts, gets or appends, or COUNT // 10
    batches of 100 for batch_put. Gets read `records` keys written first. `cold` and `dry`: see `--cold`,
    where the store's first `records` puts (and plain's) are made before, in every case."""
    case, engine_name, count = spec.split(":")
    engine = Plain(base / "profile.db") if engine_name == "plain" else Encrypted(base / "profile")
    try:
        if not cold:
            if case == "get":
                operations(engine, records)["single_put"]()
                for i in range(int(count)):
                    engine.get(f"s{i % records}")
            else:
                operations(engine, int(count))[case]()
            return
        for i in range(records):  # keys for gets, and the same warm-up for every case
            engine.put(f"s{i}", VALUE)
        evict = evictor()
        steps = int(count) // 10 if case == "batch_put" else int(count)
        first = records if case == "single_put" else 0  # new keys for the measured puts
        for number in range(first, first + steps):
            evict()
            if not dry:
                step(engine, case, number, records)
    finally:
        engine.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=400)
    parser.add_argument("--rounds", type=int, default=2, help="turns of each (more: less noise, more time)")
    parser.add_argument("--alternate", type=int, default=0, help="operations taking turns, this many each")
    parser.add_argument("--profile", default=None, help="CASE:ENGINE:COUNT only (see above)")
    parser.add_argument("--cold", action="store_true", help="with --profile: evict caches before each")
    parser.add_argument("--dry", action="store_true", help="with --profile --cold: leave the operations out")
    parser.add_argument("--plain-pragmas", action="store_true", help="plain SQLite gets the store's pragmas")
    parser.add_argument("--dir", type=Path, default=None, help="where to put the files (default: a temp dir)")
    args = parser.parse_args()
    if args.plain_pragmas:
        Plain.pragmas = STORE_PRAGMAS
    with tempfile.TemporaryDirectory(prefix="store-bench-", dir=args.dir) as tmp:
        base = Path(tmp)
        if args.profile:
            profile(base, args.profile, args.records, cold=args.cold, dry=args.dry)
            return 0
        alternating = alternate(base, args.alternate) if args.alternate else {}
        # Interleave the two so that machine noise hits both alike, and neither always goes first.
        results: dict[str, list[dict[str, tuple[float, float]]]] = {"plain": [], "store": []}
        for round_ in range(args.rounds):
            turns = ("plain", "store") if round_ % 2 == 0 else ("store", "plain")
            for name in turns:
                engine = (
                    Plain(base / f"plain{round_}.db")
                    if name == "plain"
                    else Encrypted(base / f"store{round_}")
                )
                results[name].append(cases(engine, args.records))
                engine.close()
    for case in ("single_put", "batch_put", "get", "append_ack"):
        plain_rate = max(r[case][0] for r in results["plain"])
        store_rate = max(r[case][0] for r in results["store"])
        plain_bytes = min(r[case][1] for r in results["plain"])
        store_bytes = min(r[case][1] for r in results["store"])
        print(
            f"store_vs_sqlite {case}: store {store_rate:.0f}/s, plain {plain_rate:.0f}/s, "
            f"ratio {store_rate / plain_rate:.2f}; bytes written per record store {store_bytes:.0f}, "
            f"plain {plain_bytes:.0f}"
        )
    for case, (plain_time, store_time) in alternating.items():
        print(
            f"store_vs_sqlite {case}_alternating: store {store_time * 1e6:.1f} us, "
            f"plain {plain_time * 1e6:.1f} us (mean per record, taking turns), "
            f"ratio {plain_time / store_time:.2f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
