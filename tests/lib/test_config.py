"""The configuration layer: typed models parsed from GetConfiguration documents, errors naming key paths."""

from __future__ import annotations

import dataclasses
import enum
import logging
import math
import sys
import time
import types
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from device_agent.config import (
    MAX_DEPTH,
    MAX_KEY_LENGTH,
    MAX_PROBLEMS,
    InvalidConfigurationError,
    KeyInfo,
    Parsed,
    defaults_document,
    describe,
    parse_config,
    setting,
    to_document,
)
from device_agent.errors import ConfigurationError, InvalidInputError

# --- realistic models: a telemetry publisher and a health monitor -------------------------------------------


class Group(enum.Enum):
    CPU = "cpu"
    MEMORY = "memory"
    DISK = "disk"
    NETWORK = "network"


class Overflow(enum.Enum):
    REJECT = "reject"
    DROP_OLDEST = "dropOldest"


@dataclass(frozen=True, kw_only=True)
class Batch:
    max_message_bytes: int = setting(default=65536, minimum=1024, maximum=120000)
    max_samples: int = setting(default=100, minimum=1, maximum=10000)


@dataclass(frozen=True, kw_only=True)
class Spool:
    max_records: int = setting(default=10000, minimum=0, maximum=1_000_000)
    max_bytes: int = setting(default=10_485_760, minimum=0)
    overflow: Overflow = Overflow.DROP_OLDEST


@dataclass(frozen=True, kw_only=True)
class Budget:
    bytes_per_day: int | None = setting(default=None, minimum=1, doc="Bytes a day; null: unlimited.")


@dataclass(frozen=True, kw_only=True)
class Telemetry:
    interval_seconds: int = setting(default=10, minimum=1, maximum=3600, doc="Seconds between samples.")
    groups: tuple[Group, ...] = setting(default=(Group.CPU, Group.MEMORY), max_items=4)
    topic: str = setting(default="dt/{thing}/telemetry", max_length=256, pattern=r"[^#+]*\{thing\}[^#+]*")
    qos: Literal[0, 1] = 1
    jitter: float = setting(default=0.1, minimum=0, maximum=1)
    enabled: bool = True
    api_token: str = setting(default="", secret=True, max_length=512)
    labels: Mapping[str, str] = setting(
        default={}, max_items=16, max_length=64, key_pattern=r"[a-z][a-zA-Z0-9]*"
    )
    batch: Batch = Batch()
    spool: Spool = Spool()
    budget: Budget = Budget()

    def validate(self) -> None:
        if 0 < self.spool.max_bytes < self.batch.max_message_bytes:
            raise ConfigurationError(
                ("spool", "maxBytes"),
                f"expected 0 or at least batch.maxMessageBytes ({self.batch.max_message_bytes}), "
                f"got {self.spool.max_bytes}",
            )


@dataclass(frozen=True, kw_only=True)
class Threshold:
    warn: float = setting(default=80, minimum=0, maximum=100)
    critical: float = setting(default=95, minimum=0, maximum=100)
    for_seconds: int = setting(default=300, minimum=0, maximum=86400)
    hysteresis: float = setting(default=5, minimum=0, maximum=50)

    def validate(self) -> None:
        if self.warn >= self.critical:
            raise ConfigurationError(
                ("warn",), f"expected less than critical ({self.critical:g}), got {self.warn:g}"
            )


@dataclass(frozen=True, kw_only=True)
class Action:
    check: Literal["cpu", "memory", "disk"] = "cpu"
    command: str = setting(default="restart", max_length=64, pattern=r"[a-z]+")
    retries: int = setting(default=3, minimum=0, maximum=10)

    def validate(self) -> None:
        if self.command == "reboot" and self.retries:
            raise ConfigurationError(("retries",), "expected 0 for reboot, got a positive number")


@dataclass(frozen=True, kw_only=True)
class Health:
    period_seconds: int = setting(default=30, minimum=5, maximum=3600)
    thresholds: Mapping[str, Threshold] = setting(
        default={"cpu": Threshold(), "memory": Threshold(warn=85, critical=97)}, key_pattern=r"[a-z][a-zA-Z]*"
    )
    checks: tuple[Literal["cpu", "memory", "disk"], ...] = ("cpu", "memory")
    names: tuple[str, ...] = setting(default=(), choices=("a", "b"))
    mode: Literal["reject", "dropOldest"] | None = None
    actions: tuple[Action, ...] = setting(default=(Action(),), max_items=8)


MODELS = (Telemetry, Health)

# --- defaults and declaration -------------------------------------------------------------------------------


