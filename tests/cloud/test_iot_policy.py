"""The IoT policy templates: valid grammar, pinned to the thing, and a lint that is seen to fail."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from device_agent_cloud.iot_policy import KINDS, TEMPLATES, THING_VARIABLE, lint_policy, load_rendered, render

REGION, ACCOUNT = "eu-west-1", "123456789012"
ARN = f"arn:aws:iot:{REGION}:{ACCOUNT}"
T = THING_VARIABLE


def lint(document: Any, kind: str = "group") -> list[str]:
    return lint_policy(document, kind=kind, region=REGION, account=ACCOUNT)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", TEMPLATES)
def test_every_template_renders_and_is_clean(name: str):
    document = load_rendered(name, region=REGION, account=ACCOUNT, role_alias="MyAlias")
    assert lint(document, KINDS[name]) == []
    text = render(name, region=REGION, account=ACCOUNT)
    assert "{{" not in text


def test_quarantine_grants_only_the_report_and_the_verdict_of_the_suite():
    document = load_rendered("quarantine", region=REGION, account=ACCOUNT)
    suite = {
        (action, resource)
        for statement in document["Statement"]
        for action in [statement["Action"]]
        for resource in statement["Resource"]
        if "device-agent" in resource
    }
    assert suite == {
        ("iot:Publish", f"{ARN}:topic/dt/device-agent/{T}/bootstrap"),
        ("iot:Subscribe", f"{ARN}:topicfilter/cmd/device-agent/{T}/verdict"),
        ("iot:Receive", f"{ARN}:topic/cmd/device-agent/{T}/verdict"),
    }
    production = json.dumps(load_rendered("production", region=REGION, account=ACCOUNT))
    for topic in ("telemetry", "health", "bootstrap"):
        assert f"topic/dt/device-agent/{T}/{topic}" in production
    assert "telemetry" not in json.dumps(document)


def test_the_core_certificate_policy_holds_the_greengrass_actions():
    document = load_rendered("core-certificate", region=REGION, account=ACCOUNT, role_alias="MyAlias")
    actions = {
        a
        for s in document["Statement"]
        for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])
    }
    assert actions == {
        "greengrass:GetComponentVersionArtifact",
        "greengrass:ResolveComponentCandidates",
        "greengrass:GetDeploymentConfiguration",
        "greengrass:ListThingGroupsForCoreDevice",
        "iot:AssumeRoleWithCertificate",
    }
    assert f"{ARN}:rolealias/MyAlias" in json.dumps(document)


def test_render_refuses_values_that_would_break_an_arn():
    with pytest.raises(ValueError, match="region"):
        render("quarantine", region="eu-west-1:*", account=ACCOUNT)
    with pytest.raises(ValueError, match="account"):
        render("quarantine", region=REGION, account="*")
    with pytest.raises(ValueError, match="role alias"):
        render("core-certificate", region=REGION, account=ACCOUNT, role_alias="a/*")
    with pytest.raises(ValueError, match="unknown"):
        render("everything", region=REGION, account=ACCOUNT)


def _policy(*statements: dict[str, Any]) -> dict[str, Any]:
    return {"Version": "2012-10-17", "Statement": list(statements)}


def _allow(action: Any, resource: Any) -> dict[str, Any]:
    return {"Effect": "Allow", "Action": action, "Resource": resource}


BAD = [
    ("star-action", _policy(_allow("*", f"{ARN}:topic/x/{T}")), "wildcard"),
    ("iot-star", _policy(_allow("iot:*", f"{ARN}:topic/x/{T}")), "wildcard"),
    ("star-resource", _policy(_allow("iot:Publish", "*")), "resource '*'"),
    ("any-client", _policy(_allow("iot:Connect", f"{ARN}:client/*")), "not pinned"),
    ("client-prefix", _policy(_allow("iot:Connect", f"{ARN}:client/*{T}")), "wildcard before"),
    ("client-id", _policy(_allow("iot:Connect", f"{ARN}:client/${{iot:ClientId}}")), "not pinned"),
    (
        "other-things",
        _policy(_allow("iot:Publish", f"{ARN}:topic/dt/device-agent/*/bootstrap")),
        "not pinned",
    ),
    ("half-level", _policy(_allow("iot:Publish", f"{ARN}:topic/dt/x{T}/bootstrap")), "whole level"),
    ("mqtt-wildcard", _policy(_allow("iot:Publish", f"{ARN}:topic/dt/{T}/#")), "MQTT wildcard"),
    ("wrong-type", _policy(_allow("iot:Subscribe", f"{ARN}:topic/cmd/{T}/verdict")), "not a topicfilter"),
    (
        "other-account",
        _policy(_allow("iot:Publish", f"arn:aws:iot:{REGION}:999999999999:topic/{T}")),
        "not a topic",
    ),
    ("greengrass-in-group", _policy(_allow("greengrass:ResolveComponentCandidates", "*")), "no effect"),
    (
        "not-action",
        _policy({"Effect": "Allow", "NotAction": "iot:Connect", "Resource": "*", "Action": "iot:Connect"}),
        "NotAction",
    ),
    (
        "deny-wildcard",
        _policy({"Effect": "Deny", "Action": "iot:Publish", "Resource": f"{ARN}:topic/{T}/+"}),
        "literally",
    ),
    ("bad-effect", _policy(_allow("iot:Publish", f"{ARN}:topic/{T}") | {"Effect": "Maybe"}), "Effect"),
    ("no-resource", _policy({"Effect": "Allow", "Action": "iot:Publish"}), "Resource"),
    ("foreign-action", _policy(_allow("s3:GetObject", f"{ARN}:topic/{T}")), "not an AWS IoT"),
    ("old-version", {"Version": "2008-10-17", "Statement": []}, "Version"),
    ("no-statements", {"Version": "2012-10-17", "Statement": []}, "non-empty"),
]


@pytest.mark.parametrize(("name", "document", "words"), BAD, ids=[b[0] for b in BAD])
def test_the_lint_fails_on_a_bad_policy(name: str, document: dict[str, Any], words: str):
    problems = lint(document)
    assert problems, name
    assert any(words in problem for problem in problems), problems


def test_the_lint_catches_a_broadened_template():
    document = load_rendered("quarantine", region=REGION, account=ACCOUNT)
    broadened = copy.deepcopy(document)
    broadened["Statement"][1]["Resource"].append(f"{ARN}:topic/dt/device-agent/+/bootstrap")
    assert any("not pinned" in p for p in lint(broadened))
    core = load_rendered("core-certificate", region=REGION, account=ACCOUNT)
    core["Statement"][0]["Action"].append("greengrass:PutCertificateAuthorities")
    assert any("not an action a core device needs" in p for p in lint(core, "certificate"))
