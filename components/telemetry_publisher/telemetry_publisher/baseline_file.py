"""The counter baseline in a private file beside the sequence reservation: current, or not there at all.

A restart continues the counters from the baseline it finds, so its first sample covers the time since
that baseline was taken. A baseline older than the last sample sent makes that first sample cover windows
already reported (a consumer that sums deltas counts them twice). So the baseline is written after every
sample, synchronously, and when a write fails the file is removed: a restart then starts its counters
afresh (one sample without deltas), never from a stale baseline.

Why a file and not the store: the store may be unavailable (restarting, busy) exactly when the baseline
must be current, and a failed store write cannot remove the old record either. A baseline is counter
values, their monotonic times and the boot ID, no private data (like the sequence number). Writing it
costs what the store's own write per sample cost, without the IPC round trip.
"""

from __future__ import annotations

import errno
import logging
from pathlib import Path

from device_agent.errors import InvalidInputError, StorageError
from device_agent.fileio import OS_FILE_IO, FileIO
from device_agent.files import atomic_write, ensure_private_dir, read_private
from device_agent.metrics import Baseline
from device_agent.metrics.counters import MAX_BASELINE_BYTES

logger = logging.getLogger(__name__)


class BaselineFile:
    """`load()` once at start; `save(baseline)` after every sample."""

    def __init__(self, path: Path, *, io: FileIO | None = None) -> None:
        self.path = path
        self._io = io if io is not None else OS_FILE_IO
        self.saved = True  # the last save succeeded (or none was tried)

    def __repr__(self) -> str:
        return f"BaselineFile({self.path.name!r})"

    async def load(self) -> Baseline | None:
        """The kept baseline; None if there is none or it is unreadable (then counters start afresh)."""
        try:
            data = read_private(self.path, max_bytes=MAX_BASELINE_BYTES, io=self._io)
        except StorageError as error:
            if error.errno != errno.ENOENT:
                logger.warning("telemetry.baseline_unreadable", extra={"errno": error.errno})
            return None
        try:
            return Baseline.from_bytes(data)
        except InvalidInputError:
            logger.warning("telemetry.baseline_unreadable")
            return None

    async def save(self, baseline: Baseline) -> bool:
        """Keep `baseline`; on failure remove the old one instead (a restart starts afresh). True if kept."""
        try:
            ensure_private_dir(self.path.parent, io=self._io)
            atomic_write(self.path, baseline.to_bytes(), io=self._io)
        except StorageError as error:
            if self.saved:
                logger.warning("telemetry.baseline_not_saved", extra={"errno": error.errno})
            self.saved = False
            self.discard()
            return False
        if not self.saved:
            logger.info("telemetry.baseline_saved_again")
        self.saved = True
        return True

    def discard(self) -> None:
        """Remove the kept baseline, if any."""
        try:
            self._io.unlink(self.path)
        except FileNotFoundError:
            pass
        except OSError as error:  # both writing and removing failed: the next save tries again
            logger.warning("telemetry.baseline_not_removed", extra={"errno": error.errno})