def test_defaults_document_is_the_recipe_shape():
    assert defaults_document(Telemetry) == {
        "intervalSeconds": 10,
        "groups": ["cpu", "memory"],
        "topic": "dt/{thing}/telemetry",
        "qos": 1,
        "jitter": 0.1,
        "enabled": True,
        "apiToken": "",
        "labels": {},
        "batch": {"maxMessageBytes": 65536, "maxSamples": 100},
        "spool": {"maxRecords": 10000, "maxBytes": 10_485_760, "overflow": "dropOldest"},
        "budget": {"bytesPerDay": None},
    }
    assert defaults_document(Health)["thresholds"]["memory"] == {
        "warn": 85.0,
        "critical": 97.0,
        "forSeconds": 300,
        "hysteresis": 5.0,
    }


@pytest.mark.parametrize("model", MODELS)
def test_defaults_parse_to_the_default_instance(model):
    parsed = parse_config(model, defaults_document(model))
    assert parsed == Parsed(value=model(), unknown_keys=())
    assert parse_config(model, {}).value == model()


def test_missing_keys_take_defaults_and_nested_values_merge():
    value = parse_config(Telemetry, {"batch": {"maxSamples": 5}}).value
    assert value.batch == Batch(max_samples=5)
    assert value.spool == Spool()


def test_mutable_defaults_are_frozen_and_not_shared():
    first, second = Health(), Health()
    assert isinstance(first.thresholds, types.MappingProxyType)
    assert first.thresholds is not second.thresholds
    with pytest.raises(TypeError):
        first.thresholds["disk"] = Threshold()  # type: ignore[index]
    parsed = parse_config(Health, {"thresholds": {"disk": {}}}).value
    assert isinstance(parsed.thresholds, types.MappingProxyType)
    assert parsed.thresholds == {"disk": Threshold()}


def test_key_override_and_camel_case():
    @dataclass(frozen=True, kw_only=True)
    class Keys:
        max_message_bytes_per_second: int = 1
        url: str = setting(default="", key="endpointURL")

    assert defaults_document(Keys) == {"maxMessageBytesPerSecond": 1, "endpointURL": ""}
    assert parse_config(Keys, {"endpointURL": "x"}).value.url == "x"


# --- a table of valid documents -----------------------------------------------------------------------------

VALID: list[tuple[type, dict[str, Any], dict[str, Any]]] = [
    (Telemetry, {"intervalSeconds": 3600}, {"interval_seconds": 3600}),
    (Telemetry, {"intervalSeconds": 10.0}, {"interval_seconds": 10}),  # Greengrass may send floats
    (Telemetry, {"intervalSeconds": 1e3}, {"interval_seconds": 1000}),
    (Telemetry, {"jitter": 1}, {"jitter": 1.0}),  # an int is a number
    (Telemetry, {"groups": []}, {"groups": ()}),
    (Telemetry, {"groups": ["disk", "network"]}, {"groups": (Group.DISK, Group.NETWORK)}),
    (Telemetry, {"qos": 0}, {"qos": 0}),
    (Telemetry, {"qos": 0.0}, {"qos": 0}),
    (Telemetry, {"enabled": False}, {"enabled": False}),
    (Telemetry, {"topic": "a/{thing}/b"}, {"topic": "a/{thing}/b"}),
    (Telemetry, {"labels": {"site": "lab"}}, {"labels": {"site": "lab"}}),
    (Telemetry, {"budget": {"bytesPerDay": None}}, {"budget": Budget()}),
    (Telemetry, {"budget": {"bytesPerDay": 1000}}, {"budget": Budget(bytes_per_day=1000)}),
    (Telemetry, {"spool": {"overflow": "reject"}}, {"spool": Spool(overflow=Overflow.REJECT)}),
    (Telemetry, {"spool": {"maxBytes": 0}}, {"spool": Spool(max_bytes=0)}),  # 0: spooling off
    (Health, {"mode": None}, {"mode": None}),
    (Health, {"mode": "dropOldest"}, {"mode": "dropOldest"}),
    (Health, {"checks": ["disk"]}, {"checks": ("disk",)}),
    (Health, {"names": ["a", "b", "a"]}, {"names": ("a", "b", "a")}),
    (Health, {"thresholds": {}}, {"thresholds": {}}),
    (
        Health,
        {"thresholds": {"cpu": {"warn": 50, "critical": 60.5, "forSeconds": 0, "hysteresis": 0}}},
        {"thresholds": {"cpu": Threshold(warn=50, critical=60.5, for_seconds=0, hysteresis=0)}},
    ),
]


@pytest.mark.parametrize(("model", "document", "changes"), VALID)
def test_valid_documents(model, document, changes):
    parsed = parse_config(model, document)
    assert parsed.value == dataclasses.replace(model(), **changes)
    assert parsed.unknown_keys == ()
    assert parse_config(model, to_document(parsed.value)).value == parsed.value


