"""The fleet's identities: a local CA, the broker's server certificate, one client certificate per device
(common name = thing name), and the verifier's and observer's. Idempotent: an identity already on disk is
reused, never re-issued or overwritten (pki refuses to overwrite a key), so `fleet up` on an existing root
keeps every device's certificate and the revocations made since.

A device of the fleet's rejected ones presents another certificate than the one registered for its thing:
one the fleet's CA issued for the same thing name (`pki/unregistered/<thing>/`), as a cloned or re-flashed
device would hold. The broker accepts it (the CA signed it, and its name confines it to the thing's topics),
and the device reports it, as every device reports the certificate it connects with; the verifier's
registry attaches only the thing's own certificate (`pki/things/<thing>/`), so the report fails the
`certificate` rule.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from device_agent.devkit.fleet.layout import OBSERVER, VERIFIER, FleetLayout
from device_agent.devkit.pki import IssuedIdentity, LocalCa, server_paths, thing_paths

SERVER_NAME = "broker"
UNREGISTERED = "unregistered"  # the pki folder of the certificates no registry attaches to their thing


@dataclass(frozen=True, slots=True)
class FleetIdentities:
    ca: LocalCa
    server: IssuedIdentity
    devices: dict[str, IssuedIdentity]  # the certificate registered for each thing
    verifier: IssuedIdentity
    observer: IssuedIdentity
    unregistered: dict[str, IssuedIdentity] = field(default_factory=dict)  # the rejected devices' own

    def presented(self, thing: str) -> IssuedIdentity:
        """The identity the device connects with and reports."""
        return self.unregistered.get(thing) or self.devices[thing]


def client_identity(layout: FleetLayout, name: str, folder: str = "things") -> IssuedIdentity:
    """The files of a client identity (a device's, the verifier's or the observer's), issued or not."""
    cert, key = thing_paths(layout.pki, name, folder)
    return IssuedIdentity(name=name, cert=cert, key=key, ca_cert=layout.pki / "ca" / "ca.crt")


def ensure_identities(
    layout: FleetLayout, things: Iterable[str], unregistered: Iterable[str] = ()
) -> FleetIdentities:
    """Every identity of the fleet; the things in `unregistered` also get the certificate they present."""
    ca = LocalCa.open(layout.pki)
    cert, key = server_paths(layout.pki, SERVER_NAME)
    server = (
        IssuedIdentity(name=SERVER_NAME, cert=cert, key=key, ca_cert=ca.paths.cert)
        if cert.exists()
        else ca.issue_server(SERVER_NAME)
    )
    devices = {thing: _ensure_client(ca, layout, thing) for thing in things}
    return FleetIdentities(
        ca=ca,
        server=server,
        devices=devices,
        verifier=_ensure_client(ca, layout, VERIFIER),
        observer=_ensure_client(ca, layout, OBSERVER),
        unregistered={thing: _ensure_client(ca, layout, thing, UNREGISTERED) for thing in unregistered},
    )


def _ensure_client(ca: LocalCa, layout: FleetLayout, name: str, folder: str = "things") -> IssuedIdentity:
    existing = client_identity(layout, name, folder)
    if existing.cert.exists() and existing.key.exists():
        return existing
    return ca.issue_client(name, folder=folder)
