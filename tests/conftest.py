"""Shared fixtures: virtual devices on short, private roots (Unix socket paths must stay under 108 bytes)."""

from __future__ import annotations

import contextlib
import json
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
        if base is not None:
            kwargs.setdefault("recipe_dir", base / "recipes")
            kwargs.setdefault("artifact_dir", base / "artifacts")
        async with virtual_device(short_root(), **kwargs) as device:
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


@pytest.fixture(scope="session")
def built_suite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`greengrass-build/` for the whole suite, built once per test session from this tree, as it ships."""
    from device_agent.devkit.build import build_components  # noqa: PLC0415 - only end-to-end suites need it

    out = tmp_path_factory.mktemp("greengrass-build")
    build_components(PROJECT, out)
    return out


def install_built(built: Path, base: Path, names: tuple[str, ...]) -> Path:
    """Copy built components (recipe and artifacts) into `base/recipes` and `base/artifacts`; returns base."""
    (base / "recipes").mkdir(parents=True, exist_ok=True)
    for name in names:
        shutil.copy(built / "recipes" / f"{name}.yaml", base / "recipes" / f"{name}.yaml")
        shutil.copytree(built / "artifacts" / name, base / "artifacts" / name)
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
