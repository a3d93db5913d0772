"""The whole cloud loop against moto through boto3: provision, report in, groups moved, verdict out, audit."""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
from pathlib import Path
from typing import Any

import boto3
import jsonschema
import pytest

from device_agent.provisioning import create_key_and_csr
from device_agent_cloud import handler as handler_module
from device_agent_cloud.audit import AuditRecord, DynamoDbAuditLog
from device_agent_cloud.errors import AuditError, ProvisioningError
from device_agent_cloud.policy import parse_policy
from device_agent_cloud.provision import FleetSettings, ProvisionedThing, provision_aws
from device_agent_cloud.registry import AwsIotRegistry
from device_agent_cloud.verify import Groups, Verifier
from tests.cloud.conftest import ACCOUNT, REGION, published
from tests.cloud.support import AUDIT_SCHEMA, NOW, POLICY, VERDICT_SCHEMA, make_report, ok, unavailable

QUARANTINE, PRODUCTION = "device-agent-quarantine", "device-agent-production"
TABLE = "device-agent-audit"
SETTINGS = FleetSettings(region=REGION, account=ACCOUNT)
VERDICTS = jsonschema.Draft202012Validator(json.loads(VERDICT_SCHEMA.read_text()))
AUDITS = jsonschema.Draft202012Validator(json.loads(AUDIT_SCHEMA.read_text()))


