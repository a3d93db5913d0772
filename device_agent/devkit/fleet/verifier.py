"""The verifier as a local service beside the fleet: `device-agent-verifier serve`, subscribed to the fleet's
broker with the verifier's certificate, deciding with a policy file and a local registry under
`<root>/verifier/`:

    policy.json      the rules (verifier-policy/1): the same for every device, and this machine's facts
                     pass them
    registry.json    the things, the fingerprint of the certificate registered for each, their type and group
                     (local-registry/1), written once when the fleet is created; the verifier moves things
                     between groups
    audit.jsonl      the verifier's audit trail

A rejected device is refused for what it reports: the certificate it connects with and reports is not the
one the registry attaches to its thing (identity.py), so its report fails the `certificate` rule.

The fleet learns a decision from the verdict on the broker (the group it carries), as a device would; the
registry is the verifier's own record. Without `device_agent_cloud` installed the fleet runs without a
verifier (`fleet up` says so on stderr): no device is verified, and only a verdict published with the
verifier's certificate would move one.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from device_agent.devkit.fleet.identity import FleetIdentities
from device_agent.devkit.fleet.layout import FleetLayout
from device_agent.devkit.pki import sha256_fingerprint
from device_agent.files import atomic_write, ensure_private_dir

logger = logging.getLogger(__name__)

THING_TYPE = "virtual-device"

POLICY: dict[str, Any] = {
    "schema": "verifier-policy/1",
    "default": {
        "allowedArchitectures": None,
        "allowedModels": None,
        "serialAllowlist": None,
        "requireRootEncryption": False,
        "requireSecureBoot": False,
        "requireTpm": False,
        "minimumNucleusVersion": None,
        "maxReportAgeSeconds": 3600,
        "maxClockSkewSeconds": 300,
        "whenFactUnavailable": "reject",
        "reverifyIntervalSeconds": 86400,
    },
    "thingTypes": {},
}


@dataclass(frozen=True, slots=True)
class VerifierFiles:
    directory: Path

    @property
    def policy(self) -> Path:
        return self.directory / "policy.json"

    @property
    def registry(self) -> Path:
        return self.directory / "registry.json"

    @property
    def audit(self) -> Path:
        return self.directory / "audit.jsonl"

    @property
    def log(self) -> Path:
        return self.directory / "verifier.log"


def verifier_installed() -> bool:
    return importlib.util.find_spec("device_agent_cloud.service") is not None


def prepare(layout: FleetLayout, identities: FleetIdentities) -> VerifierFiles:
    """Write the policy (when absent) and register every device once, with the certificate registered for
    its thing (an existing registry is kept)."""
    from device_agent_cloud.registry import LocalRegistry  # noqa: PLC0415 - the cloud side, when installed
    from device_agent_cloud.verify import Groups  # noqa: PLC0415

    files = VerifierFiles(layout.root / "verifier")
    ensure_private_dir(files.directory)
    if not files.policy.exists():
        atomic_write(files.policy, json.dumps(POLICY, indent=2).encode())
    registry = LocalRegistry(files.registry)
    groups = Groups()
    registry.create_thing_type(THING_TYPE)
    registry.create_group(groups.quarantine)
    registry.create_group(groups.production)
    for thing, identity in identities.devices.items():
        if _registered(registry, thing):
            continue
        registry.create_thing(thing, THING_TYPE)
        registry.attach_certificate(thing, sha256_fingerprint(identity.cert))
        registry.add_to_group(thing, groups.quarantine)
    return files


def _registered(registry: Any, thing: str) -> bool:
    from device_agent_cloud.errors import ThingNotFoundError  # noqa: PLC0415

    try:
        registry.describe(thing)
    except ThingNotFoundError:
        return False
    return True


def serve_command(files: VerifierFiles, identities: FleetIdentities, broker_port: int) -> list[str]:
    verifier = identities.verifier
    return [
        sys.executable,
        "-c",
        "import sys; from device_agent_cloud.cli import main; sys.exit(main())",  # the console script's body
        "serve",
        "--broker",
        f"mqtts://127.0.0.1:{broker_port}",
        "--ca",
        str(verifier.ca_cert),
        "--cert",
        str(verifier.cert),
        "--key",
        str(verifier.key),
        "--policy",
        str(files.policy),
        "--registry",
        str(files.registry),
        "--audit",
        str(files.audit),
    ]


def start_verifier(
    files: VerifierFiles, identities: FleetIdentities, broker_port: int
) -> subprocess.Popen[bytes]:
    log = os.open(files.log, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
    try:
        process = subprocess.Popen(
            serve_command(files, identities, broker_port),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
    finally:
        os.close(log)
    logger.info("fleet.verifier_started pid=%d", process.pid)
    return process
