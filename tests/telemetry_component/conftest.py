"""Fixtures: the store and the telemetry publisher built as they ship, on a device that pins topics."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import install_built

STORE = "com.deviceagent.EncryptedStore"
TELEMETRY = "com.deviceagent.TelemetryPublisher"


@pytest.fixture
def telemetry_base(tmp_path: Path, built_suite: Path) -> Path:
    return install_built(built_suite, tmp_path / "base", (STORE, TELEMETRY))
