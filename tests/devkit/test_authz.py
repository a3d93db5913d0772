"""Authorization: the nucleus's policy parsing, lookup order and resource matching.

The resource matcher is checked against `JavaWildcardTrie`, a line-by-line port of the nucleus's
`authorization/WildcardTrie.java`, on single resources. The places where that trie's answer depends on its own
layout (documented in `device_agent.devkit.authz`) are pinned by their own tests.
"""

from __future__ import annotations

import json
import logging
import re

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from device_agent.devkit.authz import (
    CLI,
    LIFECYCLE,
    MQTT_PROXY,
    PUBSUB,
    SECRET_MANAGER,
    TES_GET_CREDENTIALS,
    TOKEN_EXCHANGE,
    Authorizer,
    ResourceLookupPolicy,
    resource_matches,
    resource_regex,
    validate_resource,
)
from device_agent.devkit.errors import PolicyError

STANDARD = ResourceLookupPolicy.STANDARD
MQTT_STYLE = ResourceLookupPolicy.MQTT_STYLE
PUBLISH = "aws.greengrass#PublishToTopic"
SUBSCRIBE = "aws.greengrass#SubscribeToTopic"
IOT_PUBLISH = "aws.greengrass#PublishToIoTCore"
IOT_SUBSCRIBE = "aws.greengrass#SubscribeToIoTCore"
RESTART = "aws.greengrass#RestartComponent"
CANCEL_LOCAL_DEPLOYMENT = "aws.greengrass#CancelLocalDeployment"
GET_SECRET = "aws.greengrass#GetSecretValue"
PAUSE = "aws.greengrass#PauseComponent"


# ---- an oracle: the nucleus's WildcardTrie, ported --------------------------------------------------------


def java_actual_char(text: str) -> str | None:
    if len(text) < 4:
        return None
    if text[0] == "$" and text[1] == "{" and text[3] == "}":
        return text[2]
    return None


class JavaWildcardTrie:
    def __init__(self) -> None:
        self.is_terminal = False
        self.is_terminal_level = False
        self.is_wildcard = False
        self.is_mqtt_wildcard = False
        self.match_all = False
        self.children: dict[str, JavaWildcardTrie] = {}

    def _child(self, key: str) -> JavaWildcardTrie:
        return self.children.setdefault(key, JavaWildcardTrie())

    def add(self, subject: str) -> None:
        if subject == "*":
            node = self._child("*")
            node.match_all = node.is_terminal = node.is_wildcard = True
            return
        if subject == "#":
            node = self._child("#")
            node.match_all = node.is_terminal = node.is_mqtt_wildcard = True
            return
        if subject == "+":
            node = self._child("+")
            node.is_terminal = node.is_mqtt_wildcard = True
            return
        if subject.startswith("+/"):
            node = self._child("+")
            node.is_mqtt_wildcard = True
            node._add(subject[1:], is_terminal=True)
        self._add(subject, is_terminal=True)

    def _add(self, subject: str, *, is_terminal: bool) -> JavaWildcardTrie:
        if not subject:
            self.is_terminal |= is_terminal
            return self
        n = len(subject)
        current = self
        sb: list[str] = []
        i = 0
        while i < n:
            c = subject[i]
            if c == "*":
                current = current._add("".join(sb), is_terminal=False)
                current = current._child("*")
                current.is_wildcard = True
                if i == n - 1:
                    current.is_terminal = is_terminal
                    return current
                return current._add(subject[i + 1 :], is_terminal=True)
            if c == "#":
                terminal_level = current._add("".join(sb), is_terminal=False)
                current = terminal_level._child("#")
                if i == n - 1:
                    current.is_terminal = True
                    if i > 0 and subject[i - 1] == "/":
                        current.is_mqtt_wildcard = True
                        current.match_all = True
                        terminal_level.is_terminal_level = True
                    return current
                return current._add(subject[i + 1 :], is_terminal=True)
            if c == "+":
                current = current._add("".join(sb), is_terminal=False)
                current = current._child("+")
                if i == n - 1:
                    current.is_terminal = True
                    if i > 0 and subject[i - 1] == "/":
                        current.is_mqtt_wildcard = True
                    return current
                if i > 0 and subject[i - 1] == "/" and subject[i + 1] == "/":
                    current.is_mqtt_wildcard = True
                return current._add(subject[i + 1 :], is_terminal=True)
            if c == "$":
                actual = java_actual_char(subject[i:])
                if actual is not None:
                    sb.append(actual)
                    i += 4
                    continue
            sb.append(c)
            i += 1
        current = current._child("".join(sb))
        current.is_terminal |= is_terminal
        return current

    def matches_standard(self, s: str | None) -> bool:
        if s is None:
            return True
        if (self.is_wildcard and self.is_terminal) or (self.is_terminal and not s):
            return True
        matching: dict[str, JavaWildcardTrie] = {}
        for key, value in self.children.items():
            if value.is_wildcard and key == "*":
                if value.matches_standard(s):
                    return True
                continue
            if s.startswith(key) and value.matches_standard(s[len(key) :]):
                return True
            if self.is_wildcard:
                found = s.find(key)
                while found >= 0:
                    matching[s[found + len(key) :]] = value
                    found = s.find(key, found + 1)
        if self.is_wildcard and matching:
            return any(v.matches_standard(k) for k, v in matching.items())
        return False

    def matches_mqtt(self, s: str | None) -> bool:
        if s is None:
            return True
        if (self.is_wildcard and self.is_terminal) or (self.is_terminal and not s):
            return True
        if self.is_mqtt_wildcard and (self.match_all or (self.is_terminal and "/" not in s)):
            return True
        matching: dict[str, JavaWildcardTrie] = {}
        for key, value in self.children.items():
            if (value.is_wildcard and key == "*") or (value.is_mqtt_wildcard and key in ("+", "#")):
                if value.matches_mqtt(s):
                    return True
                continue
            if s.startswith(key) and value.matches_mqtt(s[len(key) :]):
                return True
            chomp = key
            terminal_key = key[:-1]
            if value.is_terminal_level:
                if s == terminal_key:
                    return True
                if s.endswith(terminal_key):
                    chomp = terminal_key
            if self.is_wildcard:
                found = s.find(chomp)
                while 0 <= found < len(s):
                    matching[s[found + len(chomp) :]] = value
                    found = s.find(chomp, found + 1)
            if self.is_mqtt_wildcard:
                found = s.find(chomp)
                while 0 <= found < len(s) and "/" not in s[:found]:
                    matching[s[found + len(chomp) :]] = value
                    found = s.find(chomp, found + 1)
        if (self.is_wildcard or self.is_mqtt_wildcard) and matching:
            return any(v.matches_mqtt(k) for k, v in matching.items())
        return False


