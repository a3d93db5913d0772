"""Shared fixtures: virtual devices on short, private roots (Unix socket paths must stay under 108 bytes)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from device_agent import retry
from device_agent.devkit.testing import VirtualDevice, virtual_device


@pytest.fixture(autouse=True)
def _reset_retry_test_mode() -> Any:
    """Retry test mode is global state: every test starts and ends with it off."""
    retry.reset_testing()
    yield
    retry.reset_testing()


@pytest.fixture
def short_root() -> Any:
    roots: list[Path] = []

    def make() -> Path:
        root = Path(tempfile.mkdtemp(prefix="gg-"))
        roots.append(root)
        return root / "root"

    yield make
    for root in roots:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def start_device(
    short_root: Callable[[], Path],
) -> Callable[..., contextlib.AbstractAsyncContextManager[VirtualDevice]]:
    """`async with start_device(base, **options) as device:` deploys every recipe under base/recipes."""

    @contextlib.asynccontextmanager
    async def start(base: Path | None = None, **options: Any) -> AsyncIterator[VirtualDevice]:
        kwargs: dict[str, Any] = {
            "component_update_timeout": 5.0,
            "validation_timeout": 5.0,
            "grace_period": 2.0,
        }
        kwargs.update(options)
        root = short_root()
        if base is not None:
            kwargs.setdefault("recipe_dir", base / "recipes")
            kwargs.setdefault("artifact_dir", base / "artifacts")
            if (base / "work").is_dir():  # work folders install_built prepared, as Install leaves them
                shutil.copytree(base / "work", root / "work", symlinks=True)
        async with virtual_device(root, **kwargs) as device:
            yield device

    return start


async def probe_results(device: VirtualDevice, name: str, timeout: float = 30.0) -> list[dict[str, Any]]:
    records = await device.wait_for_published(
        f"probe/{name}/result", timeout=timeout, where=lambda r: "results" in json.loads(r.payload)
    )
    results: list[dict[str, Any]] = json.loads(records[-1].payload)["results"]
    return results


async def probe_events(device: VirtualDevice, name: str, timeout: float = 15.0) -> dict[str, Any]:
    before = len(device.published(f"probe/{name}/result"))
    device.publish_local(f"probe/{name}/ask", {"ask": True})
    records = await device.wait_for_published(f"probe/{name}/result", count=before + 1, timeout=timeout)
    events: dict[str, Any] = json.loads(records[-1].payload)["events"]
    return events


PROJECT = Path(__file__).resolve().parents[1]


# The environment every built component of a session shares (install_built links it into work folders).
SESSION_ENVIRONMENT = ".session-environment"


def dev_wheelhouse() -> Path:
    """This machine's wheels of the lock, which scripts/_venv.sh downloads before any test runs."""
    named = os.environ.get("DEVICE_AGENT_WHEELHOUSE")
    wheelhouse = Path(named) if named else PROJECT / ".venv" / "wheelhouse" / "host"
    if not wheelhouse.is_dir():
        pytest.fail(f"{wheelhouse} is missing: `bash scripts/_venv.sh` (scripts/test runs it) downloads it")
    return wheelhouse


def offline_artifact_parts(destination: Path) -> Path:
    """`destination` holding what an offline artifact carries for Install: the lock and its wheels."""
    from device_agent.devkit.build import locked_wheels, read_lock  # noqa: PLC0415

    lock, pins = read_lock(PROJECT)
    (destination / "requirements").mkdir(parents=True)
    shutil.copy(lock, destination / "requirements" / lock.name)
    (destination / "wheels").mkdir()
    for arcname, wheel in locked_wheels(dev_wheelhouse(), pins):
        shutil.copy(wheel, destination / arcname)
    return destination


@pytest.fixture(scope="session")
def session_environment(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One virtual environment for the session's components, made by the real Install from the lock's wheels.

    Installing it for every component start would cost seconds each, dozens of times. Instead each work folder
    gets this environment, marker included, as a device has it after Install ran once for this lock: the
    components' Install step still runs, finds the marker and returns (tests/packaging runs it for real).
    """
    from device_agent.install import ENV_DIR, Paths, install  # noqa: PLC0415

    artifact = offline_artifact_parts(tmp_path_factory.mktemp("install-artifact"))
    work = tmp_path_factory.mktemp("session-work")
    install(Paths(artifact=artifact, work=work))
    return work / ENV_DIR


@pytest.fixture(scope="session")
def built_suite(tmp_path_factory: pytest.TempPathFactory, session_environment: Path) -> Path:
    """`greengrass-build/` for the whole suite, built once per test session from this tree, as it ships."""
    from device_agent.devkit.build import build_components  # noqa: PLC0415 - only end-to-end suites need it

    out = tmp_path_factory.mktemp("greengrass-build")
    # Offline, as a device without an index gets it: a deployment that bypasses install_built (no work
    # folder prepared) still installs, for real and from these wheels, with no network.
    build_components(PROJECT, out, wheels=dev_wheelhouse())
    (out / SESSION_ENVIRONMENT).symlink_to(session_environment)
    return out


def install_built(built: Path, base: Path, names: tuple[str, ...]) -> Path:
    """Copy built components (recipe and artifacts) into `base/recipes` and `base/artifacts`; returns base.

    Each also gets `base/work/<name>/venv`, the session's environment (start_device copies `base/work` into
    the device), so its Install step finds the environment in place and returns at once.
    """
    from device_agent.install import ENV_DIR  # noqa: PLC0415

    (base / "recipes").mkdir(parents=True, exist_ok=True)
    environment = (built / SESSION_ENVIRONMENT).resolve()
    for name in names:
        shutil.copy(built / "recipes" / f"{name}.yaml", base / "recipes" / f"{name}.yaml")
        shutil.copytree(built / "artifacts" / name, base / "artifacts" / name)
        work = base / "work" / name
        work.mkdir(mode=0o700, parents=True)
        (work / ENV_DIR).symlink_to(environment)
    return base


def component_pid(device: VirtualDevice, marker: str) -> int:
    """The Python process (not the shell that started it) running `marker` for this device."""
    import psutil  # noqa: PLC0415 - only the kill tests need it

    for proc in psutil.Process().children(recursive=True):
        try:
            if (
                "python" in proc.name()
                and any(marker in part for part in proc.cmdline())
                and str(device.root) in " ".join(proc.environ().values())
            ):
                pid: int = proc.pid
                return pid
        except psutil.Error:
            continue
    raise AssertionError(f"no process runs {marker}")
