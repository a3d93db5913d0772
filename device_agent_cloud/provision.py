"""Provisioning, cloud side: a certificate from the device's CSR, the thing, and its place in quarantine.

AWS (`provision_aws`, a boto3 `iot` client; works the same against moto):

1. the thing type exists (created if missing): the verifier's rules are chosen by it;
2. the quarantine group exists with its group policy attached, and the core certificate policy exists
   (`ensure_fleet`, also run on its own to set up the production group);
3. the thing exists with that type (an existing thing of another type is an error, not a silent change);
4. a certificate is created from the CSR and set active (the private key never left the device);
5. the core certificate policy is attached to the certificate, and the certificate to the thing as its
   exclusive principal (so `${iot:Connection.Thing.ThingName}` resolves whatever the client id);
6. the thing joins the quarantine group.

Every step checks before it creates, so running it again for the same thing is harmless (a new CSR gives
the thing a second certificate; the verifier accepts a report naming any active one attached to it).

Local (`provision_local`): the same against a `LocalRegistry`, with the CSR signed by a callable, e.g.
`LocalCaSigner` over the devkit CA's files; the cloud package never imports the devkit.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from device_agent_cloud.errors import ProvisioningError
from device_agent_cloud.iot_policy import render
from device_agent_cloud.registry import LocalRegistry, certificate_fingerprint
from device_agent_cloud.verify import Groups

THING_NAME = re.compile(r"[A-Za-z0-9:_-]{1,128}")
THING_TYPE = re.compile(r"[a-zA-Z0-9:_-]{1,128}")
MAX_CSR_BYTES: Final = 16 * 1024
MIN_RSA_BITS: Final = 2048

Signer = Callable[[x509.CertificateSigningRequest], x509.Certificate]


@dataclass(frozen=True, kw_only=True, slots=True)
class FleetSettings:
    region: str
    account: str
    groups: Groups = field(default_factory=Groups)
    quarantine_policy: str = "device-agent-quarantine"
    production_policy: str = "device-agent-production"
    core_policy: str = "device-agent-core"
    role_alias: str = "GreengrassV2TokenExchangeRoleAlias"


@dataclass(frozen=True, kw_only=True, slots=True)
class ProvisionedThing:
    thing: str
    thing_type: str
    fingerprint: str  # SHA-256 of the certificate's DER: what the device reports and AWS calls its id
    certificate_pem: str = field(repr=False)
    certificate_arn: str | None
    group: str


def load_csr(csr_pem: bytes, thing: str) -> x509.CertificateSigningRequest:
    """Parse and check a CSR: well formed, signed by its own key, an accepted key type, CN = the thing."""
    if not THING_NAME.fullmatch(thing):
        raise ProvisioningError("the thing name must match [A-Za-z0-9:_-]{1,128}")
    if len(csr_pem) > MAX_CSR_BYTES:
        raise ProvisioningError("the CSR is larger than 16 KiB")
    try:
        csr = x509.load_pem_x509_csr(csr_pem)
    except ValueError as error:
        raise ProvisioningError("the CSR is not valid PEM") from error
    if not csr.is_signature_valid:
        raise ProvisioningError("the CSR's signature does not verify")
    key = csr.public_key()
    if not (
        (isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name in {"secp256r1", "secp384r1"})
        or (isinstance(key, rsa.RSAPublicKey) and key.key_size >= MIN_RSA_BITS)
    ):
        raise ProvisioningError("the CSR's key must be EC P-256/P-384 or RSA of 2048 bits or more")
    names = csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if [name.value for name in names] != [thing]:
        raise ProvisioningError("the CSR's common name must be the thing name")
    return csr


# -- AWS ----------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _aws(operation: str) -> Iterator[None]:
    from botocore.exceptions import BotoCoreError, ClientError  # noqa: PLC0415 - the cloud extra only

    try:
        yield
    except ClientError as error:
        code = error.response.get("Error", {}).get("Code", "Unknown")
        raise ProvisioningError(f"{operation} failed: {code}") from error
    except BotoCoreError as error:
        raise ProvisioningError(f"{operation} failed: {type(error).__name__}") from error


def _exists(call: Callable[[], Any]) -> bool:
    from botocore.exceptions import ClientError  # noqa: PLC0415

    try:
        call()
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") == "ResourceNotFoundException":
            return False
        raise
    return True


def _ensure_policy(iot: Any, name: str, document: str) -> None:
    with _aws(f"create policy {name}"):
        if not _exists(lambda: iot.get_policy(policyName=name)):
            iot.create_policy(policyName=name, policyDocument=document)


def _ensure_group(iot: Any, group: str, policy: str) -> None:
    with _aws(f"create thing group {group}"):
        if _exists(lambda: iot.describe_thing_group(thingGroupName=group)):
            arn = iot.describe_thing_group(thingGroupName=group)["thingGroupArn"]
        else:
            arn = iot.create_thing_group(thingGroupName=group)["thingGroupArn"]
    with _aws(f"attach policy {policy} to {group}"):
        iot.attach_policy(policyName=policy, target=arn)  # attaching twice is a no-op in AWS IoT


def ensure_fleet(iot: Any, settings: FleetSettings) -> None:
    """The groups, their policies and the core certificate policy, created where missing."""
    values = {"region": settings.region, "account": settings.account, "role_alias": settings.role_alias}
    _ensure_policy(iot, settings.quarantine_policy, render("quarantine", **values))
    _ensure_policy(iot, settings.production_policy, render("production", **values))
    _ensure_policy(iot, settings.core_policy, render("core-certificate", **values))
    _ensure_group(iot, settings.groups.quarantine, settings.quarantine_policy)
    _ensure_group(iot, settings.groups.production, settings.production_policy)


def provision_aws(
    iot: Any, *, thing: str, thing_type: str, csr_pem: bytes, settings: FleetSettings
) -> ProvisionedThing:
    load_csr(csr_pem, thing)
    if not THING_TYPE.fullmatch(thing_type):
        raise ProvisioningError("the thing type must match [a-zA-Z0-9:_-]{1,128}")
    with _aws(f"create thing type {thing_type}"):
        if not _exists(lambda: iot.describe_thing_type(thingTypeName=thing_type)):
            iot.create_thing_type(thingTypeName=thing_type)
    ensure_fleet(iot, settings)
    with _aws(f"create thing {thing}"):
        if _exists(lambda: iot.describe_thing(thingName=thing)):
            existing = iot.describe_thing(thingName=thing).get("thingTypeName")
            if existing != thing_type:
                raise ProvisioningError(f"thing {thing!r} exists with another thing type")
        else:
            iot.create_thing(thingName=thing, thingTypeName=thing_type)
    with _aws("create_certificate_from_csr"):
        created = iot.create_certificate_from_csr(
            certificateSigningRequest=csr_pem.decode(), setAsActive=True
        )
    arn = created["certificateArn"]
    with _aws("attach the core policy to the certificate"):
        iot.attach_policy(policyName=settings.core_policy, target=arn)
    with _aws(f"attach the certificate to {thing}"):
        iot.attach_thing_principal(thingName=thing, principal=arn, thingPrincipalType="EXCLUSIVE_THING")
    with _aws(f"add {thing} to {settings.groups.quarantine}"):
        iot.add_thing_to_thing_group(thingGroupName=settings.groups.quarantine, thingName=thing)
    return ProvisionedThing(
        thing=thing,
        thing_type=thing_type,
        fingerprint=certificate_fingerprint(created["certificatePem"]),
        certificate_pem=created["certificatePem"],
        certificate_arn=arn,
        group=settings.groups.quarantine,
    )


# -- local --------------------------------------------------------------------------------------------------


class LocalCaSigner:
    """Signs device CSRs with a CA's certificate and key files (the devkit's `ca/ca.crt` and `ca/ca.key`).

    The certificate carries the CSR's subject and public key, clientAuth only, and never outlives the CA.
    """

    def __init__(self, ca_cert: Path, ca_key: Path, *, valid_days: int = 365) -> None:
        try:
            self._certificate = x509.load_pem_x509_certificate(ca_cert.read_bytes())
            key = serialization.load_pem_private_key(ca_key.read_bytes(), password=None)
        except (OSError, ValueError, TypeError) as error:
            raise ProvisioningError(f"cannot load the CA from {ca_cert.parent}") from error
        if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
            raise ProvisioningError("the CA key must be EC or RSA")
        self._key = key
        self._valid_days = valid_days

    def __repr__(self) -> str:  # never the key
        return f"LocalCaSigner(subject={self._certificate.subject.rfc4514_string()})"

    def __call__(self, csr: x509.CertificateSigningRequest) -> x509.Certificate:
        now = dt.datetime.now(dt.UTC).replace(microsecond=0)
        not_after = min(now + dt.timedelta(days=self._valid_days), self._certificate.not_valid_after_utc)
        return (
            x509.CertificateBuilder()
            .subject_name(csr.subject)
            .issuer_name(self._certificate.subject)
            .public_key(csr.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .sign(self._key, hashes.SHA256())
        )


def provision_local(
    registry: LocalRegistry,
    *,
    thing: str,
    thing_type: str,
    csr_pem: bytes,
    sign: Signer,
    groups: Groups | None = None,
) -> ProvisionedThing:
    """The AWS steps against the local registry: type, groups, thing, certificate, quarantine."""
    groups = groups or Groups()
    csr = load_csr(csr_pem, thing)
    if not THING_TYPE.fullmatch(thing_type):
        raise ProvisioningError("the thing type must match [a-zA-Z0-9:_-]{1,128}")
    certificate = sign(csr)
    pem = certificate.public_bytes(serialization.Encoding.PEM).decode("ascii")
    fingerprint = certificate.fingerprint(hashes.SHA256()).hex()
    registry.create_thing_type(thing_type)
    registry.create_group(groups.quarantine)
    registry.create_group(groups.production)
    try:
        registry.create_thing(thing, thing_type)
    except Exception as error:
        raise ProvisioningError(f"cannot create thing {thing!r}: {error}") from error
    registry.attach_certificate(thing, fingerprint)
    registry.add_to_group(thing, groups.quarantine)
    return ProvisionedThing(
        thing=thing,
        thing_type=thing_type,
        fingerprint=fingerprint,
        certificate_pem=pem,
        certificate_arn=None,
        group=groups.quarantine,
    )


def summary(result: ProvisionedThing) -> str:
    """One JSON line for people and scripts: no certificate body, no key."""
    return json.dumps(
        {
            "thing": result.thing,
            "thingType": result.thing_type,
            "certificateSha256": result.fingerprint,
            "certificateArn": result.certificate_arn,
            "group": result.group,
        }
    )
