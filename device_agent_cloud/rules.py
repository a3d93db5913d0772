"""Evaluate one report against the rules for its thing type: a pure function, no I/O.

Each rule looks at one or two facts. A fact that is ok but false to the rule is a failure (`secureBoot`);
a fact whose value has the wrong shape is a failure too (`secureBoot.malformed`: a device that reports
garbage is not given the benefit of the doubt); a fact that is missing, unavailable or in error is
`secureBoot.unavailable`, which the policy's `whenFactUnavailable` turns into a rejection or a pending
verdict. Any failure rejects. Rules whose policy key is off (null, false) do not run.

Reasons name rules and what was expected, never a fact's value: serials, models and fingerprints stay out.
"""

from __future__ import annotations

import datetime as dt
import hmac
import re
from dataclasses import dataclass
from typing import Any, Final, Literal

from device_agent_cloud.policy import Model, RuleSet, SemVer
from device_agent_cloud.registry import ThingRecord
from device_agent_cloud.report import Fact, Report

Outcome = Literal["approved", "rejected", "pending"]
_FINGERPRINT = re.compile(r"[0-9a-f]{64}")
MAX_REASON: Final = 512


@dataclass(frozen=True, kw_only=True, slots=True)
class Evaluation:
    outcome: Outcome
    failed_rules: tuple[str, ...]  # failures and unavailable facts, in rule order
    reason: str


class _Findings:
    def __init__(self) -> None:
        self.failed: list[tuple[str, str]] = []
        self.unavailable: list[tuple[str, str]] = []

    def fail(self, rule: str, why: str) -> None:
        self.failed.append((rule, why))

    def missing(self, rule: str, fact: str) -> None:
        self.unavailable.append((f"{rule}.unavailable", f"{fact} was not reported"))

    def malformed(self, rule: str, fact: str) -> None:
        self.failed.append((f"{rule}.malformed", f"{fact} has a value of the wrong shape"))


def evaluate(
    report: Report,
    rules: RuleSet,
    thing: ThingRecord,
    *,
    now: dt.datetime,
    principal: str | None = None,
    principal_required: bool = False,
) -> Evaluation:
    """The decision for `report` under `rules`, given what the registry says about `thing`.

    `principal` is the certificate id of the connection the report came in on, when the transport tells
    (the AWS IoT rule's `principal()`): it must be the reported certificate too. With `principal_required`,
    a report without one fails `certificate.principal.unavailable`: a copy of a genuine report sent over
    another kind of connection must not pass on the fingerprint it names.
    """
    findings = _Findings()
    _check_time(report, rules, now, findings)
    _check_thing_name(report, findings)
    _check_certificate(report, thing, principal, findings)
    if principal is None and principal_required:
        # A failure, not an unavailable fact: the device cannot supply it later, only the transport can.
        findings.fail(
            "certificate.principal.unavailable",
            "the report came without the certificate of its connection (the IoT rule's principal())",
        )
    if rules.allowed_architectures is not None:
        _check_architecture(report, rules.allowed_architectures, findings)
    if rules.allowed_models is not None:
        _check_model(report, rules.allowed_models, findings)
    if rules.serial_allowlist is not None:
        _check_serial(report, rules.serial_allowlist, findings)
    if rules.require_root_encryption:
        _check_flag(
            report, "rootEncrypted", "rootEncryption", "the root file system is not encrypted", findings
        )
    if rules.require_secure_boot:
        _check_flag(report, "secureBoot", "secureBoot", "UEFI Secure Boot is off", findings)
    if rules.require_tpm:
        _check_tpm(report, findings)
    if rules.minimum_nucleus_version is not None:
        _check_nucleus(report, rules.minimum_nucleus_version, findings)
    return _conclude(findings, rules)


def _conclude(findings: _Findings, rules: RuleSet) -> Evaluation:
    failed = [rule for rule, _ in findings.failed]
    unavailable = [rule for rule, _ in findings.unavailable]
    if findings.failed or (findings.unavailable and rules.when_fact_unavailable == "reject"):
        details = "; ".join(f"{rule}: {why}" for rule, why in [*findings.failed, *findings.unavailable])
        return Evaluation(
            outcome="rejected",
            failed_rules=tuple(failed + unavailable),
            reason=_clip(f"rejected by the {rules.name} rules: {details}"),
        )
    if findings.unavailable:
        details = "; ".join(f"{rule}: {why}" for rule, why in findings.unavailable)
        return Evaluation(
            outcome="pending",
            failed_rules=tuple(unavailable),
            reason=_clip(f"pending under the {rules.name} rules, waiting for facts: {details}"),
        )
    return Evaluation(outcome="approved", failed_rules=(), reason=f"approved by the {rules.name} rules")


