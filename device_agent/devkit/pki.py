"""A small local certificate authority for the devkit's loopback broker and virtual fleet.

It issues what a real deployment gets from AWS IoT: a server certificate for the broker and one client
certificate per thing (the common name is the thing name, so mosquitto's `use_identity_as_username` turns it
into the MQTT username that ACL `%u` patterns match). Revocations are kept in a PEM CRL that mosquitto reads
through `crlfile` (at start: restart the broker after a revocation).

Layout under the directory the caller gives (directories 0700, private keys 0600, created exclusively so an
existing identity is never overwritten):

    <root>/ca/ca.crt          self-signed CA certificate
    <root>/ca/ca.key          CA private key
    <root>/ca/crl.pem         certificate revocation list, re-signed on every revocation
    <root>/server/<name>.crt  server certificate (SAN 127.0.0.1, ::1, localhost)
    <root>/server/<name>.key
    <root>/things/<thing>/certificate.pem.crt   client certificate, CN = thing name
    <root>/things/<thing>/private.pem.key
    <root>/<folder>/<thing>/...                 the same, for a client issued into another folder (the
                                                virtual fleet keeps its devices' unregistered ones apart)

Keys are EC P-256 by default: AWS IoT Core accepts ECDSA P-256 device certificates, the keys are small and
fast to generate and sign with (a fleet of hundreds of virtual devices is created in seconds, where RSA-2048
would take minutes), and OpenSSL (mosquitto) and s2n (awscrt) both support them. RSA-2048 remains available.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from device_agent.devkit.errors import DevkitError

logger = logging.getLogger(__name__)

KeyType = Literal["ec-p256", "rsa-2048"]
PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey

# AWS IoT thing names: letters, digits, colon, underscore, hyphen; 1..128. Also keeps them safe as path parts.
_THING_NAME = re.compile(r"[A-Za-z0-9:_-]{1,128}")
_SERVER_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
_CLOCK_SKEW = dt.timedelta(minutes=5)  # backdate notBefore so a peer whose clock lags still accepts
_CRL_VALIDITY = dt.timedelta(days=365)  # OpenSSL refuses every client once the CRL's nextUpdate has passed


class PkiError(DevkitError):
    """The local CA could not create, load or issue (the message names the file, never its contents)."""


@dataclass(frozen=True, slots=True)
class CaPaths:
    directory: Path
    cert: Path
    key: Path
    crl: Path


@dataclass(frozen=True, slots=True)
class IssuedIdentity:
    """The files of one issued certificate and its private key."""

    name: str  # thing name for a client, server name for a server
    cert: Path
    key: Path
    ca_cert: Path  # the issuing CA's certificate: what the peer trusts


def ca_paths(root: Path) -> CaPaths:
    directory = root / "ca"
    return CaPaths(directory, directory / "ca.crt", directory / "ca.key", directory / "crl.pem")


def server_paths(root: Path, name: str = "server") -> tuple[Path, Path]:
    _check_name(name, _SERVER_NAME, "server name")
    return root / "server" / f"{name}.crt", root / "server" / f"{name}.key"


def thing_paths(root: Path, thing_name: str, folder: str = "things") -> tuple[Path, Path]:
    _check_name(thing_name, _THING_NAME, "thing name")
    _check_name(folder, _SERVER_NAME, "folder name")
    if folder in {"ca", "server"}:
        raise PkiError(f"invalid folder name {folder!r}: it holds the CA's or the server's files")
    directory = root / folder / thing_name
    return directory / "certificate.pem.crt", directory / "private.pem.key"


def sha256_fingerprint(cert: x509.Certificate | Path) -> str:
    """SHA-256 of the certificate's DER encoding, lowercase hex: what AWS IoT shows as the certificate ID."""
    if isinstance(cert, Path):
        cert = load_certificate(cert)
    return cert.fingerprint(hashes.SHA256()).hex()


def load_certificate(path: Path) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise PkiError(f"cannot read a PEM certificate from {path}") from exc


