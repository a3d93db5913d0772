"""The reporter's pieces without a nucleus: the verdict parser, the kept state, the configuration and its
recipe defaults, and the heartbeat inventory."""

from __future__ import annotations

import contextlib
import json
import secrets
from pathlib import Path
from typing import Any

import pytest
import yaml
from bootstrap_reporter.config import BootstrapConfig
from bootstrap_reporter.inventory import Inventory
from bootstrap_reporter.state import Reported
from bootstrap_reporter.verdict import Decision, parse_verdict
from hypothesis import given
from hypothesis import strategies as st

from device_agent.config import defaults_document, parse_config
from device_agent.errors import ConfigurationError, InvalidInputError
from device_agent.ipc_types import LocalMessage
from tests.bootstrap_component.conftest import validator

RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "com.deviceagent.BootstrapReporter.yaml"


def verdict(**changes: Any) -> dict[str, Any]:
    document = {
        "schema": "bootstrap-verdict/1",
        "decisionId": secrets.token_hex(16),
        "thing": "thermostat-0042",
        "reportId": secrets.token_hex(16),
        "factsHash": "sha256:" + "a" * 64,
        "verdict": "rejected",
        "reason": "serial not in the manufacturing manifest",
        "failedRules": ["serial.allowlist"],
        "group": "quarantine",
        "demoted": True,
        "reverifyAfterSeconds": 3600,
        "time": "2026-11-24T20:00:00Z",
    }
    document.update(changes)
    return {k: v for k, v in document.items() if v is not None}


def test_a_schema_valid_verdict_parses_and_round_trips():
    document = verdict()
    validator("bootstrap-verdict.schema.json").validate(document)
    parsed = parse_verdict(json.dumps(document).encode())
    assert parsed.decision is Decision.REJECTED
    assert parsed.final
    assert parsed.demoted
    assert parsed.to_document() == {**document, "reverifyAfterSeconds": 3600.0}
    assert not parse_verdict(verdict(verdict="pending")).final


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"schema": "bootstrap-verdict/2"}, "schema"),
        ({"reportId": "XYZ"}, "reportId"),
        ({"factsHash": "md5:00"}, "factsHash"),
        ({"verdict": "maybe"}, "verdict"),
        ({"reason": ""}, "reason"),
        ({"failedRules": ["ok", 3]}, "failedRules"),
        ({"group": "staging"}, "group"),
        ({"demoted": "yes"}, "demoted"),
        ({"reverifyAfterSeconds": -1}, "reverifyAfterSeconds"),
        ({"extra": 1}, "fields"),
        ({"thing": "a b"}, "thing"),
    ],
)
def test_a_wrong_field_is_refused_by_name(changes: dict[str, Any], field: str):
    with pytest.raises(InvalidInputError, match=field):
        parse_verdict(verdict(**changes))


def test_oversized_and_non_json_payloads_are_refused():
    with pytest.raises(InvalidInputError, match="at most"):
        parse_verdict(b" " * 20_000)
    with pytest.raises(InvalidInputError, match="not JSON"):
        parse_verdict(b"{")
    with pytest.raises(InvalidInputError, match="object"):
        parse_verdict(b"[1]")


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=16), inner, max_size=6),
    max_leaves=30,
)


@given(st.dictionaries(st.sampled_from(sorted(verdict())) | st.text(max_size=8), json_values, max_size=14))
def test_hostile_documents_only_raise_invalid_input(document: dict[str, Any]):
    with contextlib.suppress(InvalidInputError):  # anything else fails the test
        parse_verdict(document)


@given(st.binary(max_size=300))
def test_hostile_bytes_only_raise_invalid_input(payload: bytes):
    with contextlib.suppress(InvalidInputError):
        parse_verdict(payload)


def test_the_kept_state_round_trips_and_refuses_garbage():
    report = {
        "reportId": "0" * 32,
        "factsHash": "sha256:" + "b" * 64,
        "facts": {"serial": {"status": "ok", "value": "SERIAL-9F2K"}},
    }
    kept = Reported(report=report, reported_at=1.5e9, verdict=parse_verdict(verdict()))
    assert Reported.from_bytes(kept.to_bytes()) == kept
    assert "SERIAL-9F2K" not in repr(kept)
    for garbage in (b"", b"[]", b'{"schema": "bootstrap-state/1"}', b'{"schema": "x"}'):
        with pytest.raises(InvalidInputError):
            Reported.from_bytes(garbage)


