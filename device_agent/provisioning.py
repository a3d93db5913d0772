"""The device's half of provisioning: its own private key and a certificate signing request, on the device.

The key never leaves the device: only the CSR (public key and thing name) goes to the cloud, which returns a
certificate. The key file is created exclusively (an existing key is never overwritten) with mode 0600 and
without following a symbolic link, and it is never printed or logged. EC P-256 by default: AWS IoT Core
accepts it, and it is small and fast on small devices; RSA-2048 remains available.

    csr_pem = create_key_and_csr(Path("/greengrass/v2/private.pem.key"), "thermostat-17")
    ... the cloud signs it ...
    write_certificate(Path("/greengrass/v2/device.pem.crt"), certificate_pem)
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from device_agent import files
from device_agent.errors import InvalidInputError, StorageError

KeyType = Literal["ec-p256", "rsa-2048"]
THING_NAME = re.compile(r"[A-Za-z0-9:_-]{1,128}")
MAX_CERTIFICATE_BYTES = 64 * 1024


def create_key_and_csr(key_path: Path, thing_name: str, *, key_type: KeyType = "ec-p256") -> bytes:
    """Create a new private key at `key_path` (0600, exclusive) and return a PEM CSR for `thing_name`.

    Raises `StorageError` if the key cannot be created (for instance, a key is already there: provisioning
    twice must be a decision, not an accident) and `InvalidInputError` for a bad thing name or key type.
    """
    if not THING_NAME.fullmatch(thing_name):
        raise InvalidInputError("the thing name must match [A-Za-z0-9:_-]{1,128}")
    key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
    if key_type == "ec-p256":
        key = ec.generate_private_key(ec.SECP256R1())
    elif key_type == "rsa-2048":
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    else:
        raise InvalidInputError(f"unsupported key type {key_type!r}: ec-p256 or rsa-2048")
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    fd = files.open_private(key_path, create=True, exclusive=True)
    try:
        view = memoryview(pem)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    except OSError as error:
        os.close(fd)
        key_path.unlink(missing_ok=True)  # a half-written key is worse than none
        raise StorageError(f"write {key_path}: {error.strerror}", errno_value=error.errno) from error
    os.close(fd)
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, thing_name)]))
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.PEM)


def write_certificate(path: Path, certificate_pem: str | bytes) -> str:
    """Store the certificate the cloud returned (atomically, 0600); returns its SHA-256 fingerprint."""
    data = certificate_pem.encode("ascii") if isinstance(certificate_pem, str) else certificate_pem
    if len(data) > MAX_CERTIFICATE_BYTES:
        raise InvalidInputError("the certificate is larger than 64 KiB")
    try:
        certificate = x509.load_pem_x509_certificate(data)
    except ValueError as error:
        raise InvalidInputError("the certificate is not valid PEM") from error
    files.atomic_write(path, data)
    return certificate.fingerprint(hashes.SHA256()).hex()
