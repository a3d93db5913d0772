"""The local registry, local provisioning and the device's key and CSR."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from device_agent.errors import InvalidInputError, StorageError, UnsafeFileError
from device_agent.provisioning import create_key_and_csr, write_certificate
from device_agent_cloud.errors import ProvisioningError, RegistryError, ThingNotFoundError
from device_agent_cloud.provision import LocalCaSigner, load_csr, provision_local
from device_agent_cloud.registry import LocalRegistry
from device_agent_cloud.verify import Groups
from tests.cloud.support import self_signed_pem


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def test_key_and_csr(tmp_path: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]):
    key_path = tmp_path / "private.pem.key"
    old = os.umask(0o022)
    try:
        csr_pem = create_key_and_csr(key_path, "thermostat-1")
    finally:
        os.umask(old)
    assert _mode(key_path) == 0o600
    key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    csr = x509.load_pem_x509_csr(csr_pem)
    assert csr.is_signature_valid
    assert csr.public_key() == key.public_key()
    assert csr.subject.rfc4514_string() == "CN=thermostat-1"
    assert b"PRIVATE" not in csr_pem
    secret = key_path.read_text()
    captured = capsys.readouterr()
    assert secret not in caplog.text + captured.out + captured.err
    # Never overwritten: a second key for the same path is an error, and the first key is intact.
    with pytest.raises(StorageError):
        create_key_and_csr(key_path, "thermostat-1")
    assert key_path.read_text() == secret


def test_key_refuses_a_symbolic_link_and_bad_input(tmp_path: Path):
    target = tmp_path / "elsewhere"
    target.write_text("x")
    link = tmp_path / "key"
    link.symlink_to(target)
    with pytest.raises(StorageError):
        create_key_and_csr(link, "t")
    assert target.read_text() == "x"
    with pytest.raises(InvalidInputError):
        create_key_and_csr(tmp_path / "k1", "bad/name")
    with pytest.raises(InvalidInputError):
        create_key_and_csr(tmp_path / "k2", "t", key_type="dsa")  # type: ignore[arg-type]
    rsa_csr = x509.load_pem_x509_csr(create_key_and_csr(tmp_path / "k3", "t", key_type="rsa-2048"))
    assert rsa_csr.is_signature_valid


def test_write_certificate(tmp_path: Path):
    pem, fingerprint = self_signed_pem()
    path = tmp_path / "device.pem.crt"
    assert write_certificate(path, pem) == fingerprint
    assert _mode(path) == 0o600
    with pytest.raises(InvalidInputError):
        write_certificate(tmp_path / "bad.crt", "not a certificate")


def test_csr_checks(tmp_path: Path):
    csr = create_key_and_csr(tmp_path / "k", "thing-a")
    assert load_csr(csr, "thing-a").subject.rfc4514_string() == "CN=thing-a"
    with pytest.raises(ProvisioningError, match="common name"):
        load_csr(csr, "thing-b")
    with pytest.raises(ProvisioningError, match="PEM"):
        load_csr(b"garbage", "thing-a")
    with pytest.raises(ProvisioningError, match="16 KiB"):
        load_csr(b"x" * 20000, "thing-a")


def test_local_registry_file(tmp_path: Path):
    registry = LocalRegistry(tmp_path / "registry.json")
    with pytest.raises(ThingNotFoundError):
        registry.describe("nobody")
    registry.create_thing_type("kiosk")
    registry.create_group("q")
    registry.create_thing("k1", "kiosk")
    registry.create_thing("k1", "kiosk")  # again: harmless
    with pytest.raises(RegistryError, match="another thing type"):
        registry.create_thing("k1", None)
    with pytest.raises(RegistryError, match="no thing type"):
        registry.create_thing("k2", "toaster")
    registry.attach_certificate("k1", "a" * 64)
    registry.add_to_group("k1", "q")
    registry.add_to_group("k1", "q")
    with pytest.raises(RegistryError, match="no thing group"):
        registry.add_to_group("k1", "missing")
    record = registry.describe("k1")
    assert record.thing_type == "kiosk"
    assert record.groups == frozenset({"q"})
    assert record.certificate_fingerprints == frozenset({"a" * 64})
    registry.remove_from_group("k1", "q")
    registry.detach_certificate("k1", "a" * 64)
    assert registry.describe("k1").groups == frozenset()
    assert _mode(tmp_path / "registry.json") == 0o600
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]


def test_local_registry_refuses_a_shared_or_broken_file(tmp_path: Path):
    path = tmp_path / "registry.json"
    registry = LocalRegistry(path)
    registry.create_group("q")
    path.chmod(0o644)
    with pytest.raises(RegistryError, match="group or others"):
        registry.describe("x")
    path.chmod(0o600)
    path.write_text('{"schema": "other"}')
    with pytest.raises(RegistryError, match="does not follow"):
        registry.describe("x")
    path.write_text("{")
    with pytest.raises(RegistryError, match="not valid JSON"):
        registry.describe("x")
    assert isinstance(UnsafeFileError("x"), StorageError)


def test_local_provisioning_signs_with_the_ca_files(tmp_path: Path):
    from device_agent.devkit.pki import LocalCa  # noqa: PLC0415 - the test stands in for the devkit glue

    ca = LocalCa.create(tmp_path / "pki")
    registry = LocalRegistry(tmp_path / "registry.json")
    csr = create_key_and_csr(tmp_path / "k", "thermostat-1")
    groups = Groups(quarantine="q", production="p")
    result = provision_local(
        registry,
        thing="thermostat-1",
        thing_type="thermostat",
        csr_pem=csr,
        sign=LocalCaSigner(ca.paths.cert, ca.paths.key),
        groups=groups,
    )
    certificate = x509.load_pem_x509_certificate(result.certificate_pem.encode())
    certificate.verify_directly_issued_by(ca.certificate)
    record = registry.describe("thermostat-1")
    assert record.groups == frozenset({"q"})
    assert record.thing_type == "thermostat"
    assert record.certificate_fingerprints == frozenset({result.fingerprint})
    assert "BEGIN" not in repr(result)
    with pytest.raises(ProvisioningError, match="cannot load the CA"):
        LocalCaSigner(tmp_path / "none.crt", tmp_path / "none.key")


def test_two_writers_on_one_registry_lose_nothing(tmp_path: Path):
    """The service and a fleet tool share the file: each change is a locked read-modify-replace."""
    import threading  # noqa: PLC0415

    path = tmp_path / "registry.json"
    LocalRegistry(path).create_thing_type("kiosk")
    errors: list[BaseException] = []

    def writer(prefix: str) -> None:
        registry = LocalRegistry(path)  # its own descriptor: flock serializes it against the other
        try:
            for index in range(25):
                registry.create_thing(f"{prefix}-{index}", "kiosk")
        except BaseException as error:  # reported by the assertion below
            errors.append(error)

    threads = [threading.Thread(target=writer, args=(prefix,)) for prefix in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    registry = LocalRegistry(path)
    for prefix in ("a", "b"):
        for index in range(25):
            assert registry.describe(f"{prefix}-{index}").thing_type == "kiosk"
