"""Heartbeat and event builders produce messages valid against the documented JSON Schemas."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from device_agent.errors import InvalidInputError
from device_agent.messages import Category, Severity, event, heartbeat, heartbeat_topic

SCHEMAS = Path(__file__).resolve().parents[2] / "docs" / "schemas"


def validator(name: str) -> jsonschema.Draft202012Validator:
    schema = json.loads((SCHEMAS / name).read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())


def test_heartbeat_is_valid():
    message = heartbeat(
        component="com.deviceagent.X", thing="t1", sequence=3, uptime_seconds=12.5, interval_seconds=5
    )
    validator("heartbeat.schema.json").validate(message)
    assert heartbeat_topic("com.deviceagent.X") == "device-agent/heartbeat/com.deviceagent.X"


def test_event_is_valid_and_bounded():
    message = event(
        component="com.deviceagent.X",
        thing="t1",
        name="config.rejected",
        category=Category.CONFIGURATION,
        severity=Severity.WARNING,
        message="x" * 5000,
        details={"keyPath": "intervalSeconds", "deploymentId": "d-1"},
    )
    validator("event.schema.json").validate(message)
    assert len(message["message"]) == 512


def test_schema_rejects_what_builders_must_never_produce():
    v = validator("event.schema.json")
    bad = event(
        component="c", thing="t", name="a.b", category=Category.HEALTH, severity=Severity.INFO, message="m"
    )
    bad["severity"] = "fatal"
    assert not v.is_valid(bad)


@pytest.mark.parametrize("name", ["Config.Rejected", "config", "config..x", "config.rejected!"])
def test_bad_event_names_are_refused(name):
    with pytest.raises(InvalidInputError):
        event(
            component="c", thing="t", name=name, category=Category.HEALTH, severity=Severity.INFO, message="m"
        )


def test_details_must_be_scalars():
    with pytest.raises(InvalidInputError, match="scalar"):
        event(
            component="c",
            thing="t",
            name="a.b",
            category=Category.HEALTH,
            severity=Severity.INFO,
            message="m",
            details={"x": [1]},  # type: ignore[dict-item]
        )
