"""The built artifacts with bundled wheels on the local nucleus: Install runs for real, offline, once.

Each device here starts with empty work folders (unlike the other end-to-end suites, which get the session's
environment in place): Install makes a fresh virtual environment from the artifact's wheels with no index,
and Run starts the component from it.
"""

from __future__ import annotations

import contextlib
import io
import shutil
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from device_agent.devkit.build import build_components
from device_agent.devkit.lifecycle import ComponentState
from device_agent.devkit.testing import VirtualDevice, virtual_device
from device_agent.install import CACHE_ENV, MARKER
from tests.conftest import PROJECT, dev_wheelhouse

STORE = "com.deviceagent.EncryptedStore"
INSTALLED = "installed (bundled wheels)"
SKIPPED = "already installed, nothing to do"
FAILED = "device_agent.install: failed:"
# Four installs may share two cores with the rest of a CI machine: generous, never a synchronisation.
INSTALL_WAIT = 100.0


@pytest.fixture(autouse=True)
def _no_shared_environments(monkeypatch):
    """scripts/test lets virtual devices share finished environments; here each one is installed."""
    monkeypatch.delenv(CACHE_ENV, raising=False)


@pytest.fixture(scope="module")
def offline_suite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("offline-build")
    built = build_components(PROJECT, out, wheels=dev_wheelhouse())
    assert built
    assert all(b.wheel_count > 0 for b in built)
    return out


def copy_suite(built: Path, base: Path, names: list[str] | None = None) -> Path:
    """The built recipes and artifacts (all, or `names`) in `base`, without any work folder."""
    names = names or sorted(p.stem for p in (built / "recipes").glob("*.yaml"))
    (base / "recipes").mkdir(parents=True)
    for name in names:
        shutil.copy(built / "recipes" / f"{name}.yaml", base / "recipes")
        shutil.copytree(built / "artifacts" / name, base / "artifacts" / name)
    return base


@contextlib.asynccontextmanager
async def device_on(root: Path, base: Path, **options: Any) -> AsyncIterator[VirtualDevice]:
    async with virtual_device(
        root,
        recipe_dir=base / "recipes",
        artifact_dir=base / "artifacts",
        component_update_timeout=5.0,
        validation_timeout=5.0,
        grace_period=2.0,
        # As the deployment templates configure the nucleus: recipes pin IoT topics with {iot:thingName}.
        interpolate_component_configuration=True,
        **options,
    ) as device:
        yield device


def install_lines(device: VirtualDevice, name: str) -> list[str]:
    return [line for line in device.log(name).splitlines() if "device_agent.install:" in line]


async def test_every_component_installs_offline_into_a_fresh_environment_and_runs(
    offline_suite, tmp_path, short_root
):
    base = copy_suite(offline_suite, tmp_path / "base")
    names = sorted(p.stem for p in (base / "recipes").glob("*.yaml"))
    root = short_root()
    async with device_on(root, base) as device:
        for name in names:
            await device.wait_for_state(name, ComponentState.RUNNING, timeout=INSTALL_WAIT)
        for name in names:
            work = device.nucleus.work_dir(name)
            assert len(install_lines(device, name)) == 1, device.log(name)
            assert INSTALLED in install_lines(device, name)[0]
            assert "Successfully installed" in device.log(name)  # pip ran, from the bundled wheels only
            assert (work / "venv" / MARKER).is_file()
            assert not (work / "venv").is_symlink()
            assert work.stat().st_mode & 0o777 == 0o700
            assert (work / "venv").stat().st_mode & 0o777 == 0o700
            assert [p.name for p in work.iterdir() if p.name.startswith(".venv-")] == []
            assert device.state(name) == ComponentState.RUNNING


