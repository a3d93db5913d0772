"""The encrypted store under simulated power loss (security-checks ST-2): nothing acknowledged is ever lost.

The store runs its real code with its SQL going through the recording VFS; every crash image (unsynced
writes dropped, torn, reordered or turned to noise, at every sync point and after every acknowledgement) is
then reopened with the ordinary driver: it must open without being treated as corrupt, pass its integrity
check, and hold every acknowledged record with the exact value. A control with the fsyncs switched off
shows the same test can fail.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from device_agent.devkit.crashsim import Exploration, Session, materialised, run_workload
from device_agent.store import KeyFile, Store, StoreEvent

RECORDS = 72
EXPLORATION = Exploration(exhaustive_limit=3, prefixes=6, torn=3, random=3)


def setup(directory: Path) -> None:
    # The key file and an empty store exist before the recording starts (the key file is written outside
    # SQLite, so the VFS would not see it anyway); the workload is what the store does in normal operation.
    Store.open(directory / "store", kek=KeyFile(directory / "kek")).close()


def workload(session: Session, *, driver_override: Any = None) -> None:
    driver = driver_override(session) if driver_override else session.driver_factory()
    with Store.open(
        session.directory / "store", kek=KeyFile(session.directory / "kek"), driver=driver
    ) as store:
        for i in range(RECORDS):
            value = f"sample-{i:04d}".encode() * 3
            if i % 3 == 2:
                store.put("state", f"key-{i}", value)
                session.acknowledge(("kv", f"key-{i}", value))
            else:
                seq = store.append("spool", value)
                session.acknowledge(("queue", seq, value))
            if i == ACK_STEP:
                store.ack("spool", seq)  # acknowledged queue entries may then be gone: that is allowed


# The workload acknowledges the queue up to the entry it appended at step ACK_STEP: that many queue entries
# were appended by then. Once the ack is issued (acknowledged or not), those entries may be gone.
ACK_STEP = RECORDS // 2
QUEUED_BY_ACK = sum(1 for i in range(ACK_STEP + 1) if i % 3 != 2)


def check(directory: Path, acknowledged: tuple[Any, ...]) -> list[str]:
    events: list[StoreEvent] = []
    problems = []
    with Store.open(directory / "store", kek=KeyFile(directory / "kek"), on_event=events.append) as store:
        if any(e.name == "store.corrupt_replaced" for e in events):
            return ["the store was treated as corrupt and replaced"]
        queued = [(seq, value) for kind, seq, value in acknowledged if kind == "queue"]
        # Before the ack was issued nothing may be missing; after, the first QUEUED_BY_ACK entries may be.
        may_be_acked = {seq for seq, _ in queued[:QUEUED_BY_ACK]} if len(queued) >= QUEUED_BY_ACK else set()
        surviving = dict(store.read_batch("spool", max_records=10_000, max_bytes=10**7))
        acked = may_be_acked and not (may_be_acked & surviving.keys())
        for kind, ident, value in acknowledged:
            if kind == "kv" and store.get("state", ident) != value:
                problems.append(f"{ident} differs")
            if kind == "queue" and not (acked and ident in may_be_acked) and surviving.get(ident) != value:
                problems.append(f"queue entry {ident} missing or different")
        if may_be_acked & surviving.keys() and not may_be_acked <= surviving.keys():
            problems.append("the ack was applied in part")
    return problems


def images(seed: int, **workload_args: Any) -> Iterator[Any]:
    return run_workload(
        lambda session: workload(session, **workload_args), seed=seed, setup=setup, exploration=EXPLORATION
    )


def test_every_crash_image_keeps_every_acknowledged_record():
    checked = 0
    for image in images(seed=7):
        with materialised(image) as directory:
            problems = check(directory, image.acknowledged)
        assert problems == [], f"{image.label}: {problems}"
        checked += 1
    assert checked >= 750  # every sync point and acknowledgement, each with several plans


class _NoSync:
    """A driver that turns SQLite's fsyncs off (a store with a missing fsync) but says nothing of it."""

    def __init__(self, factory: Any) -> None:
        self._factory = factory

    def __call__(self, path: Path) -> Any:
        driver = self._factory(path)
        original = driver.execute

        def execute(sql: str, params: Any = ()) -> Any:
            if sql.strip().upper().startswith("PRAGMA SYNCHRONOUS"):
                list(original("PRAGMA synchronous=OFF"))
                return iter([(2,)])  # report FULL, as the engine asserts
            return original(sql, params)

        driver.execute = execute
        return driver


@pytest.mark.parametrize("seed", [3])
def test_the_simulation_catches_a_missing_fsync(seed):
    lost = 0
    for image in images(seed=seed, driver_override=lambda session: _NoSync(session.driver_factory())):
        with materialised(image) as directory:
            try:
                problems = check(directory, image.acknowledged)
            except Exception as exc:  # a broken image is a failure the simulation found, too
                problems = [type(exc).__name__]
        lost += bool(problems)
        if lost >= 5:
            break
    assert lost >= 5, "a store without fsync must lose acknowledged records in some crash image"
