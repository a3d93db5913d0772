"""Builders for the cloud tests: reports as a device would make them, policies, a test certificate."""

from __future__ import annotations

import copy
import datetime as dt
import json
import secrets
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from device_agent_cloud.report import compute_facts_hash

PROJECT = Path(__file__).resolve().parents[2]
REPORT_SCHEMA = PROJECT / "docs" / "schemas" / "bootstrap-report.schema.json"
VERDICT_SCHEMA = PROJECT / "docs" / "schemas" / "bootstrap-verdict.schema.json"
AUDIT_SCHEMA = PROJECT / "docs" / "schemas" / "audit-record.schema.json"

NOW = dt.datetime(2026, 11, 24, 12, 0, 0, tzinfo=dt.UTC)


def self_signed_pem(common_name: str = "thing") -> tuple[str, str]:
    """A throwaway certificate (PEM) and its SHA-256 fingerprint, as a device certificate would be."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(days=1))
        .not_valid_after(NOW + dt.timedelta(days=365))
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM).decode(), cert.fingerprint(hashes.SHA256()).hex()


def ok(value: Any, source: str | None = None) -> dict[str, Any]:
    fact: dict[str, Any] = {"status": "ok", "value": value}
    if source:
        fact["source"] = source
    return fact


def unavailable(reason: str = "needs root") -> dict[str, Any]:
    return {"status": "unavailable", "reason": reason}


def good_facts(thing: str, fingerprint: str) -> dict[str, Any]:
    return {
        "thingName": ok(thing),
        "architecture": ok("aarch64"),
        "osRelease": ok({"id": "debian", "versionId": "12", "prettyName": "Debian GNU/Linux 12"}),
        "kernel": ok({"release": "6.1.0", "version": "#1 SMP"}),
        "vendor": ok("Acme", "dmi"),
        "model": ok("Thermo 3000", "dmi"),
        "serial": ok("SN-0001", "device-tree"),
        "hardwareUuid": unavailable(),
        "cpu": ok({"model": "Cortex-A72", "count": 4}),
        "memoryBytes": ok(4_000_000_000),
        "macAddresses": ok([{"interface": "eth0", "mac": "hmac-sha256:" + "ab" * 32}]),
        "bootId": ok("6f1d3c2a-0000-4000-8000-000000000000"),
        "uptimeSeconds": ok(1234.5),
        "rootEncrypted": ok(True),
        "secureBoot": ok(True),
        "tpm": ok({"present": True, "version": "2.0"}),
        "certificate": ok(
            {
                "sha256": fingerprint,
                "subject": f"CN={thing}",
                "notAfter": "2027-11-24T00:00:00Z",
                "keyType": "ec-p256",
            }
        ),
        "nucleusVersion": ok("2.14.3"),
        "components": ok(
            {
                "source": "suite",
                "components": [{"name": "com.deviceagent.BootstrapReporter", "version": "0.1.0"}],
            }
        ),
        "software": ok({"python": "3.11.2", "awsiotsdk": "1.31.0", "awscrt": "0.36.1", "suite": "0.1.0"}),
        "extra": ok({"fips": {"status": "ok", "value": False}}),
    }


def make_report(
    thing: str,
    fingerprint: str,
    *,
    time: dt.datetime = NOW,
    facts: dict[str, Any] | None = None,
    change: dict[str, Any] | None = None,
    report_id: str | None = None,
) -> dict[str, Any]:
    """A valid report; `change` replaces (or with None removes) facts before the hash is computed."""
    all_facts = copy.deepcopy(facts) if facts is not None else good_facts(thing, fingerprint)
    for name, fact in (change or {}).items():
        if fact is None:
            all_facts.pop(name, None)
        else:
            all_facts[name] = fact
    return {
        "schema": "bootstrap-report/1",
        "reportId": report_id or secrets.token_hex(16),
        "thing": thing,
        "time": time.isoformat().replace("+00:00", "Z"),
        "reason": "initial",
        "factsHash": compute_facts_hash(all_facts),
        "facts": all_facts,
        "reporter": {"component": "com.deviceagent.BootstrapReporter", "version": "0.1.0"},
    }


def encode(report: dict[str, Any]) -> bytes:
    return json.dumps(report, ensure_ascii=False).encode("utf-8")


POLICY: dict[str, Any] = {
    "schema": "verifier-policy/1",
    "default": {
        "allowedArchitectures": ["aarch64", "x86_64"],
        "allowedModels": None,
        "serialAllowlist": None,
        "requireRootEncryption": True,
        "requireSecureBoot": False,
        "requireTpm": False,
        "minimumNucleusVersion": "2.12.0",
        "maxReportAgeSeconds": 3600,
        "maxClockSkewSeconds": 300,
        "whenFactUnavailable": "pending",
        "reverifyIntervalSeconds": 86400,
    },
    "thingTypes": {
        "thermostat": {
            "allowedModels": [{"vendor": "Acme", "model": "Thermo 3000"}],
            "serialAllowlist": {"serials": ["SN-0001", "SN-0002"]},
            "requireSecureBoot": True,
            "requireTpm": True,
            "whenFactUnavailable": "reject",
        },
        "kiosk": {"allowedArchitectures": ["x86_64"], "reverifyIntervalSeconds": 3600},
    },
}


def policy_document(**default_overrides: Any) -> dict[str, Any]:
    document = copy.deepcopy(POLICY)
    document["default"].update(default_overrides)
    return document
