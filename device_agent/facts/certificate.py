"""The device certificate: SHA-256 of its DER (what AWS IoT calls the certificate id), subject, expiry and
key type, from a configured path (the certificate is public; the private key is never opened).

The verifier compares the fingerprint with the certificate actually attached to the thing in AWS IoT, so
the value is exactly `sha256(DER)` in lowercase hex.
"""

from __future__ import annotations

import hashlib
from typing import Any

from device_agent.facts.fact import Fact, Garbage, Tree, Unreadable, collect

MAX_CERTIFICATE_BYTES = 64 * 1024


def certificate(tree: Tree, path: str) -> Fact:
    def read() -> Fact:
        if not path:
            raise Unreadable("no certificate path configured")
        if not path.startswith("/"):
            raise Garbage("the certificate path is not absolute")
        data = tree.read_bytes(path, max_bytes=MAX_CERTIFICATE_BYTES)
        return Fact.ok(describe(data), source="file")

    return collect(read, name="certificate")


def describe(data: bytes) -> dict[str, Any]:
    """{sha256, subject, notAfter, keyType} of a PEM or DER certificate; Garbage when it is neither."""
    from cryptography import x509  # noqa: PLC0415 - only this fact needs it
    from cryptography.hazmat.primitives import serialization  # noqa: PLC0415
    from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa  # noqa: PLC0415

    try:
        cert = (
            x509.load_pem_x509_certificate(data)
            if data.lstrip().startswith(b"-----BEGIN")
            else x509.load_der_x509_certificate(data)
        )
    except ValueError:
        raise Garbage("the certificate file is neither a PEM nor a DER certificate") from None
    der = cert.public_bytes(serialization.Encoding.DER)
    key = cert.public_key()
    if isinstance(key, rsa.RSAPublicKey):
        key_type = f"RSA-{key.key_size}"
    elif isinstance(key, ec.EllipticCurvePublicKey):
        key_type = f"EC-{key.curve.name}"
    elif isinstance(key, ed25519.Ed25519PublicKey):
        key_type = "Ed25519"
    elif isinstance(key, ed448.Ed448PublicKey):
        key_type = "Ed448"
    else:
        key_type = type(key).__name__[:32]
    return {
        "sha256": hashlib.sha256(der).hexdigest(),
        "subject": cert.subject.rfc4514_string()[:256],
        "notAfter": cert.not_valid_after_utc.isoformat().replace("+00:00", "Z"),
        "keyType": key_type,
    }
