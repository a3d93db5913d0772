"""Install's precompile: checked-hash pycs in the work folder's cache, rewritten when a source changed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from device_agent.precompile import precompile


def tree(root: Path, value: str = "1") -> Path:
    package = root / "artifact" / "pkg"
    package.mkdir(parents=True, exist_ok=True)
    (package / "__init__.py").write_text("")
    (package / "mod.py").write_text(f"VALUE = {value}\n")
    for path in package.iterdir():
        os.utime(path, (315532800, 315532800))  # 1980-01-01, as a ZIP artifact unpacks
    return root / "artifact"


def imported_value(artifact: Path, prefix: Path) -> tuple[str, bool]:
    """The module's value, and whether Python loaded it from a pyc in `prefix` (`-v` says so)."""
    env = {**os.environ, "PYTHONPATH": str(artifact), "PYTHONPYCACHEPREFIX": str(prefix)}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    # -B: Python may not write pycs itself, so a pyc it loads can only be one precompile wrote.
    done = subprocess.run(
        [sys.executable, "-B", "-v", "-c", "import pkg.mod; print(pkg.mod.VALUE)"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    pyc = f"mod.{sys.implementation.cache_tag}.pyc"
    from_pyc = any(
        line.startswith(f"# code object from '{prefix}") and pyc in line for line in done.stderr.splitlines()
    )
    return done.stdout.strip(), from_pyc


def test_compiles_everything_once_and_python_uses_it(tmp_path: Path):
    artifact = tree(tmp_path)
    prefix = tmp_path / "work" / "pycache"
    assert precompile(artifact, prefix) == 2
    pycs = sorted(p.name for p in prefix.rglob("*.pyc"))
    assert pycs == sorted(
        [f"__init__.{sys.implementation.cache_tag}.pyc", f"mod.{sys.implementation.cache_tag}.pyc"]
    )
    assert precompile(artifact, prefix) == 0  # current: nothing rewritten
    before = {p: p.stat().st_mtime_ns for p in prefix.rglob("*.pyc")}
    assert imported_value(artifact, prefix) == ("1", True)
    assert {p: p.stat().st_mtime_ns for p in prefix.rglob("*.pyc")} == before


def test_a_changed_source_with_the_same_size_and_time_is_recompiled_not_served_stale(tmp_path: Path):
    artifact = tree(tmp_path, "1")
    prefix = tmp_path / "pycache"
    precompile(artifact, prefix)
    tree(tmp_path, "2")  # same length, same 1980 timestamp: a time-based pyc would look current
    assert imported_value(artifact, prefix) == (
        "2",
        False,
    )  # Python checks the hash: the stale pyc is ignored
    assert precompile(artifact, prefix) == 1
    assert imported_value(artifact, prefix) == ("2", True)


def test_a_module_that_does_not_compile_is_skipped(tmp_path: Path):
    artifact = tree(tmp_path)
    (artifact / "pkg" / "broken.py").write_text("def (:\n")
    assert precompile(artifact, tmp_path / "pycache") == 2
    assert sys.pycache_prefix is None or "pycache" not in sys.pycache_prefix  # restored
