"""The fleet's identities: a local CA, the broker's server certificate, one client certificate per device
(common name = thing name), and the verifier's and observer's. Idempotent: an identity already on disk is
reused, never re-issued or overwritten (pki refuses to overwrite a key), so `fleet up` on an existing root
keeps every device's certificate and the revocations made since.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from device_agent.devkit.fleet.layout import OBSERVER, VERIFIER, FleetLayout
from device_agent.devkit.pki import IssuedIdentity, LocalCa, server_paths, thing_paths

SERVER_NAME = "broker"


@dataclass(frozen=True, slots=True)
class FleetIdentities:
    ca: LocalCa
    server: IssuedIdentity
    devices: dict[str, IssuedIdentity]
    verifier: IssuedIdentity
    observer: IssuedIdentity


def client_identity(layout: FleetLayout, name: str) -> IssuedIdentity:
    """The files of a client identity (a device's, the verifier's or the observer's), issued or not."""
    cert, key = thing_paths(layout.pki, name)
    return IssuedIdentity(name=name, cert=cert, key=key, ca_cert=layout.pki / "ca" / "ca.crt")


def ensure_identities(layout: FleetLayout, things: Iterable[str]) -> FleetIdentities:
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
    )


def _ensure_client(ca: LocalCa, layout: FleetLayout, name: str) -> IssuedIdentity:
    existing = client_identity(layout, name)
    if existing.cert.exists() and existing.key.exists():
        return existing
    return ca.issue_client(name)
