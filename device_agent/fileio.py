"""The file I/O seam: every durable file operation of the library goes through a `FileIO`.

`OsFileIO` is the real thing, a thin layer over `os`. `FaultyFileIO` wraps another `FileIO` and makes it fail
the way a full disk or a dying card does, for the library's tests and the components' alike:

    faulty = FaultyFileIO(faults=[Fault("fsync", errno.EIO)], enospc_after=4096)
    faulty = FaultyFileIO(crash=CrashPoint("replace"))   # raises SimulatedCrash after the rename

Like the OS, the seam raises plain `OSError`s; `device_agent.files` turns them into `StorageError`s that name
the path and the operation. A simulated crash is a `BaseException`, so no cleanup code that handles errors
runs after it: what is on disk at that moment is what a killed process leaves behind.
"""

from __future__ import annotations

import dataclasses
import errno
import os
import stat
from collections.abc import Iterable
from pathlib import Path
from typing import Literal, Protocol

StrPath = str | os.PathLike[str]
Buffer = bytes | bytearray | memoryview

Operation = Literal[
    "open",
    "close",
    "read",
    "write",
    "fsync",
    "fstat",
    "fchmod",
    "stat",
    "lstat",
    "chmod",
    "mkdir",
    "replace",
    "unlink",
    "fsync_dir",
    "listdir",
]


class FileIO(Protocol):
    """File operations as the OS offers them: descriptors are ints, failures are `OSError`s."""

    def open(self, path: StrPath, flags: int, mode: int = 0o600) -> int: ...
    def close(self, fd: int) -> None: ...
    def read(self, fd: int, size: int) -> bytes: ...
    def write(self, fd: int, data: Buffer) -> int: ...
    def fsync(self, fd: int) -> None: ...
    def fstat(self, fd: int) -> os.stat_result: ...
    def fchmod(self, fd: int, mode: int) -> None: ...
    def stat(self, path: StrPath) -> os.stat_result: ...
    def lstat(self, path: StrPath) -> os.stat_result: ...
    def chmod(self, path: StrPath, mode: int) -> None: ...
    def mkdir(self, path: StrPath, mode: int) -> None: ...
    def replace(self, source: StrPath, target: StrPath) -> None: ...
    def unlink(self, path: StrPath) -> None: ...
    def fsync_dir(self, path: StrPath) -> None: ...
    def listdir(self, path: StrPath) -> list[str]: ...


class OsFileIO:
    """The real file system."""

    def open(self, path: StrPath, flags: int, mode: int = 0o600) -> int:
        return os.open(path, flags | os.O_CLOEXEC, mode)

    def close(self, fd: int) -> None:
        os.close(fd)

    def read(self, fd: int, size: int) -> bytes:
        return os.read(fd, size)

    def write(self, fd: int, data: Buffer) -> int:
        return os.write(fd, data)

    def fsync(self, fd: int) -> None:
        os.fsync(fd)

    def fstat(self, fd: int) -> os.stat_result:
        return os.fstat(fd)

    def fchmod(self, fd: int, mode: int) -> None:
        os.fchmod(fd, mode)

    def stat(self, path: StrPath) -> os.stat_result:
        return Path(path).stat()

    def lstat(self, path: StrPath) -> os.stat_result:
        return os.lstat(path)

    def chmod(self, path: StrPath, mode: int) -> None:
        Path(path).chmod(mode)

    def mkdir(self, path: StrPath, mode: int) -> None:
        Path(path).mkdir(mode)

    def replace(self, source: StrPath, target: StrPath) -> None:
        Path(source).replace(target)

    def unlink(self, path: StrPath) -> None:
        Path(path).unlink()

    def fsync_dir(self, path: StrPath) -> None:
        # fsync(2): a rename reaches the disk only when the directory holding the entry is synced too.
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def listdir(self, path: StrPath) -> list[str]:
        return [entry.name for entry in Path(path).iterdir()]


OS_FILE_IO = OsFileIO()


class SimulatedCrash(BaseException):
    """Raised by `FaultyFileIO` at its crash point; a `BaseException` so that no error handler cleans up."""


@dataclasses.dataclass(frozen=True)
class Fault:
    """Make the `call`-th call (1-based) of `operation` fail with `OSError(errno_value)` without doing it."""

    operation: Operation
    errno_value: int = errno.EIO
    call: int = 1


@dataclasses.dataclass(frozen=True)
class CrashPoint:
    """Crash right after the `call`-th call (1-based) of `operation` has taken effect."""

    operation: Operation
    call: int = 1


