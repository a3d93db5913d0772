"""Test components built on the library, and the recipes that deploy them on the virtual device."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

SESSION_PROBE = Path(__file__).with_name("session_probe.py")


def session_probe_policy(name: str) -> dict[str, Any]:
    """What the session probe needs for itself: its report and echo topics, its command and input topics."""
    return {
        "aws.greengrass.ipc.mqttproxy": {
            f"{name}:session-probe-iot": {
                "operations": ["aws.greengrass#PublishToIoTCore"],
                "resources": [f"probe/{name}/result", f"probe/{name}/echo", f"probe/{name}/out"],
            },
            f"{name}:session-probe-cloud": {
                "operations": ["aws.greengrass#SubscribeToIoTCore"],
                "resources": [f"probe/{name}/cloud"],
            },
        },
        "aws.greengrass.ipc.pubsub": {
            f"{name}:session-probe-local": {
                "operations": ["aws.greengrass#SubscribeToTopic", "aws.greengrass#PublishToTopic"],
                "resources": [f"probe/{name}/ask", f"probe/{name}/in"],
            }
        },
    }


def write_session_probe(
    base: Path,
    name: str,
    checks: list[dict[str, Any]] | None = None,
    *,
    access_control: dict[str, Any] | None = None,
    extra_config: dict[str, Any] | None = None,
    version: str = "1.0.0",
) -> None:
    """Write `<base>/recipes/<name>-<version>.json` and its artifact under `<base>/artifacts/`."""
    recipes = base / "recipes"
    artifacts = base / "artifacts" / name / version
    recipes.mkdir(parents=True, exist_ok=True)
    artifacts.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(SESSION_PROBE, artifacts / "session_probe.py")
    acl = session_probe_policy(name)
    for destination, entries in (access_control or {}).items():
        acl.setdefault(destination, {}).update(entries)
    recipe: dict[str, Any] = {
        "RecipeFormatVersion": "2020-01-25",
        "ComponentName": name,
        "ComponentVersion": version,
        "ComponentConfiguration": {
            "DefaultConfiguration": {
                "checks": checks or [],
                "watched": {"level": 1},
                **(extra_config or {}),
                "accessControl": acl,
            }
        },
        "Manifests": [
            {
                "Platform": {"os": "linux"},
                "Lifecycle": {
                    "Setenv": {"PROBE_NAME": name},
                    "Run": "python3 -u {artifacts:path}/session_probe.py",
                },
                "Artifacts": [{"URI": f"s3://probes/{name}/{version}/session_probe.py"}],
            }
        ],
    }
    (recipes / f"{name}-{version}.json").write_text(json.dumps(recipe, indent=2))
