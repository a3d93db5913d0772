"""The publisher's configuration: defaults, limits, cross-key rules, and documentation of every key."""

from __future__ import annotations

import contextlib
import json
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from telemetry_publisher.budget import Period
from telemetry_publisher.config import TelemetryConfig
from telemetry_publisher.payload import Packer
from telemetry_publisher.state import StoredValue

from device_agent.config import InvalidConfigurationError, defaults_document, describe, parse_config
from device_agent.metrics import ALL_GROUPS, Group, ProcessMatcher

DOCS = Path(__file__).resolve().parents[2] / "docs" / "telemetry.md"


def parse(document: dict[str, Any]) -> TelemetryConfig:
    return parse_config(TelemetryConfig, document).value


def test_the_defaults_are_the_documented_ones():
    config = parse({})
    assert config.interval_seconds == 10.0
    assert config.groups == ALL_GROUPS
    assert config.topic == "dt/device-agent/{thing}/telemetry"
    assert config.local_topic == "device-agent/metrics"
    assert config.budget.limit_bytes is None
    assert defaults_document(TelemetryConfig)["spool"] == {
        "capSamples": 25920, "memorySamples": 720, "drainMessagesPerSecond": 4.0, "maxAgeDays": 30.0,
    }  # fmt: skip


def test_the_defaults_build_working_pieces():
    config = parse({})
    sampler = config.sampler_settings()
    assert sampler.groups == frozenset(ALL_GROUPS)
    assert ProcessMatcher(name="nucleus", cmdline_contains="Greengrass.jar") in sampler.processes
    spool = config.spool_settings()
    assert (spool.cap, spool.batch_size, spool.max_age_seconds) == (25920, 100, 30 * 86400.0)
    assert config.budget_settings().period is Period.MONTH
    Packer(thing="t" * 128, max_bytes=config.max_message_bytes, max_samples=config.batch_size)


def test_a_budget_and_groups_parse():
    config = parse(
        {
            "groups": ["cpu", "memory"],
            "budget": {"limitBytes": 50_000_000, "period": "day", "keepGroups": ["cpu"]},
            "spool": {"maxAgeDays": 0},
        }
    )
    assert config.groups == (Group.CPU, Group.MEMORY)
    assert config.budget_settings().limit_bytes == 50_000_000
    assert config.budget_settings().keep_groups == frozenset({Group.CPU})
    assert config.spool_settings().max_age_seconds is None


@pytest.mark.parametrize(
    ("document", "key"),
    [
        ({"intervalSeconds": 0.5}, "intervalSeconds"),
        ({"intervalSeconds": "10"}, "intervalSeconds"),
        ({"groups": ["cpu", "gpu"]}, "groups[1]"),
        ({"groups": ["cpu", "cpu"]}, "groups"),
        ({"mounts": ["data"]}, "mounts[0]"),
        ({"interfaces": ["eth0/1"]}, "interfaces[0]"),
        ({"processes": {"1bad": "x"}}, "processes.1bad"),
        ({"processes": {"app": ""}}, "processes.app"),
        ({"maxMessageBytes": 131072}, "maxMessageBytes"),
        ({"batchSize": 0}, "batchSize"),
        ({"spool": {"capSamples": 5}}, "spool.capSamples"),
        ({"spool": {"drainMessagesPerSecond": 10}}, "spool.drainMessagesPerSecond"),
        ({"budget": {"limitBytes": 100}}, "budget.limitBytes"),
        ({"budget": {"period": "week"}}, "budget.period"),
        ({"budget": {"maxIntervalSeconds": 30}, "intervalSeconds": 60}, "budget.maxIntervalSeconds"),
        ({"budget": {"keepGroups": ["cpu", "cpu"]}}, "budget.keepGroups"),
        ({"topic": "dt/+/telemetry"}, "topic"),
        ({"topic": "dt/#"}, "topic"),
        ({"topic": "$aws/things/{thing}/shadow/update"}, "topic"),
        ({"topic": "dt/{device}/telemetry"}, "topic"),
        ({"topic": "a/b/c/d/e/f/g/h/{thing}"}, "topic"),
        ({"topic": "t/" + "x" * 130 + "/{thing}"}, "topic"),
        ({"localTopic": "device-agent/{thing}/metrics"}, "localTopic"),
        ({"localTopic": "device-agent/+"}, "localTopic"),
    ],
)
def test_an_invalid_value_names_its_key(document: dict[str, Any], key: str):
    with pytest.raises(InvalidConfigurationError) as raised:
        parse(document)
    paths = {".".join(str(p) for p in problem.key_path) for problem in raised.value.problems}
    assert key.replace("[", ".").replace("]", "") in paths


def test_an_empty_local_topic_turns_the_local_sample_off():
    assert parse({"localTopic": ""}).local_topic == ""


@settings(max_examples=100, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(
            ["intervalSeconds", "maxMessageBytes", "batchSize", "topic", "groups", "spool", "budget"]
        ),
        st.one_of(
            st.none(),
            st.booleans(),
            st.integers(),
            st.floats(),
            st.text(max_size=20),
            st.lists(st.text(max_size=8), max_size=3),
            st.dictionaries(st.text(max_size=8), st.integers(), max_size=3),
        ),
        max_size=4,
    )
)
def test_any_document_parses_or_fails_with_a_key_path(document: dict[str, Any]):
    try:
        config = parse(document)
    except InvalidConfigurationError as error:
        problems = error.problems
    else:
        config.validate()  # a parsed configuration satisfies its own rules
        return
    assert problems
    assert all(problem.key_path for problem in problems)


def documented_defaults() -> dict[str, str]:
    """The configuration table of docs/telemetry.md: each key's default cell."""
    text = DOCS.read_text(encoding="utf-8")
    section = text[text.index("## Configuration") :]
    section = section[: section.index("\n## ", 1)]
    rows = {}
    for line in section.splitlines():
        if match := re.fullmatch(r"\| `([A-Za-z.]+)` \|\s*([^|]*?)\s*\|.*", line):
            rows[match[1]] = match[2]
    return rows


def test_every_key_is_documented_with_its_default_value():
    rows = documented_defaults()
    wrong = []
    for info in describe(TelemetryConfig):
        cell = rows.get(info.key_path)
        if cell is None:
            wrong.append((info.key_path, "not in the table"))
        elif info.type_name != "object":
            values = []
            for quoted in re.findall(r"`([^`]+)`", cell):
                with contextlib.suppress(ValueError):
                    values.append(json.loads(quoted))
            # The documented value, with its type: 10.0 is not 10 (a float key shows a decimal point).
            if not any(v == info.default and type(v) is type(info.default) for v in values):
                wrong.append((info.key_path, cell))
    assert wrong == []


async def test_a_stored_value_is_one_key_of_a_key_value_store():
    class KeyValue:
        def __init__(self) -> None:
            self.data: dict[str, bytes] = {}

        async def get_or_none(self, key: str) -> bytes | None:
            return self.data.get(key)

        async def put(self, key: str, value: bytes) -> None:
            self.data[key] = value

    store = KeyValue()
    value = StoredValue(store, "sequence")
    assert await value.load() is None
    await value.save(b"42")
    assert store.data == {"sequence": b"42"}
    assert await value.load() == b"42"
    assert repr(value) == "StoredValue('sequence')"
