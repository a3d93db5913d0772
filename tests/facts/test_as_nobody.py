"""Unprivileged for real: a child process dropped to `nobody` reads root-only files through the collectors
and gets `unavailable: needs root`, never a guess (the tests run as root, where chmod 000 denies nothing)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[2]


@pytest.fixture
def reachable() -> Iterator[Path]:
    """A folder `nobody` can reach (pytest's own temporary folders are private to root)."""
    folder = Path(tempfile.mkdtemp(prefix="facts-"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to drop to nobody")
def test_root_only_files_are_unavailable_needs_root_for_an_unprivileged_user(reachable: Path):
    tmp_path = reachable
    dmi = tmp_path / "sys/class/dmi/id"
    dmi.mkdir(parents=True)
    for parent in (tmp_path / "sys", tmp_path / "sys/class", dmi):
        parent.chmod(0o755)
    (dmi / "product_name").write_text("Box\n")
    (dmi / "product_name").chmod(0o444)
    (dmi / "product_serial").write_text("SERIAL-SECRET\n")
    (dmi / "product_serial").chmod(0o400)
    script = textwrap.dedent(
        f"""
        import json, sys
        sys.path.insert(0, {str(PROJECT)!r})
        from pathlib import Path
        from device_agent.facts import hardware
        from device_agent.facts.fact import Tree
        import os
        os.setgid(65534); os.setgroups([]); os.setuid(65534)
        tree = Tree(Path({str(tmp_path)!r}))
        print(json.dumps({{"model": hardware.model(tree).to_document(),
                          "serial": hardware.serial(tree).to_document()}}))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=False, timeout=60
    )
    assert done.returncode == 0, done.stderr
    facts = json.loads(done.stdout)
    assert facts["model"] == {"status": "ok", "value": "Box", "source": "dmi"}
    assert facts["serial"] == {"status": "unavailable", "reason": "needs root"}
    assert "SERIAL-SECRET" not in done.stdout + done.stderr