def java_matches(resources: list[str], resource: str, lookup: ResourceLookupPolicy) -> bool:
    trie = JavaWildcardTrie()
    for pattern in resources:
        trie.add(pattern)
    return trie.matches_mqtt(resource) if lookup is MQTT_STYLE else trie.matches_standard(resource)


# ---- helpers ---------------------------------------------------------------------------------------------


def policy(operations: list[str], resources: list[str] | None = None, **extra: object) -> dict[str, object]:
    body: dict[str, object] = {"policyDescription": "test", "operations": operations, **extra}
    if resources is not None:
        body["resources"] = resources
    return body


def authorizer_with(destination: str, operations: list[str], resources: list[str] | None) -> Authorizer:
    authorizer = Authorizer()
    authorizer.set_component_policies("com.example.C", {destination: {"p1": policy(operations, resources)}})
    return authorizer


def allowed(
    authorizer: Authorizer,
    destination: str,
    operation: str,
    resource: str | None,
    principal: str = "com.example.C",
) -> bool:
    return authorizer.is_authorized(
        destination=destination, principal=principal, operation=operation, resource=resource
    )


# ---- the matrix ------------------------------------------------------------------------------------------

# (destination, operation, policy resources, requested resource, expected)
MATRIX = [
    # STANDARD (pubsub): only * is a wildcard, and it spans "/"
    (PUBSUB, PUBLISH, ["telemetry/temp"], "telemetry/temp", True),
    (PUBSUB, PUBLISH, ["telemetry/temp"], "telemetry/temp2", False),
    (PUBSUB, PUBLISH, ["telemetry/temp"], "telemetry", False),
    (PUBSUB, PUBLISH, ["telemetry/*"], "telemetry/a/b", True),
    (PUBSUB, PUBLISH, ["telemetry/*"], "telemetry/", True),
    (PUBSUB, PUBLISH, ["telemetry/*"], "telemetry", False),
    (PUBSUB, PUBLISH, ["*"], "anything/at/all", True),
    (PUBSUB, PUBLISH, ["a*b"], "a/x/b", True),
    (PUBSUB, PUBLISH, ["a*b"], "a/x/bc", False),
    (PUBSUB, PUBLISH, ["a*b*c"], "abbc", True),
    (PUBSUB, SUBSCRIBE, ["a/+"], "a/+", True),  # + and # are literal in STANDARD
    (PUBSUB, SUBSCRIBE, ["a/+"], "a/b", False),
    (PUBSUB, SUBSCRIBE, ["a/#"], "a/#", True),
    (PUBSUB, SUBSCRIBE, ["a/#"], "a/b", False),
    (PUBSUB, SUBSCRIBE, ["a/#"], "a", False),
    (PUBSUB, SUBSCRIBE, ["#"], "x", False),
    (PUBSUB, PUBLISH, ["a", "b/*"], "b/c", True),  # any resource of the policy
    # escapes
    (PUBSUB, PUBLISH, ["a${*}"], "a*", True),
    (PUBSUB, PUBLISH, ["a${*}"], "ab", False),
    (PUBSUB, PUBLISH, ["${$}aws/x"], "$aws/x", True),
    (PUBSUB, PUBLISH, ["q${?}"], "q?", True),
    (PUBSUB, PUBLISH, ["$aws/things/t/shadow"], "$aws/things/t/shadow", True),  # a lone $ is literal
    (PUBSUB, PUBLISH, ["${*}${$}${?}"], "*$?", True),
    # MQTT_STYLE (mqttproxy): + and # when they fill a level, and * still spans "/"
    (MQTT_PROXY, IOT_PUBLISH, ["a/+/c"], "a/b/c", True),
    (MQTT_PROXY, IOT_PUBLISH, ["a/+/c"], "a//c", True),
    (MQTT_PROXY, IOT_PUBLISH, ["a/+/c"], "a/b/x/c", False),
    (MQTT_PROXY, IOT_PUBLISH, ["a/#"], "a", True),  # isTerminalLevel: abc/# matches abc
    (MQTT_PROXY, IOT_PUBLISH, ["a/#"], "a/", True),
    (MQTT_PROXY, IOT_PUBLISH, ["a/#"], "a/b/c", True),
    (MQTT_PROXY, IOT_PUBLISH, ["a/#"], "ab", False),
    (MQTT_PROXY, IOT_SUBSCRIBE, ["#"], "x/y/z", True),
    (MQTT_PROXY, IOT_SUBSCRIBE, ["+"], "x", True),
    (MQTT_PROXY, IOT_SUBSCRIBE, ["+"], "x/y", False),
    (MQTT_PROXY, IOT_SUBSCRIBE, ["+/b"], "a/b", True),
    (MQTT_PROXY, IOT_SUBSCRIBE, ["+/b"], "a/c/b", False),
    (MQTT_PROXY, IOT_SUBSCRIBE, ["+/#"], "a", True),
    (MQTT_PROXY, IOT_SUBSCRIBE, ["a/+/#"], "a/b/c/d", True),
    (MQTT_PROXY, IOT_SUBSCRIBE, ["a/+"], "a/+", True),  # a subscribe filter, as written, is matched too
    (MQTT_PROXY, IOT_SUBSCRIBE, ["a/b"], "a/+", False),
    (MQTT_PROXY, IOT_PUBLISH, ["a/*"], "a/b/c", True),
    (MQTT_PROXY, IOT_PUBLISH, ["*/#"], "x", True),
    (MQTT_PROXY, IOT_PUBLISH, ["a/*xy/#"], "a/12xy", True),
    # misplaced + and # are literals
    (MQTT_PROXY, IOT_PUBLISH, ["a+/b"], "a+/b", True),
    (MQTT_PROXY, IOT_PUBLISH, ["a+/b"], "ax/b", False),
    (MQTT_PROXY, IOT_PUBLISH, ["a/+b"], "a/xb", False),
    (MQTT_PROXY, IOT_PUBLISH, ["+a"], "xa", False),
    (MQTT_PROXY, IOT_PUBLISH, ["a/#/b"], "a/#/b", True),
    (MQTT_PROXY, IOT_PUBLISH, ["a/#/b"], "a/x/b", False),
    (MQTT_PROXY, IOT_PUBLISH, ["a#"], "a#", True),
    (MQTT_PROXY, IOT_PUBLISH, ["a#"], "ab", False),
    (MQTT_PROXY, IOT_PUBLISH, ["${$}x/#"], "$x/y", True),
    (MQTT_PROXY, IOT_PUBLISH, ["${$}x/#"], "ax/y", False),
    # other STANDARD destinations
    (
        SECRET_MANAGER,
        GET_SECRET,
        ["arn:aws:secretsmanager:us-east-1:1:secret:db-*"],
        "arn:aws:secretsmanager:us-east-1:1:secret:db-AbC",
        True,
    ),
    (
        SECRET_MANAGER,
        GET_SECRET,
        ["arn:aws:secretsmanager:us-east-1:1:secret:db-*"],
        "arn:aws:secretsmanager:us-east-1:1:secret:web",
        False,
    ),
    (LIFECYCLE, PAUSE, ["com.example.Worker"], "com.example.Worker", True),
    (LIFECYCLE, PAUSE, ["com.example.Worker"], "com.example.Other", False),
]


