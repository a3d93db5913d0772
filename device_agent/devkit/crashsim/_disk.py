"""The disk as a power loss sees it: per file, what is durable, what is still only in the page cache.

Each file has durable data (as of its last fsync) and a list of pending writes and truncations. Its name has a
durable directory entry or not: creations and deletions reach the disk only with a directory fsync. A file
deleted before its directory was synced leaves a *ghost*: the durable content it had, which may reappear.

A `Plan` says what happened to each pending operation when the power went (`Outcome`), and which uncertain
names took their newest state. `DiskModel.image(plan)` applies it and returns the files a reboot would find.
"""

from __future__ import annotations

import enum
import itertools
import posixpath
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from device_agent.devkit.crashsim._events import (
    Adopt,
    Create,
    Delete,
    DirSync,
    Event,
    FileOp,
    Sync,
    Truncate,
    Write,
)


class Fate(enum.Enum):
    APPLY = "apply"
    DROP = "drop"
    TEAR = "tear"  # only some of the write's sectors reached the disk
    GARBAGE = "garbage"  # the write's bytes reached the disk as noise (a failing flash, test6.c's third case)


@dataclass(frozen=True, slots=True)
class Outcome:
    fate: Fate
    sectors: frozenset[int] = frozenset()  # TEAR: indexes of the write's sector pieces that were applied
    noise: bytes = b""  # GARBAGE: what landed instead of the data

    def __post_init__(self) -> None:
        if self.fate is Fate.TEAR and not self.sectors:
            raise ValueError("a torn write applies at least one sector piece (else it is dropped)")


APPLY = Outcome(Fate.APPLY)
DROP = Outcome(Fate.DROP)


@dataclass(frozen=True, slots=True)
class Pending:
    """An unsynced operation: `seq` orders it among all pending operations of every file."""

    seq: int
    op: FileOp

    def pieces(self, sector: int) -> list[tuple[int, bytes]]:
        """The write cut at sector boundaries: what a device may persist independently."""
        if not isinstance(self.op, Write):
            return []
        offset, data = self.op.offset, self.op.data
        cuts = [
            offset,
            *range((offset // sector + 1) * sector, offset + len(data), sector),
            offset + len(data),
        ]
        return [(start, data[start - offset : end - offset]) for start, end in itertools.pairwise(cuts)]

    def tearable(self, sector: int) -> bool:
        return len(self.pieces(sector)) > 1


@dataclass(frozen=True, slots=True)
class Plan:
    """The fate of every pending operation (missing ones are dropped) and of every uncertain name."""

    label: str
    outcomes: Mapping[int, Outcome]
    new_names: frozenset[str] = frozenset()  # uncertain names whose latest create/delete reached the disk


@dataclass(slots=True)
class _File:
    exists: bool
    entry: str  # "current": the durable name is this file; "ghost": an unlinked older one; "none"
    data: bytearray = field(default_factory=bytearray)
    pending: list[Pending] = field(default_factory=list)
    ghost: bytes = b""

    def uncertain(self) -> bool:
        """Whether the directory on disk may still say otherwise than the page cache about this name."""
        settled = (self.exists and self.entry == "current") or (not self.exists and self.entry == "none")
        return not settled


class DiskModel:
    """Replays events; at any moment `image(plan)` is what a power loss would leave."""

    def __init__(self, initial: Mapping[str, bytes], sector: int = 512) -> None:
        self.sector = sector
        self._files = {
            name: _File(exists=True, entry="current", data=bytearray(content))
            for name, content in initial.items()
        }
        self._seq = 0

    def apply(self, event: Event) -> None:
        match event:
            case Write() | Truncate():
                self._seq += 1
                self._file(event.file).pending.append(Pending(self._seq, event))
            case Sync():
                file = self._file(event.file)
                _replay(file.data, file.pending, {p.seq: APPLY for p in file.pending}, self.sector)
                file.pending.clear()
                if event.dirsync:
                    self.sync_directory(posixpath.dirname(event.file))
            case Create():
                file = self._files.setdefault(event.file, _File(exists=False, entry="none"))
                file.exists, file.data, file.pending = True, bytearray(), []
            case Adopt():
                self._files[event.file] = _File(exists=True, entry="current", data=bytearray(event.content))
            case Delete():
                self._delete(event)
            case DirSync():
                self.sync_directory(event.directory)
            case _:
                pass

    def _file(self, name: str) -> _File:
        file = self._files.get(name)
        if file is None:
            # Written without an open we saw (cannot happen through the VFS): treat as created now.
            file = self._files[name] = _File(exists=True, entry="none")
        return file

    def _delete(self, event: Delete) -> None:
        file = self._files.get(event.file)
        if file is None or not file.exists:
            return
        if file.entry == "current":
            file.entry, file.ghost = "ghost", bytes(file.data)
        file.exists, file.data, file.pending = False, bytearray(), []
        if event.syncdir:
            self.sync_directory(posixpath.dirname(event.file))

    def sync_directory(self, directory: str) -> None:
        for name, file in self._files.items():
            if posixpath.dirname(name) == directory:
                file.entry, file.ghost = ("current" if file.exists else "none"), b""

    def pending(self) -> list[Pending]:
        """Every unsynced operation of every file that exists now, in the order it was issued."""
        ops = [p for file in self._files.values() if file.exists for p in file.pending]
        return sorted(ops, key=lambda p: p.seq)

    def uncertain_names(self) -> list[str]:
        return sorted(name for name, file in self._files.items() if file.uncertain())

    def image(self, plan: Plan) -> dict[str, bytes]:
        files: dict[str, bytes] = {}
        for name, file in self._files.items():
            content = self._content(name, file, plan)
            if content is not None:
                files[name] = content
        return files

    def _content(self, name: str, file: _File, plan: Plan) -> bytes | None:
        newest = not file.uncertain() or name in plan.new_names
        if newest and file.exists:
            data = bytearray(file.data)
            _replay(data, file.pending, plan.outcomes, self.sector)
            return bytes(data)
        if newest:
            return None  # deleted, and the deletion reached the disk
        return file.ghost if file.entry == "ghost" else None


def _replay(data: bytearray, ops: Iterable[Pending], outcomes: Mapping[int, Outcome], sector: int) -> None:
    for pending in ops:
        outcome = outcomes.get(pending.seq, DROP)
        op = pending.op
        if outcome.fate is Fate.DROP:
            continue
        if isinstance(op, Truncate):
            _resize(data, op.size)
        elif outcome.fate is Fate.APPLY:
            _put(data, op.offset, op.data)
        elif outcome.fate is Fate.GARBAGE:
            _put(data, op.offset, outcome.noise[: len(op.data)].ljust(len(op.data), b"\0"))
        else:
            for index, (start, piece) in enumerate(pending.pieces(sector)):
                if index in outcome.sectors:
                    _put(data, start, piece)


def _resize(data: bytearray, size: int) -> None:
    if size < len(data):
        del data[size:]
    else:
        data.extend(bytes(size - len(data)))


def _put(data: bytearray, offset: int, chunk: bytes) -> None:
    if len(data) < offset:
        data.extend(bytes(offset - len(data)))
    data[offset : offset + len(chunk)] = chunk
