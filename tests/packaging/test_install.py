"""device_agent.install in-process: the marker, leftovers, the bundled pip's check, a device with no pip.

The real thing (a fresh environment from bundled wheels, on the local nucleus) is in test_install_e2e.py.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from device_agent import install as installer
from device_agent.install import (
    MARKER,
    InstallError,
    Paths,
    install_key,
    is_installed,
    parse_lock,
    write_marker,
)

LOCK = b"alpha==1.0 \\\n    --hash=sha256:" + b"a" * 64 + b"\n"


def fake_environment(folder: Path, key: str) -> Path:
    (folder / "bin").mkdir(parents=True)
    (folder / "bin" / "python").symlink_to(sys.executable)
    (folder / "pyvenv.cfg").write_text("home = /usr/bin\n")
    write_marker(folder, key, offline=True)
    return folder


def test_the_lock_parser_joins_continuations_and_keeps_every_hash():
    text = (
        "# header\n\nAlpha_Pkg==1.0 \\\n    --hash=sha256:" + "a" * 64 + " \\\n    --hash=sha256:" + "b" * 64
    )
    [pin] = parse_lock(text + "\npip==26.3 --hash=sha256:" + "c" * 64 + "  # the bootstrap\n")[:1]
    assert (pin.name, pin.version, pin.hashes) == ("alpha-pkg", "1.0", frozenset({"a" * 64, "b" * 64}))
    with pytest.raises(InstallError, match="not an ==-pinned requirement"):
        parse_lock("alpha>=1\n")


def test_the_key_changes_with_the_lock():
    assert install_key(LOCK) == install_key(LOCK)
    assert install_key(LOCK) != install_key(LOCK + b"# changed\n")


def test_only_a_complete_environment_built_for_this_key_counts_as_installed(tmp_path):
    key = install_key(LOCK)
    environment = fake_environment(tmp_path / "venv", key)
    assert is_installed(environment, key)
    assert not is_installed(environment, install_key(LOCK + b"\n"))  # another lock
    (environment / MARKER).write_text("{not json")
    assert not is_installed(environment, key)
    write_marker(environment, key, offline=False)
    assert json.loads((environment / MARKER).read_text())["offline"] is False
    assert (environment / MARKER).stat().st_mode & 0o777 == 0o600
    (environment / "bin" / "python").unlink()  # the interpreter went (a Python upgrade removed it)
    assert not is_installed(environment, key)
    assert not is_installed(tmp_path / "nothing", key)


def test_an_environment_in_place_is_kept_and_nothing_runs(tmp_path, monkeypatch):
    artifact, work = tmp_path / "artifact", tmp_path / "work"
    (artifact / "requirements").mkdir(parents=True)
    (artifact / "requirements" / "device.lock").write_bytes(LOCK)
    fake_environment(work / "venv", install_key(LOCK))
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: pytest.fail("nothing may run"))
    assert installer.install(Paths(artifact, work)) is False


def test_the_bundled_pip_must_be_the_locked_file(tmp_path):
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    good = b"the pip wheel"
    digest = hashlib.sha256(good).hexdigest()
    pins = parse_lock(f"pip==26.3 --hash=sha256:{digest}\n")
    (wheels / "pip-26.3-py3-none-any.whl").write_bytes(good)
    assert installer._bundled_pip(wheels, pins) == wheels / "pip-26.3-py3-none-any.whl"
    (wheels / "pip-26.3-py3-none-any.whl").write_bytes(b"something else")
    with pytest.raises(InstallError, match="not in the lock; the artifact was altered"):
        installer._bundled_pip(wheels, pins)
    (wheels / "pip-26.3-py3-none-any.whl").unlink()
    with pytest.raises(InstallError, match=r"no pip-26\.3 wheel bundled"):
        installer._bundled_pip(wheels, pins)
    with pytest.raises(InstallError, match="pins no pip"):
        installer._bundled_pip(wheels, parse_lock(f"alpha==1 --hash=sha256:{digest}\n"))


def test_online_without_ensurepip_or_pip_names_the_package_to_install(tmp_path, monkeypatch):
    # Debian's python3 without python3-venv: no ensurepip (and here no pip either).
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name in {"ensurepip", "pip"} else real(name, *a)
    )
    paths = Paths(tmp_path / "artifact", tmp_path / "work")
    with pytest.raises(InstallError, match=r"apt-get install python3-venv.*scripts/build --wheels"):
        installer._pip_command(paths, (), tmp_path / "venv" / "bin" / "python", offline=False)


def test_the_command_line_fails_with_one_clear_line_and_leaves_nothing_half_done(tmp_path):
    work = tmp_path / "work"
    code = subprocess.run(
        [sys.executable, "-m", "device_agent.install", "--artifact", str(tmp_path), "--work", str(work)],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "PYTHONPATH": str(Path(installer.__file__).parents[1])},
    )
    assert code.returncode == 1
    assert code.stderr.startswith("device_agent.install: failed: cannot read the lock ")
    assert "Traceback" not in code.stderr
    assert not work.exists()


def test_a_failed_install_removes_its_staging_folder_and_keeps_leftovers_away(tmp_path, monkeypatch):
    artifact, work = tmp_path / "artifact", tmp_path / "work"
    (artifact / "requirements").mkdir(parents=True)
    (artifact / "requirements" / "device.lock").write_bytes(LOCK)
    (artifact / "wheels").mkdir()  # offline, and no pip wheel in it: the install fails after the venv exists
    (work / ".venv-install-dead").mkdir(parents=True)  # an install killed half-way, earlier
    with pytest.raises(InstallError, match="pins no pip"):
        installer.install(Paths(artifact, work))
    assert sorted(p.name for p in work.iterdir()) == []


def test_a_cache_others_can_write_is_refused(tmp_path):
    artifact = tmp_path / "artifact"
    (artifact / "requirements").mkdir(parents=True)
    (artifact / "requirements" / "device.lock").write_bytes(LOCK)
    cache = tmp_path / "cache"
    cache.mkdir()
    cache.chmod(0o777)
    with pytest.raises(InstallError, match="refusing it as a cache"):
        installer.install(Paths(artifact, tmp_path / "work"), cache=cache)


def test_components_sharing_a_cache_get_one_environment_built_once(tmp_path):
    from tests.conftest import offline_artifact_parts  # noqa: PLC0415

    artifact = offline_artifact_parts(tmp_path / "artifact")
    cache = tmp_path / "cache"
    first, second = Paths(artifact, tmp_path / "one"), Paths(artifact, tmp_path / "two")
    assert installer.install(first, cache=cache) is True
    built = first.environment.resolve()
    assert built.parent.parent == cache
    assert installer.install(second, cache=cache) is True  # linked, not built again
    assert second.environment.resolve() == built
    assert (built / MARKER).stat().st_ino == (second.environment / MARKER).stat().st_ino
    assert installer.install(second, cache=cache) is False
    code = subprocess.run(
        [str(second.environment / "bin" / "python"), "-c", "import awscrt, awsiot, cryptography, psutil"],
        check=False,
    )
    assert code.returncode == 0


def test_the_installer_needs_nothing_but_the_standard_library():
    # It runs before the environment exists: no site-packages (-S), no user site or PYTHONPATH (-I).
    library_root = str(Path(installer.__file__).parents[1])
    script = (
        f"import sys; sys.path.insert(0, {library_root!r}); import device_agent.install, json; "
        "print(json.dumps(sorted(sys.modules)))"
    )
    proc = subprocess.run(
        [sys.executable, "-I", "-S", "-c", script], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stderr
    loaded = {name.split(".")[0] for name in json.loads(proc.stdout)}
    assert loaded - set(sys.stdlib_module_names) == {"__main__", "device_agent"}


# ---- the device's python3 ----------------------------------------------------------------------------------


@pytest.mark.parametrize("version", [(3, 11, 0), (3, 12, 4), (3, 13, 0), (4, 0, 0)])
def test_python_3_11_and_later_is_supported(version: tuple[int, int, int]):
    assert installer.unsupported_python(version) is None


@pytest.mark.parametrize("version", [(3, 10, 12), (3, 9, 2), (3, 7, 3), (2, 7, 18)])
def test_an_older_python_is_named_with_what_the_suite_needs(version: tuple[int, int, int]):
    message = installer.unsupported_python(version)
    assert message is not None
    found = ".".join(map(str, version))
    assert f"python3 is Python {found}; the suite needs Python 3.11 or later" in message


def test_install_checks_the_python_version_before_anything_else_and_fails_clearly(tmp_path: Path):
    # The interpreter's reported version made older, then `python3 -m device_agent.install` run as Install
    # runs it: one line on stderr, exit status 1, no traceback, nothing read or written.
    work = tmp_path / "work"
    code = (
        "import runpy, sys; sys.version_info = (3, 9, 2, 'final', 0); "
        "sys.argv = ['install', '--artifact', sys.argv[1], '--work', sys.argv[2]]; "
        "runpy.run_module('device_agent.install', run_name='__main__', alter_sys=True)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "missing-artifact"), str(work)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 1
    assert result.stderr == (
        "device_agent.install: failed: python3 is Python 3.9.2; the suite needs Python 3.11 or later"
        " as python3 for the component's user (docs/deploying.md, device requirements)\n"
    )
    assert result.stdout == ""
    assert not work.exists()


def test_the_installer_parses_as_python_3_7_so_the_version_check_runs_there():
    # An older python3 compiles the whole module before the check runs; 3.7 is the oldest grammar it allows
    # (postponed annotations). ast's feature_version rejects the newer syntax a change could bring in.
    import ast  # noqa: PLC0415

    source = Path(installer.__file__).read_text(encoding="utf-8")
    ast.parse(source, feature_version=(3, 7))
    with pytest.raises(SyntaxError):
        ast.parse(source + "\nif (x := 1):\n    pass\n", feature_version=(3, 7))
