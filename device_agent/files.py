"""Durable, private files: atomic replacement, 0600 files and 0700 directories whatever the umask.

Every function takes an optional `io` (the `device_agent.fileio` seam; the real file system by default) and
raises `StorageError` with the OS's errno when an operation fails, or `UnsafeFileError` when a path is a
symbolic link, not a regular file or directory, owned by another user or open to group or others. Messages
name the path and the problem, never file contents. The functions are synchronous; from a coroutine, call
them with `asyncio.to_thread`.

Atomic write, the sequence fsync(2) and the ALICE study ask for: create a temporary file exclusively in the
target's directory (same file system, so the rename is atomic), write it all, fsync it, rename it over the
target, fsync the directory. A crash leaves the old content or the new one, and at worst a stray temporary
that `remove_stale_temporaries` clears at the next start.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import stat
from collections.abc import Iterator
from pathlib import Path

from device_agent.errors import StorageError, UnsafeFileError
from device_agent.fileio import OS_FILE_IO, Buffer, FileIO, StrPath

logger = logging.getLogger(__name__)

FILE_MODE = 0o600
DIR_MODE = 0o700
TEMP_PREFIX = ".tmp-"
DEFAULT_MAX_BYTES = 1 << 20
# Group and other permission bits: a private file or directory has none.
_SHARED_BITS = 0o077
# Keep temporary names under NAME_MAX (255) whatever the target's name.
_TEMP_NAME_CHARS = 100


@contextlib.contextmanager
def _storage_errors(operation: str, path: StrPath) -> Iterator[None]:
    """Translate an OS error into a `StorageError` naming the operation and path; the cause stays chained."""
    try:
        yield
    except StorageError:
        raise
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise UnsafeFileError(
                f"{operation} {os.fspath(path)}: is a symbolic link", errno_value=error.errno
            ) from error
        reason = error.strerror or type(error).__name__
        raise StorageError(f"{operation} {os.fspath(path)}: {reason}", errno_value=error.errno) from error


def _check_private(st: os.stat_result, path: StrPath, *, directory: bool) -> None:
    """Owner and type checks shared by files and directories (the mode check is the caller's: it differs)."""
    if stat.S_ISLNK(st.st_mode):
        raise UnsafeFileError(f"{os.fspath(path)}: is a symbolic link", errno_value=errno.ELOOP)
    if directory and not stat.S_ISDIR(st.st_mode):
        raise UnsafeFileError(f"{os.fspath(path)}: is not a directory", errno_value=errno.ENOTDIR)
    if not directory and not stat.S_ISREG(st.st_mode):
        raise UnsafeFileError(f"{os.fspath(path)}: is not a regular file", errno_value=errno.EINVAL)
    if st.st_uid != os.geteuid():
        owner = f"owned by uid {st.st_uid}, expected uid {os.geteuid()}"
        raise UnsafeFileError(f"{os.fspath(path)}: {owner}", errno_value=errno.EPERM)


def _check_private_file_stat(st: os.stat_result, path: StrPath) -> None:
    _check_private(st, path, directory=False)
    # Refused, not tightened: a key that was readable by others may already have been read.
    if st.st_mode & _SHARED_BITS:
        raise UnsafeFileError(
            f"{os.fspath(path)}: mode {stat.S_IMODE(st.st_mode):04o} gives access to group or others",
            errno_value=errno.EPERM,
        )


def check_private_file(path: StrPath, *, io: FileIO | None = None) -> os.stat_result:
    """Check that `path` itself (not a link) is a regular file, ours, with no group or other bits."""
    fs = io if io is not None else OS_FILE_IO
    with _storage_errors("stat", path):
        st = fs.lstat(path)
    _check_private_file_stat(st, path)
    return st


def open_private(path: StrPath, *, create: bool, exclusive: bool = False, io: FileIO | None = None) -> int:
    """Open `path` read-write and return the descriptor (the caller closes it, through the same `io`).

    Never follows a symbolic link at `path`. With `create`, a missing file is created 0600 whatever the
    umask; with `exclusive` too, an existing file is an error (EEXIST). An existing file must be a regular
    file, ours, with no group or other permission bits.
    """
    if exclusive and not create:
        raise ValueError("exclusive needs create")
    fs = io if io is not None else OS_FILE_IO
    # O_NONBLOCK and O_NOCTTY: opening a FIFO or a terminal planted at the path must not hang or have side
    # effects before fstat refuses it. They change nothing for a regular file.
    flags = os.O_RDWR | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY
    created = False
    with _storage_errors("open", path):
        if create:
            try:
                fd = fs.open(path, flags | os.O_CREAT | os.O_EXCL, FILE_MODE)
                created = True
            except FileExistsError:
                if exclusive:
                    raise
                fd = fs.open(path, flags)
        else:
            fd = fs.open(path, flags)
    try:
        if created:
            with _storage_errors("chmod", path):
                fs.fchmod(fd, FILE_MODE)
        with _storage_errors("stat", path):
            st = fs.fstat(fd)
        _check_private_file_stat(st, path)
    except BaseException:
        _close_quietly(fs, fd)
        raise
    return fd


def read_private(path: StrPath, *, max_bytes: int = DEFAULT_MAX_BYTES, io: FileIO | None = None) -> bytes:
    """The whole content of a private file (checked as `open_private` does), refused if over `max_bytes`."""
    if max_bytes < 0:
        raise ValueError("max_bytes must be 0 or more")
    fs = io if io is not None else OS_FILE_IO
    with _storage_errors("open", path):
        fd = fs.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY)
    try:
        with _storage_errors("stat", path):
            st = fs.fstat(fd)
        _check_private_file_stat(st, path)
        too_big = StorageError(f"{os.fspath(path)}: larger than {max_bytes} bytes", errno_value=errno.EFBIG)
        if st.st_size > max_bytes:
            raise too_big
        chunks: list[bytes] = []
        total = 0
        with _storage_errors("read", path):
            # Read to end of file, not to st_size: the file may have grown since fstat.
            while chunk := fs.read(fd, max_bytes + 1 - total):
                chunks.append(chunk)
                total += len(chunk)
                if total > max_bytes:
                    raise too_big
    finally:
        _close_quietly(fs, fd)  # read-only: a failed close loses nothing
    return b"".join(chunks)


