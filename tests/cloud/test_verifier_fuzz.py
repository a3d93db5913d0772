"""The verifier with fakes: arbitrary bytes never get past the parser, and the publisher's call is right."""

from __future__ import annotations

import json
from typing import Any

import boto3
import jsonschema
import pytest
from botocore.stub import Stubber
from hypothesis import given, settings
from hypothesis import strategies as st

from device_agent_cloud.audit import AuditRecord
from device_agent_cloud.errors import PublishError, ThingNotFoundError
from device_agent_cloud.policy import parse_policy
from device_agent_cloud.registry import ThingRecord
from device_agent_cloud.verdicts import IotDataPublisher
from device_agent_cloud.verify import Verifier
from tests.cloud.support import NOW, POLICY, VERDICT_SCHEMA, make_report

FINGERPRINT = "c" * 64


class FakeRegistry:
    def __init__(self) -> None:
        self.things = {
            "t1": ThingRecord(
                name="t1",
                thing_type=None,
                certificate_fingerprints=frozenset({FINGERPRINT}),
                groups=frozenset({"device-agent-quarantine"}),
            )
        }
        self.moves: list[tuple[str, str, str]] = []

    def describe(self, thing: str) -> ThingRecord:
        if thing not in self.things:
            raise ThingNotFoundError(thing)
        return self.things[thing]

    def add_to_group(self, thing: str, group: str) -> None:
        self.moves.append(("add", thing, group))

    def remove_from_group(self, thing: str, group: str) -> None:
        self.moves.append(("remove", thing, group))


class ListAudit:
    def __init__(self) -> None:
        self.records: list[AuditRecord] = []

    def append(self, record: AuditRecord) -> None:
        self.records.append(record)


def verifier() -> tuple[Verifier, FakeRegistry, ListAudit]:
    registry, audit = FakeRegistry(), ListAudit()
    return (
        Verifier(policy=parse_policy(POLICY), registry=registry, audit=audit, clock=lambda: NOW),
        registry,
        audit,
    )


@settings(max_examples=400, deadline=None)
@given(payload=st.binary(max_size=512) | st.text(max_size=300).map(str.encode))
def test_arbitrary_bytes_are_refused_and_move_nothing(payload: bytes):
    subject, registry, audit = verifier()
    decision = subject.handle(payload, topic="dt/device-agent/t1/bootstrap")
    assert decision.outcome == "refused"
    assert decision.verdict is None
    assert registry.moves == []
    assert [r.decision for r in audit.records] == ["refused"]


@settings(max_examples=200, deadline=None)
@given(cut=st.integers(min_value=0, max_value=4000), flip=st.integers(min_value=0, max_value=255))
def test_a_damaged_valid_report_is_refused_or_judged_never_crashes(cut: int, flip: int):
    subject, _, _ = verifier()
    original = make_report("t1", FINGERPRINT, report_id="1" * 32)
    data = bytearray(json.dumps(original).encode())
    data[cut % len(data)] ^= flip
    decision = subject.handle(bytes(data), topic="dt/device-agent/t1/bootstrap", principal=FINGERPRINT)
    if flip == 0:
        assert decision.outcome == "approved"
    if decision.outcome != "refused":
        # What the hash covers cannot have changed: only whitespace, the uptime, or fields outside `facts`.
        damaged = json.loads(bytes(data))["facts"]
        damaged.pop("uptimeSeconds", None)
        intact = dict(original["facts"])
        intact.pop("uptimeSeconds")
        assert damaged == intact


def test_the_verdict_is_published_qos1_retained_and_schema_valid(aws: None):
    subject, _, _ = verifier()
    decision = subject.handle(json.dumps(make_report("t1", FINGERPRINT)).encode())
    assert decision.verdict is not None
    client = boto3.client(
        "iot-data", region_name="eu-west-1", aws_access_key_id="x", aws_secret_access_key="x"
    )
    with Stubber(client) as stub:
        stub.add_response(
            "publish",
            {},
            {
                "topic": "cmd/device-agent/t1/verdict",
                "qos": 1,
                "retain": True,
                "payload": decision.verdict.to_payload(),
            },
        )
        IotDataPublisher(client).publish(decision.verdict)
        stub.assert_no_pending_responses()
    jsonschema.validate(json.loads(decision.verdict.to_payload()), json.loads(VERDICT_SCHEMA.read_text()))
    with Stubber(client) as stub:
        stub.add_client_error("publish", service_error_code="ThrottlingException", http_status_code=429)
        with pytest.raises(PublishError, match="ThrottlingException"):
            IotDataPublisher(client).publish(decision.verdict)


def test_the_decision_summary_carries_no_facts():
    subject, _, _ = verifier()
    report = make_report("t1", FINGERPRINT)
    summary: dict[str, Any] = subject.handle(json.dumps(report).encode()).to_json()
    text = json.dumps(summary)
    assert "SN-0001" not in text
    assert "Thermo 3000" not in text
    assert FINGERPRINT not in text
