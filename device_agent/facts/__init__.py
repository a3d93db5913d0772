"""Device facts for the bootstrap report: who the device is and its security posture.

    facts = gather(Tree(Path("/")), os.environ, certificate_path="/greengrass/v2/thingCert.crt")

One module per family (`system`, `hardware`, `network`, `security`, `certificate`, `software`, drop-in
`collectors`), each function reading from a `Tree` (a root a test can fake) and returning a `Fact` with a
status; nothing here raises. `redaction` hashes identifiers with a fleet salt; `report` computes the facts
hash the verifier checks.
"""

from __future__ import annotations

from collections.abc import Mapping

from device_agent.facts import certificate, hardware, network, security, software, system
from device_agent.facts.fact import Fact, Status, Tree

__all__ = ["Fact", "Status", "Tree", "gather"]


def gather(tree: Tree, environ: Mapping[str, str], *, certificate_path: str) -> dict[str, Fact]:
    """Every file and environment fact, in the schema's order (components and extra are the caller's)."""
    return {
        "thingName": software.thing_name(environ),
        "architecture": system.architecture(tree),
        "osRelease": system.os_release(tree),
        "kernel": system.kernel(tree),
        "vendor": hardware.vendor(tree),
        "model": hardware.model(tree),
        "serial": hardware.serial(tree),
        "hardwareUuid": hardware.hardware_uuid(tree),
        "cpu": system.cpu(tree),
        "memoryBytes": system.memory_bytes(tree),
        "macAddresses": network.mac_addresses(tree),
        "bootId": system.boot_id(tree),
        "uptimeSeconds": system.uptime_seconds(tree),
        "rootEncrypted": security.root_encrypted(tree),
        "secureBoot": security.secure_boot(tree),
        "tpm": security.tpm(tree),
        "certificate": certificate.certificate(tree, certificate_path),
        "nucleusVersion": software.nucleus_version(environ),
        "software": software.software(),
    }
