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


def test_a_bare_star_resource_covers_every_use_and_is_refused_as_a_wildcard():
    # `*` covers every use, so it is neither "not granted" nor "never used" (the recipe lint refuses it too).
    component, uses, access = telemetry()
    access[MQTT][f"{TELEMETRY}:mqttproxy:1"]["resources"] = ["*"]
    [finding] = check(component.name, uses, access)
    assert (finding.kind, finding.resource) == ("wildcard", "*")


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


def test_over_broad_wildcards_that_cover_every_use_are_still_refused():
    # Both cover what the publisher uses, so neither is "not granted" nor "never used"; but `device-agent/*`
    # would also let it publish to device-agent/store/_admin/request (the whole-store wipe), and the IoT one
    # every topic under the device's prefix.
    component, uses, access = telemetry()
    access[PUBSUB][f"{TELEMETRY}:pubsub:3"]["resources"] = ["device-agent/*"]
    access[MQTT][f"{TELEMETRY}:mqttproxy:1"]["resources"] = ["dt/device-agent/{iot:thingName}/*"]
    findings = check(component.name, uses, access)
    assert {(f.kind, f.destination, f.operation, f.resource) for f in findings} == {
        ("wildcard", PUBSUB, PUBLISH, "device-agent/*"),
        ("wildcard", MQTT, "aws.greengrass#PublishToIoTCore", "dt/device-agent/{iot:thingName}/*"),
    }
    assert all("allow-list it with a reason" in str(f) for f in findings)


def test_a_wildcard_passes_with_a_written_reason_and_not_with_an_empty_one():
    component, uses, access = telemetry()
    access[PUBSUB][f"{TELEMETRY}:pubsub:3"]["resources"] = ["device-agent/*"]
    assert check(component.name, uses, access, wildcards={"device-agent/*": "a reason"}) == []
    [finding] = check(component.name, uses, access, wildcards={"device-agent/*": " "})
    assert (finding.kind, finding.resource) == ("wildcard", "device-agent/*")


def test_a_star_the_code_names_exactly_and_an_escaped_star_are_not_patterns():
    component, uses, access = telemetry()
    # A subscription whose filter is literally `device-agent/a*` needs exactly that resource.
    literal = Use(PUBSUB, SUBSCRIBE, "device-agent/a*", "fixture")
    access[PUBSUB][f"{TELEMETRY}:pubsub:2"]["resources"].append("device-agent/a*")
    assert check(component.name, [*uses, literal], access) == []
    # `${*}` is the nucleus's escape for a literal star: a plain topic, granted only as itself.
    escaped = Use(PUBSUB, PUBLISH, "device-agent/a*b", "fixture")
    access[PUBSUB][f"{TELEMETRY}:pubsub:3"]["resources"].append("device-agent/a${*}b")
    assert check(component.name, [*uses, literal, escaped], access) == []
