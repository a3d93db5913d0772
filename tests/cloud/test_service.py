"""The local verifier service against a real mosquitto on loopback, over mutual TLS, with a local registry."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from cryptography import x509

from device_agent.devkit.mosquitto import AclRule, MosquittoBroker, TlsListener, write_acl
from device_agent.devkit.pki import IssuedIdentity, LocalCa
from device_agent.provisioning import create_key_and_csr
from device_agent_cloud.audit import JsonLinesAuditLog
from device_agent_cloud.errors import VerifierError
from device_agent_cloud.policy import parse_policy
from device_agent_cloud.provision import LocalCaSigner, provision_local
from device_agent_cloud.registry import LocalRegistry
from device_agent_cloud.service import REPORT_FILTER, BrokerSettings, VerifierService
from device_agent_cloud.verify import Verifier
from tests.cloud.support import VERDICT_SCHEMA, make_report, ok, policy_document
from tests.devkit.mqtt_support import WAIT_S, Peer

pytestmark = pytest.mark.mosquitto
VERIFIER_ID = "device-agent-verifier"


class Fleet:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.ca = LocalCa.create(root / "pki")
        self.server = self.ca.issue_server()
        self.verifier_identity = self.ca.issue_client(VERIFIER_ID)
        self.registry = LocalRegistry(root / "registry.json")
        self.audit = JsonLinesAuditLog(root / "audit.jsonl")
        self.signer = LocalCaSigner(self.ca.paths.cert, self.ca.paths.key)

    def provision(self, thing: str, thing_type: str = "sensor") -> tuple[IssuedIdentity, str]:
        """The device makes its key and CSR; the local CA signs; the registry holds it in quarantine."""
        key = self.root / "devices" / thing / "private.pem.key"
        key.parent.mkdir(parents=True, mode=0o700)
        csr = create_key_and_csr(key, thing)
        result = provision_local(
            self.registry, thing=thing, thing_type=thing_type, csr_pem=csr, sign=self.signer
        )
        cert = key.parent / "certificate.pem.crt"
        cert.write_text(result.certificate_pem)
        return IssuedIdentity(name=thing, cert=cert, key=key, ca_cert=self.ca.paths.cert), result.fingerprint


@pytest.fixture
async def fleet(tmp_path: Path) -> AsyncIterator[tuple[Fleet, MosquittoBroker]]:
    fleet = Fleet(tmp_path)
    acl = write_acl(
        tmp_path / "acl.conf",
        users={VERIFIER_ID: [AclRule("read", REPORT_FILTER), AclRule("write", "cmd/device-agent/+/verdict")]},
    )
    tls = TlsListener(ca_file=fleet.ca.paths.cert, cert_file=fleet.server.cert, key_file=fleet.server.key)
    async with MosquittoBroker(tmp_path / "broker", tls=tls, acl_file=acl) as broker:
        yield fleet, broker


@contextlib.asynccontextmanager
async def running(fleet: Fleet, broker: MosquittoBroker) -> AsyncIterator[VerifierService]:
    verifier = Verifier(
        policy=parse_policy(policy_document(allowedArchitectures=["x86_64", "aarch64"])),
        registry=fleet.registry,
        audit=fleet.audit,
        principal_required=False,  # as the local service runs it (device_agent_cloud/cli.py)
    )
    settings = BrokerSettings(
        host=broker.host,
        port=broker.port,
        ca_file=fleet.ca.paths.cert,
        cert_file=fleet.verifier_identity.cert,
        key_file=fleet.verifier_identity.key,
        min_reconnect_delay_s=0.1,
        max_reconnect_delay_s=0.5,
    )
    service = VerifierService(verifier, settings)
    async with asyncio.TaskGroup() as group:
        task = group.create_task(service.run(), name="verifier")
        await asyncio.wait_for(service.subscribed.wait(), WAIT_S)
        try:
            yield service
        finally:
            task.cancel()


async def device(identity: IssuedIdentity, endpoint: str) -> Peer:
    peer = Peer(endpoint, identity.name, identity)
    await peer.start()
    await peer.subscribe(f"cmd/device-agent/{identity.name}/verdict")
    return peer


async def test_a_report_gets_a_verdict_and_the_thing_moves(fleet: tuple[Fleet, MosquittoBroker]):
    pki, broker = fleet
    identity, fingerprint = pki.provision("kiosk-1")
    assert pki.registry.describe("kiosk-1").groups == {"device-agent-quarantine"}
    async with running(pki, broker):
        peer = await device(identity, broker.url)
        try:
            report = make_report("kiosk-1", fingerprint, time=dt.datetime.now(dt.UTC))
            await peer.publish("dt/device-agent/kiosk-1/bootstrap", json.dumps(report).encode())
            packet = await peer.next_packet()
        finally:
            await peer.stop()
    verdict = json.loads(packet.payload)
    jsonschema.validate(verdict, json.loads(VERDICT_SCHEMA.read_text()))
    assert packet.topic == "cmd/device-agent/kiosk-1/verdict"
    assert verdict["verdict"] == "approved", verdict
    assert verdict["reportId"] == report["reportId"]
    assert pki.registry.describe("kiosk-1").groups == {"device-agent-production"}
    records = [json.loads(line) for line in (pki.root / "audit.jsonl").read_text().splitlines()]
    assert [r["decision"] for r in records] == ["approved"]
    assert oct((pki.root / "audit.jsonl").stat().st_mode & 0o777) == "0o600"
    assert oct((pki.root / "registry.json").stat().st_mode & 0o777) == "0o600"


async def test_a_late_subscriber_gets_the_retained_verdict_and_rejections_stay(
    fleet: tuple[Fleet, MosquittoBroker],
):
    pki, broker = fleet
    identity, fingerprint = pki.provision("kiosk-2")
    now = dt.datetime.now(dt.UTC)
    async with running(pki, broker) as service:
        sender = Peer(broker.url, "kiosk-2", identity)
        await sender.start()
        try:
            report = make_report("kiosk-2", fingerprint, time=now, change={"rootEncrypted": ok(False)})
            await sender.publish("dt/device-agent/kiosk-2/bootstrap", json.dumps(report).encode())
            await _until(lambda: service.decisions == 1)
        finally:
            await sender.stop()
        peer = await device(identity, broker.url)  # subscribes only now
        try:
            packet = await peer.next_packet()
        finally:
            await peer.stop()
    assert packet.retain
    verdict = json.loads(packet.payload)
    assert verdict["verdict"] == "rejected"
    assert verdict["failedRules"] == ["rootEncryption"]
    assert pki.registry.describe("kiosk-2").groups == {"device-agent-quarantine"}


async def test_the_service_reconnects_after_the_broker_restarts(fleet: tuple[Fleet, MosquittoBroker]):
    pki, broker = fleet
    identity, fingerprint = pki.provision("kiosk-3")
    async with running(pki, broker) as service:
        assert service.subscriptions == 1
        await broker.restart()
        # A new connection and a new subscription (the session is clean), not the one from before.
        await _until(lambda: service.subscriptions == 2, 3 * WAIT_S)
        peer = await device(identity, broker.url)
        try:
            now = dt.datetime.now(dt.UTC)
            await peer.publish(
                "dt/device-agent/kiosk-3/bootstrap",
                json.dumps(make_report("kiosk-3", fingerprint, time=now)).encode(),
            )
            packet = await peer.next_packet(timeout=3 * WAIT_S)
        finally:
            await peer.stop()
    assert json.loads(packet.payload)["verdict"] == "approved"


async def test_a_device_cannot_report_for_another(fleet: tuple[Fleet, MosquittoBroker]):
    """The broker's ACL stops the publish; the verifier also refuses a body that names another thing."""
    pki, broker = fleet
    identity_a, _ = pki.provision("kiosk-4")
    _, fingerprint_b = pki.provision("kiosk-5")
    async with running(pki, broker) as service:
        peer = await device(identity_a, broker.url)
        try:
            now = dt.datetime.now(dt.UTC)
            # Its own topic, another thing in the body: refused by the verifier, no verdict.
            await peer.publish(
                "dt/device-agent/kiosk-4/bootstrap",
                json.dumps(make_report("kiosk-5", fingerprint_b, time=now)).encode(),
            )
            await _until(lambda: service.decisions == 1)
            with pytest.raises(TimeoutError):
                await peer.next_packet(timeout=0.5)
        finally:
            await peer.stop()
    records = [json.loads(line) for line in (pki.root / "audit.jsonl").read_text().splitlines()]
    assert [r["decision"] for r in records] == ["refused"]
    assert pki.registry.describe("kiosk-5").groups == {"device-agent-quarantine"}


