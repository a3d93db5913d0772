"""The least-privilege check seen to fail: recipes that grant too much and too little, each finding named."""

from __future__ import annotations

import copy
from typing import Any

from tests.privilege.code_uses import RECIPES, ComponentSource, load_component
from tests.privilege.proof import Use, check
from tests.privilege.test_least_privilege import component_uses

PUBSUB, MQTT = "aws.greengrass.ipc.pubsub", "aws.greengrass.ipc.mqttproxy"
PUBLISH, SUBSCRIBE = "aws.greengrass#PublishToTopic", "aws.greengrass#SubscribeToTopic"
TELEMETRY = "com.deviceagent.TelemetryPublisher"


def telemetry() -> tuple[ComponentSource, list[Use], dict[str, Any]]:
    component = load_component(RECIPES / f"{TELEMETRY}.yaml")
    return component, component_uses(component), copy.deepcopy(dict(component.access_control))


def test_the_shipped_recipe_passes_so_each_finding_below_is_the_mutation_alone():
    component, uses, access = telemetry()
    assert check(component.name, uses, access) == []


def test_an_extra_topic_is_granted_but_never_used():
    component, uses, access = telemetry()
    access[PUBSUB][f"{TELEMETRY}:pubsub:3"]["resources"].append("device-agent/debug")
    [finding] = check(component.name, uses, access)
    assert (finding.kind, finding.operation, finding.resource) == (
        "never used",
        PUBLISH,
        "device-agent/debug",
    )
    assert "device-agent/debug" in str(finding)


def test_a_star_operation_grants_operations_never_used():
    component, uses, access = telemetry()
    access[PUBSUB][f"{TELEMETRY}:pubsub:3"]["operations"] = ["*"]
    findings = check(component.name, uses, access)
    # The policy's publish resources were never subscribed to: each is a finding naming the `*` policy.
    assert {(f.kind, f.operation) for f in findings} == {("never used", SUBSCRIBE)}
    assert {f.resource for f in findings} == {
        "device-agent/metrics",
        f"device-agent/heartbeat/{TELEMETRY}",
        "device-agent/events",
    }
    assert all(f"{TELEMETRY}:pubsub:3 (*)" in str(f) for f in findings)


def test_a_bare_star_resource_is_used_but_hides_nothing_from_the_lint():
    # `*` covers every use, so the proof alone passes it: the recipe lint refuses a bare `*`.
    component, uses, access = telemetry()
    access[MQTT][f"{TELEMETRY}:mqttproxy:1"]["resources"] = ["*"]
    assert check(component.name, uses, access) == []


def test_a_missing_topic_is_used_but_not_granted():
    component, uses, access = telemetry()
    access[PUBSUB][f"{TELEMETRY}:pubsub:3"]["resources"].remove("device-agent/metrics")
    [finding] = check(component.name, uses, access)
    assert (finding.kind, finding.operation, finding.resource) == (
        "not granted",
        PUBLISH,
        "device-agent/metrics",
    )
    assert "telemetry_publisher/component.py" in finding.where


def test_a_missing_iot_core_grant_names_the_operation_and_the_thing_pinned_topic():
    component, uses, access = telemetry()
    del access[MQTT]
    [finding] = check(component.name, uses, access)
    assert finding.kind == "not granted"
    assert finding.operation == "aws.greengrass#PublishToIoTCore"
    assert finding.resource == "dt/device-agent/{iot:thingName}/telemetry"


def test_a_literal_plus_does_not_grant_what_it_seems_to():
    # The classic mistake: `+` is literal in pub/sub policies, so this grants no namespace's request topic.
    component, uses, access = telemetry()
    access[PUBSUB][f"{TELEMETRY}:pubsub:1"]["resources"] = ["device-agent/store/+/request"]
    findings = check(component.name, uses, access)
    assert {(f.kind, f.resource) for f in findings} == {
        ("not granted", "device-agent/store/telemetry/request"),
        ("not granted", "device-agent/store/telemetry-spool/request"),
        ("never used", "device-agent/store/+/request"),
    }
