"""A `StateStore` in a private file: for state that must never wait for the encrypted store.

The sequence reservation lives here. It is not private data (a number), and numbering samples must work
while the store is unavailable, or samples could not be kept at all. The file is replaced atomically and
synced before `save` returns, so a reservation is durable as soon as it is used.
"""

from __future__ import annotations

import errno
from pathlib import Path

from device_agent.errors import StorageError
from device_agent.files import atomic_write, ensure_private_dir, read_private

MAX_STATE_BYTES = 4096


class FileState:
    def __init__(self, path: Path) -> None:
        self.path = path

    def __repr__(self) -> str:
        return f"FileState({self.path.name!r})"

    async def load(self) -> bytes | None:
        try:
            return read_private(self.path, max_bytes=MAX_STATE_BYTES)
        except StorageError as error:
            if error.errno == errno.ENOENT:
                return None
            raise

    async def save(self, data: bytes) -> None:
        ensure_private_dir(self.path.parent)
        atomic_write(self.path, data)
