"""Every recipe installs and runs the same way: Install builds the environment, Run uses its python."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import PROJECT

RECIPES = sorted((PROJECT / "recipes").glob("*.yaml"))


def lifecycle(path: Path) -> dict[str, Any]:
    recipe = yaml.safe_load(path.read_text(encoding="utf-8"))
    [manifest] = recipe["Manifests"]
    steps: dict[str, Any] = manifest["Lifecycle"]
    return steps


def test_there_are_recipes():
    assert len(RECIPES) >= 3


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_install_builds_the_environment_without_privilege_and_with_time_for_a_slow_device(path):
    name = path.stem
    install = lifecycle(path)["Install"]
    assert install["RequiresPrivilege"] is False
    assert install["Timeout"] >= 600
    assert install["Script"].split() == [
        "python3",
        "-m",
        "device_agent.install",
        "--artifact",
        f'"{{artifacts:decompressedPath}}/{name}"',
        "--work",
        '"{work:path}"',
    ]
    assert "Skipif" not in install  # the marker decides, not a file that a half-done install also leaves


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_run_uses_the_environments_python_and_ships_a_private_zip(path):
    name = path.stem
    steps = lifecycle(path)
    assert steps["Run"]["RequiresPrivilege"] is False
    assert steps["Run"]["Script"].startswith('exec "{work:path}/venv/bin/python" -u -m ')
    assert steps["Setenv"]["PYTHONPATH"] == f"{{artifacts:decompressedPath}}/{name}"
    for step in steps.values():
        assert not (isinstance(step, dict) and step.get("RequiresPrivilege"))
    recipe = yaml.safe_load(path.read_text(encoding="utf-8"))
    [artifact] = recipe["Manifests"][0]["Artifacts"]
    assert artifact["URI"].endswith(f"/{name}.zip")
    assert artifact["Unarchive"] == "ZIP"
    assert artifact["Permission"] == {"Read": "OWNER", "Execute": "NONE"}
