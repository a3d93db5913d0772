"""The power-loss simulator is honest both ways: SQLite in WAL + synchronous=FULL survives every crash image
it builds, and with the fsyncs turned off it finds the lost acknowledged records.

The workload: a table of records written one transaction each, each acknowledged only after COMMIT returned,
with payloads from a few bytes to several pages (multi-frame commits, overflow pages) and checkpoints every
few pages (WAL restarts, database syncs). Images are reopened with the standard library's sqlite3, as a device
would, and checked: integrity_check is ok, every acknowledged record is there unaltered, and any other record
present is a whole one.
"""

from __future__ import annotations

import hashlib
import logging
import sqlite3
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import apsw
import pytest

from device_agent.devkit import crashsim
from device_agent.devkit.crashsim import (
    APPLY,
    DROP,
    ApswDriver,
    CrashImage,
    CrashPoints,
    DiskModel,
    Exploration,
    Fate,
    Outcome,
    Pending,
    Plan,
    Session,
    Write,
)

logger = logging.getLogger(__name__)

DB = "db.sqlite"
RECORDS = 100
# Per crash point: every apply/drop subset up to 4 pending writes, else every in-order prefix (at most 16),
# 6 torn writes and 8 random mixes (reordered, torn, scrambled, names kept or lost). About 3,000 images, 8 s.
THOROUGH = Exploration(exhaustive_limit=4, prefixes=16, torn=6, random=8)
SEED = 20240611