async def test_a_restarted_device_finds_the_environment_and_does_not_install_again(
    offline_suite, tmp_path, short_root
):
    base = copy_suite(offline_suite, tmp_path / "base", [STORE])
    root = short_root()
    async with device_on(root, base) as device:
        await device.wait_for_state(STORE, ComponentState.RUNNING, timeout=INSTALL_WAIT)
        marker = device.nucleus.work_dir(STORE) / "venv" / MARKER
        before = marker.stat()
    # A nucleus restart runs every Install step again, as Greengrass does: this one finds its marker.
    async with device_on(root, base) as device:
        await device.wait_for_state(STORE, ComponentState.RUNNING, timeout=INSTALL_WAIT)
        lines = install_lines(device, STORE)
        after = marker.stat()
    assert [INSTALLED in line for line in lines] == [True, False], lines
    assert SKIPPED in lines[1]
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


def _interpreter_gone(environment: Path) -> None:
    (environment / "bin" / "python").unlink()


def _marker_garbage(environment: Path) -> None:
    (environment / MARKER).write_text("{half written")


def _killed_mid_install(environment: Path) -> None:
    # What an install killed before its rename leaves: a staging folder, and no finished environment.
    staging = environment.parent / ".venv-install-0badf00d"
    shutil.copytree(environment, staging, symlinks=True)
    (staging / MARKER).unlink()
    shutil.rmtree(environment)


async def test_a_damaged_or_half_built_environment_is_rebuilt(offline_suite, tmp_path, short_root):
    # One device root, restarted after each kind of damage (a fresh install per case would cost seconds).
    base = copy_suite(offline_suite, tmp_path / "base", [STORE])
    root = short_root()
    async with device_on(root, base) as device:
        await device.wait_for_state(STORE, ComponentState.RUNNING, timeout=INSTALL_WAIT)
        work = device.nucleus.work_dir(STORE)
    for installs, damage in enumerate((_interpreter_gone, _marker_garbage, _killed_mid_install), start=2):
        damage(work / "venv")
        async with device_on(root, base) as device:
            await device.wait_for_state(STORE, ComponentState.RUNNING, timeout=INSTALL_WAIT)
            lines = install_lines(device, STORE)
        assert [INSTALLED in line for line in lines] == [True] * installs, (damage.__name__, lines)
        assert (work / "venv" / "bin" / "python").exists()
        assert sorted(p.name for p in work.iterdir() if p.name.startswith(".venv-")) == []


def tamper_wheel(artifact: Path, prefix: str) -> str:
    """Rewrite the artifact with one bundled wheel altered (a valid zip, another sha256); its name."""
    with zipfile.ZipFile(artifact) as archive:
        entries = [(info, archive.read(info)) for info in archive.infolist()]
    [target] = [info.filename for info, _ in entries if info.filename.startswith(f"wheels/{prefix}-")]
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for info, data in entries:
            archive.writestr(info, data + b"\0" if info.filename == target else data)
    artifact.write_bytes(buffer.getvalue())
    return target


async def test_a_tampered_wheel_fails_install_clearly_and_the_component_ends_broken(
    offline_suite, tmp_path, short_root
):
    base = copy_suite(offline_suite, tmp_path / "base", [STORE])
    [artifact] = (base / "artifacts" / STORE).rglob("*.zip")
    tamper_wheel(artifact, "psutil")
    async with device_on(short_root(), base) as device:
        await device.wait_for_state(STORE, ComponentState.BROKEN, timeout=INSTALL_WAIT)
        log = device.log(STORE)
        work = device.nucleus.work_dir(STORE)
        assert device.state(STORE) == ComponentState.BROKEN
    # pip refused the altered file by its hash, Install said so, and the nucleus stopped retrying.
    assert "DO NOT MATCH THE HASHES" in log
    failures = [line for line in log.splitlines() if FAILED in line]
    assert len(failures) == 3, failures  # the nucleus's three errors, then BROKEN: no install loop
    assert "hash mismatch" in failures[0]
    assert sorted(p.name for p in work.iterdir()) == []  # nothing half-built stays behind
