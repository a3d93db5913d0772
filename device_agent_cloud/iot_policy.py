"""The IoT policy templates (data files in `iot_policies/`), rendered for an account, and their lint.

Three templates (docs/verifier.md explains each statement):

- `quarantine.json`, a thing group policy: connect as its own thing, publish its bootstrap report, receive
  its verdict, and the MQTT topics Greengrass needs for deployments and health;
- `production.json`, a thing group policy: the same, plus the suite's telemetry and health topics;
- `core-certificate.json`, attached to every device certificate: the Greengrass data-plane actions (AWS
  evaluates those only in policies attached to the certificate, never in thing group policies, and does not
  resolve thing policy variables for them) and the token exchange role alias.

Placeholders are `{{region}}`, `{{account}}` and `{{roleAlias}}`; `${iot:...}` variables are AWS IoT's own
and stay as they are. Thing policy variables resolve for every client id only when the certificate is
attached to its thing exclusively (`EXCLUSIVE_THING`), which provisioning does.

The lint (`lint_policy`) refuses: a wildcard in any action; NotAction, NotResource or a Deny with MQTT
wildcards (AWS reads them literally there); any IoT data-plane resource that is not of the action's
resource type, not in the rendered account, or not pinned to `${iot:Connection.Thing.ThingName}` before
any `*`; Greengrass actions in a group policy; a `*` resource on anything but the four read-only Greengrass
core actions.
"""

from __future__ import annotations

import json
import re
from importlib import resources
from typing import Any, Final, Literal

TEMPLATES: Final = ("quarantine", "production", "core-certificate")
THING_VARIABLE: Final = "${iot:Connection.Thing.ThingName}"
PolicyKind = Literal["group", "certificate"]
KINDS: Final[dict[str, PolicyKind]] = {
    "quarantine": "group",
    "production": "group",
    "core-certificate": "certificate",
}

# The IoT data-plane actions and the resource type each is evaluated against.
DATA_PLANE: Final = {
    "iot:Connect": "client",
    "iot:Publish": "topic",
    "iot:Receive": "topic",
    "iot:RetainPublish": "topic",
    "iot:Subscribe": "topicfilter",
    "iot:GetRetainedMessage": "topic",
    "iot:GetThingShadow": "thing",
    "iot:UpdateThingShadow": "thing",
    "iot:DeleteThingShadow": "thing",
}
# Read-only deployment lookups of a Greengrass core; AWS offers no per-device resource for them.
GREENGRASS_CORE: Final = frozenset(
    {
        "greengrass:GetComponentVersionArtifact",
        "greengrass:ResolveComponentCandidates",
        "greengrass:GetDeploymentConfiguration",
        "greengrass:ListThingGroupsForCoreDevice",
    }
)
_STATEMENT_KEYS: Final = frozenset({"Sid", "Effect", "Action", "Resource", "Condition"})
_PLACEHOLDER = re.compile(r"\{\{(region|account|roleAlias)\}\}")
_REGION = re.compile(r"[a-z]{2}(-[a-z]+)+-\d")
_ACCOUNT = re.compile(r"\d{12}")
_ROLE_ALIAS = re.compile(r"[\w=,@-]{1,128}")


def template_text(name: str) -> str:
    if name not in TEMPLATES:
        raise ValueError(f"unknown IoT policy template {name!r}: one of {', '.join(TEMPLATES)}")
    return resources.files("device_agent_cloud").joinpath("iot_policies", f"{name}.json").read_text("utf-8")


def render(
    name: str, *, region: str, account: str, role_alias: str = "GreengrassV2TokenExchangeRoleAlias"
) -> str:
    """The template with the placeholders filled in (values are checked: they end up inside ARNs)."""
    if not _REGION.fullmatch(region):
        raise ValueError("region must look like eu-west-1")
    if not _ACCOUNT.fullmatch(account):
        raise ValueError("account must be 12 digits")
    if not _ROLE_ALIAS.fullmatch(role_alias):
        raise ValueError("role alias must be 1-128 of letters, digits and =,@_-")
    values = {"region": region, "account": account, "roleAlias": role_alias}
    return _PLACEHOLDER.sub(lambda match: values[match.group(1)], template_text(name))