def test_types_are_normalised():
    value = parse_config(Telemetry, {"intervalSeconds": 10.0, "jitter": 1}).value
    assert type(value.interval_seconds) is int
    assert type(value.jitter) is float


# --- a table of invalid documents: exact key path and expectation -------------------------------------------

TOPIC = r'a string matching "[^#+]*\\{thing\\}[^#+]*" of at most 256 characters'

INVALID: list[tuple[type, object, tuple[str | int, ...], str]] = [
    (Telemetry, None, (), "expected an object, got null"),
    (Telemetry, [], (), "expected an object, got a list of 0 items"),
    (
        Telemetry,
        {"intervalSeconds": 0},
        ("intervalSeconds",),
        "expected an integer between 1 and 3600, got 0",
    ),
    (
        Telemetry,
        {"intervalSeconds": 10.5},
        ("intervalSeconds",),
        "expected an integer between 1 and 3600, got 10.5",
    ),
    (
        Telemetry,
        {"intervalSeconds": True},
        ("intervalSeconds",),
        "expected an integer between 1 and 3600, got true",
    ),
    (
        Telemetry,
        {"intervalSeconds": "10"},
        ("intervalSeconds",),
        'expected an integer between 1 and 3600, got "10"',
    ),
    (
        Telemetry,
        {"intervalSeconds": None},
        ("intervalSeconds",),
        "expected an integer between 1 and 3600, got null",
    ),
    (
        Telemetry,
        {"intervalSeconds": math.inf},
        ("intervalSeconds",),
        "expected an integer between 1 and 3600, got Infinity",
    ),
    (
        Telemetry,
        {"intervalSeconds": 10**100},
        ("intervalSeconds",),
        "expected an integer between 1 and 3600, got a very large integer",
    ),
    (Telemetry, {"jitter": math.nan}, ("jitter",), "expected a number between 0 and 1, got NaN"),
    (Telemetry, {"jitter": False}, ("jitter",), "expected a number between 0 and 1, got false"),
    (
        Telemetry,
        {"jitter": 10**400},
        ("jitter",),
        "expected a number between 0 and 1, got a very large integer",
    ),
    (Telemetry, {"enabled": 1}, ("enabled",), "expected true or false, got 1"),
    (Telemetry, {"enabled": "true"}, ("enabled",), 'expected true or false, got "true"'),
    (Telemetry, {"qos": 2}, ("qos",), "expected one of 0, 1, got 2"),
    (Telemetry, {"qos": True}, ("qos",), "expected one of 0, 1, got true"),
    (Telemetry, {"groups": "cpu"}, ("groups",), 'expected a list of at most 4 items, got "cpu"'),
    (
        Telemetry,
        {"groups": ["cpu", "gpu"]},
        ("groups", 1),
        'expected one of "cpu", "memory", "disk", "network", got "gpu"',
    ),
    (
        Telemetry,
        {"groups": ["cpu"] * 5},
        ("groups",),
        "expected a list of at most 4 items, got one of 5 items",
    ),
    (
        Telemetry,
        {"topic": "dt/telemetry"},
        ("topic",),
        f'expected {TOPIC}, got "dt/telemetry"',
    ),
    (
        Telemetry,
        {"topic": 7},
        ("topic",),
        'expected a string matching "[^#+]*\\\\{thing\\\\}[^#+]*" of at most 256 characters, got 7',
    ),
    (
        Telemetry,
        {"batch": {"maxMessageBytes": 1}},
        ("batch", "maxMessageBytes"),
        "expected an integer between 1024 and 120000, got 1",
    ),
    (Telemetry, {"batch": 5}, ("batch",), "expected an object, got 5"),
    (
        Telemetry,
        {"budget": {"bytesPerDay": 0}},
        ("budget", "bytesPerDay"),
        "expected an integer of at least 1 or null, got 0",
    ),
    (
        Telemetry,
        {"spool": {"overflow": "drop"}},
        ("spool", "overflow"),
        'expected one of "reject", "dropOldest", got "drop"',
    ),
    (
        Telemetry,
        {"spool": {"overflow": None}},
        ("spool", "overflow"),
        'expected one of "reject", "dropOldest", got null',
    ),
    (Telemetry, {"labels": []}, ("labels",), "expected an object, got a list of 0 items"),
    (Telemetry, {"labels": {"Site": "x"}}, ("labels", "Site"), 'expected a key matching "[a-z][a-zA-Z0-9]*"'),
    (
        Telemetry,
        {"labels": {"site": 1}},
        ("labels", "site"),
        "expected a string of at most 64 characters, got 1",
    ),
    (
        Telemetry,
        {"labels": {f"k{i}": "v" for i in range(17)}},
        ("labels",),
        "expected an object of at most 16 keys, got one of 17 keys",
    ),
    # cross-field rules, with the nested path prefixed
    (
        Telemetry,
        {"spool": {"maxBytes": 2000}},
        ("spool", "maxBytes"),
        "expected 0 or at least batch.maxMessageBytes (65536), got 2000",
    ),
    (
        Health,
        {"thresholds": {"cpu": {"warn": 150}}},
        ("thresholds", "cpu", "warn"),
        "expected a number between 0 and 100, got 150",
    ),
    (
        Health,
        {"thresholds": {"cpu": {"warn": 96}}},
        ("thresholds", "cpu", "warn"),
        "expected less than critical (95), got 96",
    ),
    (Health, {"thresholds": {"cpu": None}}, ("thresholds", "cpu"), "expected an object, got null"),
    (
        Health,
        {"thresholds": {"cpu": {"forSeconds": -1}}},
        ("thresholds", "cpu", "forSeconds"),
        "expected an integer between 0 and 86400, got -1",
    ),
    (Health, {"checks": ["cpu", "gpu"]}, ("checks", 1), 'expected one of "cpu", "memory", "disk", got "gpu"'),
    (Health, {"names": ["c"]}, ("names", 0), 'expected one of "a", "b", got "c"'),
    (
        Health,
        {"actions": [{}, {"command": "reboot"}]},
        ("actions", 1, "retries"),
        "expected 0 for reboot, got a positive number",
    ),
    (
        Health,
        {"actions": [{"check": "gpu"}]},
        ("actions", 0, "check"),
        'expected one of "cpu", "memory", "disk", got "gpu"',
    ),
    (Health, {"actions": {}}, ("actions",), "expected a list of at most 8 items, got an object"),
    (Health, {"mode": "x"}, ("mode",), 'expected one of "reject", "dropOldest" or null, got "x"'),
    (
        Health,
        {"thresholds": {1: {}}},
        ("thresholds",),
        "expected an object with string keys, got a key of type int",
    ),
    (Health, {"x" * 200: 1}, (), f"expected keys of at most {MAX_KEY_LENGTH} characters, got one of 200"),
]


