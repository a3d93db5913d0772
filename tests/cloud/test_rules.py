"""The rules as a pure function: each rule fails, is malformed or unavailable on its own."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest

from device_agent_cloud.policy import parse_policy
from device_agent_cloud.registry import ThingRecord
from device_agent_cloud.report import parse_report
from device_agent_cloud.rules import evaluate
from tests.cloud.support import NOW, POLICY, make_report, ok, unavailable

FINGERPRINT = "f" * 64
POLICIES = parse_policy(POLICY)


def decide(
    thing_type: str | None, change: dict[str, Any], *, principal: str | None = None, now: dt.datetime = NOW
) -> Any:
    report = parse_report(json.dumps(make_report("t1", FINGERPRINT, change=change)).encode())
    thing = ThingRecord(
        name="t1",
        thing_type=thing_type,
        certificate_fingerprints=frozenset({FINGERPRINT}),
        groups=frozenset(),
    )
    return evaluate(report, POLICIES.rules_for(thing_type), thing, now=now, principal=principal)


def test_a_good_thermostat_is_approved():
    result = decide("thermostat", {})
    assert (result.outcome, result.failed_rules) == ("approved", ())
    assert result.reason == "approved by the thermostat rules"


@pytest.mark.parametrize(
    ("thing_type", "change", "failed"),
    [
        (None, {"architecture": ok("riscv64")}, ("architecture",)),
        (None, {"architecture": ok(7)}, ("architecture.malformed",)),
        (None, {"nucleusVersion": ok("2.11.9")}, ("nucleusVersion",)),
        (None, {"nucleusVersion": ok("2.12.0-rc.1")}, ("nucleusVersion",)),
        (None, {"nucleusVersion": ok("latest")}, ("nucleusVersion.malformed",)),
        (None, {"rootEncrypted": ok(False)}, ("rootEncryption",)),
        (None, {"rootEncrypted": ok("yes")}, ("rootEncryption.malformed",)),
        (None, {"thingName": ok("t2")}, ("thingName",)),
        (None, {"certificate": ok({"sha256": "e" * 64})}, ("certificate",)),
        (None, {"certificate": ok("f" * 64)}, ("certificate.malformed",)),
        ("thermostat", {"model": ok("Thermo 2000")}, ("model",)),
        ("thermostat", {"serial": ok("SN-0003")}, ("serial",)),
        ("thermostat", {"tpm": ok({"present": False, "version": None})}, ("tpm",)),
        ("thermostat", {"tpm": ok({"version": "2.0"})}, ("tpm.malformed",)),
        ("thermostat", {"secureBoot": unavailable()}, ("secureBoot.unavailable",)),  # thermostat: reject
        ("thermostat", {"serial": None}, ("serial.unavailable",)),
        ("kiosk", {}, ("architecture",)),  # kiosks must be x86_64
    ],
)
def test_each_rule_rejects_on_its_own(
    thing_type: str | None, change: dict[str, Any], failed: tuple[str, ...]
):
    result = decide(thing_type, change)
    assert result.outcome == "rejected"
    assert result.failed_rules == failed


def test_unavailable_is_pending_by_default_and_a_failure_still_rejects():
    pending = decide(None, {"rootEncrypted": unavailable("needs root")})
    assert pending.outcome == "pending"
    assert pending.failed_rules == ("rootEncryption.unavailable",)
    both = decide(None, {"rootEncrypted": unavailable(), "architecture": ok("mips")})
    assert both.outcome == "rejected"
    assert both.failed_rules == ("architecture", "rootEncryption.unavailable")


def test_rules_whose_key_is_off_do_not_run():
    # The default rules neither require Secure Boot nor list serials: their facts may be anything.
    result = decide(None, {"secureBoot": ok(False), "serial": unavailable(), "tpm": ok("garbage")})
    assert result.outcome == "approved"


def test_time_rules_and_the_connection_principal():
    assert decide(None, {}, now=NOW + dt.timedelta(seconds=3601)).failed_rules == ("reportAge",)
    assert decide(None, {}, now=NOW - dt.timedelta(seconds=301)).failed_rules == ("clockSkew",)
    assert decide(None, {}, principal="F" * 64).outcome == "approved"
    assert decide(None, {}, principal="0" * 64).failed_rules == ("certificate.principal",)


def test_a_required_principal_that_is_missing_fails_even_under_pending():
    report = parse_report(json.dumps(make_report("t1", FINGERPRINT)).encode())
    thing = ThingRecord(
        name="t1", thing_type=None, certificate_fingerprints=frozenset({FINGERPRINT}), groups=frozenset()
    )
    rules = POLICIES.rules_for(None)
    assert rules.when_fact_unavailable == "pending"  # a device fact missing would only be pending
    result = evaluate(report, rules, thing, now=NOW, principal_required=True)
    assert (result.outcome, result.failed_rules) == ("rejected", ("certificate.principal.unavailable",))
    assert evaluate(
        report, rules, thing, now=NOW, principal=FINGERPRINT, principal_required=True
    ).outcome == ("approved")
    assert evaluate(report, rules, thing, now=NOW).outcome == "approved"  # the local service: not required


def test_reasons_carry_no_fact_values():
    result = decide("thermostat", {"serial": ok("SN-SECRET-77"), "model": ok("Prototype X")})
    assert "SN-SECRET-77" not in result.reason
    assert "Prototype X" not in result.reason
    assert "serial: not in the manufacturing manifest" in result.reason


def test_a_serial_the_device_redacted_passes_the_allowlist_only_with_the_fleet_salt(
    monkeypatch: pytest.MonkeyPatch,
):
    """Both sides agree: the reporter's own redaction (redact.serial with its fleetSalt) against the
    verifier's pseudonyms of the manifest."""
    from device_agent.facts.fact import Fact  # noqa: PLC0415 - the device's side
    from device_agent.facts.redaction import Redactor  # noqa: PLC0415

    salt = "fleet-salt-of-the-test-0123456789"
    monkeypatch.setenv("DEVICE_AGENT_TEST_FLEET_SALT", salt)
    redacted = Redactor(salt.encode("utf-8"), frozenset({"serial"})).apply(
        {"serial": Fact.ok("SN-0001", source="device-tree")}
    )["serial"]
    assert redacted.value.startswith("hmac-sha256:")
    report = make_report("t1", FINGERPRINT, change={"serial": redacted.to_document()})
    parsed = parse_report(json.dumps(report).encode())
    thing = ThingRecord(
        name="t1",
        thing_type="thermostat",
        certificate_fingerprints=frozenset({FINGERPRINT}),
        groups=frozenset(),
    )
    document = json.loads(json.dumps(POLICY))
    allowlist = document["thingTypes"]["thermostat"]["serialAllowlist"]
    plain = parse_policy(document).rules_for("thermostat")
    assert evaluate(parsed, plain, thing, now=NOW).failed_rules == ("serial",)  # the gap this closes
    allowlist["pseudonymSalt"] = {"env": "DEVICE_AGENT_TEST_FLEET_SALT"}
    salted = parse_policy(document).rules_for("thermostat")
    assert evaluate(parsed, salted, thing, now=NOW).outcome == "approved"
    assert evaluate(decide_report("SN-0001"), salted, thing, now=NOW).outcome == "approved"  # unredacted
    unknown = Redactor(salt.encode("utf-8"), frozenset({"serial"})).pseudonym("SN-0003")
    assert evaluate(decide_report(unknown), salted, thing, now=NOW).failed_rules == ("serial",)


def decide_report(serial: str) -> Any:
    return parse_report(json.dumps(make_report("t1", FINGERPRINT, change={"serial": ok(serial)})).encode())
