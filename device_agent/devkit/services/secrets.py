"""GetSecretValue, as `aws.greengrass.SecretManager` serves it, from a local secrets file.

The virtual device is given a JSON file (`--secrets FILE`), never configuration, with the secrets a real
device would have synced from AWS Secrets Manager:

    {"secrets": [{"arn": "arn:aws:secretsmanager:us-east-1:123456789012:secret:name-AbCdEf",
                  "name": "name", "versionId": "v1", "versionStages": ["AWSCURRENT"],
                  "secretString": "..."}]}        # or "secretBinary": "<base64>"

Authorization is under `aws.greengrass.SecretManager` with the secret's ARN as the resource, so a recipe
must grant the ARN (or a `*` pattern over ARNs) exactly as on a device.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from device_agent.devkit.errors import DevkitError
from device_agent.devkit.ipc.errors import InvalidArgumentsError, ResourceNotFoundError
from device_agent.devkit.ipc.server import CallContext, Handler
from device_agent.devkit.services.common import Authorizing, authorize, decode_blob, optional_str

DESTINATION = "aws.greengrass.SecretManager"
OPERATION = "aws.greengrass#GetSecretValue"


@dataclass(frozen=True, slots=True)
class Secret:
    arn: str
    name: str
    version_id: str
    version_stages: tuple[str, ...]
    secret_string: str | None
    secret_binary: str | None  # base64, as it travels

    def value(self) -> dict[str, Any]:
        if self.secret_string is not None:
            return {"secretString": self.secret_string}
        return {"secretBinary": self.secret_binary}


def load_secrets(path: Path) -> list[Secret]:
    """Read and validate a secrets file; errors name the entry and key, never a secret value."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DevkitError(f"{path.name}: cannot read secrets file ({type(exc).__name__})") from None
    entries = document.get("secrets") if isinstance(document, dict) else None
    if not isinstance(entries, list):
        raise DevkitError(f"{path.name}: expected an object with a 'secrets' list")
    secrets = []
    for index, entry in enumerate(entries):
        where = f"{path.name}: secrets[{index}]"
        if not isinstance(entry, dict) or not isinstance(entry.get("arn"), str):
            raise DevkitError(f"{where}.arn: expected a string")
        has_string = isinstance(entry.get("secretString"), str)
        has_binary = isinstance(entry.get("secretBinary"), str)
        if has_string == has_binary:
            raise DevkitError(f"{where}: set exactly one of secretString and secretBinary")
        if has_binary:
            decode_blob(entry["secretBinary"], f"{where}.secretBinary")
        arn = entry["arn"]
        stages = entry.get("versionStages", ["AWSCURRENT"])
        secrets.append(
            Secret(
                arn=arn,
                name=str(entry.get("name") or arn.rsplit(":", 1)[-1]),
                version_id=str(entry.get("versionId", "1")),
                version_stages=tuple(str(s) for s in stages) if isinstance(stages, list) else ("AWSCURRENT",),
                secret_string=entry.get("secretString") if has_string else None,
                secret_binary=entry.get("secretBinary") if has_binary else None,
            )
        )
    return secrets


class SecretService:
    def __init__(self, authorizer: Authorizing, secrets: list[Secret]) -> None:
        self._authorizer = authorizer
        self._secrets = secrets

    def handlers(self) -> dict[str, Handler]:
        return {OPERATION: self.get_secret_value}

    async def get_secret_value(self, ctx: CallContext, request: dict[str, Any]) -> dict[str, Any]:
        secret_id = optional_str(request, "secretId")
        if not secret_id:
            raise InvalidArgumentsError("SecretId is required")
        version_id = optional_str(request, "versionId")
        stage = optional_str(request, "versionStage")
        if version_id and stage:
            raise InvalidArgumentsError("Only one of versionId and versionStage may be given")
        secret = self._find(secret_id, version_id, stage or ("AWSCURRENT" if not version_id else None))
        authorize(
            self._authorizer,
            component=ctx.component,
            destination=DESTINATION,
            operation=OPERATION,
            resource=secret.arn,
        )
        return {
            "secretId": secret.arn,
            "versionId": secret.version_id,
            "versionStage": list(secret.version_stages),
            "secretValue": secret.value(),
        }

    def _find(self, secret_id: str, version_id: str | None, stage: str | None) -> Secret:
        for secret in self._secrets:
            if secret_id not in (secret.arn, secret.name):
                continue
            if version_id is not None and secret.version_id != version_id:
                continue
            if stage is not None and stage not in secret.version_stages:
                continue
            return secret
        raise ResourceNotFoundError("Secret not found", resource_type="Secret", resource_name=secret_id)