@pytest.mark.parametrize(("destination", "operation", "resources", "resource", "expected"), MATRIX)
def test_authorization_matrix(
    destination: str, operation: str, resources: list[str], resource: str, expected: bool
) -> None:
    authorizer = authorizer_with(destination, [operation], resources)
    assert allowed(authorizer, destination, operation, resource) is expected
    # Another component never gets the declaring component's rights.
    assert not allowed(authorizer, destination, operation, resource, principal="com.example.Other")
    # And the nucleus's own trie agrees, case by case.
    lookup = MQTT_STYLE if destination == MQTT_PROXY else STANDARD
    assert java_matches(resources, resource, lookup) is expected


def test_operation_must_be_the_one_granted_unless_star() -> None:
    authorizer = authorizer_with(PUBSUB, [PUBLISH], ["*"])
    assert allowed(authorizer, PUBSUB, PUBLISH, "t")
    assert not allowed(authorizer, PUBSUB, SUBSCRIBE, "t")
    star = authorizer_with(PUBSUB, ["*"], ["t"])
    assert allowed(star, PUBSUB, PUBLISH, "t")
    assert allowed(star, PUBSUB, SUBSCRIBE, "t")
    assert not allowed(star, PUBSUB, SUBSCRIBE, "u")
    assert not allowed(star, MQTT_PROXY, IOT_PUBLISH, "t")  # a policy is for its destination only