def _clip(text: str) -> str:
    return text if len(text) <= MAX_REASON else text[: MAX_REASON - 3] + "..."


def _ok(report: Report, name: str) -> Fact | None:
    fact = report.fact(name)
    return fact if fact is not None and fact.ok else None


def _check_time(report: Report, rules: RuleSet, now: dt.datetime, findings: _Findings) -> None:
    age = (now - report.time).total_seconds()
    if age > rules.max_report_age_seconds:
        findings.fail("reportAge", f"the report is older than {rules.max_report_age_seconds:g} s")
    if -age > rules.max_clock_skew_seconds:
        findings.fail("clockSkew", f"the report is dated more than {rules.max_clock_skew_seconds:g} s ahead")


def _check_thing_name(report: Report, findings: _Findings) -> None:
    fact = _ok(report, "thingName")
    if fact is None:
        findings.missing("thingName", "thingName")
    elif not isinstance(fact.value, str):
        findings.malformed("thingName", "thingName")
    elif fact.value != report.thing:
        findings.fail("thingName", "the device names another thing than the report")


def _check_certificate(
    report: Report, thing: ThingRecord, principal: str | None, findings: _Findings
) -> None:
    fact = _ok(report, "certificate")
    if fact is None:
        findings.missing("certificate", "certificate")
        return
    value = fact.value
    fingerprint = value.get("sha256") if isinstance(value, dict) else None
    if not isinstance(fingerprint, str) or not _FINGERPRINT.fullmatch(fingerprint):
        findings.malformed("certificate", "certificate")
        return
    if not thing.certificate_fingerprints:
        findings.fail("certificate", "no active certificate is attached to the thing")
    elif not any(hmac.compare_digest(fingerprint, known) for known in thing.certificate_fingerprints):
        findings.fail("certificate", "the reported certificate is not one attached to the thing")
    if principal is not None and not hmac.compare_digest(principal.lower(), fingerprint):
        findings.fail("certificate.principal", "the report came in on another certificate than it names")


def _string_fact(report: Report, name: str, rule: str, findings: _Findings) -> str | None:
    fact = _ok(report, name)
    if fact is None:
        findings.missing(rule, name)
        return None
    if not isinstance(fact.value, str) or not fact.value.strip():
        findings.malformed(rule, name)
        return None
    return fact.value.strip()


def _check_architecture(report: Report, allowed: frozenset[str], findings: _Findings) -> None:
    value = _string_fact(report, "architecture", "architecture", findings)
    if value is not None and value not in allowed:
        findings.fail("architecture", "not an allowed architecture")


def _check_model(report: Report, allowed: frozenset[Model], findings: _Findings) -> None:
    vendor = _string_fact(report, "vendor", "model", findings)
    model = _string_fact(report, "model", "model", findings)
    if vendor is not None and model is not None and Model(vendor, model) not in allowed:
        findings.fail("model", "not an allowed vendor and model")


def _check_serial(report: Report, allowed: frozenset[str], findings: _Findings) -> None:
    value = _string_fact(report, "serial", "serial", findings)
    if value is not None and value not in allowed:
        findings.fail("serial", "not in the manufacturing manifest")


def _check_flag(report: Report, name: str, rule: str, why: str, findings: _Findings) -> None:
    fact = _ok(report, name)
    if fact is None:
        findings.missing(rule, name)
    elif not isinstance(fact.value, bool):
        findings.malformed(rule, name)
    elif not fact.value:
        findings.fail(rule, why)


def _check_tpm(report: Report, findings: _Findings) -> None:
    fact = _ok(report, "tpm")
    if fact is None:
        findings.missing("tpm", "tpm")
        return
    value: Any = fact.value
    if not isinstance(value, dict) or not isinstance(value.get("present"), bool):
        findings.malformed("tpm", "tpm")
    elif not value["present"]:
        findings.fail("tpm", "no TPM is present")


def _check_nucleus(report: Report, minimum: SemVer, findings: _Findings) -> None:
    value = _string_fact(report, "nucleusVersion", "nucleusVersion", findings)
    if value is None:
        return
    try:
        version = SemVer.parse(value)
    except ValueError:
        findings.malformed("nucleusVersion", "nucleusVersion")
        return
    if version < minimum:
        findings.fail("nucleusVersion", f"the nucleus is older than {minimum}")
