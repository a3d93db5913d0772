"""The AWS Lambda entry point: an AWS IoT rule's event in, a decision out (and the verdict published).

The rule (docs/verifier.md has the CLI to create it):

    SELECT encode(*, 'base64') AS payload, topic() AS topic, principal() AS principal
    FROM 'dt/device-agent/+/bootstrap'

The payload travels base64-encoded and untouched, not as `SELECT *`: the verifier must see the exact bytes
the device signed off with its facts hash (size, duplicate keys, numbers), and `SELECT *, topic(3) AS thing`
would overwrite the body's own `thing` with the topic's, hiding the very mismatch it must catch.
`principal()` is the certificate id the device connected with; the rules require it to be the certificate
the report names, and an event without one (a rule without `principal()`, a connection that did not use a
certificate) fails `certificate.principal.unavailable`: the handler never skips that rule.

Configuration, from the environment (read once per Lambda container):

    DEVICE_AGENT_POLICY_FILE      the policy file, bundled with the function (required)
    DEVICE_AGENT_AUDIT_TABLE      the DynamoDB audit table (required)
    DEVICE_AGENT_QUARANTINE_GROUP default device-agent-quarantine
    DEVICE_AGENT_PRODUCTION_GROUP default device-agent-production
    DEVICE_AGENT_VERIFIER_ID      who decides, in the audit trail (default: the function's name)
    DEVICE_AGENT_IOT_DATA_ENDPOINT the account's data endpoint URL (default: boto3's for the region)
    DEVICE_AGENT_RETAIN_VERDICTS  "true" (default) or "false"

A `RegistryError`, `AuditError` or `PublishError` propagates: Lambda retries an asynchronous invocation,
and the verifier is idempotent for the same report.
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from device_agent_cloud.audit import DynamoDbAuditLog
from device_agent_cloud.errors import PolicyFileError
from device_agent_cloud.policy import load_policy
from device_agent_cloud.registry import AwsIotRegistry
from device_agent_cloud.report import MAX_REPORT_BYTES
from device_agent_cloud.verdicts import IotDataPublisher, VerdictPublisher
from device_agent_cloud.verify import DEFAULT_IDENTITY, Groups, Verifier

logger = logging.getLogger(__name__)

_MAX_BASE64: Final = (MAX_REPORT_BYTES + 2) // 3 * 4
_CERTIFICATE_ID = re.compile(r"[0-9a-fA-F]{64}")


@dataclass(frozen=True, slots=True)
class Runtime:
    verifier: Verifier
    publisher: VerdictPublisher


_runtime: Runtime | None = None


def build_runtime(environ: Mapping[str, str]) -> Runtime:
    """The verifier and publisher the environment describes, with boto3 clients for the Lambda's region."""
    import boto3  # noqa: PLC0415 - the cloud extra; imported once per container

    def required(name: str) -> str:
        value = environ.get(name, "")
        if not value:
            raise PolicyFileError((name,), "environment variable is required")
        return value

    policy = load_policy(Path(required("DEVICE_AGENT_POLICY_FILE")))
    table = required("DEVICE_AGENT_AUDIT_TABLE")
    groups = Groups(
        quarantine=environ.get("DEVICE_AGENT_QUARANTINE_GROUP") or Groups().quarantine,
        production=environ.get("DEVICE_AGENT_PRODUCTION_GROUP") or Groups().production,
    )
    retain = environ.get("DEVICE_AGENT_RETAIN_VERDICTS", "true").lower()
    if retain not in {"true", "false"}:
        raise PolicyFileError(("DEVICE_AGENT_RETAIN_VERDICTS",), "must be true or false")
    endpoint = environ.get("DEVICE_AGENT_IOT_DATA_ENDPOINT") or None
    verifier = Verifier(
        policy=policy,
        registry=AwsIotRegistry(boto3.client("iot")),
        audit=DynamoDbAuditLog(boto3.client("dynamodb"), table),
        groups=groups,
        identity=environ.get("DEVICE_AGENT_VERIFIER_ID")
        or environ.get("AWS_LAMBDA_FUNCTION_NAME")
        or DEFAULT_IDENTITY,
    )
    publisher = IotDataPublisher(boto3.client("iot-data", endpoint_url=endpoint), retain=retain == "true")
    return Runtime(verifier, publisher)


def reset_runtime() -> None:
    """Forget the cached verifier (tests; a changed environment)."""
    global _runtime  # noqa: PLW0603 - one runtime per Lambda container is the point
    _runtime = None


def handler(event: Any, context: Any) -> dict[str, Any]:  # noqa: ARG001 - Lambda passes a context
    """Decide on one report from the IoT rule; returns the decision summary (never the facts)."""
    global _runtime  # noqa: PLW0603
    if _runtime is None:
        _runtime = build_runtime(os.environ)
    runtime = _runtime
    payload, topic, principal = _unpack(event)
    decision = runtime.verifier.handle(payload, topic=topic, principal=principal)
    if decision.verdict is not None:
        runtime.publisher.publish(decision.verdict)
    return decision.to_json()


def _unpack(event: Any) -> tuple[bytes, str | None, str | None]:
    """The raw payload, topic and principal; anything malformed becomes a payload the verifier refuses."""
    if not isinstance(event, dict):
        return b"", None, None
    encoded = event.get("payload")
    payload = b""
    if isinstance(encoded, str) and len(encoded) <= _MAX_BASE64:
        try:
            payload = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            payload = b""
    elif isinstance(encoded, str):
        payload = b"\0" * (MAX_REPORT_BYTES + 1)  # refused as oversized, without decoding it
    topic = event.get("topic") if isinstance(event.get("topic"), str) else None
    principal = event.get("principal")
    if not isinstance(principal, str) or not _CERTIFICATE_ID.fullmatch(principal):
        principal = None  # not a certificate connection (or not given): the rule fails as unavailable
    return payload, topic, principal