def test_specific_and_star_operation_policies_are_both_consulted() -> None:
    # (principal, op) has no match for "b", but (principal, "*") does: the lookup goes on to the next tuple.
    authorizer = Authorizer()
    authorizer.set_component_policies(
        "com.example.C",
        {PUBSUB: {"publish-a": policy([PUBLISH], ["a"]), "anything-b": policy(["*"], ["b"])}},
    )
    assert allowed(authorizer, PUBSUB, PUBLISH, "a")
    assert allowed(authorizer, PUBSUB, PUBLISH, "b")
    assert allowed(authorizer, PUBSUB, SUBSCRIBE, "b")
    assert not allowed(authorizer, PUBSUB, SUBSCRIBE, "a")


def test_star_principal_comes_only_from_the_nucleus_defaults() -> None:
    # The TES default policy is (TES, "*", getCredentials, null): the third lookup tuple.
    authorizer = Authorizer()
    assert allowed(authorizer, TOKEN_EXCHANGE, TES_GET_CREDENTIALS, None, principal="any.Component")
    assert not allowed(authorizer, TOKEN_EXCHANGE, TES_GET_CREDENTIALS, "x", principal="any.Component")
    # A recipe cannot write a policy for principal "*": every policy's principal is its component.
    authorizer.set_component_policies("com.example.C", {PUBSUB: {"p": policy(["*"], ["*"])}})
    assert not allowed(authorizer, PUBSUB, PUBLISH, "t", principal="*")
    with pytest.raises(PolicyError, match="component name"):
        authorizer.set_component_policies("*", {})


def test_operations_not_registered_for_the_destination_are_denied() -> None:
    authorizer = authorizer_with(PUBSUB, ["*"], ["*"])
    assert not allowed(authorizer, PUBSUB, "aws.greengrass#Bogus", "t")
    assert not allowed(authorizer, PUBSUB, IOT_PUBLISH, "t")
    assert not allowed(authorizer, "aws.greengrass.ipc.nothing", PUBLISH, "t")
    assert allowed(authorizer, PUBSUB, "*", "t")  # "*" is registered everywhere, as in the nucleus


def test_null_resource_matches_any_policy_and_empty_resource_none() -> None:
    with_resources = authorizer_with(PUBSUB, [PUBLISH], ["only/this"])
    assert allowed(with_resources, PUBSUB, PUBLISH, None)
    assert not allowed(with_resources, PUBSUB, PUBLISH, "")
    no_resources = authorizer_with(PUBSUB, [PUBLISH], None)
    assert allowed(no_resources, PUBSUB, PUBLISH, None)
    assert not allowed(no_resources, PUBSUB, PUBLISH, "t")
    empty_list = authorizer_with(PUBSUB, [PUBLISH], [])
    assert allowed(empty_list, PUBSUB, PUBLISH, None)
    assert not allowed(empty_list, PUBSUB, PUBLISH, "t")
    nothing = Authorizer()
    assert not allowed(nothing, PUBSUB, PUBLISH, None)  # no policy at all still denies


def test_missing_principal_is_denied() -> None:
    authorizer = authorizer_with(CLI, ["*"], ["*"])
    assert not allowed(authorizer, CLI, RESTART, "x", principal="")


# ---- loading ---------------------------------------------------------------------------------------------