def _write_all(fs: FileIO, fd: int, data: Buffer, path: StrPath) -> None:
    view = memoryview(data)
    with _storage_errors("write", path):
        while view:
            written = fs.write(fd, view)
            if written <= 0:  # the OS reports a full disk as an error; a zero-length write is a bug somewhere
                raise OSError(errno.EIO, "write made no progress")
            view = view[written:]


def atomic_write(path: StrPath, data: Buffer, *, mode: int = FILE_MODE, io: FileIO | None = None) -> None:
    """Replace `path` with `data` so that a crash leaves the old content or the new, never a mix.

    When this returns, the new content is on disk. On any failure before the rename the temporary file is
    removed and `path` is untouched. If syncing the directory fails after the rename, the new content is in
    place but not known to be durable: `StorageError` is raised all the same, so nothing is acknowledged on it
    (an fsync error is never retried: the kernel may have dropped the dirty pages).
    """
    if mode & ~0o777:
        raise ValueError("mode holds only permission bits (at most 0o777)")
    fs = io if io is not None else OS_FILE_IO
    target = Path(path)
    directory = target.parent
    temporary = directory / f"{TEMP_PREFIX}{os.urandom(6).hex()}-{target.name[:_TEMP_NAME_CHARS]}"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
    with _storage_errors("create", temporary):
        fd = fs.open(temporary, flags, FILE_MODE)
    try:
        try:
            with _storage_errors("chmod", temporary):
                fs.fchmod(fd, mode)  # the umask shaped the mode given to open; set it exactly
            _write_all(fs, fd, data, temporary)
            with _storage_errors("fsync", temporary):
                fs.fsync(fd)
        except BaseException:
            _close_quietly(fs, fd)
            raise
        with _storage_errors("close", temporary):
            fs.close(fd)
        with _storage_errors("rename", target):
            fs.replace(temporary, target)
    except Exception:
        _remove_quietly(fs, temporary)
        raise
    with _storage_errors("fsync", directory):
        fs.fsync_dir(directory)


def _close_quietly(fs: FileIO, fd: int) -> None:
    # Used on a path that is already failing: the first error is the one to report.
    with contextlib.suppress(OSError):
        fs.close(fd)


