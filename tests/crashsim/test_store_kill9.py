"""The encrypted store under `kill -9` (security-checks ST-1), every write path, rotation included.

A writer process mixes single puts, `put_many`, deletes, single appends, `append_many` and queue acks; it
rotates a data key in the middle of its loop and re-encrypts in batches. It announces each write before
making it (`try ...`) and acknowledges it only after the store says it is durable (`ack ...`), and marks
the rotation and re-encryption windows (`begin ...`, `end ...`). The test kills it with SIGKILL at random
moments and, in half of the cycles, as soon as a window opens; at least 200 times and over at least
10,000 acknowledged records. After every kill the store must open without being treated as corrupt, pass
its integrity checks, and hold every acknowledged write, and nothing but acknowledged or announced ones.
"""

from __future__ import annotations

import dataclasses
import os
import random
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from device_agent.store import KeyFile, Store, StoreEvent

KILLS = 200
MIN_ACKED = 10_000
# Kills that must land inside a rotation or a re-encryption window (between its begin and end marks).
MIN_IN_WINDOWS = 30
WINDOW_SHARE = 0.5  # cycles that wait for a window to open and kill inside it

WRITER = textwrap.dedent(
    """
    import random, sys
    from pathlib import Path
    from device_agent.store import KeyFile, Store

    directory, cycle, seed = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    rng = random.Random(seed)
    keys = [f"k{i}" for i in range(300)]

    def say(*words):
        print(*words, flush=True)

    with Store.open(directory / "store", kek=KeyFile(directory / "kek")) as store:
        queued = [seq for seq, _ in store.read_batch("spool", max_records=10**6, max_bytes=1 << 30)]
        stale = store.pending_reencryption() > 0
        rotate_at = rng.randrange(3, 40) if rng.random() < 0.6 else -1
        say("open")
        step = 0
        while True:
            step += 1
            tag = f"{cycle}.{step}"
            if step == rotate_at:
                say("begin", "rotate")
                store.rotate(rng.choice(["spool", "kv", None]))  # None: every namespace
                say("end", "rotate")
                stale = True
            roll = rng.random()
            if roll < 0.25:
                value = f"a{tag}"
                say("try", "append", value)
                seq = store.append("spool", value.encode())
                queued.append(seq)
                say("ack", "append", seq, value)
            elif roll < 0.40:
                values = [f"a{tag}.{k}" for k in range(rng.randint(2, 6))]
                say("try", "append", *values)
                seqs = store.append_many("spool", [v.encode() for v in values])
                queued += seqs
                say("ack", "append", *[w for pair in zip(map(str, seqs), values) for w in pair])
            elif roll < 0.58:
                key, value = rng.choice(keys), f"p{tag}"
                say("try", "put", key, value)
                store.put("kv", key, value.encode())
                say("ack", "put", key, value)
            elif roll < 0.72:
                items = {rng.choice(keys): f"p{tag}.{k}" for k in range(rng.randint(2, 6))}
                words = [w for pair in items.items() for w in pair]
                say("try", "put", *words)
                store.put_many("kv", [(k, v.encode()) for k, v in items.items()])
                say("ack", "put", *words)
            elif roll < 0.82:
                key = rng.choice(keys)
                say("try", "delete", key)
                store.delete("kv", key)
                say("ack", "delete", key)
            elif roll < 0.86 and len(queued) > 4:
                up_to = queued[rng.randrange(len(queued) // 3)]
                say("try", "qack", up_to)
                store.ack("spool", up_to)
                queued = [seq for seq in queued if seq > up_to]
                say("ack", "qack", up_to)
            elif stale:
                say("begin", "reencrypt")  # up to 4 batches, as the component's maintenance runs them
                for _ in range(4):
                    stale = not store.reencrypt(batch_size=64).complete
                    if not stale:
                        break
                say("end", "reencrypt")
    """
)