@pytest.mark.parametrize(("model", "document", "path", "expected"), INVALID)
def test_invalid_documents(model, document, path, expected):
    with pytest.raises(ConfigurationError) as caught:
        parse_config(model, document)
    error = caught.value
    assert (error.key_path, error.expected) == (path, expected)
    assert isinstance(error, InvalidConfigurationError)
    assert isinstance(error, InvalidInputError)
    assert [(p.key_path, p.expected) for p in error.problems] == [(path, expected)]


def test_message_names_the_path():
    with pytest.raises(ConfigurationError) as caught:
        parse_config(Health, {"thresholds": {"cpu": {"warn": 150}}})
    assert str(caught.value) == "thresholds.cpu.warn: expected a number between 0 and 100, got 150"


def test_every_problem_is_collected():
    document = {"intervalSeconds": 0, "batch": {"maxSamples": 0}, "groups": ["gpu", "cpu", "tpu"]}
    with pytest.raises(InvalidConfigurationError) as caught:
        parse_config(Telemetry, document)
    error = caught.value
    assert [p.key_path for p in error.problems] == [
        ("intervalSeconds",),
        ("batch", "maxSamples"),
        ("groups", 0),
        ("groups", 2),
    ]  # in document order
    assert str(error) == "intervalSeconds: expected an integer between 1 and 3600, got 0 (and 3 more)"
    assert not error.truncated


def test_problems_are_capped():
    document = {"labels": {f"k{i}": i for i in range(16)}, "groups": [1, 2, 3, 4], "intervalSeconds": 0}
    with pytest.raises(InvalidConfigurationError) as caught:
        parse_config(Telemetry, document)
    error = caught.value
    assert len(error.problems) == MAX_PROBLEMS
    assert error.truncated
    assert str(error).endswith(f"(and {MAX_PROBLEMS - 1}+ more)")


def test_cross_field_rule_runs_only_on_valid_fields():
    with pytest.raises(InvalidConfigurationError) as caught:
        parse_config(Health, {"thresholds": {"cpu": {"warn": 150, "critical": 20}}})
    assert [p.key_path for p in caught.value.problems] == [("thresholds", "cpu", "warn")]


def test_value_error_from_a_model_becomes_a_configuration_error():
    @dataclass(frozen=True, kw_only=True)
    class Window:
        start: int = 0
        end: int = 10

        def __post_init__(self) -> None:
            if self.start > self.end:
                raise ValueError("expected start <= end")

    with pytest.raises(InvalidConfigurationError) as caught:
        parse_config(Window, {"start": 11})
    assert (caught.value.key_path, caught.value.expected) == ((), "expected start <= end")


