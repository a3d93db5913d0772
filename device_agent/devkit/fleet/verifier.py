"""The verifier as a local service beside the fleet: `device-agent-verifier serve ...` subscribed to the
fleet's broker with the verifier's certificate, its registry and policy under `<root>/verifier/`.

`start_verifier` is the seam: it returns None when the verifier service is not installed, and the fleet then
runs without one (devices stay in quarantine until some verifier publishes a verdict on the broker, which is
all the fleet listens to).
"""

from __future__ import annotations

import importlib.util
import logging
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from device_agent.devkit.fleet.identity import FleetIdentities
from device_agent.devkit.fleet.layout import FleetLayout

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class VerifierLaunch:
    command: list[str]
    log: Path


def verifier_launch(
    layout: FleetLayout, identities: FleetIdentities, broker_port: int, things: tuple[str, ...]
) -> VerifierLaunch | None:
    """How to start the verifier service for this fleet, or None when it is not installed."""
    if importlib.util.find_spec("device_agent_cloud.service") is None:
        return None
    del layout, identities, broker_port, things  # the service's command line is wired when it lands
    return None


def start_verifier(launch: VerifierLaunch) -> subprocess.Popen[bytes]:
    log = os.open(launch.log, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
    try:
        return subprocess.Popen(
            launch.command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
            executable=sys.executable if launch.command[0] == "python" else None,
        )
    finally:
        os.close(log)
