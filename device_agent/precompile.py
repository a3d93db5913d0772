"""Compile a component's Python once, at Install, into a cache in its work folder.

The artifact's files are read-only to the component and unpacked without `__pycache__`, so without this
every start compiles every module again: slower, and the compiler's peak stays in the process's resident
memory (about 3 MiB for the runtime's modules). Install compiles them into `<work>/pycache`, laid out as
`PYTHONPYCACHEPREFIX` expects, and the recipe's Setenv points the component's Python there.

The files are "checked hash" pycs: Python checks each against its source's hash, not its time (every file
in a ZIP artifact has the same 1980 timestamp, so a time check could keep a stale pyc after a redeploy of
the same version with other code). A pyc already matching its source is left alone, so a start that finds
everything compiled only reads and hashes the sources. Standard library only: it runs before the
component's environment exists. A file that cannot be compiled is skipped: Python compiles it at import,
as it would without this.
"""

from __future__ import annotations

import importlib.util
import py_compile
import sys
from pathlib import Path
from typing import Final

CHECKED_HASH_FLAGS: Final = 0b11  # hash-based, check the source
HEADER_BYTES: Final = 16  # magic, flags, source hash (PEP 552)


def precompile(sources: Path, prefix: Path) -> int:
    """Compile every module under `sources` into `prefix`; returns how many pycs were written."""
    previous = sys.pycache_prefix
    sys.pycache_prefix = str(prefix)
    written = 0
    try:
        for path in sorted(sources.rglob("*.py")):
            if path.is_symlink() or not path.is_file():
                continue
            source = path.read_bytes()
            cached = importlib.util.cache_from_source(str(path))
            if _current(Path(cached), source):
                continue
            try:
                py_compile.compile(
                    str(path),
                    cfile=cached,
                    doraise=True,
                    invalidation_mode=py_compile.PycInvalidationMode.CHECKED_HASH,
                )
            except py_compile.PyCompileError:
                continue
            written += 1
    finally:
        sys.pycache_prefix = previous
    return written


def _current(cached: Path, source: bytes) -> bool:
    try:
        with cached.open("rb") as file:
            header = file.read(HEADER_BYTES)
    except OSError:
        return False
    return (
        len(header) == HEADER_BYTES
        and header[:4] == importlib.util.MAGIC_NUMBER
        and int.from_bytes(header[4:8], "little") == CHECKED_HASH_FLAGS
        and header[8:16] == importlib.util.source_hash(source)
    )