@dataclass(frozen=True, kw_only=True)
class Pair:
    a: int = 0
    b: int = 0

    def validate(self) -> None:
        if self.a and self.b:
            problems = [
                ConfigurationError(("a",), "expected 0 with b"),
                ConfigurationError(("b",), "expected 0 with a"),
            ]
            raise InvalidConfigurationError(problems)


@dataclass(frozen=True, kw_only=True)
class Outer:
    pair: Pair = Pair()


def test_validate_may_report_several_problems():
    with pytest.raises(InvalidConfigurationError) as caught:
        parse_config(Outer, {"pair": {"a": 1, "b": 1}})
    assert [p.key_path for p in caught.value.problems] == [("pair", "a"), ("pair", "b")]


# --- unknown and ignored keys -------------------------------------------------------------------------------


def test_unknown_keys_are_reported_with_their_paths():
    document = {
        "intervalSeconds": 5,
        "colour": {"deep": [1, 2, 3]},
        "batch": {"maxSamples": 3, "compress": True},
        "accessControl": {"aws.greengrass.ipc.pubsub": {}},
        "_comment": "ignored",
        "spool": {"accessControl": 1, "_note": 2},
    }
    parsed = parse_config(Telemetry, document)
    assert parsed.value.interval_seconds == 5
    assert parsed.unknown_keys == (("colour",), ("batch", "compress"), ("spool", "accessControl"))


def test_unknown_keys_in_mapping_values_and_ignored_underscore_keys():
    parsed = parse_config(Health, {"thresholds": {"_comment": "x", "cpu": {"warm": 1}}})
    assert parsed.unknown_keys == (("thresholds", "cpu", "warm"),)
    assert set(parsed.value.thresholds) == {"cpu"}


def test_unknown_keys_are_logged_without_values(caplog):
    with caplog.at_level(logging.DEBUG, logger="device_agent.config"):
        parse_config(Telemetry, {"secretThing": "hunter2"})
    assert "config.unknown_keys" in caplog.text
    assert "hunter2" not in caplog.text


def test_read_only_mappings_are_accepted_as_documents():
    document = types.MappingProxyType(
        {"batch": types.MappingProxyType({"maxSamples": 7}), "groups": ("disk",)}
    )
    value = parse_config(Telemetry, document).value
    assert value.batch.max_samples == 7
    assert value.groups == (Group.DISK,)


# --- secrets and bounded messages ---------------------------------------------------------------------------


@pytest.mark.parametrize("token", [5, True, ["hunter2"], "hunter2" * 100, 1.5])
def test_secret_values_never_appear_in_messages(token):
    with pytest.raises(InvalidConfigurationError) as caught:
        parse_config(Telemetry, {"apiToken": token})
    text = str(caught.value) + repr(caught.value.problems)
    assert caught.value.key_path == ("apiToken",)
    assert "hunter2" not in text
    assert "1.5" not in text
    assert "true" not in text


@pytest.mark.parametrize(
    "document",
    [
        {"topic": "q" * 10_000_000},
        {"topic": "{thing}#" + "\x00" * 100},
        {"spool": {"overflow": "\U0001f600" * 1000}},
        {"groups": ["z" * 100_000]},
        {"labels": {"k": "v" * 100_000}},
        {"intervalSeconds": -(10**5000)},
    ],
)
def test_messages_are_bounded_for_hostile_values(document):
    with pytest.raises(InvalidConfigurationError) as caught:
        parse_config(Telemetry, document)
    assert len(str(caught.value)) < 300
    for problem in caught.value.problems:
        assert len(problem.expected) <= 300


def test_long_strings_are_shown_truncated_with_their_length():
    with pytest.raises(InvalidConfigurationError) as caught:
        parse_config(Telemetry, {"spool": {"overflow": "x" * 1000}})
    assert caught.value.expected.endswith("… (1000 characters)")
    shown = caught.value.expected.split("got ")[1]
    assert shown.count("x") == 60 - 1  # the opening quote is one of the 60 characters


# --- hostile shapes: depth, size, lists, never slow ---------------------------------------------------------


def nested(depth: int, leaf: object = 1) -> object:
    value = leaf
    for _ in range(depth):
        value = [value]
    return value


def nested_objects(depth: int) -> object:
    value: object = {}
    for _ in range(depth):
        value = {"batch": value}
    return value


