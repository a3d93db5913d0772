"""The cloud package's exception tree. Families are chosen by what the caller can do about them.

    VerifierError                         catch-all root
    ├── InvalidReportError                a report is refused: `.field` names where, `.reason` says why
    ├── PolicyFileError (also ValueError) the policy file is invalid: `.key_path` names the key
    ├── RegistryError                     the registry (AWS IoT or the local file) failed or refused
    │   └── ThingNotFoundError            no such thing in the registry
    ├── PublishError                      a verdict could not be published (retry later)
    ├── AuditError                        an audit record could not be appended (never decide without it)
    └── ProvisioningError                 provisioning could not create or attach what a device needs

Messages name fields, keys, things and operations, never a report's values beyond what is public (thing
names and ids), a certificate's body or a private key.
"""

from __future__ import annotations

from device_agent.errors import format_key_path


class VerifierError(Exception):
    """Root of every error the cloud package raises on purpose."""


class InvalidReportError(VerifierError):
    """A malformed, oversized, hostile or inconsistent report; `field` is a JSON path like `facts.tpm`."""

    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        self.reason = reason
        super().__init__(f"{field}: {reason}")


class PolicyFileError(VerifierError, ValueError):
    """An invalid policy file; `key_path` is the path from the file's root, e.g. ("thingTypes", "kiosk")."""

    def __init__(self, key_path: tuple[str | int, ...], expected: str) -> None:
        self.key_path = key_path
        self.expected = expected
        super().__init__(f"{format_key_path(key_path)}: {expected}")


class RegistryError(VerifierError):
    pass


class ThingNotFoundError(RegistryError):
    pass


class PublishError(VerifierError):
    pass


class AuditError(VerifierError):
    pass


class ProvisioningError(VerifierError):
    pass
