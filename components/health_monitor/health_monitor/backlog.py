"""What the health log could not take while it could not be written, kept in memory until it can.

A full disk, a folder replaced by a link, a read-only remount: the monitor goes on judging and publishing
(DEGRADED, with the reason), and the state changes, incidents and lifecycle notes of that time wait here,
at most `capacity` of them (the oldest go first, counted). The first write that succeeds puts a
`log.resumed` note first, saying since when the log could not be written, how many records follow late
and how many were lost, then the kept records in their order, each with its own time: the technician's
timeline has no silent gap. Snapshots are not kept: the next one, written after the outage, says all of it.
"""

from __future__ import annotations

import collections
from collections.abc import Iterable
from datetime import datetime
from typing import Final

from device_agent.health_log import Lifecycle, LifecycleEvent, Record, Snapshot

CAPACITY: Final = 500  # records of a few hundred bytes each: well under a megabyte


class Backlog:
    def __init__(self, capacity: int = CAPACITY) -> None:
        self.capacity = capacity
        self.records: collections.deque[Record] = collections.deque()
        self.lost = 0  # kept records pushed out by newer ones
        self.since: datetime | None = None  # when the log first failed, this time
        self.reason: str | None = None

    def __len__(self) -> int:
        return len(self.records)

    def keep(self, records: Iterable[Record], *, failed_at: datetime, reason: str) -> None:
        """The records a write did not take, in order, after what is kept already (not snapshots)."""
        if self.since is None:
            self.since = failed_at
        self.reason = reason
        for record in records:
            if isinstance(record, Snapshot) or _is_resumed_note(record):
                continue
            if len(self.records) >= self.capacity:
                self.records.popleft()
                self.lost += 1
            self.records.append(record)

    def restore(self, records: Iterable[Record], *, failed_at: datetime, reason: str) -> None:
        """A write of `take()`'s records and newer ones failed: `records` is what it did not take."""
        self.records.clear()
        self.keep(records, failed_at=failed_at, reason=reason)

    def take(self, now: datetime) -> list[Record]:
        """The `log.resumed` note and the kept records, oldest first, to write before anything newer; the
        backlog keeps them until `written` (a write can fail again). Empty if the log never failed."""
        if self.since is None:
            return []
        since = self.since.strftime("%Y-%m-%dT%H:%M:%SZ")
        detail = (
            f"the log could not be written from {since} ({self.reason}); {len(self.records)} records kept"
        )
        detail += " in memory follow" if self.records else ""
        if self.lost:
            detail += f"; {self.lost} older records lost (at most {self.capacity} are kept)"
        return [Lifecycle(time=now, event=LifecycleEvent.LOG_RESUMED, detail=detail), *self.records]

    def written(self) -> None:
        """Everything `take` gave is in the log."""
        self.records.clear()
        self.lost = 0
        self.since = None
        self.reason = None


def _is_resumed_note(record: Record) -> bool:
    return isinstance(record, Lifecycle) and record.event is LifecycleEvent.LOG_RESUMED
