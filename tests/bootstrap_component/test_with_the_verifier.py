"""The device side against the real cloud side: the reporter, built as it ships, on the local nucleus, and
`device_agent_cloud.Verifier` with a local registry deciding on the reports it publishes. This is the
contract test: the reports parse under the verifier's own validation and hash, and its verdicts are taken.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from device_agent_cloud.audit import JsonLinesAuditLog
from device_agent_cloud.policy import parse_policy
from device_agent_cloud.registry import LocalRegistry
from device_agent_cloud.report import parse_report
from device_agent_cloud.verify import Groups, Verifier
from tests.bootstrap_component.conftest import REPORTS, TestVerifier, device_config, wait_until

pytestmark = pytest.mark.slow

RULES: dict[str, Any] = {
    "allowedArchitectures": None,
    "allowedModels": None,
    "serialAllowlist": None,
    "requireRootEncryption": False,
    "requireSecureBoot": False,
    "requireTpm": False,
    "minimumNucleusVersion": "2.12.0",
    "maxReportAgeSeconds": 3600,
    "maxClockSkewSeconds": 300,
    "whenFactUnavailable": "pending",
    "reverifyIntervalSeconds": 2,
}


def certificate(path: Path) -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "AWS IoT Certificate")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=365))
        .sign(key, hashes.SHA256())
    )
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def verifier_with(tmp_path: Path, **rules: Any) -> Verifier:
    policy = parse_policy({"schema": "verifier-policy/1", "default": {**RULES, **rules}})
    return Verifier(
        policy=policy,
        registry=LocalRegistry(tmp_path / "registry.json"),
        audit=JsonLinesAuditLog(tmp_path / "audit"),
    )


async def test_the_real_verifier_approves_then_demotes_on_re_verification(
    start_device, bootstrap_base: Path, tmp_path: Path
):
    cert = tmp_path / "thingCert.crt"
    fingerprint = certificate(cert)
    config = device_config(certificatePath=str(cert), reportIntervalSeconds=3600.0)
    async with start_device(
        bootstrap_base, update_config=config, interpolate_component_configuration=True
    ) as device:
        test = TestVerifier(device)
        thing = device.nucleus.thing_name
        registry = LocalRegistry(tmp_path / "registry.json")
        groups = Groups()
        for group in (groups.quarantine, groups.production):
            registry.create_group(group)
        registry.create_thing(thing, None)
        registry.attach_certificate(thing, fingerprint)
        registry.add_to_group(thing, groups.quarantine)

        report = await test.report()
        record = device.published(REPORTS)[0]
        parsed = parse_report(record.payload, topic_thing=thing)  # the verifier's own validation and hash
        assert parsed.report_id == report["reportId"]
        assert report["facts"]["certificate"]["value"]["sha256"] == fingerprint

        # As the Lambda decides: the IoT rule's principal() is the certificate the device connected with.
        decision = verifier_with(tmp_path).handle(record.payload, topic=record.topic, principal=fingerprint)
        assert decision.outcome == "approved", decision.reason
        assert decision.verdict is not None
        device.inject(decision.verdict.topic, decision.verdict.to_payload())
        await test.event("bootstrap.approved")
        assert registry.describe(thing).groups == {groups.production}

        # The verdict asks for re-verification after 2 s: a periodic report comes, and a stricter policy
        # demotes it, with a rule every host fails: a nucleus version beyond any release (the virtual
        # nucleus reports its own, whatever the machine), not a fact of the host such as its disk.
        again = await test.report(where=lambda r: r["reportId"] != report["reportId"])
        assert again["reason"] == "periodic"
        newer = next(
            r for r in device.published(REPORTS) if json.loads(r.payload)["reportId"] == again["reportId"]
        )
        strict = verifier_with(tmp_path, minimumNucleusVersion="999.0.0")
        decision = strict.handle(newer.payload, topic=newer.topic, principal=fingerprint)
        assert decision.outcome == "rejected"
        assert decision.failed_rules == ("nucleusVersion",)
        assert decision.verdict is not None
        assert decision.verdict.demoted
        device.inject(decision.verdict.topic, decision.verdict.to_payload())
        event = await test.event("bootstrap.demoted")
        assert (event["category"], event["severity"]) == ("security", "critical")
        assert registry.describe(thing).groups == {groups.quarantine}
        audit = [json.loads(line) for line in (tmp_path / "audit").read_text().splitlines()]
        assert [a["decision"] for a in audit] == ["approved", "rejected"]
        await wait_until(
            lambda: any(h.get("state") == "DEGRADED" for h in test.heartbeats()), 10, "health not DEGRADED"
        )