@dataclasses.dataclass
class Model:
    """What the store must hold: acknowledged writes, and the alternatives an announced write allows."""

    kv: dict[str, bytes] = dataclasses.field(default_factory=dict)
    kv_maybe: dict[str, set[bytes | None]] = dataclasses.field(default_factory=dict)
    queue: dict[int, bytes] = dataclasses.field(default_factory=dict)
    floor: int = 0  # queue entries up to here were acked away
    floor_maybe: int | None = None
    appends_maybe: set[bytes] = dataclasses.field(default_factory=set)
    acknowledged: int = 0

    def take(self, line: str) -> None:
        words = line.split()
        match words:
            case ["try", "put", *pairs]:
                for key, value in zip(pairs[::2], pairs[1::2], strict=True):
                    self.kv_maybe.setdefault(key, {self.kv.get(key)}).add(value.encode())
            case ["ack", "put", *pairs]:
                for key, value in zip(pairs[::2], pairs[1::2], strict=True):
                    self.kv[key] = value.encode()
                    self.kv_maybe.pop(key, None)
                self.acknowledged += len(pairs) // 2
            case ["try", "delete", key]:
                self.kv_maybe.setdefault(key, {self.kv.get(key)}).add(None)
            case ["ack", "delete", key]:
                self.kv.pop(key, None)
                self.kv_maybe.pop(key, None)
            case ["try", "append", *values]:
                self.appends_maybe.update(value.encode() for value in values)
            case ["ack", "append", *pairs]:
                for seq, value in zip(pairs[::2], pairs[1::2], strict=True):
                    self.queue[int(seq)] = value.encode()
                self.acknowledged += len(pairs) // 2
            case ["try", "qack", up_to]:
                self.floor_maybe = int(up_to)
            case ["ack", "qack", up_to]:
                self.floor = max(self.floor, int(up_to))
                self.queue = {seq: value for seq, value in self.queue.items() if seq > self.floor}
                self.floor_maybe = None

    def verify(self, store: Store) -> None:
        """The store holds what was acknowledged; where a write was only announced, either outcome. What it
        holds then is the truth the next cycle starts from."""
        kv = {key: store.get("kv", key) for key in store.keys("kv")}
        for key in set(kv) | set(self.kv) | set(self.kv_maybe):
            allowed = self.kv_maybe.get(key, {self.kv.get(key)})
            assert kv.get(key) in allowed, f"kv {key}: {kv.get(key)!r}, acknowledged {allowed!r}"
        queue = dict(store.read_batch("spool", max_records=10**6, max_bytes=1 << 30))
        floor = self.floor
        if self.floor_maybe is not None and any(seq <= self.floor_maybe for seq in self.queue):
            # An ack in flight applies whole or not at all.
            gone = [seq not in queue for seq in self.queue if seq <= self.floor_maybe]
            assert all(gone) or not any(gone), "a queue ack was applied in part"
            floor = self.floor_maybe if all(gone) else floor
        lost = [seq for seq, value in self.queue.items() if seq > floor and queue.get(seq) != value]
        assert lost == [], f"acknowledged queue entries lost or altered: {lost[:10]}"
        assert all(seq > floor for seq in queue), "acked queue entries came back"
        unknown = [
            seq for seq, value in queue.items() if seq not in self.queue and value not in self.appends_maybe
        ]
        assert unknown == [], f"queue entries nobody appended: {unknown[:10]}"
        self.kv, self.kv_maybe, self.queue = kv, {}, queue
        self.floor, self.floor_maybe, self.appends_maybe = floor, None, set()


@pytest.fixture
def workdir() -> Iterator[Path]:
    # tmpfs where there is one: a kill -9 keeps the page cache either way, so the disk adds only time.
    parent = "/dev/shm" if os.path.isdir("/dev/shm") else None  # noqa: PTH112
    with tempfile.TemporaryDirectory(prefix="kill9-", dir=parent) as tmp:
        yield Path(tmp)


def verify(directory: Path, model: Model) -> None:
    events: list[StoreEvent] = []
    with Store.open(directory / "store", kek=KeyFile(directory / "kek"), on_event=events.append) as store:
        assert [e.name for e in events] == []  # not treated as corrupt, no integrity failure
        model.verify(store)
        assert store.stats().integrity_failures == 0


def marked(line: str, window: str | None) -> str | None:
    """The window open after `line`: the one it begins, none if it ends one, else as before."""
    if line.startswith("begin "):
        return line.split()[1]
    return None if line.startswith("end ") else window


def test_kill_minus_nine_at_random_moments_loses_nothing_acknowledged(workdir: Path):
    script = workdir / "writer.py"
    script.write_text(WRITER)
    Store.open(workdir / "store", kek=KeyFile(workdir / "kek")).close()
    rng = random.Random(20261204)  # noqa: S311 - a reproducible test schedule
    model = Model()
    in_window: dict[str, int] = {}
    started = time.monotonic()
    for cycle in range(KILLS):
        writer = subprocess.Popen(
            [sys.executable, str(script), str(workdir), str(cycle), str(rng.randrange(2**32))],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert writer.stdout is not None
        assert writer.stdout.readline().strip() == "open"
        # Kill after a random number of lines, so the kill lands in the middle of the next write; or, in
        # some cycles, as soon as a rotation or re-encryption window opens.
        for_window = rng.random() < WINDOW_SHARE
        window: str | None = None  # the window open at the last line read: "rotate", "reencrypt" or None
        for _ in range(rng.randrange(20, 160) * (4 if for_window else 1)):
            line = writer.stdout.readline()
            model.take(line)
            window = marked(line, window)
            if for_window and window is not None:
                break
        if not for_window:
            time.sleep(rng.random() * 0.005)
        writer.send_signal(signal.SIGKILL)
        for line in writer.stdout:  # lines written before the kill still count
            if not line.endswith("\n"):
                break  # the kill cut it short: never a complete acknowledgement
            model.take(line)
            window = marked(line, window)
        writer.wait(timeout=10)
        writer.stdout.close()
        assert writer.returncode == -signal.SIGKILL
        if window is not None:
            in_window[window] = in_window.get(window, 0) + 1
        verify(workdir, model)
    assert model.acknowledged >= MIN_ACKED
    assert sum(in_window.values()) >= MIN_IN_WINDOWS, in_window
    assert in_window.get("reencrypt", 0) > 0, in_window
    assert in_window.get("rotate", 0) > 0, in_window
    # After all that, re-encryption still completes and every record stays readable.
    with Store.open(workdir / "store", kek=KeyFile(workdir / "kek")) as store:
        store.reencrypt_all()
        assert store.pending_reencryption() == 0
    verify(workdir, model)
    print(
        f"kill -9: {KILLS} kills ({in_window} inside windows), {model.acknowledged} acknowledged records"
        f" ({len(model.queue)} queued at the end),"
        f" {time.monotonic() - started:.0f}s"
    )
