"""Fake device trees for the collectors: files written under tmp_path, read through `Tree(root)`."""

from __future__ import annotations

import errno
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest

from device_agent.facts.fact import Tree, read_capped

Files = Mapping[str, str | bytes]


def write_tree(root: Path, files: Files) -> Tree:
    for name, content in files.items():
        path = root / name.lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
    return Tree(root)


@pytest.fixture
def tree(tmp_path: Path) -> Callable[[Files], Tree]:
    root = tmp_path / "root"
    root.mkdir()
    return lambda files: write_tree(root, files)


def denying(*names: str) -> Callable[[Path, int], bytes]:
    """A reader that raises EACCES for paths ending in one of `names`, as a root-only file does for an
    unprivileged reporter (the tests run as root, where chmod 000 denies nothing)."""

    def read(path: Path, max_bytes: int) -> bytes:
        if any(str(path).endswith(name) for name in names):
            raise PermissionError(errno.EACCES, "Permission denied")
        return read_capped(path, max_bytes)

    return read
