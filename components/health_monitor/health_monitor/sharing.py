"""Letting the technician group reach a shared health log inside the monitor's work folder.

The nucleus makes each component's work folder 0700, owned by the component's user, and sets it so again
whenever the component starts. A log shared with a group (folder 0750, files 0640) is then still out of
the group's reach. So when the log is shared, the monitor opens its own work folder to that group for
passing through only: group-owned by it, mode 0710. Members can reach the log's folder by name but cannot
list the work folder or read anything else in it (everything else there is 0600/0700). When sharing is
off, the folder goes back to 0700.

Only the log folder's parent is touched, and only when it is the monitor's own work folder: owned by its
user and its working directory (where the nucleus starts every component). Nothing above it changes.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Final

PRIVATE: Final = 0o700
TRAVERSE: Final = 0o710


def share_work_folder(log_dir: Path, gid: int | None) -> str | None:
    """Give the work folder holding `log_dir` group traversal (or take it back); returns a problem, if any."""
    folder = log_dir.parent
    try:
        if folder.resolve() != Path.cwd().resolve():
            return None  # not the work folder the nucleus gave us: not ours to open
        st = folder.lstat()
        if st.st_uid != os.geteuid() or not stat.S_ISDIR(st.st_mode):
            return None
        mode = stat.S_IMODE(st.st_mode)
        if gid is None:
            if mode == TRAVERSE:  # what sharing set: take it back
                folder.chmod(PRIVATE)
            return None
        if st.st_gid != gid:
            os.chown(folder, -1, gid, follow_symlinks=False)
        if mode != TRAVERSE:
            folder.chmod(TRAVERSE)
    except OSError as error:
        return f"the work folder cannot be opened to the group: {error.strerror or type(error).__name__}"
    return None
