"""Every process a fleet starts, found again from any shell: by pid (recorded in the state file) and, for the
components a nucleus started, by the IPC socket path in their environment (a killed nucleus leaves its
components running: they are not its children any more).
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterable
from pathlib import Path

import psutil

SOCKET_ENV = "AWS_GG_NUCLEUS_DOMAIN_SOCKET_FILEPATH"
_POLL_S = 0.05


def alive(pid: int | None) -> bool:
    if pid is None:
        return False
    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.Error:
        return False


def components_of(devices_dir: Path) -> list[int]:
    """Pids of component processes whose nucleus socket lies under `devices_dir` (one device or all)."""
    prefix = str(devices_dir.resolve()) + os.sep
    uid = os.getuid()
    found = []
    for proc in psutil.process_iter(["uids"]):
        with contextlib.suppress(psutil.Error):
            if proc.info["uids"] is None or proc.info["uids"].real != uid:
                continue
            socket_path = proc.environ().get(SOCKET_ENV, "")
            if socket_path.startswith(prefix) and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc.pid)
    return found


def terminate(pids: Iterable[int], grace_s: float = 5.0) -> list[int]:
    """SIGTERM each process, SIGKILL what is left after `grace_s`; returns the pids still alive after that."""
    pending = [pid for pid in pids if alive(pid)]
    for pid in pending:
        _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while (pending := [pid for pid in pending if alive(pid)]) and time.monotonic() < deadline:
        time.sleep(_POLL_S)
    for pid in pending:
        _signal(pid, signal.SIGKILL)
    deadline = time.monotonic() + grace_s
    while (pending := [pid for pid in pending if alive(pid)]) and time.monotonic() < deadline:
        time.sleep(_POLL_S)
    return pending


def _signal(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


def belongs_to(pid: int, root: Path) -> bool:
    """True when `pid` is still a process of the fleet at `root` (a recorded pid may have been reused)."""
    marker = str(root.resolve())
    try:
        proc = psutil.Process(pid)
        if any(marker in part for part in proc.cmdline()):
            return True
        return bool(proc.environ().get(SOCKET_ENV, "").startswith(marker + os.sep))
    except psutil.Error:
        return False