def test_keys_are_case_insensitive_and_json_strings_are_accepted() -> None:
    body = {PUBSUB: {"p1": {"PolicyDescription": "d", "OPERATIONS": [PUBLISH], "Resources": ["t/*"]}}}
    for access_control in (body, json.dumps(body)):
        authorizer = Authorizer()
        authorizer.set_component_policies("com.example.C", access_control)
        assert allowed(authorizer, PUBSUB, PUBLISH, "t/1")
        (loaded,) = authorizer.policies("com.example.C")
        assert (loaded.policy_id, loaded.description, loaded.resources) == ("p1", "d", ("t/*",))


def test_destination_names_are_case_sensitive() -> None:
    with pytest.raises(PolicyError, match=r"did you mean 'aws\.greengrass\.ipc\.pubsub'"):
        Authorizer().set_component_policies(
            "com.example.C", {"AWS.greengrass.ipc.pubsub": {"p": policy(["*"])}}
        )


def test_none_or_empty_access_control_loads_nothing() -> None:
    authorizer = Authorizer()
    authorizer.set_component_policies("com.example.C", None)
    authorizer.set_component_policies("com.example.D", {})
    assert authorizer.policies("com.example.C") == ()
    assert authorizer.policies("com.example.D") == ()


INVALID = [
    pytest.param(
        {PUBSUB: {"p1": policy([PUBLISH], ["t"], resource=["x"])}}, ["p1", "resource"], id="unknown-key"
    ),
    pytest.param({PUBSUB: {"p1": {"resources": ["t"]}}}, ["p1", "operations", "missing"], id="no-operations"),
    pytest.param({PUBSUB: {"p1": policy([])}}, ["p1", "operations"], id="empty-operations"),
    pytest.param({PUBSUB: {"p1": policy("*")}}, ["p1", "operations", "list"], id="operations-not-a-list"),  # type: ignore[arg-type]
    pytest.param(
        {PUBSUB: {"p1": policy([PUBLISH, "aws.greengrass#publishToTopic"])}},
        ["p1", "operations", "aws.greengrass#publishToTopic", "did you mean"],
        id="unregistered-operation",
    ),
    pytest.param(
        {PUBSUB: {"p1": policy([IOT_PUBLISH])}},
        ["p1", "operations", IOT_PUBLISH],
        id="operation-of-another-destination",
    ),
    pytest.param(
        {CLI: {"p1": policy([CANCEL_LOCAL_DEPLOYMENT])}},
        ["p1", "operations", "CancelLocalDeployment"],
        id="cli-cancel",
    ),
    pytest.param(
        {"aws.greengrass.ipc.config": {"p1": policy(["*"])}}, ["p1", "destination"], id="unknown-destination"
    ),
    pytest.param(
        {PUBSUB: {"p1": policy(["*"], ["a?"])}}, ["p1", "resources", "'?'"], id="unescaped-question-mark"
    ),
    pytest.param({PUBSUB: {"p1": policy(["*"], ["a${c}"])}}, ["p1", "resources", "${c}"], id="bad-escape"),
    pytest.param({PUBSUB: {"p1": policy(["*"], ["a${*"])}}, ["p1", "resources", "escape"], id="short-escape"),
    pytest.param({PUBSUB: {"p1": policy(["*"], ["${ab}"])}}, ["p1", "resources", "escape"], id="long-escape"),
    pytest.param({PUBSUB: {"p1": policy(["*"], [""])}}, ["p1", "resources", "empty"], id="empty-resource"),
    pytest.param(
        {PUBSUB: {"p1": {"operations": ["*"], "resources": [None]}}},
        ["p1", "resources", "string"],
        id="null-resource-item",
    ),
    pytest.param({PUBSUB: {"p1": ["*"]}}, ["p1", "policy", "mapping"], id="policy-not-mapping"),
    pytest.param({PUBSUB: {"": policy(["*"])}}, ["policy id", "empty"], id="empty-policy-id"),
    pytest.param({PUBSUB: ["p1"]}, [PUBSUB, "mapping"], id="destination-not-mapping"),
    pytest.param("{not json", ["accessControl", "JSON"], id="bad-json"),
    pytest.param(["x"], ["accessControl", "mapping"], id="not-a-mapping"),
]


@pytest.mark.parametrize(("access_control", "fragments"), INVALID)
def test_invalid_policies_name_component_policy_and_key(access_control: object, fragments: list[str]) -> None:
    with pytest.raises(PolicyError) as caught:
        Authorizer().set_component_policies("com.example.Bad", access_control)
    message = str(caught.value)
    assert "'com.example.Bad'" in message
    for fragment in fragments:
        assert fragment in message, (fragment, message)


def test_a_refused_update_keeps_the_previous_policies() -> None:
    authorizer = authorizer_with(PUBSUB, [PUBLISH], ["t"])
    with pytest.raises(PolicyError):
        authorizer.set_component_policies("com.example.C", {PUBSUB: {"p1": policy([PUBLISH], ["t", "u?"])}})
    assert allowed(authorizer, PUBSUB, PUBLISH, "t")
    assert len(authorizer.policies("com.example.C")) == 1