class LocalCa:
    """A certificate authority whose files live under `root` (see the module docstring for the layout)."""

    def __init__(self, root: Path, cert: x509.Certificate, key: PrivateKey) -> None:
        self.root = root
        self.paths = ca_paths(root)
        self.certificate = cert
        self._key = key

    def __repr__(self) -> str:  # never show the key
        return f"LocalCa(root={self.root!s}, subject={self.certificate.subject.rfc4514_string()})"

    @classmethod
    def create(
        cls,
        root: Path,
        *,
        common_name: str = "device-agent devkit local CA",
        valid_days: int = 3650,
        key_type: KeyType = "ec-p256",
    ) -> LocalCa:
        """Create a new CA under `root`; fails if one is already there."""
        paths = ca_paths(root)
        _make_private_dir(root)
        _make_private_dir(paths.directory)
        key = _new_key(key_type)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        now = _now()
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _CLOCK_SKEW)
            .not_valid_after(now + dt.timedelta(days=valid_days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )
        _write_key(paths.key, key)
        _write_public(paths.cert, cert.public_bytes(serialization.Encoding.PEM))
        ca = cls(root, cert, key)
        ca._write_crl([])  # an empty CRL from the start: mosquitto with crlfile rejects everyone without one
        logger.info("pki.ca_created root=%s fingerprint=%s", root, sha256_fingerprint(cert))
        return ca

    @classmethod
    def load(cls, root: Path) -> LocalCa:
        paths = ca_paths(root)
        cert = load_certificate(paths.cert)
        try:
            key = serialization.load_pem_private_key(paths.key.read_bytes(), password=None)
        except (OSError, ValueError, TypeError) as exc:
            raise PkiError(f"cannot read the CA private key {paths.key}") from exc
        if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
            raise PkiError(f"unsupported CA key type in {paths.key}")
        return cls(root, cert, key)

    @classmethod
    def open(cls, root: Path, *, key_type: KeyType = "ec-p256") -> LocalCa:
        """Load the CA under `root`, creating it first when there is none."""
        if ca_paths(root).cert.exists():
            return cls.load(root)
        return cls.create(root, key_type=key_type)

    def issue_server(
        self,
        name: str = "server",
        *,
        dns_names: tuple[str, ...] = ("localhost",),
        ip_addresses: tuple[str, ...] = ("127.0.0.1", "::1"),
        valid_days: int = 825,
        key_type: KeyType = "ec-p256",
    ) -> IssuedIdentity:
        """A TLS server certificate for the loopback broker."""
        cert_path, key_path = server_paths(self.root, name)
        sans: list[x509.GeneralName] = [x509.DNSName(d) for d in dns_names]
        sans += [x509.IPAddress(ipaddress.ip_address(a)) for a in ip_addresses]
        common_name = dns_names[0] if dns_names else name
        return self._issue(
            name,
            common_name,
            cert_path,
            key_path,
            ExtendedKeyUsageOID.SERVER_AUTH,
            sans,
            valid_days,
            key_type,
        )

    def issue_client(
        self, thing_name: str, *, folder: str = "things", valid_days: int = 365, key_type: KeyType = "ec-p256"
    ) -> IssuedIdentity:
        """A device certificate whose common name is the thing name, under `<root>/<folder>/<thing>/`."""
        cert_path, key_path = thing_paths(self.root, thing_name, folder)
        return self._issue(
            thing_name,
            thing_name,
            cert_path,
            key_path,
            ExtendedKeyUsageOID.CLIENT_AUTH,
            [],
            valid_days,
            key_type,
        )

    def revoke(self, cert: x509.Certificate | Path, *, when: dt.datetime | None = None) -> None:
        """Add a certificate this CA issued to the CRL and re-sign it (restart mosquitto to apply)."""
        if isinstance(cert, Path):
            cert = load_certificate(cert)
        try:  # by signature: every devkit CA has the same default name
            cert.verify_directly_issued_by(self.certificate)
        except (ValueError, TypeError, InvalidSignature) as exc:
            raise PkiError("the certificate was not issued by this CA") from exc
        revoked = list(self.revoked_serials().items())
        if cert.serial_number not in dict(revoked):
            revoked.append((cert.serial_number, when or _now()))
        self._write_crl(revoked)
        logger.info("pki.revoked serial=%x fingerprint=%s", cert.serial_number, sha256_fingerprint(cert))

    def revoked_serials(self) -> dict[int, dt.datetime]:
        try:
            crl = x509.load_pem_x509_crl(self.paths.crl.read_bytes())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise PkiError(f"cannot read the CRL {self.paths.crl}") from exc
        return {entry.serial_number: entry.revocation_date_utc for entry in crl}

    def is_revoked(self, cert: x509.Certificate) -> bool:
        return cert.serial_number in self.revoked_serials()

    def _issue(  # noqa: PLR0917 - private; the two public issuers name every argument
        self,
        name: str,
        common_name: str,
        cert_path: Path,
        key_path: Path,
        usage: x509.ObjectIdentifier,
        sans: list[x509.GeneralName],
        valid_days: int,
        key_type: KeyType,
    ) -> IssuedIdentity:
        for directory in (cert_path.parent.parent, cert_path.parent):
            _make_private_dir(directory)
        key = _new_key(key_type)
        now = _now()
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(self.certificate.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _CLOCK_SKEW)
            .not_valid_after(min(now + dt.timedelta(days=valid_days), self.certificate.not_valid_after_utc))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    # RSA key exchange needs keyEncipherment; ECDSA only signs.
                    key_encipherment=isinstance(key, rsa.RSAPrivateKey),
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()), critical=False
            )
        )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = builder.sign(self._key, hashes.SHA256())
        # Key first: if the certificate already exists the key write fails before anything is replaced.
        _write_key(key_path, key)
        _write_public(cert_path, cert.public_bytes(serialization.Encoding.PEM))
        role = "server" if usage == ExtendedKeyUsageOID.SERVER_AUTH else "client"
        logger.info("pki.issued name=%s role=%s fingerprint=%s", name, role, sha256_fingerprint(cert))
        return IssuedIdentity(name=name, cert=cert_path, key=key_path, ca_cert=self.paths.cert)

    def _write_crl(self, revoked: list[tuple[int, dt.datetime]]) -> None:
        now = _now()
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(self.certificate.subject)
            .last_update(now - _CLOCK_SKEW)
            .next_update(now + _CRL_VALIDITY)
        )
        for serial, when in revoked:
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(when).build()
            )
        crl = builder.sign(self._key, hashes.SHA256())
        # Replaced atomically: a broker starting meanwhile reads the old or the new list, never half of one.
        tmp = self.paths.crl.with_name(f".{self.paths.crl.name}.{os.getpid()}.tmp")
        _write_exclusive(tmp, crl.public_bytes(serialization.Encoding.PEM), 0o644)
        tmp.replace(self.paths.crl)