def test_the_recipe_holds_every_default_and_grants_only_the_suites_topics_and_list_components():
    recipe = yaml.safe_load(RECIPE.read_text())
    defaults = dict(recipe["ComponentConfiguration"]["DefaultConfiguration"])
    access = defaults.pop("accessControl")
    assert defaults == json.loads(json.dumps(defaults_document(BootstrapConfig)))
    assert set(access) == {"aws.greengrass.ipc.mqttproxy", "aws.greengrass.ipc.pubsub", "aws.greengrass.Cli"}
    for policy in access["aws.greengrass.ipc.mqttproxy"].values():
        assert all("{iot:thingName}" in resource for resource in policy["resources"])
    # The CLI: one operation, on the literal `*` it is checked against (escaped), never a component name.
    [cli] = access["aws.greengrass.Cli"].values()
    assert (cli["operations"], cli["resources"]) == (["aws.greengrass#ListComponents"], ["${*}"])
    lifecycle = recipe["Manifests"][0]["Lifecycle"]
    assert lifecycle["Run"]["RequiresPrivilege"] is False


@pytest.mark.parametrize(
    ("document", "key"),
    [
        ({"collectIntervalSeconds": 0}, "collectIntervalSeconds"),
        ({"topic": "dt/device-agent/+/bootstrap"}, "topic"),
        ({"verdictTopic": "cmd/{other}/verdict"}, "verdictTopic"),
        ({"certificatePath": "relative.pem"}, "certificatePath"),
        ({"collectors": {"directory": "drop-ins"}}, "collectors.directory"),
        ({"retry": {"initialSeconds": 10, "maxSeconds": 5}}, "retry.maxSeconds"),
        ({"redact": {"serial": True}, "fleetSalt": "short-salt"}, "fleetSalt"),
    ],
)
def test_invalid_configurations_name_the_key(document: dict[str, Any], key: str):
    with pytest.raises(ConfigurationError) as refused:
        parse_config(BootstrapConfig, document).value.validate()
    assert key in str(refused.value)
    assert "short-salt" not in str(refused.value)


def test_redaction_needs_a_salt_and_builds_a_redactor():
    config = parse_config(BootstrapConfig, {"redact": {"macAddresses": True}, "fleetSalt": "x" * 16}).value
    config.validate()
    redactor = config.redactor()
    assert redactor is not None
    assert redactor.fields == frozenset({"macAddresses"})
    assert BootstrapConfig().redactor() is None


def heartbeat(component: str, version: str | None = "0.1.0", state: str = "RUNNING") -> LocalMessage:
    body: dict[str, Any] = {"component": component, "state": state}
    if version is not None:
        body["version"] = version
    return LocalMessage(topic=f"device-agent/heartbeat/{component}", payload=body, binary=False)


def test_the_inventory_lists_heartbeating_components_and_drops_stopped_ones():
    inventory = Inventory("com.deviceagent.BootstrapReporter", "0.1.0")
    inventory.on_heartbeat(heartbeat("com.deviceagent.EncryptedStore"))
    inventory.on_heartbeat(heartbeat("com.deviceagent.HealthMonitor", version="not a version!"))
    inventory.on_heartbeat(heartbeat("bad name/with slash"))
    inventory.on_heartbeat(LocalMessage(topic="x", payload=b"binary", binary=True))
    inventory.on_heartbeat(heartbeat("com.deviceagent.TelemetryPublisher"))
    inventory.on_heartbeat(heartbeat("com.deviceagent.TelemetryPublisher", state="STOPPING"))
    fact = inventory.fact()
    assert fact.value == {
        "source": "suite",
        "components": [
            {"name": "com.deviceagent.BootstrapReporter", "version": "0.1.0"},
            {"name": "com.deviceagent.EncryptedStore", "version": "0.1.0"},
            {"name": "com.deviceagent.HealthMonitor", "version": None},
        ],
    }