def test_set_replaces_and_remove_drops() -> None:
    authorizer = authorizer_with(PUBSUB, [PUBLISH], ["old"])
    authorizer.set_component_policies("com.example.C", {PUBSUB: {"p2": policy([PUBLISH], ["new"])}})
    assert not allowed(authorizer, PUBSUB, PUBLISH, "old")
    assert allowed(authorizer, PUBSUB, PUBLISH, "new")
    authorizer.set_component_policies("com.example.D", {PUBSUB: {"p": policy([PUBLISH], ["d"])}})
    authorizer.remove_component("com.example.C")
    assert not allowed(authorizer, PUBSUB, PUBLISH, "new")
    assert allowed(authorizer, PUBSUB, PUBLISH, "d", principal="com.example.D")
    authorizer.remove_component("com.example.Unknown")  # no error, as removing twice
    assert authorizer.policies("com.example.C") == ()


# ---- lenient loading: what the nucleus keeps -------------------------------------------------------------


def lenient(access_control: object) -> Authorizer:
    authorizer = Authorizer(strict=False)
    authorizer.set_component_policies("com.example.C", access_control)
    return authorizer


def test_lenient_unknown_key_drops_the_whole_access_control(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="device_agent.devkit.authz")
    authorizer = lenient(
        {
            PUBSUB: {"good": policy([PUBLISH], ["t"]), "bad": policy([PUBLISH], ["t"], typo=1)},
            MQTT_PROXY: {"good": policy([IOT_PUBLISH], ["t"])},
        }
    )
    assert not allowed(authorizer, PUBSUB, PUBLISH, "t")
    assert not allowed(authorizer, MQTT_PROXY, IOT_PUBLISH, "t")
    assert authorizer.policies("com.example.C") == ()
    assert any("typo" in record.getMessage() for record in caplog.records)


def test_lenient_invalid_resource_is_dropped_and_the_rest_kept() -> None:
    authorizer = lenient({PUBSUB: {"p": policy([PUBLISH], ["ok/*", "bad?"])}})
    assert allowed(authorizer, PUBSUB, PUBLISH, "ok/1")
    assert not allowed(authorizer, PUBSUB, PUBLISH, "bad?")
    assert authorizer.policies("com.example.C")[0].resources == ("ok/*",)


def test_lenient_policy_whose_resources_are_all_invalid_grants_nothing() -> None:
    authorizer = lenient({PUBSUB: {"p": policy([PUBLISH], ["bad?", ""])}})
    assert not allowed(authorizer, PUBSUB, PUBLISH, None)  # not even a null resource
    assert authorizer.policies("com.example.C") == ()


def test_lenient_unregistered_operation_only_logs() -> None:
    authorizer = lenient({PUBSUB: {"p": policy([PUBLISH, "aws.greengrass#Bogus"], ["t"])}})
    assert allowed(authorizer, PUBSUB, PUBLISH, "t")
    assert not allowed(authorizer, PUBSUB, "aws.greengrass#Bogus", "t")


def test_lenient_unknown_destination_and_empty_operations_are_skipped() -> None:
    authorizer = lenient(
        {
            "aws.greengrass.ipc.config": {"p": policy(["*"])},
            PUBSUB: {"empty": policy([], ["x"]), "good": policy([SUBSCRIBE], ["y"])},
        }
    )
    assert [p.policy_id for p in authorizer.policies("com.example.C")] == ["good"]
    assert allowed(authorizer, PUBSUB, SUBSCRIBE, "y")
    assert not allowed(authorizer, PUBSUB, SUBSCRIBE, "x")


# ---- the CLI ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "principal", ["aws.greengrass.Cli", "greengrass-cli#user-1000", "greengrass-cli#group-0"]
)
def test_cli_and_its_clients_bypass_the_check(principal: str) -> None:
    authorizer = Authorizer()
    assert allowed(authorizer, CLI, RESTART, "com.example.X", principal=principal)
    assert allowed(
        authorizer, CLI, CANCEL_LOCAL_DEPLOYMENT, "*", principal=principal
    )  # even unregistered ops
    # ... but only for the CLI destination
    assert not allowed(authorizer, PUBSUB, PUBLISH, "t", principal=principal)


def test_other_components_need_a_cli_policy() -> None:
    authorizer = authorizer_with(CLI, [RESTART], ["com.example.X"])
    assert allowed(authorizer, CLI, RESTART, "com.example.X")
    assert not allowed(authorizer, CLI, RESTART, "com.example.Y")
    assert not allowed(
        authorizer, CLI, RESTART, "com.example.X", principal="greengrass-cli"
    )  # prefix has "#"
    # CancelLocalDeployment is not registered for the CLI destination: nobody else can ever be granted it.
    assert not allowed(authorizer_with(CLI, ["*"], ["*"]), CLI, CANCEL_LOCAL_DEPLOYMENT, "*")


