"""The copy of `device-health` the monitor keeps beside the log: runs on a bare interpreter, as a member of
the technician group, reads the log in its own folder, and is rewritten only when it changed."""

from __future__ import annotations

import io
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import textwrap
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from health_monitor.sharing import share_work_folder
from health_monitor.technician_tool import MODULES, TOOL_NAME, fingerprint, install_tool, tool_archive

from device_agent.health_log import HealthLogWriter
from tests.health import samples
from tests.health.test_standard_library_only import ALLOWED_OWN

PROJECT = Path(__file__).resolve().parents[2]
NOBODY = 65534
IS_ROOT = os.geteuid() == 0


def run_copy(tool: Path, *args: str, as_nobody: bool = False) -> subprocess.CompletedProcess[str]:
    """`python3 -I -S <tool>`: no site-packages, no PYTHON* variables, as a technician would run it.

    As nobody, the interpreter starts as root (this machine's Python lives in root's home), loads the
    standard library modules the tool uses, and drops to nobody before it touches the tool.
    """
    env = {"PATH": os.environ.get("PATH", ""), "NO_COLOR": "1"}
    if not as_nobody:
        command = [sys.executable, "-I", "-S", str(tool), *args]
    else:
        script = textwrap.dedent(
            f"""
            import __future__, os, pkgutil, runpy, sys
            import argparse, contextlib, dataclasses, datetime, enum, errno, gettext, grp, gzip, hashlib
            import io, json, locale, math, pathlib, re, stat, tarfile, textwrap, time, typing, zipfile
            os.setgid({NOBODY}); os.setgroups([{NOBODY}]); os.setuid({NOBODY})
            sys.argv = [{str(tool)!r}, *{list(args)!r}]
            runpy.run_path({str(tool)!r}, run_name="__main__")
            """
        )
        command = [sys.executable, "-I", "-S", "-c", script]
    return subprocess.run(command, capture_output=True, text=True, check=False, timeout=60, cwd="/", env=env)


def test_the_archive_holds_exactly_the_tools_import_closure() -> None:
    assert {f"device_agent.{name}" for name in MODULES} - {"device_agent.__init__"} | {"device_agent"} == (
        ALLOWED_OWN
    )
    assert fingerprint() == fingerprint()  # the same sources, the same copy
    with zipfile.ZipFile(io.BytesIO(tool_archive())) as archive:
        names = set(archive.namelist())
    modules = {f"device_agent/{name}.py" for name in MODULES}
    assert names == {"__main__.py"} | modules | {f"{name}c" for name in modules}


def test_bytecode_from_another_python_is_not_used_the_source_is(tmp_path: Path) -> None:
    log = tmp_path / "health"
    samples.write_log(log, "critical")
    # As if the monitor's interpreter were another version than the technician's python3.
    with (
        zipfile.ZipFile(io.BytesIO(tool_archive())) as original,
        zipfile.ZipFile(log / TOOL_NAME, "w") as copy,
    ):
        for info in original.infolist():
            data = original.read(info)
            copy.writestr(info, b"\x00\x00\r\n" + data[4:] if info.filename.endswith(".pyc") else data)
    done = run_copy(log / TOOL_NAME, "--json")
    assert done.returncode == 2, done.stderr
    assert json.loads(done.stdout)["status"] == "CRITICAL"


def test_the_copy_reads_the_log_in_its_own_folder_on_a_bare_interpreter(tmp_path: Path) -> None:
    log = tmp_path / "health"
    samples.write_log(log, "warning")
    assert install_tool(log, None) is None
    tool = log / TOOL_NAME
    assert stat.S_IMODE(tool.stat().st_mode) == 0o600  # private log, private tool
    done = run_copy(tool, "--json")
    assert done.returncode == 1, done.stderr
    report = json.loads(done.stdout)
    assert report["status"] == "WARN"
    assert report["logDir"] == str(log)
    # Told otherwise, it reads another log.
    other = tmp_path / "other"
    samples.write_log(other, "critical")
    assert run_copy(tool, "--log-dir", str(other)).returncode == 2
    # The log's reader is not put off by the tool in its folder.
    assert run_copy(tool, "--json").stderr == ""


def test_the_copy_is_rewritten_only_when_it_changed_and_replaces_whatever_took_its_name(
    tmp_path: Path,
) -> None:
    log = tmp_path / "health"
    log.mkdir(mode=0o700)
    assert install_tool(log, None) is None
    tool = log / TOOL_NAME
    inode = tool.stat().st_ino
    assert install_tool(log, None) is None
    assert tool.stat().st_ino == inode  # the same: left alone
    # An update of the modules: the next open replaces it.
    package = tmp_path / "package"
    package.mkdir()
    for name in MODULES:
        shutil.copy(PROJECT / "device_agent" / f"{name}.py", package / f"{name}.py")
    with (package / "health_cli.py").open("a") as file:
        file.write("# a newer version\n")
    assert install_tool(log, None, package=package) is None
    assert tool.stat().st_ino != inode
    with zipfile.ZipFile(tool) as archive:
        assert archive.comment == fingerprint(package)
        assert archive.read("device_agent/health_cli.py").endswith(b"# a newer version\n")
    # A link where the tool goes is replaced, never written through.
    outside = tmp_path / "outside"
    outside.write_text("untouched")
    tool.unlink()
    tool.symlink_to(outside)
    assert install_tool(log, None) is None
    assert not tool.is_symlink()
    assert outside.read_text() == "untouched"


def test_a_folder_that_cannot_take_the_copy_is_a_problem_not_a_failure(tmp_path: Path) -> None:
    problem = install_tool(tmp_path / "absent", None)
    assert problem is not None
    assert problem.startswith("device-health could not be put beside the log")


@pytest.fixture
def work(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A nucleus-like layout outside pytest's own folders (those are root's 0700): work/<component>, 0700."""
    base = Path(tempfile.mkdtemp(prefix="health-tool-"))
    base.chmod(0o755)
    folder = base / "work" / "com.deviceagent.HealthMonitor"
    folder.mkdir(parents=True)
    (base / "work").chmod(0o755)
    folder.chmod(0o700)
    monkeypatch.chdir(folder)
    yield folder
    shutil.rmtree(base, ignore_errors=True)


@pytest.mark.skipif(not IS_ROOT, reason="needs root to give files to a group and run as nobody")
def test_a_technician_in_the_group_runs_the_copy_without_sudo(work: Path) -> None:
    import grp  # noqa: PLC0415

    log = work / "health"
    samples.write_log(log, "critical")
    writer = HealthLogWriter(log, group=grp.getgrgid(NOBODY).gr_name)
    writer.open()
    writer.close()
    assert writer.shared_gid == NOBODY
    assert share_work_folder(log, writer.shared_gid) is None
    assert install_tool(log, writer.shared_gid) is None
    st = (log / TOOL_NAME).stat()
    assert (stat.S_IMODE(st.st_mode), st.st_gid) == (0o640, NOBODY)
    done = run_copy(log / TOOL_NAME, as_nobody=True)
    assert done.returncode == 2, done.stderr
    assert done.stdout.startswith("DEVICE HEALTH: CRITICAL")
    # Sharing off: the copy goes private with the log.
    assert install_tool(log, None) is None
    assert stat.S_IMODE((log / TOOL_NAME).stat().st_mode) == 0o600
