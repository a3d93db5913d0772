"""Threshold and health log settings: complete defaults with limits, validation across keys, rules."""

from __future__ import annotations

from typing import Any

import pytest
from health_monitor.evaluate import Direction, Evaluator
from health_monitor.settings import CheckThresholds, EventCount, Flag, LogSettings, PercentFree, PercentUsed
from hypothesis import given, settings
from hypothesis import strategies as st

from device_agent.config import InvalidConfigurationError, defaults_document, describe, parse_config
from device_agent.health_cli import TRIAGE
from device_agent.health_log import HealthLogWriter, State


def test_the_defaults_parse_and_make_a_rule_for_every_check() -> None:
    document = defaults_document(CheckThresholds)
    parsed = parse_config(CheckThresholds, document)
    assert parsed.value == CheckThresholds()
    assert parsed.unknown_keys == ()
    rules = parsed.value.rules()
    assert set(rules) == set(CheckThresholds().checks())
    assert rules["cpu"].direction is Direction.ABOVE
    assert rules["disk_space"].direction is Direction.BELOW
    assert rules["certificate"].direction is Direction.BELOW
    assert (rules["cpu"].warn, rules["cpu"].critical, rules["cpu"].for_seconds) == (90.0, 98.0, 300.0)


def test_every_key_has_a_default_and_every_number_limits() -> None:
    for document_model in (CheckThresholds, LogSettings):
        for info in describe(document_model):
            if info.type_name in {"object", "boolean"}:
                continue
            assert info.default is not None or info.type_name.endswith("or null"), info.key_path
            if "number" in info.type_name or "integer" in info.type_name:
                assert info.minimum is not None, info.key_path
                assert info.maximum is not None, info.key_path


def test_every_check_has_a_triage_hint_for_technicians() -> None:
    for name in CheckThresholds().checks():
        assert name in TRIAGE, name
        hint = TRIAGE[name].hint
        assert hint.meaning
        assert hint.look
        assert hint.action


def test_keys_are_camel_case_check_names() -> None:
    document = defaults_document(CheckThresholds)
    assert {"diskSpace", "cloudConnection", "lastPublish", "clockUnset", "unexpectedRestart"} <= set(document)
    assert set(document["cpu"]) == {
        "enabled",
        "warn",
        "critical",
        "hysteresis",
        "forSeconds",
        "recoverSeconds",
        "unknownAfterSeconds",
    }
    assert document["integrity"]["windowSeconds"] == 86400.0


@pytest.mark.parametrize(
    ("document", "key_path", "expected"),
    [
        ({"cpu": {"warn": 99, "critical": 90}}, ("cpu", "warn"), "below critical"),
        ({"cpu": {"warn": 90, "critical": 90}}, ("cpu", "warn"), "below critical"),
        ({"diskSpace": {"warn": 5, "critical": 10}}, ("diskSpace", "warn"), "above critical"),
        ({"certificate": {"warn": 3, "critical": 7}}, ("certificate", "warn"), "above critical"),
        ({"cpu": {"warn": 10, "critical": 50, "hysteresis": 10}}, ("cpu", "hysteresis"), "never recover"),
        (
            {"diskSpace": {"warn": 95, "critical": 90, "hysteresis": 5}},
            ("diskSpace", "hysteresis"),
            "never recover",
        ),
        ({"memory": {"warn": None, "critical": None}}, ("memory", "warn"), "enabled: false"),
        ({"cpu": {"warn": 101}}, ("cpu", "warn"), "between 0 and 100"),
        ({"cpu": {"forSeconds": -1}}, ("cpu", "forSeconds"), "between 0"),
        ({"cpu": {"unknownAfterSeconds": 0}}, ("cpu", "unknownAfterSeconds"), "between 1"),
        ({"throttling": {"severity": "panic"}}, ("throttling", "severity"), "one of"),
        ({"temperature": {"warn": "80"}}, ("temperature", "warn"), "number"),
    ],
)
def test_invalid_thresholds_are_refused_with_the_key_path(
    document: dict[str, Any], key_path: tuple[str, ...], expected: str
) -> None:
    with pytest.raises(InvalidConfigurationError) as raised:
        parse_config(CheckThresholds, document)
    assert raised.value.key_path == key_path
    assert expected in raised.value.expected


def test_a_disabled_check_needs_no_threshold_and_makes_no_rule() -> None:
    parsed = parse_config(CheckThresholds, {"memory": {"enabled": False, "warn": None, "critical": None}})
    assert "memory" not in parsed.value.rules()


def test_flags_raise_their_configured_level_and_clear_at_zero() -> None:
    for severity, level in (("warn", State.WARN), ("critical", State.CRITICAL)):
        evaluator = Evaluator(Flag(severity=severity).rule())
        evaluator.observe(0, at=0)
        assert evaluator.state is State.OK
        evaluator.observe(1, at=1)
        assert evaluator.state is level
        evaluator.observe(0, at=2)
        assert evaluator.state is State.OK


@settings(max_examples=200, deadline=None)
@given(
    warn=st.one_of(st.none(), st.floats(min_value=0, max_value=100)),
    critical=st.one_of(st.none(), st.floats(min_value=0, max_value=100)),
    hysteresis=st.floats(min_value=0, max_value=100),
    model=st.sampled_from([PercentUsed, PercentFree]),
)
def test_what_validation_accepts_the_evaluator_can_use(
    warn: float | None, critical: float | None, hysteresis: float, model: type[PercentUsed | PercentFree]
) -> None:
    document = {"warn": warn, "critical": critical, "hysteresis": hysteresis}
    try:
        value: PercentUsed | PercentFree = parse_config(model, document).value
    except InvalidConfigurationError:
        return
    rule = value.rule()  # a Rule validates its own invariants: this must not raise
    thresholds = [t for t in (warn, critical) if t is not None]
    # Recovery is reachable: some value on the scale clears every threshold.
    edge = 0.0 if rule.direction is Direction.ABOVE else 100.0
    assert all(rule.cleared(edge, level) for level in (State.WARN, State.CRITICAL)) or not thresholds


def test_event_counts_default_to_an_hour_window() -> None:
    assert EventCount().window_seconds == 3600.0


def test_log_settings_match_what_the_writer_accepts(tmp_path: Any) -> None:
    defaults = LogSettings()
    HealthLogWriter(tmp_path, max_file_bytes=defaults.max_file_bytes, max_files=defaults.max_files)
    for info in describe(LogSettings):
        if info.key_path == "maxFileBytes":
            assert info.minimum is not None
            assert info.maximum is not None
            HealthLogWriter(tmp_path, max_file_bytes=int(info.minimum))
            HealthLogWriter(tmp_path, max_file_bytes=int(info.maximum))
        if info.key_path == "maxFiles":
            assert info.minimum is not None
            assert info.maximum is not None
            HealthLogWriter(tmp_path, max_files=int(info.minimum))
            HealthLogWriter(tmp_path, max_files=int(info.maximum))


@pytest.mark.parametrize("group", ["", "technicians", "field_tech", "svc$"])
def test_technician_group_names_like_groupadd_accepts(group: str) -> None:
    assert parse_config(LogSettings, {"technicianGroup": group}).value.technician_group == group


@pytest.mark.parametrize("group", ["Technicians", "a b", "-x", "x" * 33, "../root"])
def test_other_group_names_are_refused(group: str) -> None:
    with pytest.raises(InvalidConfigurationError):
        parse_config(LogSettings, {"technicianGroup": group})