# ---- interpolation ---------------------------------------------------------------------------------------


def thing_name(component: str, text: str) -> str:
    return text.replace("{iot:thingName}", "thing1").replace("{component}", component)


def test_interpolation_on() -> None:
    authorizer = Authorizer(interpolate=thing_name)
    authorizer.set_component_policies(
        "com.example.C",
        {PUBSUB: {"p": policy([PUBLISH], ["things/{iot:thingName}/*", "${$}{iot:thingName}"])}},
    )
    assert allowed(authorizer, PUBSUB, PUBLISH, "things/thing1/x")
    assert not allowed(authorizer, PUBSUB, PUBLISH, "things/{iot:thingName}/x")
    assert allowed(authorizer, PUBSUB, PUBLISH, "$thing1")
    assert authorizer.policies("com.example.C")[0].resources == ("things/thing1/*", "${$}thing1")


def test_interpolation_off_keeps_placeholders_literal() -> None:
    authorizer = authorizer_with(PUBSUB, [PUBLISH], ["things/{iot:thingName}/*"])
    assert allowed(authorizer, PUBSUB, PUBLISH, "things/{iot:thingName}/x")
    assert not allowed(authorizer, PUBSUB, PUBLISH, "things/thing1/x")


def test_escapes_never_reach_the_interpolator() -> None:
    seen: list[str] = []

    def record(component: str, text: str) -> str:
        seen.append(text)
        return text.upper()

    authorizer = Authorizer(interpolate=record)
    authorizer.set_component_policies("com.example.C", {PUBSUB: {"p": policy([PUBLISH], ["a${*}b${?}"])}})
    assert all("${" not in text for text in seen)
    assert allowed(authorizer, PUBSUB, PUBLISH, "A*B?")


def test_interpolation_happens_before_validation() -> None:
    # "${iot:thingName}" is not an escape: interpolated, it becomes the valid "$thing1" (KernelConfigResolver
    # resolves the configuration before the authorization handler reads it).
    authorizer = Authorizer(interpolate=thing_name)
    authorizer.set_component_policies(
        "com.example.C", {PUBSUB: {"p": policy([PUBLISH], ["${iot:thingName}"])}}
    )
    assert allowed(authorizer, PUBSUB, PUBLISH, "$thing1")
    with pytest.raises(PolicyError, match="escape"):
        Authorizer().set_component_policies(
            "com.example.C", {PUBSUB: {"p": policy([PUBLISH], ["${iot:thingName}"])}}
        )


# ---- destinations ----------------------------------------------------------------------------------------


def test_register_destination_adds_operations() -> None:
    authorizer = Authorizer()
    authorizer.register_destination("com.example.Plugin", ["com.example#Do"])
    authorizer.set_component_policies(
        "com.example.C", {"com.example.Plugin": {"p": policy(["com.example#Do"], ["x"])}}
    )
    assert allowed(authorizer, "com.example.Plugin", "com.example#Do", "x")
    authorizer.register_destination("com.example.Plugin", ["com.example#Undo"])
    assert authorizer.destinations()["com.example.Plugin"].operations == {
        "*",
        "com.example#Do",
        "com.example#Undo",
    }
    with pytest.raises(ValueError, match="STANDARD"):
        authorizer.register_destination("com.example.Plugin", [], MQTT_STYLE)


def test_mqtt_style_belongs_to_the_mqtt_proxy_only() -> None:
    styles = {name: d.lookup for name, d in Authorizer().destinations().items()}
    assert [name for name, style in styles.items() if style is MQTT_STYLE] == [MQTT_PROXY]


# ---- resource validation ---------------------------------------------------------------------------------


@pytest.mark.parametrize("resource", ["a", "$", "$aws", "a$", "${*}", "${$}", "${?}", "x${*}y", "$$", "a}{"])
def test_valid_resources(resource: str) -> None:
    validate_resource(resource)


