"""The broker's ACL, mirroring the production IoT policy.

mosquitto 2 semantics this relies on (mosquitto.conf(5), acl_file): `read` governs both subscribing and
receiving, `write` publishing, `readwrite` both; whatever no rule grants is denied. A `pattern` rule applies
to every client; `%u` is the username, which `use_identity_as_username` makes the certificate's common name
(the thing name), and must be a whole topic level. A thing name never holds `/`, `+` or `#` (pki refuses
such names), so `%u` cannot widen a rule.

- each device: publish only under `dt/device-agent/<its thing>/`, subscribe (and receive) only under
  `cmd/device-agent/<its thing>/`;
- the verifier: read every device's bootstrap report, write every device's verdict;
- the observer (the fleet tool's own identity): read everything devices send, and the verdicts, which is how
  the fleet learns that a device was approved. It can write nothing.
"""

from __future__ import annotations

from pathlib import Path

from device_agent.devkit.fleet.layout import OBSERVER, VERIFIER
from device_agent.devkit.mosquitto import DEVICE_PATTERNS, AclRule, write_acl

VERIFIER_RULES = (
    AclRule("read", "dt/device-agent/+/bootstrap"),
    AclRule("write", "cmd/device-agent/+/verdict"),
)
OBSERVER_RULES = (
    AclRule("read", "dt/device-agent/#"),
    AclRule("read", "cmd/device-agent/+/verdict"),
)


def write_fleet_acl(path: Path) -> Path:
    return write_acl(
        path, patterns=DEVICE_PATTERNS, users={VERIFIER: VERIFIER_RULES, OBSERVER: OBSERVER_RULES}
    )