def _remove_quietly(fs: FileIO, path: Path) -> None:
    try:
        fs.unlink(path)
    except OSError as error:
        # The original error matters more; a stray temporary is cleared by remove_stale_temporaries.
        logger.warning("files.temporary_not_removed", extra={"path": str(path), "errno": error.errno})


def remove_stale_temporaries(directory: StrPath, *, io: FileIO | None = None) -> int:
    """Delete the temporaries an interrupted `atomic_write` left in `directory`; returns how many.

    Only our own regular files named with `TEMP_PREFIX` are touched. Call it at start, before writing.
    """
    fs = io if io is not None else OS_FILE_IO
    with _storage_errors("list", directory):
        names = fs.listdir(directory)
    removed = 0
    for name in names:
        if not name.startswith(TEMP_PREFIX):
            continue
        path = Path(directory) / name
        with _storage_errors("stat", path):
            st = fs.lstat(path)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid():
            continue
        with _storage_errors("unlink", path):
            fs.unlink(path)
        removed += 1
        logger.info("files.stale_temporary_removed", extra={"path": str(path)})
    return removed


def _lstat_or_none(fs: FileIO, path: Path) -> os.stat_result | None:
    try:
        return fs.lstat(path)
    except FileNotFoundError:
        return None


def ensure_private_dir(path: StrPath, *, io: FileIO | None = None) -> Path:
    """Make `path` a directory only we can use, creating it and its missing parents with mode 0700.

    Refused with `UnsafeFileError`: a symbolic link at `path` or at any component we would create, a
    symbolic link among the existing parents unless root owns it (system layout such as /var/run → /run;
    anyone else's link could point us anywhere), and a directory owned by another user. Our own directory
    with group or other bits is tightened to 0700. Returns the absolute path.
    """
    fs = io if io is not None else OS_FILE_IO
    # abspath, not resolve: resolving would follow the very links this function must inspect.
    target = Path(os.path.abspath(path))  # noqa: PTH100
    if target == Path(target.anchor):
        raise ValueError("the file system root cannot be a private directory")
    current = Path(target.anchor)
    for part in target.parts[1:]:
        current /= part
        with _storage_errors("stat", current):
            st = _lstat_or_none(fs, current)
        if st is None:
            _make_private_dir(fs, current)
        elif stat.S_ISLNK(st.st_mode):
            if current == target or st.st_uid != 0:
                raise UnsafeFileError(f"{current}: is a symbolic link", errno_value=errno.ELOOP)
        elif not stat.S_ISDIR(st.st_mode):
            raise StorageError(f"{current}: is not a directory", errno_value=errno.ENOTDIR)
    _check_final_dir(fs, target)
    return target


def _make_private_dir(fs: FileIO, path: Path) -> None:
    with _storage_errors("mkdir", path):
        # Someone may have made it between our lstat and mkdir: then judge what is there now.
        with contextlib.suppress(FileExistsError):
            fs.mkdir(path, DIR_MODE)
        st = fs.lstat(path)
    if stat.S_ISLNK(st.st_mode):
        raise UnsafeFileError(f"{path}: is a symbolic link", errno_value=errno.ELOOP)
    _check_private(st, path, directory=True)
    if stat.S_IMODE(st.st_mode) != DIR_MODE:
        with _storage_errors("chmod", path):
            fs.chmod(path, DIR_MODE)  # the umask shaped the mode given to mkdir; set it exactly


def _check_final_dir(fs: FileIO, path: Path) -> None:
    # Judge and tighten through a descriptor: a link swapped in after our lstat is not followed.
    with _storage_errors("open", path):
        try:
            fd = fs.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        except NotADirectoryError:
            st = fs.lstat(path)
            _check_private(st, path, directory=True)
            raise
    try:
        with _storage_errors("stat", path):
            st = fs.fstat(fd)
        _check_private(st, path, directory=True)
        if stat.S_IMODE(st.st_mode) & _SHARED_BITS:
            with _storage_errors("chmod", path):
                fs.fchmod(fd, DIR_MODE)
            logger.info(
                "files.directory_tightened",
                extra={"path": str(path), "mode": f"{stat.S_IMODE(st.st_mode):04o}"},
            )
    finally:
        _close_quietly(fs, fd)