def test_deep_documents_never_recurse_beyond_the_model():
    depth = sys.getrecursionlimit() * 10
    parsed = parse_config(Telemetry, {"batch": nested_objects(depth)})
    assert parsed.unknown_keys == (("batch", "batch"),)
    parsed = parse_config(Telemetry, {"unknown": nested(depth), "_x": nested_objects(depth)})
    assert parsed.unknown_keys == (("unknown",),)
    with pytest.raises(InvalidConfigurationError) as caught:
        parse_config(Telemetry, {"groups": nested(depth)})
    assert caught.value.key_path == ("groups", 0)


def test_huge_documents_are_rejected_quickly():
    started = time.monotonic()
    with pytest.raises(InvalidConfigurationError) as caught:
        parse_config(Telemetry, {f"k{i}": i for i in range(300_000)})
    assert caught.value.expected == "expected at most 100000 values in all"
    with pytest.raises(InvalidConfigurationError) as caught:
        parse_config(Health, {"names": ["a"] * 10_000_000})
    assert caught.value.expected == "expected a list of at most 1000 items, got one of 10000000 items"
    assert time.monotonic() - started < 5


def test_node_budget_names_where_it_ran_out():
    document = {"thresholds": {f"c{'x' * i}": {"warn": 1} for i in range(10)}}
    with pytest.raises(InvalidConfigurationError) as caught:
        parse_config(Health, document, max_nodes=8)
    assert caught.value.key_path == ("thresholds",)
    assert caught.value.truncated
    assert parse_config(Health, document, max_nodes=100).value.thresholds["cxxxxxxxxx"].warn == 1


# --- describe -----------------------------------------------------------------------------------------------


def test_describe_lists_every_key_with_limits():
    rows = {row.key_path: row for row in describe(Telemetry)}
    assert rows["intervalSeconds"] == KeyInfo(
        key_path="intervalSeconds",
        type_name="integer",
        expected="an integer between 1 and 3600",
        default=10,
        doc="Seconds between samples.",
        minimum=1,
        maximum=3600,
    )
    assert rows["groups"].type_name == "list of string"
    assert rows["groups"].choices == ("cpu", "memory", "disk", "network")
    assert (
        rows["groups"].expected == 'a list of at most 4 items, each one of "cpu", "memory", "disk", "network"'
    )
    assert rows["budget.bytesPerDay"].type_name == "integer or null"
    assert rows["budget.bytesPerDay"].default is None
    assert rows["spool.overflow"].default == "dropOldest"
    assert rows["apiToken"].secret
    assert list(rows)[-3:] == ["spool.overflow", "budget", "budget.bytesPerDay"]


def test_describe_uses_a_star_for_list_items():
    rows = {row.key_path: row for row in describe(Health)}
    assert rows["actions"].default == [{"check": "cpu", "command": "restart", "retries": 3}]
    assert rows["actions[*].retries"].default == 3
    assert rows["actions[*].command"].pattern == "[a-z]+"


def test_describe_uses_a_star_for_mapping_keys():
    rows = {row.key_path: row for row in describe(Health)}
    assert rows["thresholds"].type_name == "map of object"
    assert rows["thresholds"].default == defaults_document(Health)["thresholds"]
    assert rows["thresholds.*.warn"].default == 80.0
    assert rows["thresholds.*.forSeconds"].maximum == 86400
    assert rows["mode"].type_name == "string or null"


# --- mistakes in a model's declaration are TypeErrors, at first use -----------------------------------------


def declare(**annotations_and_defaults: tuple[Any, Any]) -> type:
    """A frozen model built from {name: (annotation, default)}: annotations are real types here."""
    fields = [(name, hint, value) for name, (hint, value) in annotations_and_defaults.items()]
    return dataclasses.make_dataclass("Declared", fields, frozen=True, kw_only=True)


@pytest.mark.parametrize(
    ("model", "message"),
    [
        (declare(a=(list[int], dataclasses.field(default_factory=list))), "is not supported"),
        (declare(a=(int | str, 1)), "only `T | None` unions"),
        (declare(a=(tuple[int, int], (1, 2))), "tuple[T, ...]"),
        (declare(a=(Mapping[int, int], setting(default={}))), "mapping keys must be str"),
        (declare(a=(int, setting(default=1, pattern="x"))), "pattern do not apply"),
        (declare(a=(str, setting(default="x", minimum=1))), "minimum do not apply"),
        (
            declare(a=(int, setting(default=0, minimum=1))),
            "its default is invalid: a: expected an integer of at least 1",
        ),
        (declare(a=(int, setting(default=1, key="_a"))), "would be ignored"),
        (declare(a=(int, setting(default=1, key="accessControl"))), "would be ignored"),
        (declare(a=(int, 1), b=(int, setting(default=1, key="a"))), "two fields share a key"),
        (dataclasses.make_dataclass("Loose", [("a", int, 1)]), "must be frozen"),
        (dataclasses.make_dataclass("Required", [("a", int)], frozen=True), "need a default"),
        (int, "is not a dataclass"),
    ],
)
def test_declaration_mistakes(model, message):
    with pytest.raises(TypeError, match=message.replace("[", r"\[").replace("|", r"\|")):
        parse_config(model, {})