def lint_policy(document: Any, *, kind: PolicyKind, region: str, account: str) -> list[str]:
    """Every problem found in a rendered policy document, as `Statement[i]: what`; empty when clean."""
    problems: list[str] = []
    if not isinstance(document, dict) or document.get("Version") != "2012-10-17":
        return ["the policy must be an object with Version 2012-10-17"]
    if set(document) - {"Version", "Statement"}:
        problems.append("the policy has keys other than Version and Statement")
    statements = document.get("Statement")
    if not isinstance(statements, list) or not statements:
        return [*problems, "Statement must be a non-empty list"]
    for index, statement in enumerate(statements):
        problems += [f"Statement[{index}]: {p}" for p in _lint_statement(statement, kind, region, account)]
    return problems


def _strings(value: Any) -> list[str] | None:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value and all(isinstance(item, str) for item in value):
        return value
    return None


def _lint_statement(statement: Any, kind: PolicyKind, region: str, account: str) -> list[str]:
    if not isinstance(statement, dict):
        return ["is not an object"]
    problems = [f"{key} is not allowed" for key in sorted(set(statement) - _STATEMENT_KEYS)]
    effect = statement.get("Effect")
    if effect not in {"Allow", "Deny"}:
        problems.append("Effect must be Allow or Deny")
    actions = _strings(statement.get("Action"))
    resources_ = _strings(statement.get("Resource"))
    if actions is None:
        return [*problems, "Action must be a string or a non-empty list of strings"]
    if resources_ is None:
        return [*problems, "Resource must be a string or a non-empty list of strings"]
    for action in actions:
        if "*" in action or "?" in action:
            problems.append(f"action {action!r} has a wildcard")
        elif action.startswith("greengrass:") and kind == "group":
            problems.append(f"{action} has no effect in a thing group policy (attach it to the certificate)")
        elif action.startswith("greengrass:") and action not in GREENGRASS_CORE:
            problems.append(f"{action} is not an action a core device needs")
        elif not action.startswith(("iot:", "greengrass:")):
            problems.append(f"action {action!r} is not an AWS IoT or Greengrass action")
    if effect == "Deny" and any(ch in resource for resource in resources_ for ch in "+#"):
        problems.append("a Deny with + or # is read literally by AWS IoT")
    for resource in resources_:
        problems += _lint_resource(resource, actions, region, account)
    return problems


def _lint_resource(resource: str, actions: list[str], region: str, account: str) -> list[str]:
    problems = []
    if resource == "*":
        broad = sorted(set(actions) - GREENGRASS_CORE)
        if broad:
            problems.append(f"resource '*' for {', '.join(broad)}")
        return problems
    for action in actions:
        resource_type = DATA_PLANE.get(action)
        if resource_type is None:
            continue
        prefix = f"arn:aws:iot:{region}:{account}:{resource_type}/"
        if not resource.startswith(prefix):
            problems.append(
                f"{action} resource {resource!r} is not a {resource_type} ARN in {region}/{account}"
            )
            continue
        rest = resource[len(prefix) :]
        star = rest.find("*")
        pinned = rest.find(THING_VARIABLE)
        if pinned < 0:
            problems.append(f"{action} resource {resource!r} is not pinned to {THING_VARIABLE}")
        elif 0 <= star < pinned:
            problems.append(f"{action} resource {resource!r} has a wildcard before the thing name")
        elif resource_type in {"topic", "topicfilter"} and not _segment(rest, pinned):
            problems.append(f"{action} resource {resource!r} does not hold the thing name as a whole level")
        if resource_type == "topic" and ("+" in rest or "#" in rest):
            problems.append(
                f"{action} resource {resource!r} has an MQTT wildcard (read literally in a topic)"
            )
    return problems


def _segment(rest: str, at: int) -> bool:
    """Whether the thing variable at `at` fills a whole topic level (`a/<thing>/b`, not `a/x<thing>`)."""
    end = at + len(THING_VARIABLE)
    before_ok = at == 0 or rest[at - 1] == "/"
    after_ok = end == len(rest) or rest[end] == "/"
    return before_ok and after_ok


def load_rendered(
    name: str, *, region: str, account: str, role_alias: str = "GreengrassV2TokenExchangeRoleAlias"
) -> Any:
    return json.loads(render(name, region=region, account=account, role_alias=role_alias))
