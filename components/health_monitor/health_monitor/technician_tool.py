"""A copy of `device-health` beside the health log, for a technician with neither sudo nor the tool on PATH.

On a device, `device-health` is not on PATH, and the component's artifact folder is readable by its owner
only (`Read: OWNER`). So whenever the monitor opens its log, it keeps `device-health` in the log's folder:
a zip application (Python runs a zip file whose top holds `__main__.py`) of the standard-library-only
modules the tool is made of, with the log's own mode and group (0640 when shared, else 0600). A member of
the technician group runs `python3 <log folder>/device-health`, which reads the log in its own folder
unless `--log-dir` or `DEVICE_HEALTH_LOG_DIR` says otherwise. It needs nothing beyond the standard library,
so it works even with the component's environment broken, and with `python3 -I -S`.

The archive holds each module's source and its bytecode compiled by the monitor's interpreter (a
checked-hash pyc: Python uses it only if it was made for its own version and from that very source, and
compiles the source otherwise), which saves the technician about a third of the tool's start. Its zip
comment is a fingerprint of the sources and the bytecode version; the copy is rewritten only when that
differs: after an update, the next open replaces it.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import marshal
import os
import stat
import zipfile
from pathlib import Path
from typing import Final

import device_agent
from device_agent.errors import DeviceAgentError
from device_agent.files import atomic_write
from device_agent.health_log import PRIVATE_FILE_MODE, SHARED_FILE_MODE

TOOL_NAME: Final = "device-health"
# The tool's import closure (tests/health/test_standard_library_only.py keeps it to these).
MODULES: Final = ("__init__", "errors", "fileio", "health_log", "health_cli")
MAIN: Final = '''"""device-health as the health monitor keeps it beside the log: reads that log."""
import os
import sys

from device_agent import health_cli, health_log

environ = dict(os.environ)
environ.setdefault(health_log.LOG_DIR_ENV, os.path.dirname(os.path.abspath(sys.argv[0])))
sys.exit(health_cli.main(environ=environ))
'''
_EPOCH: Final = (1980, 1, 1, 0, 0, 0)  # the earliest zip time: the same bytes from the same sources


def _sources(package: Path | None) -> list[tuple[str, bytes]]:
    folder = package if package is not None else Path(device_agent.__file__).parent
    members = [("__main__.py", MAIN.encode())]
    return members + [(f"device_agent/{name}.py", (folder / f"{name}.py").read_bytes()) for name in MODULES]


def _checked_pyc(name: str, source: bytes) -> bytes:
    """PEP 552 bytecode that the importer checks against the source's hash (flags: hash-based, checked)."""
    code = compile(source, name, "exec", dont_inherit=True)
    header = importlib.util.MAGIC_NUMBER + (0b11).to_bytes(4, "little") + importlib.util.source_hash(source)
    return header + marshal.dumps(code)


def fingerprint(package: Path | None = None) -> bytes:
    """What the copy is made of: the sources and this interpreter's bytecode version."""
    digest = hashlib.sha256(importlib.util.MAGIC_NUMBER)
    for name, data in _sources(package):
        digest.update(f"{name}:{len(data)}:".encode())
        digest.update(data)
    return b"device-health " + digest.hexdigest().encode()


def tool_archive(package: Path | None = None) -> bytes:
    """The zip application: `__main__.py` and the tool's modules (from `package`: this device_agent)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, source in _sources(package):
            members = [(name, source)]
            if name != "__main__.py":  # run as a script: never imported, so no bytecode is looked for
                members.append((f"{name}c", _checked_pyc(name, source)))
            for member, data in members:
                info = zipfile.ZipInfo(member, date_time=_EPOCH)
                info.compress_type = zipfile.ZIP_DEFLATED
                info.external_attr = 0o644 << 16
                archive.writestr(info, data)
        archive.comment = fingerprint(package)
    return buffer.getvalue()


def _current(target: Path, package: Path | None) -> bool:
    """Whether `target` is a regular file holding the copy of these sources."""
    try:
        if not stat.S_ISREG(target.lstat().st_mode):
            return False
        with zipfile.ZipFile(target) as archive:
            return archive.comment == fingerprint(package)
    except (FileNotFoundError, zipfile.BadZipFile):
        return False


def install_tool(folder: Path, gid: int | None, *, package: Path | None = None) -> str | None:
    """Keep `folder/device-health` current, with the log's mode and group; returns a problem, if any."""
    target = folder / TOOL_NAME
    mode = PRIVATE_FILE_MODE if gid is None else SHARED_FILE_MODE
    try:
        if not _current(target, package):
            atomic_write(target, tool_archive(package), mode=PRIVATE_FILE_MODE)
        st = target.lstat()
        if gid is not None and st.st_gid != gid:
            os.chown(target, -1, gid, follow_symlinks=False)
        if stat.S_IMODE(st.st_mode) != mode:
            target.chmod(mode)
    except (OSError, DeviceAgentError) as error:
        reason = error.strerror if isinstance(error, OSError) and error.strerror else type(error).__name__
        return f"device-health could not be put beside the log: {reason}"
    return None