@dataclass(frozen=True, kw_only=True)
class Node:
    children: tuple[Node, ...] = ()


def test_models_deeper_than_the_limit_are_refused():
    model: type = declare(a=(int, 1))
    for _ in range(MAX_DEPTH):
        model = declare(inner=(model, model()))
    with pytest.raises(TypeError, match="nested deeper than"):
        parse_config(model, {})


def test_an_invalid_default_instance_is_a_declaration_error():
    @dataclass(frozen=True, kw_only=True)
    class Strict:
        a: int = 0

        def __post_init__(self) -> None:
            if self.a == 0:
                raise ValueError("a must not be 0")

    with pytest.raises(TypeError, match="its default is invalid: a must not be 0"):
        parse_config(Strict, {"a": 1})


def test_recursive_models_are_refused():
    with pytest.raises(TypeError, match="recursive"):
        parse_config(Node, {})


def test_setting_needs_exactly_one_default():
    with pytest.raises(TypeError, match="exactly one"):
        setting()  # type: ignore[call-overload]
    with pytest.raises(TypeError, match="exactly one"):
        setting(1, default_factory=int)  # type: ignore[call-overload]


def test_to_document_needs_a_model_instance():
    with pytest.raises(TypeError):
        to_document(Telemetry)
    with pytest.raises(TypeError):
        to_document({"a": 1})


# --- properties: any document is accepted and round-trips, or rejected with a real key path -----------------

JSON_SCALARS = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
JSON = st.recursive(
    JSON_SCALARS,
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5)
    ),
    max_leaves=30,
)
HOSTILE = st.one_of(
    JSON,
    st.integers(min_value=4000, max_value=20_000).map(lambda n: "a" * n),
    st.integers(min_value=900, max_value=3000).map(lambda n: ["cpu"] * n),
    st.integers(min_value=1, max_value=5000).map(nested),
    st.integers(min_value=1, max_value=5000).map(nested_objects),
    st.sampled_from([math.nan, math.inf, -math.inf, 10**400, -(2**63), 1e308, -0.0, "", "\x00", "{thing}"]),
)


def value(valid: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(valid, valid, HOSTILE)


def document(fields: dict[str, st.SearchStrategy[Any]]) -> st.SearchStrategy[dict[str, Any]]:
    optional = {key: value(strategy) for key, strategy in fields.items()}
    extra = st.dictionaries(st.text(max_size=12), HOSTILE, max_size=3)
    return st.tuples(st.fixed_dictionaries({}, optional=optional), extra).map(
        lambda pair: {**pair[1], **pair[0]}
    )


BATCH = document({"maxMessageBytes": st.integers(0, 200_000), "maxSamples": st.integers(-5, 20_000)})
SPOOL = document(
    {
        "maxRecords": st.integers(-1, 2_000_000),
        "maxBytes": st.integers(0, 10**9),
        "overflow": st.sampled_from(["reject", "dropOldest", "x"]),
    }
)
TELEMETRY_DOCS = document(
    {
        "intervalSeconds": st.integers(0, 4000) | st.floats(0, 4000),
        "groups": st.lists(st.sampled_from(["cpu", "memory", "disk", "network", "gpu"]), max_size=6),
        "topic": st.sampled_from(["dt/{thing}/t", "dt/t", "{thing}", "#/{thing}"]) | st.text(max_size=30),
        "qos": st.sampled_from([0, 1, 2, 0.0, 1.0, True]),
        "jitter": st.floats(-1, 2) | st.integers(-1, 2),
        "enabled": st.booleans(),
        "apiToken": st.text(max_size=600),
        "labels": st.dictionaries(
            st.from_regex(r"[a-zA-Z_][a-zA-Z0-9]{0,5}", fullmatch=True), st.text(max_size=70), max_size=20
        ),
        "batch": BATCH,
        "spool": SPOOL,
        "budget": document({"bytesPerDay": st.none() | st.integers(-1, 10**6)}),
        "accessControl": JSON,
    }
)
THRESHOLD = document(
    {
        "warn": st.floats(-10, 110) | st.integers(-10, 110),
        "critical": st.floats(-10, 110) | st.integers(-10, 110),
        "forSeconds": st.integers(-1, 90_000),
        "hysteresis": st.floats(0, 60),
    }
)
HEALTH_DOCS = document(
    {
        "periodSeconds": st.integers(0, 4000),
        "thresholds": st.dictionaries(
            st.sampled_from(["cpu", "memory", "disk", "Bad", "_c", "x" * 200]), THRESHOLD, max_size=4
        ),
        "checks": st.lists(st.sampled_from(["cpu", "memory", "disk", "gpu"]), max_size=4),
        "names": st.lists(st.sampled_from(["a", "b", "c"]), max_size=4),
        "mode": st.sampled_from(["reject", "dropOldest", None, "x"]),
        "actions": st.lists(
            document(
                {
                    "check": st.sampled_from(["cpu", "disk", "gpu"]),
                    "command": st.sampled_from(["restart", "reboot", "Bad", "x" * 70]),
                    "retries": st.integers(-1, 11),
                }
            ),
            max_size=9,
        ),
    }
)


def in_document(document: object, path: tuple[str | int, ...]) -> bool:
    node: Any = document
    for part in path:
        in_object = isinstance(node, Mapping) and part in node
        in_list = isinstance(node, list | tuple) and isinstance(part, int) and 0 <= part < len(node)
        if not (in_object or in_list):
            return False
        node = node[part]
    return True


def in_model(model: type, path: tuple[str | int, ...]) -> bool:
    wanted = [part if isinstance(part, str) else "[*]" for part in path]
    for row in describe(model):
        pattern = row.key_path.replace("[*]", ".[*]").split(".")
        if len(pattern) == len(wanted) and all(p in {"*", w} for p, w in zip(pattern, wanted, strict=True)):
            return True
    return False


def check_rejection(model: type, document: object, error: InvalidConfigurationError) -> None:
    assert error.problems
    assert len(str(error)) < 400
    for problem in error.problems:
        assert in_document(document, problem.key_path) or in_model(model, problem.key_path), problem


def check_any_document(model: type[Any], document: object) -> None:
    try:
        parsed: Parsed[Any] = parse_config(model, document)
    except InvalidConfigurationError as error:
        check_rejection(model, document, error)
        return
    for path in parsed.unknown_keys:
        assert in_document(document, path)
    again: Parsed[Any] = parse_config(model, to_document(parsed.value))
    assert again == Parsed(value=parsed.value, unknown_keys=())


PROPERTY = settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)


