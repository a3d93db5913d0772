"""The fleet's broker: mosquitto 2 on 127.0.0.1 with mutual TLS, the fleet's CRL and ACL, the client id
pinned to the certificate's name, and persistence.

Persistence keeps the observer's session (and the QoS 1 messages queued for it) across `restart-broker`, so a
device that reconnects before the observer does loses nothing on the way to it. A revocation needs a restart:
mosquitto reads `crlfile` when the listener starts, not on a reload signal.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from pathlib import Path

from device_agent.devkit.fleet.acl import write_fleet_acl
from device_agent.devkit.fleet.identity import FleetIdentities
from device_agent.devkit.fleet.layout import FleetLayout
from device_agent.devkit.fleet.spec import FleetError
from device_agent.devkit.mosquitto import (
    MosquittoBroker,
    MosquittoError,
    MosquittoNotFoundError,
    TlsListener,
    find_mosquitto,
    mosquitto_version,
)
from device_agent.files import ensure_private_dir

logger = logging.getLogger(__name__)

_INSTALL_TIMEOUT_S = 600
REQUIRED_MAJOR = 2


def ensure_mosquitto() -> Path:
    """The mosquitto 2.x binary, installed from the Debian packages first when it is missing.

    The same steps as scripts/ensure-mosquitto: apt-get as root (or through sudo), then stop the system
    service the package may start (the fleet runs its own broker and never uses it). This installation is
    the only step of the fleet that leaves the machine (to Debian's package mirrors).
    """
    try:
        return _checked(find_mosquitto())
    except MosquittoNotFoundError:
        pass
    if shutil.which("apt-get") is None:
        raise FleetError("mosquitto is missing and this system has no apt-get: install mosquitto 2.x")
    prefix = [] if os.geteuid() == 0 else ["sudo", "-n"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    logger.info("fleet.installing_mosquitto")
    for command in (
        ["apt-get", "update", "-qq"],
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "mosquitto"],
    ):
        try:
            subprocess.run(
                [*prefix, *command], env=env, check=True, timeout=_INSTALL_TIMEOUT_S, stdin=subprocess.DEVNULL
            )
        except (OSError, subprocess.SubprocessError) as exc:
            raise FleetError(f"could not install mosquitto ({' '.join(command[:2])} failed)") from exc
    if shutil.which("systemctl"):
        subprocess.run(
            [*prefix, "systemctl", "stop", "mosquitto"], check=False, timeout=60, capture_output=True
        )
    return _checked(find_mosquitto())


def _checked(binary: Path) -> Path:
    """`binary` when it is mosquitto 2.x: what the ACL relies on (acl.py) and the listener's configuration
    are version 2's, checked against 2.0.11; an older broker could confine devices differently."""
    try:
        version = mosquitto_version(binary)
    except MosquittoError as exc:
        raise FleetError(f"cannot tell the version of {binary}: {exc}") from exc
    if version[0] != REQUIRED_MAJOR:
        found = ".".join(str(part) for part in version)
        raise FleetError(
            f"{binary} is mosquitto {found}; the fleet needs mosquitto {REQUIRED_MAJOR}.x (its ACL and TLS "
            "semantics): install it from Debian 11 or later, or put a mosquitto 2 first on PATH"
        )
    return binary


def fleet_broker(
    layout: FleetLayout, identities: FleetIdentities, *, port: int | None = None, log_deliveries: bool = False
) -> MosquittoBroker:
    ensure_private_dir(layout.broker)
    write_fleet_acl(layout.acl_file)
    tls = TlsListener(
        ca_file=identities.ca.paths.cert,
        cert_file=identities.server.cert,
        key_file=identities.server.key,
        crl_file=identities.ca.paths.crl,
        client_id_from_certificate=True,
    )
    return MosquittoBroker(
        layout.broker,
        port=port,
        tls=tls,
        acl_file=layout.acl_file,
        binary=ensure_mosquitto(),
        persistence=True,
        log_deliveries=log_deliveries,
    )
