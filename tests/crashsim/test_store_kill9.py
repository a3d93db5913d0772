"""The encrypted store under `kill -9` (security-checks ST-1), rotation included.

A writer process appends records and prints an acknowledgement only after the store says each one is
durable; it also rotates the spool's data key and re-encrypts in small batches. The test kills it with
SIGKILL at random moments, at least 200 times and over at least 10,000 acknowledged records; after every
kill the store must open without being treated as corrupt, and hold every acknowledged record intact.
"""

from __future__ import annotations

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

WRITER = textwrap.dedent(
    """
    import random, sys
    from pathlib import Path
    from device_agent.store import KeyFile, Store

    directory, cycle, seed = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    rng = random.Random(seed)
    with Store.open(directory / "store", kek=KeyFile(directory / "kek")) as store:
        print("open", flush=True)
        if rng.random() < 0.3:
            store.rotate("spool")  # a new active key: older records wait for re-encryption
        n = 0
        while True:
            values = [f"{cycle}-{n + k}".encode() * 4 for k in range(rng.choice((1, 1, 1, 5)))]
            seqs = store.append_many("spool", values)
            for seq, value in zip(seqs, values):
                print("ack", seq, value.decode(), flush=True)
            n += len(values)
            if store.pending_reencryption() and rng.random() < 0.2:
                store.reencrypt(batch_size=16)  # interrupted at any point by the kill
    """
)


@pytest.fixture
def workdir() -> Iterator[Path]:
    # tmpfs where there is one: a kill -9 keeps the page cache either way, so the disk adds only time.
    parent = "/dev/shm" if os.path.isdir("/dev/shm") else None  # noqa: PTH112
    with tempfile.TemporaryDirectory(prefix="kill9-", dir=parent) as tmp:
        yield Path(tmp)


def verify(directory: Path, acknowledged: dict[int, bytes]) -> None:
    events: list[StoreEvent] = []
    with Store.open(directory / "store", kek=KeyFile(directory / "kek"), on_event=events.append) as store:
        assert not [e.name for e in events if e.name == "store.corrupt_replaced"]
        batch = dict(store.read_batch("spool", max_records=100_000, max_bytes=10**9))
        missing = [seq for seq, value in acknowledged.items() if batch.get(seq) != value]
        assert missing == [], f"acknowledged records lost or altered: {missing[:10]}"
        assert store.stats().integrity_failures == 0


def test_kill_minus_nine_at_random_moments_loses_nothing_acknowledged(workdir: Path):
    script = workdir / "writer.py"
    script.write_text(WRITER)
    Store.open(workdir / "store", kek=KeyFile(workdir / "kek")).close()
    rng = random.Random(20261124)  # noqa: S311 - a reproducible test schedule
    acknowledged: dict[int, bytes] = {}
    started = time.monotonic()
    for cycle in range(KILLS):
        writer = subprocess.Popen(
            [sys.executable, str(script), str(workdir), str(cycle), str(rng.randrange(2**32))],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert writer.stdout is not None
        assert writer.stdout.readline().strip() == "open"
        # Kill after a random number of acknowledgements, so the kill lands in the middle of the next write.
        target = rng.randrange(10, 110)
        for _ in range(target):
            fields = writer.stdout.readline().split()
            if fields[:1] == ["ack"]:
                acknowledged[int(fields[1])] = fields[2].encode()
        time.sleep(rng.random() * 0.005)
        writer.send_signal(signal.SIGKILL)
        for line in writer.stdout:  # acknowledgements already printed before the kill still count
            parts = line.split()
            # A line the kill cut short was never a complete acknowledgement.
            if parts[:1] == ["ack"] and len(parts) == 3 and line.endswith("\n"):
                acknowledged[int(parts[1])] = parts[2].encode()
        writer.wait(timeout=10)
        writer.stdout.close()
        assert writer.returncode == -signal.SIGKILL
        verify(workdir, acknowledged)
    assert len(acknowledged) >= MIN_ACKED
    # After all that, re-encryption still completes and every record stays readable.
    with Store.open(workdir / "store", kek=KeyFile(workdir / "kek")) as store:
        store.reencrypt_all()
        assert store.pending_reencryption() == 0
    verify(workdir, acknowledged)
    print(
        f"kill -9: {KILLS} kills, {len(acknowledged)} acknowledged records, {time.monotonic() - started:.0f}s"
    )
