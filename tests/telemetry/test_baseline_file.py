"""The counter baseline's private file: kept after every sample, and removed rather than left stale."""

from __future__ import annotations

import errno
import stat
from pathlib import Path
from types import MappingProxyType

from telemetry_publisher.baseline_file import BaselineFile

from device_agent.fileio import OsFileIO
from device_agent.metrics import Baseline, GroupBaseline


def baseline(cpu_seconds: float) -> Baseline:
    group = GroupBaseline(mono=100.0 + cpu_seconds, values=MappingProxyType({"user": cpu_seconds}))
    return Baseline(boot="boot-1", groups=MappingProxyType({"cpu": group}))


class FullDisk(OsFileIO):
    """Writes fail as on a full disk while `full` is set."""

    def __init__(self) -> None:
        self.full = False

    def write(self, fd: int, data: bytes | bytearray | memoryview) -> int:
        if self.full:
            raise OSError(errno.ENOSPC, "No space left on device")
        return super().write(fd, data)


async def test_a_kept_baseline_is_loaded_by_the_next_process_from_a_private_file(tmp_path: Path):
    path = tmp_path / "state" / "baseline.json"
    assert await BaselineFile(path).load() is None  # a new device: counters start afresh
    assert await BaselineFile(path).save(baseline(5.0))
    assert await BaselineFile(path).load() == baseline(5.0)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700


async def test_a_failed_save_removes_the_old_baseline_so_a_restart_never_counts_a_window_twice(
    tmp_path: Path,
):
    io = FullDisk()
    kept = BaselineFile(tmp_path / "baseline.json", io=io)
    assert await kept.save(baseline(5.0))
    io.full = True
    assert (await kept.save(baseline(6.0)), kept.saved) == (False, False)
    assert await BaselineFile(tmp_path / "baseline.json").load() is None  # afresh, not from 5.0
    assert list(tmp_path.iterdir()) == []  # no temporary left behind either
    io.full = False
    assert (await kept.save(baseline(7.0)), kept.saved) == (True, True)
    assert await BaselineFile(tmp_path / "baseline.json").load() == baseline(7.0)


async def test_an_unreadable_baseline_means_counters_start_afresh(tmp_path: Path):
    path = tmp_path / "baseline.json"
    path.write_bytes(b'{"v": 1, "boot": 5}')
    path.chmod(0o600)
    assert await BaselineFile(path).load() is None
    path.write_bytes(b"\x00garbage")
    assert await BaselineFile(path).load() is None