class FaultyFileIO:
    """A `FileIO` that fails on cue, records what was asked of it and can simulate a crash.

    - `faults`: each fails one call of one operation with the given errno (EIO, ENOSPC, EXDEV...).
    - `enospc_after`: a byte budget for `write` across all descriptors; the write that reaches it is short
      (like the OS) and later writes fail with ENOSPC.
    - `crash`: after that call, `SimulatedCrash` is raised and `crash_image` holds the regular files of
      `watch` (default: the directory of the path the crashing operation touched) as name → bytes. From
      then on every operation but `close` raises `SimulatedCrash`: the process is gone.
    - `operations` lists `(operation, path)` for every call, in order, for asserting on sequences.
    """

    def __init__(
        self,
        inner: FileIO | None = None,
        *,
        faults: Iterable[Fault] = (),
        enospc_after: int | None = None,
        crash: CrashPoint | None = None,
        watch: StrPath | None = None,
    ) -> None:
        self._inner: FileIO = inner if inner is not None else OS_FILE_IO
        self._faults = list(faults)
        self._space = enospc_after
        self._crash = crash
        self._watch = None if watch is None else Path(watch)
        self._counts: dict[str, int] = {}
        self._paths: dict[int, str] = {}
        self.operations: list[tuple[Operation, str]] = []
        self.crashed = False
        self.crash_image: dict[str, bytes] | None = None

    def _enter(self, operation: Operation, path: str) -> None:
        if self.crashed:
            raise SimulatedCrash(operation)
        count = self._counts.get(operation, 0) + 1
        self._counts[operation] = count
        self.operations.append((operation, path))
        for fault in self._faults:
            if fault.operation == operation and fault.call == count:
                raise OSError(fault.errno_value, os.strerror(fault.errno_value), path)

    def _leave(self, operation: Operation, path: str, *, directory: str | None = None) -> None:
        crash = self._crash
        if crash is None or crash.operation != operation or crash.call != self._counts[operation]:
            return
        self.crashed = True
        if self._watch is not None:
            directory = os.fspath(self._watch)
        elif directory is None:
            directory = os.fspath(Path(path).parent)
        self.crash_image = {}
        for entry in sorted(Path(directory).iterdir()):
            if stat.S_ISREG(entry.lstat().st_mode):
                self.crash_image[entry.name] = entry.read_bytes()
        raise SimulatedCrash(operation)

    def open(self, path: StrPath, flags: int, mode: int = 0o600) -> int:
        name = os.fspath(path)
        self._enter("open", name)
        fd = self._inner.open(path, flags, mode)
        self._paths[fd] = name
        self._leave("open", name)
        return fd

    def close(self, fd: int) -> None:
        name = self._paths.pop(fd, f"<fd {fd}>")
        if self.crashed:  # the kernel closes a dead process's descriptors; keep the test from leaking them
            self._inner.close(fd)
            return
        try:
            self._enter("close", name)
        finally:
            # Linux releases the descriptor even when close(2) reports an error; so does a failed close here.
            self._inner.close(fd)
        self._leave("close", name)

    def read(self, fd: int, size: int) -> bytes:
        name = self._name(fd)
        self._enter("read", name)
        data = self._inner.read(fd, size)
        self._leave("read", name)
        return data

    def write(self, fd: int, data: Buffer) -> int:
        name = self._name(fd)
        self._enter("write", name)
        view = memoryview(data)
        if self._space is not None:
            if self._space <= 0 and view:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), name)
            view = view[: self._space]
        written = self._inner.write(fd, view)
        if self._space is not None:
            self._space -= written
        self._leave("write", name)
        return written

    def fsync(self, fd: int) -> None:
        name = self._name(fd)
        self._enter("fsync", name)
        self._inner.fsync(fd)
        self._leave("fsync", name)

    def fstat(self, fd: int) -> os.stat_result:
        name = self._name(fd)
        self._enter("fstat", name)
        result = self._inner.fstat(fd)
        self._leave("fstat", name)
        return result

    def fchmod(self, fd: int, mode: int) -> None:
        name = self._name(fd)
        self._enter("fchmod", name)
        self._inner.fchmod(fd, mode)
        self._leave("fchmod", name)

    def stat(self, path: StrPath) -> os.stat_result:
        self._enter("stat", os.fspath(path))
        result = self._inner.stat(path)
        self._leave("stat", os.fspath(path))
        return result

    def lstat(self, path: StrPath) -> os.stat_result:
        self._enter("lstat", os.fspath(path))
        result = self._inner.lstat(path)
        self._leave("lstat", os.fspath(path))
        return result

    def chmod(self, path: StrPath, mode: int) -> None:
        self._enter("chmod", os.fspath(path))
        self._inner.chmod(path, mode)
        self._leave("chmod", os.fspath(path))

    def mkdir(self, path: StrPath, mode: int) -> None:
        self._enter("mkdir", os.fspath(path))
        self._inner.mkdir(path, mode)
        self._leave("mkdir", os.fspath(path))

    def replace(self, source: StrPath, target: StrPath) -> None:
        self._enter("replace", os.fspath(target))
        self._inner.replace(source, target)
        self._leave("replace", os.fspath(target))

    def unlink(self, path: StrPath) -> None:
        self._enter("unlink", os.fspath(path))
        self._inner.unlink(path)
        self._leave("unlink", os.fspath(path))

    def fsync_dir(self, path: StrPath) -> None:
        self._enter("fsync_dir", os.fspath(path))
        self._inner.fsync_dir(path)
        self._leave("fsync_dir", os.fspath(path), directory=os.fspath(path))

    def listdir(self, path: StrPath) -> list[str]:
        self._enter("listdir", os.fspath(path))
        names = self._inner.listdir(path)
        self._leave("listdir", os.fspath(path), directory=os.fspath(path))
        return names

    def _name(self, fd: int) -> str:
        return self._paths.get(fd, f"<fd {fd}>")
