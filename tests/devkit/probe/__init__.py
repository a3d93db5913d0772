"""Build probe components: recipes whose process runs listed IPC calls with the real client and reports."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

CODE = Path(__file__).with_name("code.py")


def report_policy(name: str) -> dict[str, Any]:
    return {
        "aws.greengrass.ipc.mqttproxy": {
            f"{name}:probe-report": {
                "operations": ["aws.greengrass#PublishToIoTCore"],
                "resources": [f"probe/{name}/result"],
            }
        },
        "aws.greengrass.ipc.pubsub": {
            f"{name}:probe-ask": {
                "operations": ["aws.greengrass#SubscribeToTopic"],
                "resources": [f"probe/{name}/ask"],
            }
        },
    }


def merge_policies(*policies: dict[str, Any]) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for policy in policies:
        for destination, entries in policy.items():
            merged.setdefault(destination, {}).update(entries)
    return merged


def write_probe(
    base: Path,
    name: str,
    steps: list[dict[str, Any]],
    *,
    access_control: dict[str, Any] | None = None,
    version: str = "1.0.0",
    extra_config: dict[str, Any] | None = None,
    lifecycle: dict[str, Any] | None = None,
    dependencies: dict[str, Any] | None = None,
    report: bool = True,
) -> None:
    """Write `<base>/recipes/<name>-<version>.json` and its artifact under `<base>/artifacts/`."""
    recipes = base / "recipes"
    artifacts = base / "artifacts" / name / version
    recipes.mkdir(parents=True, exist_ok=True)
    artifacts.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(CODE, artifacts / "code.py")
    acl = merge_policies(report_policy(name) if report else {}, access_control or {})
    recipe: dict[str, Any] = {
        "RecipeFormatVersion": "2020-01-25",
        "ComponentName": name,
        "ComponentVersion": version,
        "ComponentConfiguration": {
            "DefaultConfiguration": {"steps": steps, **(extra_config or {}), "accessControl": acl}
        },
        "Manifests": [
            {
                "Platform": {"os": "linux"},
                "Lifecycle": lifecycle
                or {"Setenv": {"PROBE_NAME": name}, "Run": "python3 -u {artifacts:path}/code.py"},
                "Artifacts": [{"URI": f"s3://probes/{name}/{version}/code.py"}],
            }
        ],
    }
    if dependencies:
        recipe["ComponentDependencies"] = dependencies
    (recipes / f"{name}-{version}.json").write_text(json.dumps(recipe, indent=2))
