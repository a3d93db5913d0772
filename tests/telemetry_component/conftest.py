"""Fixtures: the store and the telemetry publisher built as they ship, on a device that pins topics."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from device_agent.devkit.build import build_components

PROJECT = Path(__file__).resolve().parents[2]
STORE = "com.deviceagent.EncryptedStore"
TELEMETRY = "com.deviceagent.TelemetryPublisher"


@pytest.fixture(scope="session")
def built_telemetry(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("greengrass-build")
    build_components(PROJECT, out, [STORE, TELEMETRY])
    return out


@pytest.fixture
def telemetry_base(tmp_path: Path, built_telemetry: Path) -> Path:
    base = tmp_path / "base"
    (base / "recipes").mkdir(parents=True)
    for name in (STORE, TELEMETRY):
        shutil.copy(built_telemetry / "recipes" / f"{name}.yaml", base / "recipes" / f"{name}.yaml")
        shutil.copytree(built_telemetry / "artifacts" / name, base / "artifacts" / name)
    return base
