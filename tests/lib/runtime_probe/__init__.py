"""Build recipes for the runtime probe component (tests/lib/runtime_probe/code.py)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

CODE = Path(__file__).with_name("code.py")
DEFAULTS = {
    "intervalSeconds": 1.0,
    "heartbeatIntervalSeconds": 0.5,
    "workSeconds": 0.5,
    "label": "first",
    "low": 1,
    "high": 10,
}


def write_runtime_probe(base: Path, name: str, *, config: dict[str, Any] | None = None) -> None:
    """A recipe granting exactly what the runtime and the probe use, and the artifact."""
    artifacts = base / "artifacts" / name / "1.0.0"
    artifacts.mkdir(parents=True, exist_ok=True)
    (base / "recipes").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(CODE, artifacts / "code.py")
    access_control = {
        "aws.greengrass.ipc.pubsub": {
            f"{name}:pubsub:1": {
                "operations": ["aws.greengrass#PublishToTopic"],
                "resources": [f"device-agent/heartbeat/{name}", "device-agent/events"],
            },
            f"{name}:pubsub:2": {
                "operations": ["aws.greengrass#SubscribeToTopic"],
                "resources": [f"probe/{name}/poke"],
            },
        },
        "aws.greengrass.ipc.mqttproxy": {
            f"{name}:mqttproxy:1": {
                "operations": ["aws.greengrass#PublishToIoTCore"],
                "resources": [f"probe/{name}/*"],
            }
        },
    }
    recipe = {
        "RecipeFormatVersion": "2020-01-25",
        "ComponentName": name,
        "ComponentVersion": "1.0.0",
        "ComponentConfiguration": {
            "DefaultConfiguration": {**DEFAULTS, **(config or {}), "accessControl": access_control}
        },
        "Manifests": [
            {
                "Platform": {"os": "linux"},
                "Lifecycle": {"Setenv": {"PROBE_NAME": name}, "Run": "python3 -u {artifacts:path}/code.py"},
                "Artifacts": [{"URI": f"s3://probes/{name}/1.0.0/code.py"}],
            }
        ],
    }
    (base / "recipes" / f"{name}-1.0.0.json").write_text(json.dumps(recipe, indent=2))
