"""A copy of `device-health` beside the health log, for a technician with neither sudo nor the tool on PATH.

On a device, `device-health` is not on PATH, and the component's artifact folder is readable by its owner
only (`Read: OWNER`). So whenever the monitor opens its log, it keeps `device-health` in the log's folder:
a zip application (Python runs a zip file whose top holds `__main__.py`) of the standard-library-only
modules the tool is made of, with the log's own mode and group (0640 when shared, else 0600). A member of
the technician group runs `python3 <log folder>/device-health`, which reads the log in its own folder
unless `--log-dir` or `DEVICE_HEALTH_LOG_DIR` says otherwise. It needs nothing beyond the standard library,
so it works even with the component's environment broken, and with `python3 -I -S`.

The archive is built from the modules the monitor runs, byte for byte the same each time (fixed
timestamps), and rewritten only when it differs: after an update, the next open replaces it.
"""

from __future__ import annotations

import io
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


def tool_archive(package: Path | None = None) -> bytes:
    """The zip application: `__main__.py` and the tool's modules from `package` (this device_agent)."""
    source = package if package is not None else Path(device_agent.__file__).parent
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        members = [("__main__.py", MAIN.encode())]
        members += [(f"device_agent/{name}.py", (source / f"{name}.py").read_bytes()) for name in MODULES]
        for name, data in members:
            info = zipfile.ZipInfo(name, date_time=_EPOCH)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            archive.writestr(info, data)
    return buffer.getvalue()


def install_tool(folder: Path, gid: int | None, *, package: Path | None = None) -> str | None:
    """Keep `folder/device-health` current, with the log's mode and group; returns a problem, if any."""
    target = folder / TOOL_NAME
    mode = PRIVATE_FILE_MODE if gid is None else SHARED_FILE_MODE
    try:
        data = tool_archive(package)
        try:
            st = target.lstat()
        except FileNotFoundError:
            st = None
        if st is None or not stat.S_ISREG(st.st_mode) or target.read_bytes() != data:
            atomic_write(target, data, mode=PRIVATE_FILE_MODE)
            st = target.lstat()
        if gid is not None and st.st_gid != gid:
            os.chown(target, -1, gid, follow_symlinks=False)
        if stat.S_IMODE(st.st_mode) != mode:
            target.chmod(mode)
    except (OSError, DeviceAgentError) as error:
        reason = error.strerror if isinstance(error, OSError) and error.strerror else type(error).__name__
        return f"device-health could not be put beside the log: {reason}"
    return None
