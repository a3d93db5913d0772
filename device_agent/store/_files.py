"""The store's files on disk: created private before SQLite sees them, moved aside when corrupt, removed.

    <dir>/store.db, store.db-wal, store.db-shm       the live database (0600 in a 0700 directory)
    <dir>/store.key                                  the KEK (see `_keys`), unless it comes from a secret
    <dir>/store.db.corrupt-<UTC stamp>[-wal|-shm]    a store that failed its checks, kept for forensics
    <dir>/store.key.corrupt-<UTC stamp>              a key file that failed its check

A set-aside database opens with the store's key-encryption key, so it still yields the records of every
namespace it held: a wipe destroys it (`destroy_corrupt`: overwritten with zeros, synced, unlinked).

Only these exact names are ever touched: no glob over `*-wal` could delete another database's hot journal.
Our descriptors on the database are all closed before SQLite opens it (closing any descriptor on a file
releases that process's POSIX locks on it, SQLite's included).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import time
from pathlib import Path

from device_agent.errors import DeviceAgentError, StorageError
from device_agent.fileio import OS_FILE_IO, FileIO
from device_agent.files import open_private

logger = logging.getLogger(__name__)

SIDE_SUFFIXES = ("-wal", "-shm")
CORRUPT_MARK = ".corrupt-"
_ZERO_CHUNK = 1 << 20


def database_files(path: Path) -> list[Path]:
    return [path, *(path.with_name(path.name + suffix) for suffix in SIDE_SUFFIXES)]


def precreate(path: Path, *, io: FileIO | None = None) -> bool:
    """Create (0600) or check the database and its -wal/-shm; True if the database file was new.

    An existing file must be ours, regular, not a link, with no group or other bits (`UnsafeFileError`).
    A file made here has its directory entry synced: SQLite does not sync the directory for a WAL it
    finds already there, and a commit in a WAL whose name did not survive a power cut would be lost.
    """
    fs = io if io is not None else OS_FILE_IO
    created = [not _exists(fs, file) for file in database_files(path)]
    for file in database_files(path):
        fd = open_private(file, create=True, io=fs)
        fs.close(fd)
    if any(created):
        _sync_dir(fs, path.parent)
    return created[0]


def stamp(now: float) -> str:
    seconds = int(now)
    micros = int((now - seconds) * 1_000_000)
    return f"{time.strftime('%Y%m%dT%H%M%S', time.gmtime(seconds))}.{micros:06d}Z"


def move_aside(path: Path, now: float, *, io: FileIO | None = None) -> Path:
    """Rename the database and its -wal/-shm to `<name>.corrupt-<stamp>…` together; returns the new path.

    The WAL holds committed transactions: it moves with the database so salvage can still read them.
    """
    fs = io if io is not None else OS_FILE_IO
    base = f"{path.name}{CORRUPT_MARK}{stamp(now)}"
    suffix = 0
    while _exists(fs, path.with_name(base + (f"-{suffix}" if suffix else ""))):
        suffix += 1
    target = path.with_name(base + (f"-{suffix}" if suffix else ""))
    for source, destination in zip(database_files(path), database_files(target), strict=True):
        try:
            fs.replace(source, destination)
        except FileNotFoundError:
            continue
        except OSError as error:
            raise StorageError(f"rename {source}: {error.strerror}", errno_value=error.errno) from error
    _sync_dir(fs, path.parent)
    return target


def prune_corrupt(directory: Path, names: tuple[str, ...], keep: int, *, io: FileIO | None = None) -> int:
    """Delete all but the newest `keep` set-aside copies of each of `names`; returns how many files went."""
    fs = io if io is not None else OS_FILE_IO
    try:
        entries = fs.listdir(directory)
    except OSError as error:
        raise StorageError(f"list {directory}: {error.strerror}", errno_value=error.errno) from error
    removed = 0
    for name in names:
        prefix = name + CORRUPT_MARK
        mine = [entry for entry in entries if entry.startswith(prefix)]
        stems = sorted({_stem(entry) for entry in mine})  # stamps sort by time
        doomed = set(stems[: max(0, len(stems) - keep)])
        for entry in mine:
            if _stem(entry) in doomed:
                with contextlib.suppress(FileNotFoundError):
                    fs.unlink(directory / entry)
                    removed += 1
    if removed:
        _sync_dir(fs, directory)
        logger.info("store.corrupt_copies_removed", extra={"files": removed})
    return removed


def destroy_corrupt(path: Path, *, io: FileIO | None = None) -> int:
    """Destroy every set-aside copy of the database `path` (with its -wal and -shm); returns how many copies.

    Each file is overwritten with zeros and synced before it is unlinked, so its wrapped data keys do not
    stay in the file system's free blocks (flash wear-levelling may still keep old blocks: the threat model
    says so). A file that is not a private regular file of ours (a planted link) is only unlinked.
    """
    fs = io if io is not None else OS_FILE_IO
    directory = path.parent
    try:
        entries = fs.listdir(directory)
    except OSError as error:
        raise StorageError(f"list {directory}: {error.strerror}", errno_value=error.errno) from error
    prefix = path.name + CORRUPT_MARK
    mine = sorted(entry for entry in entries if entry.startswith(prefix))
    for entry in mine:
        _zero(fs, directory / entry)
        try:
            fs.unlink(directory / entry)
        except FileNotFoundError:
            continue
        except OSError as error:
            raise StorageError(f"unlink {entry}: {error.strerror}", errno_value=error.errno) from error
    if mine:
        _sync_dir(fs, directory)
    return len({_stem(entry) for entry in mine})


def _zero(fs: FileIO, file: Path) -> None:
    """Overwrite a private regular file with zeros and sync it; anything else is left for unlink alone."""
    try:
        fd = open_private(file, create=False, io=fs)
    except (DeviceAgentError, FileNotFoundError):
        return
    try:
        remaining = fs.fstat(fd).st_size
        zeros = bytes(min(remaining, _ZERO_CHUNK))
        while remaining > 0:
            written = fs.write(fd, memoryview(zeros)[: min(remaining, len(zeros))])
            if written <= 0:
                raise OSError(errno.EIO, "write made no progress")
            remaining -= written
        fs.fsync(fd)
    except OSError as error:
        raise StorageError(f"overwrite {file.name}: {error.strerror}", errno_value=error.errno) from error
    finally:
        fs.close(fd)


def remove_database(path: Path, *, io: FileIO | None = None) -> None:
    """Unlink the database and its -wal/-shm (only after every connection to it is closed)."""
    fs = io if io is not None else OS_FILE_IO
    for file in database_files(path):
        try:
            fs.unlink(file)
        except FileNotFoundError:
            continue
        except OSError as error:
            raise StorageError(f"unlink {file}: {error.strerror}", errno_value=error.errno) from error
    _sync_dir(fs, path.parent)


def _stem(entry: str) -> str:
    for suffix in SIDE_SUFFIXES:
        if entry.endswith(suffix):
            return entry[: -len(suffix)]
    return entry


def _exists(fs: FileIO, path: Path) -> bool:
    try:
        fs.lstat(path)
    except FileNotFoundError:
        return False
    return True


def _sync_dir(fs: FileIO, directory: Path) -> None:
    try:
        fs.fsync_dir(directory)
    except OSError as error:
        raise StorageError(
            f"fsync {directory}: {error.strerror}", errno_value=error.errno or errno.EIO
        ) from error


def clean_name(name: str) -> str:
    """A database file name: a plain name in the store's directory, nothing that could climb out of it."""
    if not name or name in (".", "..") or os.sep in name or "\x00" in name or CORRUPT_MARK in name:
        raise ValueError("the database name is a plain file name")
    return name
