"""The WAL check at open: committed transactions that SQLite would drop without a word.

SQLite replays a WAL frame by frame, as long as each frame carries the header's salts and the running
checksum (over the header and every frame so far) matches, and stops at the first frame that fails: every
transaction after it is dropped without an error. After a crash that is right, because only the last
transaction can be incomplete (with `synchronous=FULL` each commit is synced before the next one starts, and
the header is synced before the first frame after a reset). After a damaged frame in the middle (a flipped
bit, a bad sector) it silently loses acknowledged records: every transaction from the damaged one on.

Each frame header also stores the running checksum after that frame, so a frame can be checked on its own,
from its predecessor's stored checksum. A commit frame that checks on its own, beyond the point where
SQLite stops, is a transaction that was written whole. If two transactions lie beyond that point (two
commit frames, counting the frame SQLite stops at), the break is not a crash's torn tail: the WAL is
damaged, and the store is recovered like a damaged file (`_lifecycle`), with the damage reported.

What this cannot see: damage in the last transaction of the WAL (the same bytes as a torn last write after
a power cut), and damage to the header's page size or salts, which hides where the frames are or whose
they are. docs/encrypted-store.md ("Threat model") says so.

Format (https://www.sqlite.org/fileformat2.html#walformat): a 32-byte header, big-endian
`magic | version | page size | checkpoint sequence | salt-1 | salt-2 | checksum-1 | checksum-2`, then frames
of a 24-byte header `page number | database size after commit (0: not a commit) | salt-1 | salt-2 |
checksum-1 | checksum-2` and one page. The checksum runs over 32-bit words, little-endian when the magic's
low bit is 0, big-endian when it is 1.
"""

from __future__ import annotations

import errno
import struct
from pathlib import Path

from device_agent.errors import StorageError
from device_agent.fileio import OS_FILE_IO, FileIO
from device_agent.files import open_private

HEADER_BYTES = 32
FRAME_HEADER_BYTES = 24
MAGIC = 0x377F0682  # | 1 for big-endian checksums
VERSION = 3007000
_HEADER = struct.Struct(">8I")
_FRAME_HEADER = struct.Struct(">6I")
_MASK = 0xFFFFFFFF
_READ_CHUNK = 1 << 20
PAGE_SIZES = tuple(1 << bits for bits in range(9, 17))
# A crash leaves at most one commit frame past where SQLite stops: the last transaction's.
_TORN_TAIL_COMMITS = 1


def damage(path: Path, *, io: FileIO | None = None) -> str | None:
    """Why the WAL at `path` would lose committed transactions that no crash explains, or None.

    A missing, empty or short file, or one whose frames cannot be found, is None: there is nothing to replay,
    or nothing this check can tell.
    """
    fs = io if io is not None else OS_FILE_IO
    try:
        fd = open_private(path, create=False, io=fs)
    except StorageError as error:
        if error.errno == errno.ENOENT:
            return None
        raise
    try:
        return _damage(_Reader(fs, fd, path))
    finally:
        fs.close(fd)


def _damage(reader: _Reader) -> str | None:
    header = reader.read(HEADER_BYTES)
    if len(header) < HEADER_BYTES:
        return None
    magic, version, page_size, _, salt1, salt2, check1, check2 = _HEADER.unpack(header)
    native = "<" if magic & 1 == 0 else ">"
    header_checks = _header_checksum(header, native) == (check1, check2)
    if magic | 1 == MAGIC | 1 and version == VERSION and page_size in PAGE_SIZES and header_checks:
        attempts = [(native, page_size, True)]
    else:
        # SQLite refuses the header and replays nothing. The damage may be in the magic (its low bit is the
        # byte order) or the page size: every order and size is tried (frames cut wrong never check), and
        # the worst count stands.
        attempts = [(order, size, False) for order in "<>" for size in PAGE_SIZES]
    rest = reader.read_all()
    worst = 0
    for order, size, replayed in attempts:
        step = FRAME_HEADER_BYTES + size
        frames = [rest[at : at + step] for at in range(0, len(rest) - step + 1, step)]
        words = struct.Struct(f"{order}{(8 + size) // 4}I")
        seeds = ((check1, check2), _header_checksum(header, order))
        count = _commits_beyond(frames, words, (salt1, salt2), seeds, replayed=replayed)
        worst = max(worst, count)
    if worst > _TORN_TAIL_COMMITS:
        return f"the WAL lost {worst - 1} or more committed transactions behind a damaged frame"
    return None


def _commits_beyond(
    frames: list[bytes],
    words: struct.Struct,
    salts: tuple[int, int],
    seeds: tuple[tuple[int, int], tuple[int, int]],
    *,
    replayed: bool,
) -> int:
    """Commit frames at or beyond the first frame SQLite would not replay (none if it replays them all).

    `replayed`: whether SQLite accepts the header (if not, it replays nothing). The frame SQLite stops at
    counts when it carries the salts and a commit size; the frames after it count when they check on their
    own. A crash's torn tail has at most one: the last transaction's commit. `seeds`: the checksum the
    header stores, and the one its content gives.
    """
    previous, computed = seeds
    count = 0
    for frame in frames:
        page, size, salt1, salt2, check1, check2 = _FRAME_HEADER.unpack_from(frame)
        stored = (check1, check2)
        whole = False
        expected = stored
        if (salt1, salt2) == salts and page != 0:
            # Seeded with the checksum its predecessor stores or, if a flip hit that stored value, with
            # the one its predecessor's content gives.
            body = words.unpack_from(_body(frame))
            expected = _checksum(body, *previous)
            whole = stored == expected or (computed != previous and stored == _checksum(body, *computed))
        if replayed and not whole:
            replayed = False
            # Written in this generation (one salt may be the damage), and a commit. A frame a crash left
            # behind carries the salts of an older generation: both differ.
            count += int((salt1 == salts[0] or salt2 == salts[1]) and size != 0)
        elif not replayed and whole and size != 0:
            count += 1
        previous, computed = stored, expected
    return count


def _header_checksum(header: bytes, order: str) -> tuple[int, int]:
    return _checksum(struct.unpack(f"{order}6I", header[:24]), 0, 0)


def _body(frame: bytes) -> bytes:
    """What a frame's checksum covers: the first 8 bytes of its header, then its page."""
    return frame[:8] + frame[FRAME_HEADER_BYTES:]


def _checksum(words: tuple[int, ...], first: int, second: int) -> tuple[int, int]:
    """SQLite's WAL checksum: two running 32-bit sums over pairs of words."""
    it = iter(words)
    for even, odd in zip(it, it, strict=True):
        first = (first + even + second) & _MASK
        second = (second + odd + first) & _MASK
    return first, second


class _Reader:
    def __init__(self, fs: FileIO, fd: int, path: Path) -> None:
        self._fs, self._fd, self._path = fs, fd, path

    def read(self, size: int) -> bytes:
        chunks: list[bytes] = []
        wanted = size
        try:
            while wanted:
                chunk = self._fs.read(self._fd, wanted)
                if not chunk:
                    break
                chunks.append(chunk)
                wanted -= len(chunk)
        except OSError as error:
            raise StorageError(f"read {self._path}: {error.strerror}", errno_value=error.errno) from error
        return b"".join(chunks)

    def read_all(self) -> bytes:
        chunks = []
        while chunk := self.read(_READ_CHUNK):
            chunks.append(chunk)
        return b"".join(chunks)