@pytest.fixture
def fleet(aws: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """An account with the audit table, and the handler configured as the Lambda would be."""
    dynamodb = boto3.client("dynamodb", region_name=REGION)
    dynamodb.create_table(
        TableName=TABLE,
        KeySchema=[{"AttributeName": "recordId", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "recordId", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    policy_file = tmp_path / "policy.json"
    policy_file.write_text(json.dumps(POLICY))
    monkeypatch.setenv("DEVICE_AGENT_POLICY_FILE", str(policy_file))
    monkeypatch.setenv("DEVICE_AGENT_AUDIT_TABLE", TABLE)
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "device-agent-verifier-test")
    # Reports are dated NOW; the Lambda's clock is pinned to it.
    handler_module.reset_runtime()
    runtime = handler_module.build_runtime(dict(os.environ))
    runtime.verifier._clock = lambda: NOW
    handler_module._runtime = runtime
    yield runtime
    handler_module.reset_runtime()


def provision(tmp_path: Path, thing: str, thing_type: str = "thermostat") -> ProvisionedThing:
    csr = create_key_and_csr(tmp_path / f"{thing}.key", thing)
    return provision_aws(
        boto3.client("iot", region_name=REGION),
        thing=thing,
        thing_type=thing_type,
        csr_pem=csr,
        settings=SETTINGS,
    )


def groups_of(thing: str) -> set[str]:
    iot = boto3.client("iot", region_name=REGION)
    return {g["groupName"] for g in iot.list_thing_groups_for_thing(thingName=thing)["thingGroups"]}


AS_REPORTED = "as reported"


def invoke(
    report: dict[str, Any], *, topic_thing: str | None = None, principal: str | None = AS_REPORTED
) -> dict[str, Any]:
    """The IoT rule's event for `report`. By default the connection used the certificate the report names,
    as a genuine device's does; `principal=None` leaves it out of the event."""
    event = {
        "payload": base64.b64encode(json.dumps(report).encode()).decode(),
        "topic": f"dt/device-agent/{topic_thing or report['thing']}/bootstrap",
    }
    if principal == AS_REPORTED:
        principal = report["facts"]["certificate"]["value"]["sha256"]
    if principal is not None:
        event["principal"] = principal
    return handler_module.handler(event, None)


def verdicts_for(thing: str) -> list[dict[str, Any]]:
    return [json.loads(p) for _, p in published(f"cmd/device-agent/{thing}/verdict")]


def audit_records() -> list[dict[str, Any]]:
    items = boto3.client("dynamodb", region_name=REGION).scan(TableName=TABLE)["Items"]
    return sorted((json.loads(i["record"]["S"]) for i in items), key=lambda r: r["time"])


def test_provisioning_puts_a_new_thing_in_quarantine(fleet: Any, tmp_path: Path):
    device = provision(tmp_path, "thermostat-1")
    iot = boto3.client("iot", region_name=REGION)
    assert iot.describe_thing(thingName="thermostat-1")["thingTypeName"] == "thermostat"
    assert groups_of("thermostat-1") == {QUARANTINE}
    principals = iot.list_thing_principals(thingName="thermostat-1")["principals"]
    assert principals == [device.certificate_arn]
    certificate_id = str(device.certificate_arn).rsplit("/", 1)[1]
    assert (
        iot.describe_certificate(certificateId=certificate_id)["certificateDescription"]["status"] == "ACTIVE"
    )
    assert {
        p["policyName"] for p in iot.list_attached_policies(target=device.certificate_arn)["policies"]
    } == {"device-agent-core"}
    group_arn = iot.describe_thing_group(thingGroupName=QUARANTINE)["thingGroupArn"]
    assert [p["policyName"] for p in iot.list_attached_policies(target=group_arn)["policies"]] == [
        "device-agent-quarantine"
    ]
    document = json.loads(iot.get_policy(policyName="device-agent-quarantine")["policyDocument"])
    assert (
        f"arn:aws:iot:{REGION}:{ACCOUNT}:client/${{iot:Connection.Thing.ThingName}}"
        in document["Statement"][0]["Resource"]
    )
    # The registry sees the certificate by the fingerprint the device will report.
    assert AwsIotRegistry(iot).describe("thermostat-1").certificate_fingerprints == {device.fingerprint}
    # Provisioning the same thing under another type is refused, not a silent change of its rules.
    csr = create_key_and_csr(tmp_path / "other.key", "thermostat-1")
    with pytest.raises(ProvisioningError, match="another thing type"):
        provision_aws(iot, thing="thermostat-1", thing_type="kiosk", csr_pem=csr, settings=SETTINGS)


def test_approval_moves_the_thing_and_publishes_and_audits(fleet: Any, tmp_path: Path):
    device = provision(tmp_path, "thermostat-1")
    report = make_report("thermostat-1", device.fingerprint)
    result = invoke(report, principal=device.fingerprint)
    assert result["outcome"] == "approved", result
    assert groups_of("thermostat-1") == {PRODUCTION}
    [verdict] = verdicts_for("thermostat-1")
    VERDICTS.validate(verdict)
    assert verdict["verdict"] == "approved"
    assert verdict["reportId"] == report["reportId"]
    assert verdict["factsHash"] == report["factsHash"]
    assert verdict["group"] == "production"
    assert verdict["demoted"] is False
    assert verdict["reverifyAfterSeconds"] == 86400
    [record] = audit_records()
    AUDITS.validate(record)
    assert record["verifier"] == "device-agent-verifier-test"
    assert record["decision"] == "approved"
    assert record["thing"] == "thermostat-1"
    assert record["thingType"] == "thermostat"
    assert record["rules"] == "thermostat"
    assert record["reportId"] == report["reportId"]
    assert record["factsHash"] == report["factsHash"]
    assert record["decisionId"] == verdict["decisionId"]
    assert record["groupsBefore"] == [QUARANTINE]
    assert record["groupsAfter"] == [PRODUCTION]
    assert "SN-0001" not in json.dumps(record)  # the serial is a fact, never part of the audit


def test_rejection_keeps_the_thing_in_quarantine(fleet: Any, tmp_path: Path):
    device = provision(tmp_path, "thermostat-2")
    report = make_report(
        "thermostat-2", device.fingerprint, change={"secureBoot": ok(False), "serial": ok("SN-9999")}
    )
    result = invoke(report)
    assert result["outcome"] == "rejected"
    assert groups_of("thermostat-2") == {QUARANTINE}
    [verdict] = verdicts_for("thermostat-2")
    VERDICTS.validate(verdict)
    assert verdict["failedRules"] == ["serial", "secureBoot"]
    assert verdict["group"] == "quarantine"
    assert "SN-9999" not in verdict["reason"]
    assert audit_records()[0]["failedRules"] == ["serial", "secureBoot"]


def test_fingerprint_mismatch_is_rejected(fleet: Any, tmp_path: Path):
    device = provision(tmp_path, "thermostat-3")
    other = provision(tmp_path, "thermostat-4")
    report = make_report("thermostat-3", other.fingerprint)  # claims a certificate that is not its own
    assert invoke(report)["failedRules"] == ["certificate"]
    assert groups_of("thermostat-3") == {QUARANTINE}
    # Right certificate in the report, but it came in on another connection's certificate.
    report = make_report("thermostat-3", device.fingerprint)
    result = invoke(report, principal=other.fingerprint)
    assert result["outcome"] == "rejected"
    assert result["failedRules"] == ["certificate.principal"]


@pytest.mark.parametrize(
    "principal",
    [None, "", "AIDAEXAMPLEUSERID:session", "f" * 63, 42],
    ids=["absent", "empty", "not a certificate", "short", "not a string"],
)
def test_a_report_without_its_connections_certificate_is_rejected_never_skipped(
    fleet: Any, tmp_path: Path, principal: Any
):
    """A genuine report copied and sent over a connection that is not a certificate (or by a rule without
    principal()) names the right fingerprint: only the principal check catches it, so it never skips."""
    device = provision(tmp_path, "thermostat-13")
    report = make_report("thermostat-13", device.fingerprint)
    event = {
        "payload": base64.b64encode(json.dumps(report).encode()).decode(),
        "topic": "dt/device-agent/thermostat-13/bootstrap",
    }
    if principal is not None:
        event["principal"] = principal
    result = handler_module.handler(event, None)
    assert result["outcome"] == "rejected"
    assert result["failedRules"] == ["certificate.principal.unavailable"]
    assert "principal()" in result["reason"]
    assert groups_of("thermostat-13") == {QUARANTINE}
    [verdict] = verdicts_for("thermostat-13")
    VERDICTS.validate(verdict)
    assert audit_records()[-1]["failedRules"] == ["certificate.principal.unavailable"]


def test_an_inactive_certificate_does_not_count(fleet: Any, tmp_path: Path):
    device = provision(tmp_path, "thermostat-5")
    iot = boto3.client("iot", region_name=REGION)
    iot.update_certificate(certificateId=str(device.certificate_arn).rsplit("/", 1)[1], newStatus="INACTIVE")
    result = invoke(make_report("thermostat-5", device.fingerprint))
    assert result["failedRules"] == ["certificate"]
    assert "no active certificate" in result["reason"]


def test_demotion_on_failed_reverification(fleet: Any, tmp_path: Path):
    device = provision(tmp_path, "thermostat-6")
    assert invoke(make_report("thermostat-6", device.fingerprint))["outcome"] == "approved"
    later = make_report("thermostat-6", device.fingerprint, change={"rootEncrypted": ok(False)})
    later["reason"] = "periodic"
    result = invoke(later)
    assert result["outcome"] == "rejected"
    assert groups_of("thermostat-6") == {QUARANTINE}
    verdict = verdicts_for("thermostat-6")[-1]
    VERDICTS.validate(verdict)
    assert verdict["demoted"] is True
    assert verdict["group"] == "quarantine"
    assert "demoted" in verdict["reason"]
    # Both records carry the same (pinned) time: pick the rejection by what it is, not by order.
    [rejection] = [r for r in audit_records() if r["decision"] == "rejected"]
    assert rejection["demoted"] is True
    assert rejection["groupsBefore"] == [PRODUCTION]


def test_pending_moves_nothing(fleet: Any, tmp_path: Path):
    device = provision(tmp_path, "kiosk-1", "kiosk")
    report = make_report(
        "kiosk-1", device.fingerprint, change={"architecture": ok("x86_64"), "rootEncrypted": unavailable()}
    )
    result = invoke(report)
    assert result["outcome"] == "pending"
    assert result["failedRules"] == ["rootEncryption.unavailable"]
    assert groups_of("kiosk-1") == {QUARANTINE}
    verdict = verdicts_for("kiosk-1")[-1]
    assert verdict["verdict"] == "pending"
    assert verdict["reverifyAfterSeconds"] == 3600


def test_the_same_report_twice_gives_the_same_decision_and_no_second_move(fleet: Any, tmp_path: Path):
    device = provision(tmp_path, "thermostat-7")
    report = make_report("thermostat-7", device.fingerprint)
    moves: list[str] = []
    registry = fleet.verifier.registry
    for name in ("add_to_group", "remove_from_group"):
        original = getattr(registry, name)

        def spy(thing: str, group: str, _original: Any = original, _name: str = name) -> None:
            moves.append(f"{_name}:{group}")
            _original(thing, group)

        setattr(registry, name, spy)
    first = invoke(report)
    second = invoke(report)
    assert first["verdict"]["decisionId"] == second["verdict"]["decisionId"]
    assert first["outcome"] == second["outcome"] == "approved"
    assert moves == [f"add_to_group:{PRODUCTION}", f"remove_from_group:{QUARANTINE}"]
    assert groups_of("thermostat-7") == {PRODUCTION}
    assert len(audit_records()) == 2  # each processing is recorded


@pytest.mark.parametrize(
    ("event", "words"),
    [
        (
            {"payload": base64.b64encode(b"{nope").decode(), "topic": "dt/device-agent/t/bootstrap"},
            "not valid JSON",
        ),
        ({"payload": "!!!", "topic": "dt/device-agent/t/bootstrap"}, "not valid JSON"),
        ({"payload": "A" * 200_000, "topic": "dt/device-agent/t/bootstrap"}, "larger than"),
        ({"payload": base64.b64encode(b'{"a":1,"a":2}').decode()}, "duplicate key"),
        ({"payload": base64.b64encode(b"[" * 10000).decode()}, "nests deeper"),
        ({"payload": base64.b64encode(b"{}").decode(), "topic": "dt/device-agent/a/b/bootstrap"}, "topic"),
        ([], "not valid JSON"),
    ],
    ids=["bad-json", "bad-base64", "oversized", "duplicate-key", "deep", "bad-topic", "not-an-object"],
)
def test_malformed_events_are_refused_audited_and_get_no_verdict(fleet: Any, event: Any, words: str):
    result = handler_module.handler(event, None)
    assert result["outcome"] == "refused"
    assert words in result["reason"]
    assert result["verdict"] is None
    assert published() == []
    [record] = audit_records()
    AUDITS.validate(record)
    assert record["decision"] == "refused"


def test_topic_and_body_disagreeing_is_refused(fleet: Any, tmp_path: Path):
    device = provision(tmp_path, "thermostat-8")
    provision(tmp_path, "thermostat-9")
    result = invoke(make_report("thermostat-8", device.fingerprint), topic_thing="thermostat-9")
    assert result["outcome"] == "refused"
    assert "thing: does not match" in result["reason"]
    assert groups_of("thermostat-8") == {QUARANTINE}
    assert published() == []


def test_an_unknown_thing_is_refused(fleet: Any):
    result = invoke(make_report("ghost", "0" * 64))
    assert result["outcome"] == "refused"
    assert "not in the registry" in result["reason"]
    assert audit_records()[0]["thing"] == "ghost"


def test_audit_records_cannot_be_overwritten(aws: None):
    dynamodb = boto3.client("dynamodb", region_name=REGION)
    dynamodb.create_table(
        TableName=TABLE,
        KeySchema=[{"AttributeName": "recordId", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "recordId", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    record = AuditRecord(
        record_id="a" * 32,
        time=NOW,
        verifier="v",
        decision="refused",
        thing=None,
        thing_type=None,
        rules=None,
        report_id=None,
        facts_hash=None,
        decision_id=None,
        failed_rules=(),
        reason="r",
        demoted=False,
        groups_before=(),
        groups_after=(),
    )
    sink = DynamoDbAuditLog(dynamodb, TABLE)
    sink.append(record)
    with pytest.raises(AuditError, match="ConditionalCheckFailed"):
        sink.append(record)


def test_a_verifier_without_its_audit_table_moves_nothing(aws: None, tmp_path: Path):
    device = provision(tmp_path, "thermostat-10")
    verifier = Verifier(
        policy=parse_policy(POLICY),
        registry=AwsIotRegistry(boto3.client("iot", region_name=REGION)),
        audit=DynamoDbAuditLog(boto3.client("dynamodb", region_name=REGION), "missing-table"),
        groups=Groups(),
        clock=lambda: NOW,
    )
    with pytest.raises(AuditError):
        verifier.handle(json.dumps(make_report("thermostat-10", device.fingerprint)).encode())
    assert groups_of("thermostat-10") == {QUARANTINE}


def test_an_old_report_is_rejected(fleet: Any, tmp_path: Path):
    device = provision(tmp_path, "thermostat-11")
    old = make_report("thermostat-11", device.fingerprint, time=NOW - dt.timedelta(hours=2))
    future = make_report("thermostat-11", device.fingerprint, time=NOW + dt.timedelta(hours=2))
    assert invoke(old)["failedRules"] == ["reportAge"]
    assert invoke(future)["failedRules"] == ["clockSkew"]


def test_provisioning_again_adds_a_certificate_and_duplicates_nothing(fleet: Any, tmp_path: Path):
    first = provision(tmp_path, "thermostat-12")
    csr = create_key_and_csr(tmp_path / "second.key", "thermostat-12")
    iot = boto3.client("iot", region_name=REGION)
    second = provision_aws(
        iot, thing="thermostat-12", thing_type="thermostat", csr_pem=csr, settings=SETTINGS
    )
    assert groups_of("thermostat-12") == {QUARANTINE}
    assert AwsIotRegistry(iot).describe("thermostat-12").certificate_fingerprints == {
        first.fingerprint,
        second.fingerprint,
    }
    assert (
        len([p for p in iot.list_policies()["policies"] if p["policyName"].startswith("device-agent-")]) == 3
    )
    assert len(iot.list_thing_groups()["thingGroups"]) == 2
    # A report naming either certificate passes the certificate rule.
    assert invoke(make_report("thermostat-12", second.fingerprint))["outcome"] == "approved"


def test_a_csr_for_another_thing_is_refused(aws: None, tmp_path: Path):
    csr = create_key_and_csr(tmp_path / "k", "thermostat-13")
    with pytest.raises(ProvisioningError, match="common name"):
        provision_aws(
            boto3.client("iot", region_name=REGION),
            thing="thermostat-14",
            thing_type="t",
            csr_pem=csr,
            settings=SETTINGS,
        )
    assert boto3.client("iot", region_name=REGION).list_things()["things"] == []
