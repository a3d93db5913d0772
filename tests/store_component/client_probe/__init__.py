"""Write recipes for store client probes (tests/store_component/client_probe/code.py)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

CODE = Path(__file__).with_name("code.py")


def store_grant(name: str, namespace: str) -> dict[str, Any]:
    """What a client of `namespace` is granted: its request topic to publish, its response topic to read."""
    return {
        f"{name}:store:1": {
            "operations": ["aws.greengrass#PublishToTopic"],
            "resources": [f"device-agent/store/{namespace}/request"],
        },
        f"{name}:store:2": {
            "operations": ["aws.greengrass#SubscribeToTopic"],
            "resources": [f"device-agent/store/{namespace}/response"],
        },
    }


def write_client(
    base: Path, name: str, namespace: str, *, extra_pubsub: dict[str, Any] | None = None
) -> None:
    artifacts = base / "artifacts" / name / "1.0.0"
    artifacts.mkdir(parents=True, exist_ok=True)
    (base / "recipes").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(CODE, artifacts / "code.py")
    pubsub = {
        f"{name}:runtime": {
            "operations": ["aws.greengrass#PublishToTopic"],
            "resources": [f"device-agent/heartbeat/{name}", "device-agent/events"],
        },
        f"{name}:commands": {
            "operations": ["aws.greengrass#SubscribeToTopic"],
            "resources": [f"storeclient/{name}/do"],
        },
        **store_grant(name, namespace),
        **(extra_pubsub or {}),
    }
    recipe = {
        "RecipeFormatVersion": "2020-01-25",
        "ComponentName": name,
        "ComponentVersion": "1.0.0",
        "ComponentConfiguration": {
            "DefaultConfiguration": {
                "accessControl": {
                    "aws.greengrass.ipc.pubsub": pubsub,
                    "aws.greengrass.ipc.mqttproxy": {
                        f"{name}:results": {
                            "operations": ["aws.greengrass#PublishToIoTCore"],
                            "resources": [f"storeclient/{name}/result"],
                        }
                    },
                }
            }
        },
        "Manifests": [
            {
                "Platform": {"os": "linux"},
                "Lifecycle": {
                    "Setenv": {"CLIENT_NAME": name, "CLIENT_NAMESPACE": namespace},
                    "Run": "exec python3 -u {artifacts:path}/code.py",
                },
                "Artifacts": [{"URI": f"s3://tests/{name}/1.0.0/code.py"}],
            }
        ],
    }
    (base / "recipes" / f"{name}-1.0.0.json").write_text(json.dumps(recipe, indent=2))