@pytest.mark.parametrize(
    ("resource", "message"),
    [
        ("", "Resource cannot be empty"),
        ("?", "invalid character: '?'"),
        ("a/?/b", "invalid character: '?'"),
        ("${a}", "invalid escape sequence: ${a}"),
        ("${", "invalid escape sequence."),
        ("a${*", "invalid escape sequence."),
        ("${**}", "invalid escape sequence."),
    ],
)
def test_invalid_resources(resource: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        validate_resource(resource)


# ---- properties against the nucleus's trie ---------------------------------------------------------------

resource_tokens = st.sampled_from(["a", "b", "/", "*", "+", "#", "${*}", "${$}", "${?}", "$", "ab", "/b"])
topic_tokens = st.sampled_from(["a", "b", "/", "*", "+", "#", "$", "?", "ba"])
resources = st.lists(resource_tokens, min_size=1, max_size=7).map("".join)
requests = st.lists(topic_tokens, min_size=1, max_size=8).map("".join)


def trie_layout_quirk(resource: str, lookup: ResourceLookupPolicy) -> bool:
    """The single-resource cases where the nucleus's trie departs from its rules (see authz's docstring)."""
    # An escaped "*" is unescaped into the node text, which is parsed again when a wildcard follows.
    if re.search(r"\$\{\*\}.*[*+#]", resource):
        return True
    # A valid "+" before a final "/#" lets the trie skip the level check of what lies between.
    return lookup is MQTT_STYLE and "+" in resource and resource.endswith("/#")


@settings(max_examples=400)
@given(resources, requests, st.sampled_from([STANDARD, MQTT_STYLE]))
def test_single_resource_agrees_with_the_nucleus_trie(
    resource: str, request_: str, lookup: ResourceLookupPolicy
) -> None:
    validate_resource(resource)
    assume(not trie_layout_quirk(resource, lookup))
    assert resource_matches(resource, request_, lookup) is java_matches([resource], request_, lookup)


@given(st.text(alphabet=st.characters(exclude_characters="*?$+#"), min_size=1), st.text(min_size=1))
def test_a_resource_without_wildcards_matches_exactly_itself(resource: str, other: str) -> None:
    for lookup in (STANDARD, MQTT_STYLE):
        assert resource_matches(resource, resource, lookup)
        assert resource_matches(resource, other, lookup) is (other == resource)


@given(st.text(min_size=1), st.text(min_size=1))
def test_escaping_makes_any_text_literal_in_standard(text: str, other: str) -> None:
    escaped = "".join(f"${{{c}}}" if c in "*$?" else c for c in text)
    validate_resource(escaped)
    assert resource_matches(escaped, text, STANDARD)
    assert resource_matches(escaped, other, STANDARD) is (other == text)


@given(st.lists(resources, min_size=1, max_size=4), requests)
def test_a_policy_allows_what_any_of_its_resources_allows(patterns: list[str], request_: str) -> None:
    authorizer = authorizer_with(MQTT_PROXY, [IOT_PUBLISH], patterns)
    expected = any(resource_matches(p, request_, MQTT_STYLE) for p in patterns)
    assert allowed(authorizer, MQTT_PROXY, IOT_PUBLISH, request_) is expected


# ---- where the nucleus's trie departs from its own rules (pinned) -----------------------------------------


def test_quirk_escaped_star_becomes_a_wildcard_before_another_wildcard() -> None:
    assert java_matches(["${*}+"], "xyz+", STANDARD)  # the nucleus
    assert not resource_matches("${*}+", "xyz+", STANDARD)  # us: "${*}" is always the literal "*"
    assert resource_matches("${*}+", "*+", STANDARD)


def test_quirk_plus_then_final_hash_skips_a_level_check() -> None:
    assert java_matches(["a/+/b/#"], "a/x/bc/d/b", MQTT_STYLE)
    assert not resource_matches("a/+/b/#", "a/x/bc/d/b", MQTT_STYLE)  # "bc" is not "b"
    assert resource_matches("a/+/b/#", "a/x/b/d/b", MQTT_STYLE)


def test_quirk_resources_of_one_key_share_trie_nodes() -> None:
    # A valid "+" in one resource makes the literal "+" of another a wildcard in the nucleus ...
    assert java_matches(["a/+/c", "a/+x"], "a/yyx", MQTT_STYLE)
    assert not java_matches(["a/+x"], "a/yyx", MQTT_STYLE)
    # ... and two children whose suffixes coincide overwrite each other in its HashMap of candidates.
    assert not java_matches(["a*b", "a*cb*x"], "azcb", STANDARD)
    assert java_matches(["a*b"], "azcb", STANDARD)
    authorizer = authorizer_with(MQTT_PROXY, [IOT_PUBLISH], ["a/+/c", "a/+x"])
    assert not allowed(authorizer, MQTT_PROXY, IOT_PUBLISH, "a/yyx")
    authorizer = authorizer_with(PUBSUB, [PUBLISH], ["a*b", "a*cb*x"])
    assert allowed(authorizer, PUBSUB, PUBLISH, "azcb")


def test_resource_regex_is_anchored_by_fullmatch_and_dotall() -> None:
    pattern = re.compile(resource_regex("a*", STANDARD), re.DOTALL)
    assert pattern.fullmatch("a\nb")
    assert resource_matches("a*", "a\nb", STANDARD)