def _check_name(name: str, pattern: re.Pattern[str], what: str) -> None:
    if not pattern.fullmatch(name):
        raise PkiError(f"invalid {what} {name!r}: expected {pattern.pattern}")


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def _new_key(key_type: KeyType) -> PrivateKey:
    if key_type == "ec-p256":
        return ec.generate_private_key(ec.SECP256R1())
    if key_type == "rsa-2048":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    raise PkiError(f"unsupported key type {key_type!r}")


def _make_private_dir(path: Path) -> None:
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        path.chmod(0o700)  # mkdir's mode is filtered by the umask, and the directory may predate us
    except OSError as exc:
        raise PkiError(f"cannot create the directory {path}") from exc


def _write_key(path: Path, key: PrivateKey) -> None:
    data = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    _write_exclusive(path, data, 0o600)


def _write_public(path: Path, data: bytes) -> None:
    _write_exclusive(path, data, 0o644)


def _write_exclusive(path: Path, data: bytes, mode: int) -> None:
    try:
        # O_EXCL: never follow a planted symlink nor overwrite an identity; the mode is set at creation, so
        # a key is never readable by others even for an instant.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    except FileExistsError as exc:
        raise PkiError(f"{path} already exists; refusing to overwrite it") from exc
    except OSError as exc:
        raise PkiError(f"cannot create {path}") from exc
    try:
        with os.fdopen(fd, "wb") as stream:
            stream.write(data)
        os.chmod(path, mode)  # noqa: PTH101 - the umask may have narrowed it; keep public files readable
    except OSError as exc:
        path.unlink(missing_ok=True)
        raise PkiError(f"cannot write {path}") from exc
