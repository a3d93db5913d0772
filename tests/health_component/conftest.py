"""Fixtures: the health monitor and the store built as they ship, and a heartbeating sibling."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from device_agent.devkit.build import build_components

PROJECT = Path(__file__).resolve().parents[2]
STORE = "com.deviceagent.EncryptedStore"
HEALTH = "com.deviceagent.HealthMonitor"


@pytest.fixture(scope="session")
def built_health(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("greengrass-build")
    build_components(PROJECT, out, [STORE, HEALTH])
    return out


@pytest.fixture
def health_base(tmp_path: Path, built_health: Path) -> Path:
    base = tmp_path / "base"
    (base / "recipes").mkdir(parents=True)
    for name in (STORE, HEALTH):
        shutil.copy(built_health / "recipes" / f"{name}.yaml", base / "recipes" / f"{name}.yaml")
        shutil.copytree(built_health / "artifacts" / name, base / "artifacts" / name)
    return base
