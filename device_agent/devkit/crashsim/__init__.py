"""A power-loss simulator for SQLite (dev-only): record a workload's file I/O, replay it to crash images.

Why: a `kill -9` leaves the operating system's page cache intact, so every write the process made still
reaches the disk and a missing fsync goes unseen. A power loss keeps only what was synced. This is the method
of SQLite's own crash tests (`src/test6.c`), rebuilt over APSW's Python VFS.

How it is used::

    def workload(session: Session) -> None:
        db = session.connect("db.sqlite")          # apsw.Connection through the recording VFS
        ...                                        # write; after COMMIT returns: session.acknowledge(item)

    for image in run_workload(workload, seed=1):   # one CrashImage per (crash point, plan)
        with materialised(image) as directory:     # the files a reboot would find, in a temporary directory
            ...                                    # reopen with sqlite3 or APSW; check image.acknowledged

The store's engine plugs in through its SQL seam, `device_agent.store._db.DriverFactory` (a callable
`Path -> Driver`; a `Driver` has `execute(sql, params) -> Iterator[tuple]` in autocommit, `close()` and
`classify(error)`): `Store.open(directory, driver=session.driver_factory())` gives it `ApswDriver`s opened
through the recording VFS. `Recording.crash_images` and `Recording.image` give finer control than
`run_workload` (a chosen point, a hand-made `Plan`).

The model of a power loss
-------------------------
- Recorded, per file and in order: xWrite, xTruncate, xSync of the main database, its rollback journal,
  its WAL and super-journals; xDelete; file creation (an xOpen of a file that did not exist).
- Per file, the durable content is the content at its last xSync; later writes and truncations are pending.
- A crash point is a moment in the recording: before every xSync (its file's writes are all still pending),
  right after every acknowledgement, at every `Session.crash_point`, optionally every N writes, and at the
  end. `Exploration` decides the plans per point: every apply/drop subset of the pending operations when
  there are few, every in-order prefix when there are many, torn writes (a multi-sector write cut at
  512-byte boundaries with only some pieces persisted, the rest of the disk keeping its old bytes), and
  random mixes that also reorder (any subset persists) and turn whole writes into noise.
- Directories, coarsely: a name created or deleted is durable only after a directory fsync. The base unix
  VFS fsyncs the directory on the first xSync of a journal or WAL it opened with CREATE and on xDelete with
  `syncdir`; those are mirrored, and `Session.sync_directory` records one the workload makes itself. A
  directory fsync makes every name in that directory durable (as POSIX has it). Until then a created file
  may vanish, and a deleted one may come back with the content it had at its last sync (a "ghost", e.g. a
  hot rollback journal whose deletion was never synced).
- Files that exist before recording (what `setup` left) are durable. A file first seen at an xOpen that
  exists but was made outside SQLite (the store pre-creates its files 0600) is taken as durable as it is.

What is not modelled
--------------------
- The `-shm` wal-index: never in an image. It is memory-mapped, not written through xWrite, and the first
  connection after a reboot rebuilds it from the WAL (a stale one on disk would be discarded the same way).
- I/O outside SQLite (key files, renames done by the store in Python) is not seen; do it in `setup`, or
  accept that the image holds its state from before recording. Renames are not modelled at all, and
  directories themselves are taken to exist (only the names of recorded files inside them can be lost).
- Writes within one 512-byte piece are atomic (the base VFS claims SQLITE_IOCAP_POWERSAFE_OVERWRITE, so
  SQLite relies on a write never damaging bytes outside its range; torn pieces and noise stay inside it).
- A deleted file's ghost has its last synced content only, not its unsynced writes.
- Metadata journaling quirks of a real filesystem (ext4 data=ordered, delayed allocation, a size update
  persisted without its data) beyond "unsynced data may hold old bytes or zeros", failed writes/fsyncs
  (see the store's FaultyFileIO for I/O errors), multiple processes, and the drive lying about flushes.
"""

from __future__ import annotations

from device_agent.devkit.crashsim._disk import APPLY, DROP, DiskModel, Fate, Outcome, Pending, Plan
from device_agent.devkit.crashsim._driver import ApswDriver
from device_agent.devkit.crashsim._events import (
    Ack,
    Adopt,
    Create,
    Delete,
    DirSync,
    Event,
    Mark,
    Sync,
    Truncate,
    Write,
)
from device_agent.devkit.crashsim._explore import Exploration
from device_agent.devkit.crashsim._run import (
    CrashImage,
    CrashPoint,
    CrashPoints,
    Recording,
    Session,
    Setup,
    Workload,
    materialised,
    record,
    run_workload,
    snapshot,
)
from device_agent.devkit.crashsim._vfs import Recorder, RecordingVFS
from device_agent.store import ErrorKind

__all__ = [
    "APPLY",
    "DROP",
    "Ack",
    "Adopt",
    "ApswDriver",
    "CrashImage",
    "CrashPoint",
    "CrashPoints",
    "Create",
    "Delete",
    "DirSync",
    "DiskModel",
    "ErrorKind",
    "Event",
    "Exploration",
    "Fate",
    "Mark",
    "Outcome",
    "Pending",
    "Plan",
    "Recorder",
    "Recording",
    "RecordingVFS",
    "Session",
    "Setup",
    "Sync",
    "Truncate",
    "Workload",
    "Write",
    "materialised",
    "record",
    "run_workload",
    "snapshot",
]
