"""The health monitor's backlog: what the log could not take waits in memory, bounded, and goes in first,
after a note, once the log can be written again; and the monitor's write path uses it through a real
writer whose file operations fail (ENOSPC) and then succeed."""

from __future__ import annotations

import asyncio
import errno
from datetime import UTC, datetime, timedelta
from pathlib import Path

from health_monitor.backlog import Backlog
from health_monitor.component import HealthMonitor

from device_agent.fileio import Buffer, OsFileIO
from device_agent.health_log import (
    CheckStatus,
    HealthLogWriter,
    Incident,
    Lifecycle,
    LifecycleEvent,
    Severity,
    Snapshot,
    State,
    StateChange,
    read_log,
)

T0 = datetime(2026, 12, 4, 8, 0, tzinfo=UTC)


def change(minute: int) -> StateChange:
    at = T0 + timedelta(minutes=minute)
    return StateChange(
        time=at, check="cpu", old=State.OK, new=State.WARN, value=float(minute), unit="%", since=at
    )


def snapshot(minute: int) -> Snapshot:
    at = T0 + timedelta(minutes=minute)
    return Snapshot(
        time=at, overall=State.OK, checks=(CheckStatus(check="cpu", state=State.OK, since=at, verified=at),)
    )


def incident(minute: int) -> Incident:
    return Incident(
        time=T0 + timedelta(minutes=minute),
        check="integrity",
        event="store.integrity_failed",
        severity=Severity.CRITICAL,
        message="a record failed authentication",
    )


def test_a_backlog_that_never_failed_adds_nothing():
    assert Backlog().take(T0) == []


def test_kept_records_follow_a_note_in_their_order_and_snapshots_are_not_kept():
    backlog = Backlog()
    backlog.keep([change(1), snapshot(2), incident(3)], failed_at=T0, reason="StorageError")
    backlog.keep([change(4)], failed_at=T0 + timedelta(minutes=4), reason="StorageError")
    note, *records = backlog.take(T0 + timedelta(minutes=10))
    assert isinstance(note, Lifecycle)
    assert note.event is LifecycleEvent.LOG_RESUMED
    assert note.detail == (
        "the log could not be written from 2026-12-04T08:00:00Z (StorageError);"
        " 3 records kept in memory follow"
    )
    assert records == [change(1), incident(3), change(4)]
    backlog.written()
    assert backlog.take(T0) == []


def test_past_its_capacity_the_oldest_go_first_and_the_note_counts_them():
    backlog = Backlog(capacity=3)
    backlog.keep([change(minute) for minute in range(5)], failed_at=T0, reason="StorageError")
    note, *records = backlog.take(T0)
    assert records == [change(2), change(3), change(4)]
    assert isinstance(note, Lifecycle)
    assert note.detail is not None
    assert note.detail.endswith("; 2 older records lost (at most 3 are kept)")


def test_a_write_that_fails_again_keeps_only_what_it_did_not_take_and_no_second_note():
    backlog = Backlog()
    backlog.keep([change(1), change(2)], failed_at=T0, reason="StorageError")
    batch = [*backlog.take(T0 + timedelta(minutes=5)), change(6)]
    backlog.restore(batch[2:], failed_at=T0 + timedelta(minutes=6), reason="UnsafeFileError")  # 2 written
    note, *records = backlog.take(T0 + timedelta(minutes=7))
    assert records == [change(2), change(6)]
    assert isinstance(note, Lifecycle)
    assert note.detail is not None
    assert note.detail.startswith("the log could not be written from 2026-12-04T08:00:00Z (UnsafeFileError)")


class Disk(OsFileIO):
    """The real file operations, but every write fails with ENOSPC while `full`."""

    full = False

    def write(self, fd: int, data: Buffer) -> int:
        if self.full:
            raise OSError(errno.ENOSPC, "No space left on device")
        return super().write(fd, data)


def test_the_monitor_writes_what_waited_once_the_disk_has_room(tmp_path: Path):
    """`HealthMonitor._write` on a real writer whose writes fail with ENOSPC, then succeed."""
    disk = Disk()
    monitor = HealthMonitor()
    monitor.log_dir = tmp_path / "health"
    monitor.writer = HealthLogWriter(monitor.log_dir, io=disk)
    health: list[str | None] = []
    monitor._report_health = lambda: health.append(monitor.log_problem)  # type: ignore[method-assign]

    async def run() -> None:
        monitor.write_lock = asyncio.Lock()
        await monitor._write([change(0)])
        disk.full = True
        await monitor._write([change(1), snapshot(2)])
        await monitor._write([incident(3)])
        disk.full = False
        await monitor._write([change(4)])

    asyncio.run(run())
    # DEGRADED with the reason at the first failure (and again at the second), RUNNING once written.
    assert health == ["the health log cannot be written (StorageError)"] * 2 + [None]
    records = list(read_log(monitor.log_dir).records)
    assert records[0] == change(0)
    note = records[1]
    assert isinstance(note, Lifecycle)
    assert note.event is LifecycleEvent.LOG_RESUMED
    assert "2 records kept in memory follow" in (note.detail or "")
    assert records[2:] == [change(1), incident(3), change(4)]  # the snapshot not kept: nothing else lost