@PROPERTY
@given(TELEMETRY_DOCS)
def test_any_telemetry_document_is_accepted_or_rejected_with_a_key_path(document):
    check_any_document(Telemetry, document)


@PROPERTY
@given(HEALTH_DOCS)
def test_any_health_document_is_accepted_or_rejected_with_a_key_path(document):
    check_any_document(Health, document)


@PROPERTY
@given(st.sampled_from(MODELS), HOSTILE)
def test_any_json_is_accepted_or_rejected_with_a_key_path(model, document):
    check_any_document(model, document)


def optional(fields: dict[str, st.SearchStrategy[Any]]) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries({}, optional=fields)


VALID_TELEMETRY = optional(
    {
        "intervalSeconds": st.integers(1, 3600) | st.integers(1, 3600).map(float),
        "groups": st.lists(st.sampled_from(["cpu", "memory", "disk", "network"]), max_size=4),
        "topic": st.text(st.characters(exclude_characters="#+"), max_size=100).map(
            lambda text: text + "{thing}"
        ),
        "qos": st.sampled_from([0, 1]),
        "jitter": st.floats(0, 1) | st.integers(0, 1),
        "enabled": st.booleans(),
        "apiToken": st.text(max_size=512),
        "labels": st.dictionaries(
            st.from_regex(r"[a-z][a-zA-Z0-9]{0,8}", fullmatch=True), st.text(max_size=64), max_size=16
        ),
        "batch": optional({"maxMessageBytes": st.integers(1024, 65536), "maxSamples": st.integers(1, 10000)}),
        "spool": optional(
            {
                "maxRecords": st.integers(0, 1_000_000),
                "maxBytes": st.just(0) | st.integers(65536, 10**12),
                "overflow": st.sampled_from(["reject", "dropOldest"]),
            }
        ),
        "budget": optional({"bytesPerDay": st.none() | st.integers(1, 10**12)}),
    }
)


@settings(max_examples=200, deadline=None)
@given(VALID_TELEMETRY)
def test_valid_documents_are_accepted_and_round_trip(document):
    parsed = parse_config(Telemetry, document)
    assert parsed.unknown_keys == ()
    assert parse_config(Telemetry, to_document(parsed.value)).value == parsed.value
    assert_contains(to_document(parsed.value), document)


def assert_contains(dumped: Mapping[str, Any], document: Mapping[str, Any]) -> None:
    """Every value the document gave is in the dumped document (normalised: 10.0 == 10)."""
    for key, expected in document.items():
        if isinstance(expected, dict) and key != "labels":
            assert_contains(dumped[key], expected)
        else:
            assert dumped[key] == expected
