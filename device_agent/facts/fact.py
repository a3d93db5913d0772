"""A fact and the tree it is read from: the two pieces every collector is built on.

    tree = Tree(Path("/"))                       # tests pass a fake sysfs/proc tree under tmp_path
    fact = collect(lambda: Fact.ok(tree.read_text("/proc/sys/kernel/random/boot_id").strip()))

A fact is `ok` with a value, `unavailable` (the file is not there, or only root may read it) or `error`
(something is there but it is garbage), each with a reason. A reason names paths and kinds of problem,
never a value read from the device, so a reason can never leak a serial number.

Collectors raise `Unreadable` or `Garbage` from deep inside and `collect()` turns them into facts; it also
turns any other exception into an `error` fact, so no collector can fail a report.
"""

from __future__ import annotations

import enum
import errno
import logging
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

#: Largest file a collector reads: sysfs and proc files are small; a bigger one is not what we expect.
DEFAULT_MAX_BYTES = 64 * 1024
MAX_REASON_CHARS = 256
NEEDS_ROOT = "needs root"


class Status(enum.StrEnum):
    OK = "ok"
    UNAVAILABLE = "unavailable"
    ERROR = "error"


@dataclass(frozen=True)
class Fact:
    """One reported fact; `to_document()` is its JSON form (docs/schemas/bootstrap-report.schema.json)."""

    status: Status
    value: Any = field(default=None, repr=False)  # may be private (a serial): never in a repr or a log
    source: str | None = None
    reason: str | None = None

    @classmethod
    def ok(cls, value: Any, source: str | None = None) -> Fact:
        return cls(Status.OK, value, source)

    @classmethod
    def unavailable(cls, reason: str, source: str | None = None) -> Fact:
        return cls(Status.UNAVAILABLE, None, source, reason[:MAX_REASON_CHARS])

    @classmethod
    def error(cls, reason: str, source: str | None = None) -> Fact:
        return cls(Status.ERROR, None, source, reason[:MAX_REASON_CHARS])

    @property
    def is_ok(self) -> bool:
        return self.status is Status.OK

    def to_document(self) -> dict[str, Any]:
        document: dict[str, Any] = {"status": str(self.status)}
        if self.status is Status.OK:
            document["value"] = self.value
        else:
            document["reason"] = self.reason or "unknown"
        if self.source is not None:
            document["source"] = self.source[:64]
        return document


class FactProblem(Exception):  # noqa: N818 - a fact's status, not an error of the program
    """Raised inside a collector; `collect()` turns it into a fact. The message is the fact's reason."""

    status: Status = Status.ERROR

    def fact(self, source: str | None = None) -> Fact:
        return Fact(self.status, None, source, str(self)[:MAX_REASON_CHARS])


class Unreadable(FactProblem):
    """Not there, or not readable by this user: the fact is `unavailable`."""

    status = Status.UNAVAILABLE


class Garbage(FactProblem):
    """There, but not what it should be (unparsable, too large, a loop): the fact is `error`."""

    status = Status.ERROR


def collect(collector: Callable[[], Fact], *, name: str = "fact") -> Fact:
    """Run one collector; whatever goes wrong becomes a fact, never an exception."""
    try:
        return collector()
    except FactProblem as problem:
        return problem.fact()
    except Exception as error:  # noqa: BLE001 - the contract: no collector may fail the report
        # The message of a foreign error may quote what it read: only its type is reported.
        logger.warning("facts.collector_failed", extra={"fact": name, "error": type(error).__name__})
        return Fact.error(f"unexpected {type(error).__name__}")


def read_capped(path: Path, max_bytes: int) -> bytes:
    """At most `max_bytes` of a regular file; raises OSError as the OS does, ValueError when larger.

    O_NONBLOCK keeps a FIFO planted in the tree from blocking the open; anything but a regular file is
    refused (sysfs and proc attributes are regular files).
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise IsADirectoryError(errno.EISDIR, "not a regular file")
        chunks: list[bytes] = []
        size = 0
        while size <= max_bytes:
            chunk = os.read(fd, max_bytes + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > max_bytes:
            raise ValueError(max_bytes)
        return b"".join(chunks)
    finally:
        os.close(fd)


Reader = Callable[[Path, int], bytes]


@dataclass(frozen=True)
class Tree:
    """A filesystem root the collectors read from: `/` on a device, a fake tree in tests.

    Paths are given as on the device (`/proc/meminfo`); reasons name them so, never the fake root. `reader`
    is the seam tests use to inject errors a root test process cannot provoke (EACCES).
    """

    root: Path = Path("/")
    reader: Reader = read_capped

    def path(self, absolute: str) -> Path:
        return self.root / absolute.lstrip("/")

    @property
    def is_real_root(self) -> bool:
        return self.root == Path("/")

    def read_bytes(self, absolute: str, *, max_bytes: int = DEFAULT_MAX_BYTES) -> bytes:
        try:
            return self.reader(self.path(absolute), max_bytes)
        except (FileNotFoundError, NotADirectoryError):
            raise Unreadable(f"{absolute} not present") from None
        except PermissionError:
            raise Unreadable(NEEDS_ROOT) from None
        except IsADirectoryError:
            raise Garbage(f"{absolute} is not a regular file") from None
        except ValueError:
            raise Garbage(f"{absolute} is larger than {max_bytes} bytes") from None
        except OSError as error:
            if error.errno == errno.ELOOP:
                raise Garbage(f"{absolute}: symlink loop") from None
            name = errno.errorcode.get(error.errno or 0, "OSError")
            raise Unreadable(f"{absolute} not readable ({name})") from None

    def read_text(self, absolute: str, *, max_bytes: int = DEFAULT_MAX_BYTES) -> str:
        data = self.read_bytes(absolute, max_bytes=max_bytes)
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            raise Garbage(f"{absolute} is not UTF-8 text") from None

    def read_value(self, absolute: str, *, max_bytes: int = 4096) -> str:
        """A one-value attribute (sysfs, device tree): stripped of whitespace and NULs; empty is garbage."""
        value = self.read_text(absolute, max_bytes=max_bytes).strip().strip("\x00").strip()
        if not value:
            raise Garbage(f"{absolute} is empty")
        if any(ord(c) < 0x20 for c in value):  # noqa: PLR2004 - control characters
            raise Garbage(f"{absolute} holds control characters")
        return value

    def exists(self, absolute: str) -> bool:
        try:
            return self.path(absolute).exists()
        except OSError:  # a loop, a permission problem on the way: treat as absent
            return False

    def is_dir(self, absolute: str) -> bool:
        try:
            return self.path(absolute).is_dir()
        except OSError:
            return False

    def list_dir(self, absolute: str, *, limit: int = 256) -> list[str]:
        try:
            names = sorted(p.name for p in self.path(absolute).iterdir())
        except (FileNotFoundError, NotADirectoryError):
            raise Unreadable(f"{absolute} not present") from None
        except PermissionError:
            raise Unreadable(NEEDS_ROOT) from None
        except OSError as error:
            if error.errno == errno.ELOOP:
                raise Garbage(f"{absolute}: symlink loop") from None
            raise Unreadable(f"{absolute} not readable") from None
        return names[:limit]
