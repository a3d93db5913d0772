"""Fixtures: the health monitor and the store built as they ship, and a heartbeating sibling."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import install_built

STORE = "com.deviceagent.EncryptedStore"
HEALTH = "com.deviceagent.HealthMonitor"


@pytest.fixture
def health_base(tmp_path: Path, built_suite: Path) -> Path:
    return install_built(built_suite, tmp_path / "base", (STORE, HEALTH))
