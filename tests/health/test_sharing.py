"""The technician group reaches a shared health log through the monitor's 0700 work folder, and only it."""

from __future__ import annotations

import grp
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from health_monitor.sharing import PRIVATE, TRAVERSE, share_work_folder

from device_agent.health_cli import EXIT_NO_LOG
from device_agent.health_log import HealthLogWriter, Lifecycle, LifecycleEvent

PROJECT = Path(__file__).resolve().parents[2]
NOBODY = 65534
pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give files away and act as nobody")


@pytest.fixture
def work(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A nucleus-like layout outside pytest's own folders (those are root's 0700): work/<component>, 0700."""
    base = Path(tempfile.mkdtemp(prefix="health-share-"))
    base.chmod(0o755)
    folder = base / "work" / "com.deviceagent.HealthMonitor"
    folder.mkdir(parents=True)
    (base / "work").chmod(0o755)
    folder.chmod(PRIVATE)
    monkeypatch.chdir(folder)  # the nucleus starts every component in its work folder
    yield folder
    shutil.rmtree(base, ignore_errors=True)


def write_log(folder: Path, group: str | None) -> HealthLogWriter:
    writer = HealthLogWriter(folder / "health", group=group)
    with writer:
        writer.append(Lifecycle(time=datetime.now(UTC), event=LifecycleEvent.MONITOR_STARTED, detail="test"))
    return writer


def device_health_as_nobody(log_dir: Path) -> subprocess.CompletedProcess[str]:
    script = textwrap.dedent(
        f"""
        import os, sys
        sys.path.insert(0, {str(PROJECT)!r})
        from device_agent.health_cli import main
        import argparse, gettext, locale, json, tarfile  # loaded lazily; the interpreter may be root's
        os.setgid({NOBODY}); os.setgroups([{NOBODY}]); os.setuid({NOBODY})
        sys.exit(main(["--log-dir", {str(log_dir)!r}]))
        """
    )
    return subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=False, timeout=60
    )


def group_name(gid: int) -> str:
    return grp.getgrgid(gid).gr_name


def test_a_shared_log_is_reachable_by_the_group_only_once_the_work_folder_lets_it_through(work: Path):
    writer = write_log(work, group_name(NOBODY))
    assert writer.shared_gid == NOBODY
    # The log itself is shared (0750/0640) but the 0700 work folder keeps the group out.
    denied = device_health_as_nobody(work / "health")
    assert denied.returncode == EXIT_NO_LOG, denied.stderr
    assert "permission denied" in denied.stderr

    assert share_work_folder(work / "health", writer.shared_gid) is None
    st = work.stat()
    assert (stat.S_IMODE(st.st_mode), st.st_gid) == (TRAVERSE, NOBODY)
    allowed = device_health_as_nobody(work / "health")
    assert allowed.returncode != EXIT_NO_LOG, allowed.stderr
    assert f"Log {work / 'health'}" in allowed.stdout, allowed.stdout
    # Passing through is not listing: the group still cannot see what else the folder holds.
    (work / "secret.key").write_bytes(b"x")
    (work / "secret.key").chmod(0o600)
    listing = subprocess.run(
        [
            sys.executable,
            "-c",
            f"import os; os.setgid({NOBODY}); os.setuid({NOBODY}); os.listdir({str(work)!r})",
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert "PermissionError" in listing.stderr


def test_turning_sharing_off_closes_the_work_folder_again(work: Path):
    writer = write_log(work, group_name(NOBODY))
    share_work_folder(work / "health", writer.shared_gid)
    assert stat.S_IMODE(work.stat().st_mode) == TRAVERSE
    private = write_log(work, None)
    assert private.shared_gid is None
    assert share_work_folder(work / "health", private.shared_gid) is None
    assert stat.S_IMODE(work.stat().st_mode) == PRIVATE
    denied = device_health_as_nobody(work / "health")
    assert denied.returncode == EXIT_NO_LOG


def test_a_folder_that_is_not_the_work_folder_is_left_alone(work: Path, tmp_path: Path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=PRIVATE)
    elsewhere.chmod(PRIVATE)
    assert share_work_folder(elsewhere / "health", NOBODY) is None
    st = elsewhere.stat()
    assert (stat.S_IMODE(st.st_mode), st.st_gid) == (PRIVATE, os.getegid())
    assert stat.S_IMODE(work.stat().st_mode) == PRIVATE
