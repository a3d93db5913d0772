"""Benchmark: the encrypted store against plain SQLite with the same journal and sync settings, same run.

Plain SQLite here is the floor: a table (namespace, key, value) in WAL mode with synchronous=FULL, no
encryption. Cases: durable single puts (one transaction each), batched puts (100 per transaction), gets, and
queue append plus acknowledge. Each prints throughput for both and the ratio (store / plain), and the bytes
written to disk per record (from /proc/self/io, so fsync'd WAL and checkpoint writes count). The two run in
turns, `--rounds` times each; the best round of each counts (noise only ever slows a round down).

`--alternate N` adds a steadier reading of durable single puts: one plain put, then one store put, N times,
so that both meet the same moments of the disk; the ratio of their mean times.

`--profile CASE:ENGINE:COUNT` only does COUNT operations of one case on one engine (see `profile`) and
prints nothing: for a profiler. The instructions of one operation are those of `valgrind --tool=cachegrind`
with COUNT=N minus COUNT=0, divided by the operations (records, for batches: N // 10 * 100).

Usage: python scripts/bench/store_vs_sqlite.py [--records 400] [--rounds 2] [--alternate N] [--dir DIR]
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


class Plain:
    def __init__(self, path: Path) -> None:
        self.db = sqlite3.connect(path, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.execute("CREATE TABLE kv (ns TEXT, key TEXT, value BLOB, PRIMARY KEY (ns, key))")
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


def alternate(base: Path, count: int) -> tuple[float, float]:
    """Mean seconds of a durable single put, (plain, store), taking turns put by put."""
    plain, store = Plain(base / "alternate.db"), Encrypted(base / "alternate")
    times = {"plain": 0.0, "store": 0.0}
    try:
        for i in range(count):
            for name, engine in (("plain", plain), ("store", store)):
                start = time.perf_counter()
                engine.put(f"a{i}", VALUE)
                times[name] += time.perf_counter() - start
    finally:
        plain.close()
        store.close()
    return times["plain"] / count, times["store"] / count


def profile(base: Path, spec: str, records: int) -> None:
    """COUNT operations of CASE on ENGINE ("plain" or "store"): puts, gets or appends, or COUNT // 10
    batches of 100 for batch_put. Gets read `records` keys written first."""
    case, engine_name, count = spec.split(":")
    engine = Plain(base / "profile.db") if engine_name == "plain" else Encrypted(base / "profile")
    try:
        if case == "get":
            operations(engine, records)["single_put"]()
            for i in range(int(count)):
                engine.get(f"s{i % records}")
        else:
            operations(engine, int(count))[case]()
    finally:
        engine.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=400)
    parser.add_argument("--rounds", type=int, default=2, help="turns of each (more: less noise, more time)")
    parser.add_argument("--alternate", type=int, default=0, help="single puts taking turns, this many each")
    parser.add_argument("--profile", default=None, help="CASE:ENGINE:COUNT only (see above)")
    parser.add_argument("--dir", type=Path, default=None, help="where to put the files (default: a temp dir)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="store-bench-", dir=args.dir) as tmp:
        base = Path(tmp)
        if args.profile:
            profile(base, args.profile, args.records)
            return 0
        alternating = alternate(base, args.alternate) if args.alternate else None
        # Interleave the two so that machine noise hits both alike: plain, store, plain, store.
        results: dict[str, list[dict[str, tuple[float, float]]]] = {"plain": [], "store": []}
        for round_ in range(args.rounds):
            plain = Plain(base / f"plain{round_}.db")
            results["plain"].append(cases(plain, args.records))
            plain.close()
            store = Encrypted(base / f"store{round_}")
            results["store"].append(cases(store, args.records))
            store.close()
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
    if alternating:
        plain_time, store_time = alternating
        print(
            f"store_vs_sqlite single_put_alternating: store {store_time * 1e6:.0f} us, "
            f"plain {plain_time * 1e6:.0f} us (mean of {args.alternate}), ratio {plain_time / store_time:.2f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
