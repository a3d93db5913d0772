"""The certificate fact: the fingerprint is SHA-256 of the DER (what AWS IoT calls the certificate id)."""

from __future__ import annotations

import datetime as dt
import hashlib
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID

from device_agent.facts.certificate import MAX_CERTIFICATE_BYTES, certificate
from device_agent.facts.fact import Status, Tree


def make_certificate(key: object) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "AWS IoT Certificate")])
    public = key.public_key()  # type: ignore[attr-defined]
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(1)
        .not_valid_before(dt.datetime(2026, 1, 1, tzinfo=dt.UTC))
        .not_valid_after(dt.datetime(2049, 12, 31, 23, 59, 59, tzinfo=dt.UTC))
    )
    algorithm = None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    return builder.sign(key, algorithm)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("key", "key_type"),
    [
        (rsa.generate_private_key(public_exponent=65537, key_size=2048), "RSA-2048"),
        (ec.generate_private_key(ec.SECP256R1()), "EC-secp256r1"),
        (ed25519.Ed25519PrivateKey.generate(), "Ed25519"),
    ],
    ids=["rsa", "ec", "ed25519"],
)
@pytest.mark.parametrize("encoding", [serialization.Encoding.PEM, serialization.Encoding.DER])
def test_the_certificate_is_described(
    tmp_path: Path, key: object, key_type: str, encoding: serialization.Encoding
):
    cert = make_certificate(key)
    (tmp_path / "greengrass").mkdir()
    (tmp_path / "greengrass/thingCert.crt").write_bytes(cert.public_bytes(encoding))
    fact = certificate(Tree(tmp_path), "/greengrass/thingCert.crt")
    assert fact.status is Status.OK
    assert fact.value == {
        "sha256": hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest(),
        "subject": "CN=AWS IoT Certificate",
        "notAfter": "2049-12-31T23:59:59Z",
        "keyType": key_type,
    }


def test_no_path_missing_file_and_garbage(tmp_path: Path):
    (tmp_path / "bad.pem").write_text("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
    (tmp_path / "big.pem").write_bytes(b"-" * (MAX_CERTIFICATE_BYTES + 1))
    tree = Tree(tmp_path)
    assert certificate(tree, "").reason == "no certificate path configured"
    assert certificate(tree, "/missing.pem").status is Status.UNAVAILABLE
    assert certificate(tree, "relative.pem").status is Status.ERROR
    assert certificate(tree, "/bad.pem").status is Status.ERROR
    assert certificate(tree, "/big.pem").status is Status.ERROR
