"""What the recording VFS saw, in order: the raw material every crash image is built from."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Write:
    file: str
    offset: int
    data: bytes


@dataclass(frozen=True, slots=True)
class Truncate:
    file: str
    size: int


@dataclass(frozen=True, slots=True)
class Sync:
    """An xSync of `file`. `dirsync`: the base VFS also fsyncs the directory on this call (see `_vfs`)."""

    file: str
    dirsync: bool


@dataclass(frozen=True, slots=True)
class Create:
    file: str


@dataclass(frozen=True, slots=True)
class Adopt:
    """A file first seen through the VFS that already existed (made outside SQLite): taken as durable."""

    file: str
    content: bytes


@dataclass(frozen=True, slots=True)
class Delete:
    file: str
    syncdir: bool


@dataclass(frozen=True, slots=True)
class DirSync:
    """The workload fsynced `directory` itself (outside SQLite): every name in it is now durable."""

    directory: str


@dataclass(frozen=True, slots=True)
class Ack:
    """The workload acknowledged `item`: from here on, every crash image must still hold it."""

    item: object


@dataclass(frozen=True, slots=True)
class Mark:
    """A crash point the workload asked for by name (`Session.crash_point`)."""

    label: str


FileOp = Write | Truncate
Event = Write | Truncate | Sync | Create | Adopt | Delete | DirSync | Ack | Mark
