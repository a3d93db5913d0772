"""The recording VFS: SQLite's own unix VFS underneath, with every change to a durable file written down.

Writes go through to the real files (so SQLite reads back exactly what it wrote, as it would from the page
cache) and are also appended to a `Recorder`. Only the files a power loss can damage are recorded: the main
database, its rollback journal, its WAL and super-journals, under the recorder's root. Temporary files and
the `-shm` wal-index (memory-mapped by the base VFS, never written through xWrite, and rebuilt from the WAL
by the first connection after a crash) are not.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING

import apsw

from device_agent.devkit.crashsim._events import (
    Ack,
    Adopt,
    Create,
    Delete,
    Event,
    Mark,
    Sync,
    Truncate,
    Write,
)

if TYPE_CHECKING:
    from typing_extensions import Buffer  # collections.abc.Buffer is 3.12+

logger = logging.getLogger(__name__)

_RECORDED_KINDS = (
    apsw.SQLITE_OPEN_MAIN_DB
    | apsw.SQLITE_OPEN_MAIN_JOURNAL
    | apsw.SQLITE_OPEN_WAL
    | apsw.SQLITE_OPEN_SUPER_JOURNAL
)
# The unix VFS fsyncs the directory on the first xSync of a journal or WAL it opened with CREATE
# (UNIXFILE_DIRSYNC in os_unix.c). That fsync happens inside the base VFS, out of our sight: mirrored.
_DIRSYNC_KINDS = apsw.SQLITE_OPEN_MAIN_JOURNAL | apsw.SQLITE_OPEN_WAL | apsw.SQLITE_OPEN_SUPER_JOURNAL


class Recorder:
    """The ordered log of events under `root`, shared by every file the VFS opens."""

    def __init__(self, root: Path, known: set[str]) -> None:
        self.root = root
        self.events: list[Event] = []
        # Files the log accounts for; an existing file outside this set is adopted on first open.
        self._known = set(known)
        self._lock = threading.Lock()

    def name_of(self, path: str) -> str | None:
        """The file's name relative to the root, or None when it lies outside (then it is not recorded)."""
        try:
            return Path(os.path.abspath(path)).relative_to(self.root).as_posix()  # noqa: PTH100 - no symlink resolution
        except ValueError:
            return None

    def add(self, event: Event) -> None:
        with self._lock:
            self.events.append(event)

    def opened(self, name: str, existed: bool, path: str) -> None:
        with self._lock:
            if not existed:
                self.events.append(Create(name))
            elif name not in self._known:
                logger.debug("crashsim.adopt", extra={"file": name})
                self.events.append(Adopt(name, Path(path).read_bytes()))
            self._known.add(name)

    def deleted(self, name: str, syncdir: bool) -> None:
        with self._lock:
            self.events.append(Delete(name, syncdir))
            self._known.discard(name)

    def acknowledge(self, item: object) -> None:
        self.add(Ack(item))

    def mark(self, label: str) -> None:
        self.add(Mark(label))


class RecordingFile(apsw.VFSFile):
    """A file of the default VFS whose writes, truncations and syncs are also recorded."""

    def __init__(
        self,
        recorder: Recorder,
        name: str,
        filename: str | apsw.URIFilename,
        flags: list[int],
    ) -> None:
        super().__init__("", filename, flags)
        self._recorder = recorder
        self._name = name
        self._dirsync = bool(flags[0] & apsw.SQLITE_OPEN_CREATE and flags[0] & _DIRSYNC_KINDS)

    def xWrite(self, data: Buffer, offset: int) -> None:  # noqa: N802 - the VFS API's names
        super().xWrite(data, offset)
        self._recorder.add(Write(self._name, offset, bytes(data)))

    def xTruncate(self, newsize: int) -> None:  # noqa: N802 - the VFS API's names
        super().xTruncate(newsize)
        self._recorder.add(Truncate(self._name, newsize))

    def xSync(self, flags: int) -> None:  # noqa: N802 - the VFS API's names
        super().xSync(flags)
        self._recorder.add(Sync(self._name, self._dirsync))
        self._dirsync = False


class RecordingVFS(apsw.VFS):
    """Registered under `name`; open connections with `apsw.Connection(path, vfs=name)`."""

    def __init__(self, name: str, recorder: Recorder) -> None:
        super().__init__(name, base="")
        self.name = name
        self.recorder = recorder

    def xOpen(self, name: str | apsw.URIFilename | None, flags: list[int]) -> apsw.VFSFile:  # noqa: N802 - the VFS API's names
        path = name.filename() if isinstance(name, apsw.URIFilename) else name
        recorded = self.recorder.name_of(path) if path is not None and flags[0] & _RECORDED_KINDS else None
        if name is None or path is None or recorded is None:
            return apsw.VFSFile("", name, flags)
        existed = os.path.exists(path)  # noqa: PTH110 - the same check SQLite's own open makes
        file = RecordingFile(self.recorder, recorded, name, flags)
        self.recorder.opened(recorded, existed, path)
        return file

    def xDelete(self, filename: str, syncdir: bool) -> None:  # noqa: N802 - the VFS API's names
        super().xDelete(filename, syncdir)
        recorded = self.recorder.name_of(filename)
        if recorded is not None:
            self.recorder.deleted(recorded, syncdir)