def payload(record: int) -> bytes:
    """Deterministic, so any row found in an image can be checked, acknowledged or not."""
    size = (record * 2741) % 9000 + 16  # 16 B .. 9 KB: most records fit a page, some span three
    seed = hashlib.sha256(record.to_bytes(4, "big")).digest()
    return (seed * (size // len(seed) + 1))[:size]


def setup_table(root: Path) -> None:
    """The durable starting point: an empty table in a WAL-mode database."""
    connection = sqlite3.connect(root / DB)
    try:
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("CREATE TABLE records (id INTEGER PRIMARY KEY, payload BLOB NOT NULL)")
        connection.commit()
    finally:
        connection.close()


def writer(synchronous: str, records: int = RECORDS, journal: str = "WAL") -> Callable[[Session], None]:
    def connect(session: Session) -> apsw.Connection:
        db = session.connect(DB)
        db.execute(f"PRAGMA journal_mode={journal}")
        db.execute(f"PRAGMA synchronous={synchronous}")
        db.execute("PRAGMA wal_autocheckpoint=8")
        return db

    def workload(session: Session) -> None:
        db = connect(session)
        for record in range(records):
            if record == records // 2:  # close and reopen: the WAL is checkpointed, deleted and made again
                db.close()
                db = connect(session)
            db.execute("BEGIN IMMEDIATE")
            db.execute("INSERT INTO records (id, payload) VALUES (?, ?)", (record, payload(record)))
            db.execute("COMMIT")
            session.acknowledge(record)

    return workload


@dataclass
class Verdict:
    integrity: list[str]
    rows: dict[int, bytes]
    problems: list[str] = field(default_factory=list)


def reopen(image: CrashImage, parent: Path) -> Verdict:
    with crashsim.materialised(image, parent) as directory:
        connection = sqlite3.connect(directory / DB)
        try:
            integrity = [str(row[0]) for row in connection.execute("PRAGMA integrity_check")]
            rows = dict(connection.execute("SELECT id, payload FROM records"))
        except sqlite3.DatabaseError as error:  # malformed beyond what integrity_check can report
            return Verdict([f"unreadable: {error}"], {}, [f"unreadable: {error}"])
        finally:
            connection.close()
    return Verdict(integrity, rows)


def judge(image: CrashImage, parent: Path) -> Verdict:
    verdict = reopen(image, parent)
    if verdict.integrity != ["ok"]:
        verdict.problems.append(f"integrity_check: {verdict.integrity[:3]}")
    lost = [record for record in image.acknowledged if record not in verdict.rows]
    if lost:
        verdict.problems.append(f"acknowledged records lost: {lost}")
    altered = [record for record, value in verdict.rows.items() if value != payload(record)]
    if altered:
        verdict.problems.append(f"records altered: {altered}")
    return verdict


def test_the_recorder_misses_nothing():
    """Replaying every recorded operation gives exactly the files the workload left on disk."""
    recording = crashsim.record(writer("FULL", records=12), setup=setup_table)
    end = recording.points(CrashPoints(syncs=False, acks=False))[-1]
    everything = Plan("all", {p.seq: APPLY for p in end.pending}, frozenset(end.uncertain_names))
    assert dict(recording.image(end, everything).files) == recording.observed_final
    assert recording.acknowledged == tuple(range(12))


def test_wal_full_keeps_every_acknowledged_record_at_every_sync_point(tmp_path: Path):
    started = time.monotonic()
    recording = crashsim.record(writer("FULL"), setup=setup_table)
    points = recording.points()
    images = 0
    fates: Counter[str] = Counter()
    failures: list[str] = []
    for image in recording.crash_images(seed=SEED, exploration=THOROUGH):
        images += 1
        fates.update(outcome.fate.value for outcome in image.plan.outcomes.values())
        verdict = judge(image, tmp_path)
        if verdict.problems:
            failures.append(f"{image.label}: {verdict.problems}")
    elapsed = time.monotonic() - started
    logger.info(
        "crashsim.wal_full",
        extra={"syncs": recording.syncs, "points": len(points), "images": images, "seconds": elapsed},
    )
    print(f"WAL+FULL: {recording.syncs} syncs, {len(points)} crash points, {images} images, {elapsed:.1f} s")
    assert failures == [], "\n".join(failures[:10])
    # Every sync is a crash point, and the sampling really dropped, tore and scrambled writes.
    assert len(points) >= recording.syncs >= RECORDS
    assert min(fates[fate.value] for fate in Fate) > 0, fates


def test_synchronous_off_loses_acknowledged_records(tmp_path: Path):
    """The same workload without fsyncs: the simulator must find images that lose what was acknowledged."""
    recording = crashsim.record(writer("OFF", records=40), setup=setup_table)
    assert recording.syncs == 0
    lost: list[str] = []
    corrupt: list[str] = []
    images = 0
    for image in recording.crash_images(seed=SEED, points=CrashPoints(every=16)):
        images += 1
        verdict = judge(image, tmp_path)
        if any(problem.startswith("acknowledged records lost") for problem in verdict.problems):
            lost.append(image.label)
        if verdict.integrity != ["ok"]:
            corrupt.append(image.label)
    print(f"synchronous=OFF: {images} images, {len(lost)} lose acknowledged records, {len(corrupt)} corrupt")
    assert lost, "a missing fsync went unseen"


def setup_rollback_table(root: Path) -> None:
    connection = sqlite3.connect(root / DB)
    try:
        connection.execute("CREATE TABLE records (id INTEGER PRIMARY KEY, payload BLOB NOT NULL)")
        connection.commit()
    finally:
        connection.close()


def survey(recording: crashsim.Recording, parent: Path) -> tuple[int, list[CrashImage], list[CrashImage]]:
    """(images, those that lose an acknowledged record, those that fail integrity or alter a record)."""
    images, lost, damaged = 0, [], []
    for image in recording.crash_images(seed=SEED, exploration=Exploration(random=2, torn=2)):
        images += 1
        verdict = judge(image, parent)
        if any(problem.startswith("acknowledged records lost") for problem in verdict.problems):
            lost.append(image)
        if verdict.integrity != ["ok"] or any(
            problem.startswith("records altered") for problem in verdict.problems
        ):
            damaged.append(image)
    return images, lost, damaged


def test_wal_normal_may_lose_the_last_commits_but_never_corrupts(tmp_path: Path):
    """pragma.html: in WAL mode NORMAL "might roll back following a power loss", and stays consistent."""
    recording = crashsim.record(writer("NORMAL", records=24), setup=setup_table)
    images, lost, damaged = survey(recording, tmp_path)
    print(f"WAL+NORMAL: {images} images, {len(lost)} lose acknowledged records, {len(damaged)} damaged")
    assert lost
    assert damaged == [], damaged[0].label if damaged else ""


def test_rollback_journal_needs_extra_not_full(tmp_path: Path):
    """pragma.html: EXTRA also syncs the directory after the journal is unlinked to commit in DELETE mode.
    With FULL, the deletion of the journal may not survive: the hot journal comes back and rolls back a commit
    that was acknowledged. The directory model must find exactly that, and nothing with EXTRA."""
    full = crashsim.record(writer("FULL", records=16, journal="DELETE"), setup=setup_rollback_table)
    images, lost, damaged = survey(full, tmp_path)
    print(f"DELETE+FULL: {images} images, {len(lost)} lose acknowledged records, {len(damaged)} damaged")
    assert lost
    assert damaged == []
    journal = f"{DB}-journal"
    for image in lost:  # every loss is a journal whose unlink did not reach the disk
        assert journal in image.point.uncertain_names, image.label
        assert journal not in image.plan.new_names, image.label
        assert journal in image.files, image.label

    extra = crashsim.record(writer("EXTRA", records=16, journal="DELETE"), setup=setup_rollback_table)
    images, lost, damaged = survey(extra, tmp_path)
    print(f"DELETE+EXTRA: {images} images, {len(lost)} lose acknowledged records, {len(damaged)} damaged")
    assert lost == []
    assert damaged == []


def multi_frame_commit_point(recording: crashsim.Recording) -> crashsim.CrashPoint:
    """The first sync of the WAL with a commit of three or more frames pending."""
    for point in recording.points(CrashPoints(acks=False, end=False)):
        frames = [p for p in point.pending if isinstance(p.op, Write) and p.op.file.endswith("-wal")]
        if point.label == f"before sync of {DB}-wal" and sum(len(p.op.data) == 4096 for p in frames) >= 3:  # type: ignore[union-attr]
            return point
    raise AssertionError("the workload has no multi-frame commit")


def test_a_torn_wal_frame_voids_its_transaction_never_half_applies_it(tmp_path: Path):
    """Tear the first page of a multi-page commit and apply every later frame, the commit frame included:
    SQLite's cumulative WAL checksums must stop at the torn frame, so the transaction is absent as a whole."""
    recording = crashsim.record(writer("FULL", records=8), setup=setup_table)
    point = multi_frame_commit_point(recording)
    record = len(point.acknowledged)  # the record whose commit is in flight
    pages = [p for p in point.pending if isinstance(p.op, Write) and len(p.op.data) == 4096]
    torn_page = pages[0]
    applied = {p.seq: APPLY for p in point.pending}
    torn = {**applied, torn_page.seq: Outcome(Fate.TEAR, frozenset({0, 1, 2}))}  # 3 of its 9 pieces

    whole = recording.image(point, Plan("whole", applied))
    broken = recording.image(point, Plan("torn", torn))
    assert broken.files[f"{DB}-wal"] != whole.files[f"{DB}-wal"]  # the tear changed bytes on disk

    complete = judge(whole, tmp_path)
    assert complete.problems == []
    assert record in complete.rows  # control: the same frames untorn are a committed transaction
    verdict = judge(broken, tmp_path)
    assert verdict.problems == []
    assert record not in verdict.rows
    assert sorted(verdict.rows) == list(range(record))


def test_torn_wal_writes_sampled_everywhere_are_never_applied(tmp_path: Path):
    """Every torn or scrambled WAL write the sampler made: the in-flight record is all or nothing."""
    recording = crashsim.record(writer("FULL", records=16), setup=setup_table)
    checked = 0
    for image in recording.crash_images(seed=SEED, points=CrashPoints(acks=False, end=False)):
        damaged = [
            pending
            for pending in image.point.pending
            if pending.op.file.endswith("-wal")
            and image.plan.outcomes.get(pending.seq, DROP).fate in {Fate.TEAR, Fate.GARBAGE}
        ]
        if not damaged:
            continue
        checked += 1
        verdict = judge(image, tmp_path)
        assert verdict.problems == [], image.label
    assert checked >= 16


def test_run_workload_yields_checkable_images_and_leaves_no_vfs_behind(tmp_path: Path):
    images = list(crashsim.run_workload(writer("FULL", records=3), seed=7, setup=setup_table))
    assert len({image.point.number for image in images}) >= 6  # 3 commits: a sync and an ack each, at least
    assert images[-1].acknowledged == (0, 1, 2)
    for image in images:
        assert judge(image, tmp_path).problems == [], image.label
    assert not [name for name in apsw.vfs_names() if name.startswith("crashsim-")]
    again = [
        image.label for image in crashsim.run_workload(writer("FULL", records=3), seed=7, setup=setup_table)
    ]
    assert again == [image.label for image in images]  # the same seed, the same images


# --- the model itself --------------------------------------------------------------------------------------


def test_a_write_tears_at_sector_boundaries_only():
    pending = Pending(
        1, Write("f", 500, bytes(range(256)) * 5)
    )  # 1280 bytes from 500: 500|512|1024|1536|1780
    assert [(start, len(piece)) for start, piece in pending.pieces(512)] == [
        (500, 12),
        (512, 512),
        (1024, 512),
        (1536, 244),
    ]
    model = DiskModel({"f": b"\xff" * 2048}, sector=512)
    model.apply(pending.op)
    image = model.image(Plan("t", {1: Outcome(Fate.TEAR, frozenset({1}))}))
    assert image["f"][:512] == b"\xff" * 512
    assert image["f"][512:1024] == pending.op.data[12:524]  # type: ignore[union-attr]
    assert image["f"][1024:] == b"\xff" * 1024
    assert not Pending(2, Write("f", 0, b"x" * 512)).tearable(512)


def test_unsynced_creation_may_vanish_and_unsynced_deletion_may_come_back():
    model = DiskModel({"old": b"synced"})
    for event in (
        crashsim.Create("new"),
        Write("new", 0, b"data"),
        crashsim.Sync("new", dirsync=False),  # the file's data is durable, its name is not
        crashsim.Delete("old", syncdir=False),
    ):
        model.apply(event)
    assert model.uncertain_names() == ["new", "old"]
    assert model.image(Plan("old names", {})) == {"old": b"synced"}
    assert model.image(Plan("new names", {}, frozenset({"new", "old"}))) == {"new": b"data"}
    model.apply(crashsim.DirSync(""))
    assert model.uncertain_names() == []
    assert model.image(Plan("any", {})) == {"new": b"data"}


def test_the_first_sync_of_a_new_wal_syncs_its_directory():
    recording = crashsim.record(writer("FULL", records=1), setup=setup_table)
    syncs = [event for event in recording.events if isinstance(event, crashsim.Sync)]
    assert syncs[0].file == f"{DB}-wal"
    assert syncs[0].dirsync
    assert not any(event.dirsync for event in syncs[1:] if event.file == f"{DB}-wal")


# --- the adapter for the store's SQL seam ------------------------------------------------------------------


def test_the_driver_runs_sql_in_autocommit_and_classifies_errors(tmp_path: Path):
    def workload(session: Session) -> None:
        driver = session.driver_factory()(session.path(DB))
        try:
            assert list(driver.execute("PRAGMA journal_mode=WAL")) == [("wal",)]
            list(driver.execute("CREATE TABLE t (k INTEGER PRIMARY KEY, v BLOB)"))
            list(driver.execute("BEGIN IMMEDIATE"))
            list(driver.execute("INSERT INTO t VALUES (?, ?)", (1, b"one")))
            list(driver.execute("COMMIT"))
            assert list(driver.execute("SELECT k, v FROM t WHERE k = ?", [1])) == [(1, b"one")]
            session.acknowledge(1)
            with pytest.raises(apsw.SQLError) as caught:
                list(driver.execute("SELECT nope FROM t"))
            assert driver.classify(caught.value) == "other"
        finally:
            driver.close()

    recording = crashsim.record(workload)
    assert recording.acknowledged == (1,)
    probe = ApswDriver(apsw.Connection(":memory:"))
    try:
        assert probe.classify(apsw.CorruptError()) == "corrupt"
        assert probe.classify(apsw.NotADBError()) == "corrupt"
        assert probe.classify(apsw.FullError()) == "full"
        assert probe.classify(apsw.IOError()) == "io"
        assert probe.classify(apsw.BusyError()) == "busy"
        assert probe.classify(apsw.CantOpenError()) == "access"
        assert probe.classify(apsw.ConstraintError()) == "other"
        assert probe.classify(UnicodeDecodeError("utf-8", b"\xff", 0, 1, "damaged")) == "corrupt"
        assert probe.classify(ValueError()) is None
    finally:
        probe.close()


def test_exploration_rejects_nonsense():
    with pytest.raises(ValueError):
        Exploration(torn=-1)
    with pytest.raises(ValueError):
        Outcome(Fate.TEAR)
