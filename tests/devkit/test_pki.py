"""The local CA: layout, file modes, certificate contents, revocation, fingerprints, no secrets in logs."""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from device_agent.devkit.errors import DevkitError
from device_agent.devkit.pki import LocalCa, PkiError, load_certificate, sha256_fingerprint


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def ca(tmp_path: Path) -> LocalCa:
    return LocalCa.create(tmp_path / "pki")


def test_ca_layout_modes_and_self_signature(ca: LocalCa, tmp_path: Path) -> None:
    root = tmp_path / "pki"
    assert ca.paths.cert == root / "ca" / "ca.crt"
    assert ca.paths.key == root / "ca" / "ca.key"
    assert ca.paths.crl == root / "ca" / "crl.pem"
    assert _mode(root) == 0o700
    assert _mode(root / "ca") == 0o700
    assert _mode(ca.paths.key) == 0o600
    cert = load_certificate(ca.paths.cert)
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    cert.verify_directly_issued_by(cert)
    assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey)
    assert cert.public_key().curve.name == "secp256r1"  # type: ignore[union-attr]
    # An empty CRL exists from the start (mosquitto with crlfile needs one).
    crl = x509.load_pem_x509_crl(ca.paths.crl.read_bytes())
    assert len(crl) == 0
    assert crl.is_signature_valid(cert.public_key())  # type: ignore[arg-type]


def test_server_certificate_for_loopback(ca: LocalCa) -> None:
    server = ca.issue_server()
    assert server.cert.name == "server.crt"
    assert _mode(server.key) == 0o600
    assert _mode(server.cert.parent) == 0o700
    cert = load_certificate(server.cert)
    cert.verify_directly_issued_by(ca.certificate)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    assert set(san.get_values_for_type(x509.IPAddress)) == {
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1"),
    }
    usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca


def test_client_certificate_names_the_thing_and_matches_its_key(ca: LocalCa, tmp_path: Path) -> None:
    thing = ca.issue_client("thing-01")
    assert thing.cert == tmp_path / "pki" / "things" / "thing-01" / "certificate.pem.crt"
    assert thing.key == tmp_path / "pki" / "things" / "thing-01" / "private.pem.key"
    assert thing.ca_cert == ca.paths.cert
    assert _mode(thing.key) == 0o600
    assert _mode(thing.key.parent) == 0o700
    assert _mode(thing.key.parent.parent) == 0o700
    cert = load_certificate(thing.cert)
    cert.verify_directly_issued_by(ca.certificate)
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "thing-01"
    assert list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [
        ExtendedKeyUsageOID.CLIENT_AUTH
    ]
    key = serialization.load_pem_private_key(thing.key.read_bytes(), password=None)
    assert key.public_key() == cert.public_key()
    assert cert.not_valid_after_utc <= ca.certificate.not_valid_after_utc


def test_identities_are_created_exclusively(ca: LocalCa, tmp_path: Path) -> None:
    first = ca.issue_client("thing-01")
    before = first.cert.read_bytes(), first.key.read_bytes()
    with pytest.raises(PkiError, match="already exists"):
        ca.issue_client("thing-01")
    assert (first.cert.read_bytes(), first.key.read_bytes()) == before
    with pytest.raises(PkiError, match="already exists"):
        LocalCa.create(tmp_path / "pki")
    assert issubclass(PkiError, DevkitError)


@pytest.mark.parametrize("name", ["", "../escape", "a/b", "with space", "x" * 129, "dot.ted"])
def test_thing_names_are_validated(ca: LocalCa, name: str) -> None:
    with pytest.raises(PkiError, match="invalid thing name"):
        ca.issue_client(name)


def test_revocation_is_in_a_signed_crl_and_idempotent(ca: LocalCa) -> None:
    keep = ca.issue_client("keep")
    gone = ca.issue_client("gone")
    gone_cert = load_certificate(gone.cert)
    ca.revoke(gone.cert)
    ca.revoke(gone_cert)  # twice: still one entry
    crl = x509.load_pem_x509_crl(ca.paths.crl.read_bytes())
    assert [entry.serial_number for entry in crl] == [gone_cert.serial_number]
    assert crl.is_signature_valid(ca.certificate.public_key())  # type: ignore[arg-type]
    assert crl.next_update_utc is not None
    assert crl.next_update_utc > crl.last_update_utc
    assert ca.is_revoked(gone_cert)
    assert not ca.is_revoked(load_certificate(keep.cert))
    assert _mode(ca.paths.crl) == 0o644
    assert not list(ca.paths.crl.parent.glob(".*tmp"))


def test_revoke_refuses_a_foreign_certificate(ca: LocalCa, tmp_path: Path) -> None:
    other = LocalCa.create(tmp_path / "other").issue_client("stranger")
    with pytest.raises(PkiError, match="not issued by this CA"):
        ca.revoke(other.cert)


def test_fingerprint_is_sha256_of_der_lowercase_hex(ca: LocalCa) -> None:
    thing = ca.issue_client("thing-01")
    cert = load_certificate(thing.cert)
    expected = hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()
    assert sha256_fingerprint(cert) == expected
    assert sha256_fingerprint(thing.cert) == expected
    assert len(expected) == 64
    assert expected == expected.lower()


def test_load_and_open_reuse_the_same_ca(ca: LocalCa, tmp_path: Path) -> None:
    loaded = LocalCa.load(tmp_path / "pki")
    assert loaded.certificate == ca.certificate
    reopened = LocalCa.open(tmp_path / "pki")
    assert reopened.certificate == ca.certificate
    # Certificates issued by the loaded CA chain to the original one.
    load_certificate(loaded.issue_client("later").cert).verify_directly_issued_by(ca.certificate)
    fresh = LocalCa.open(tmp_path / "fresh")
    assert fresh.paths.cert.exists()


def test_load_fails_clearly_without_a_ca(tmp_path: Path) -> None:
    with pytest.raises(PkiError, match="cannot read a PEM certificate"):
        LocalCa.load(tmp_path / "nothing")


def test_rsa_is_available(tmp_path: Path) -> None:
    ca = LocalCa.create(tmp_path / "pki", key_type="rsa-2048")
    thing = ca.issue_client("rsa-thing", key_type="rsa-2048")
    cert = load_certificate(thing.cert)
    assert isinstance(cert.public_key(), rsa.RSAPublicKey)
    cert.verify_directly_issued_by(ca.certificate)


def test_existing_directories_are_tightened(tmp_path: Path) -> None:
    root = tmp_path / "pki"
    root.mkdir(mode=0o755)
    root.chmod(0o755)
    LocalCa.create(root)
    assert _mode(root) == 0o700


def test_no_key_material_in_logs_or_repr(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    ca = LocalCa.create(tmp_path / "pki")
    server = ca.issue_server()
    thing = ca.issue_client("thing-01")
    ca.revoke(thing.cert)
    assert caplog.records, "the CA logs what it does"
    key_bodies = [p.read_text().splitlines()[1] for p in (ca.paths.key, server.key, thing.key)]
    for line in key_bodies:
        assert line not in caplog.text
    assert "PRIVATE KEY" not in caplog.text
    assert "PRIVATE KEY" not in repr(ca)
    assert sha256_fingerprint(thing.cert) in caplog.text  # the public fingerprint is what identifies it