async def _until(check: Any, timeout: float = WAIT_S) -> None:
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.02)


def test_signed_certificates_carry_the_thing_name(tmp_path: Path):
    pki = Fleet(tmp_path)
    identity, fingerprint = pki.provision("kiosk-9")
    cert = x509.load_pem_x509_certificate(identity.cert.read_bytes())
    assert cert.subject.rfc4514_string() == "CN=kiosk-9"
    cert.verify_directly_issued_by(pki.ca.certificate)
    assert pki.registry.describe("kiosk-9").certificate_fingerprints == {fingerprint}
    assert repr(pki.signer) == "LocalCaSigner(subject=CN=device-agent devkit local CA)"


async def test_unreadable_credentials_are_named_not_shown(tmp_path: Path):
    pki = Fleet(tmp_path)
    verifier = Verifier(policy=parse_policy(policy_document()), registry=pki.registry, audit=pki.audit)
    settings = BrokerSettings(
        host="127.0.0.1",
        port=1,
        ca_file=pki.ca.paths.cert,
        cert_file=pki.verifier_identity.cert,
        key_file=tmp_path / "missing.key",
    )
    with pytest.raises(VerifierError, match=r"missing\.key") as caught:
        await VerifierService(verifier, settings).run()
    assert "PRIVATE KEY" not in str(caught.value)
