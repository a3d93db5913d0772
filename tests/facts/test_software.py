"""Software facts: the thing name and nucleus version from the environment the nucleus gives (garbage
included), and the running interpreter's Python, awsiotsdk, awscrt and suite versions."""

from __future__ import annotations

import importlib.metadata
import platform
import sys

import awscrt
import pytest
from hypothesis import given
from hypothesis import strategies as st

from device_agent import __version__
from device_agent.facts import software
from device_agent.facts.fact import Fact, Status


def test_the_thing_name_and_nucleus_version_from_the_environment():
    environ = {"AWS_IOT_THING_NAME": "thermostat-0042", "GGC_VERSION": "2.14.3"}
    assert software.thing_name(environ) == Fact.ok("thermostat-0042", source="environment")
    assert software.nucleus_version(environ) == Fact.ok("2.14.3", source="environment")


@pytest.mark.parametrize(
    "environ", [{}, {"AWS_IOT_THING_NAME": "", "GGC_VERSION": ""}], ids=["unset", "empty"]
)
def test_unset_or_empty_variables_are_unavailable(environ: dict[str, str]):
    assert software.thing_name(environ) == Fact.unavailable("AWS_IOT_THING_NAME is not set")
    assert software.nucleus_version(environ) == Fact.unavailable("GGC_VERSION is not set")


@pytest.mark.parametrize(
    "value",
    [
        "thermostat 0042",
        "thermostat/0042",
        "thermostat+",
        "t" * 129,
        "thermostat\n0042",
        "thérmostat",
        "thermostat\x00",
    ],
    ids=["space", "slash", "wildcard", "too long", "newline", "not ascii", "nul"],
)
def test_a_garbage_thing_name_is_an_error_that_does_not_repeat_it(value: str):
    fact = software.thing_name({"AWS_IOT_THING_NAME": value})
    assert fact == Fact.error("AWS_IOT_THING_NAME is not a valid thing name")
    assert value not in fact.to_document()["reason"]


@pytest.mark.parametrize(
    "value",
    ["2.14.3 ", "2.14.3\n", "v" * 65, "2.14.3;rm -rf", "\uff12.14.3", "2.14.3/../x"],
    ids=["trailing space", "newline", "too long", "shell", "fullwidth digit", "path"],
)
def test_a_garbage_nucleus_version_is_an_error_that_does_not_repeat_it(value: str):
    fact = software.nucleus_version({"GGC_VERSION": value})
    assert fact == Fact.error("GGC_VERSION is not a version")


REASONS = {
    "AWS_IOT_THING_NAME is not set",
    "AWS_IOT_THING_NAME is not a valid thing name",
    "GGC_VERSION is not set",
    "GGC_VERSION is not a version",
}


@given(st.text(max_size=300))
def test_any_environment_value_gives_a_fact_never_an_exception_nor_a_reason_quoting_it(value: str):
    for fact in (
        software.thing_name({"AWS_IOT_THING_NAME": value}),
        software.nucleus_version({"GGC_VERSION": value}),
    ):
        if fact.status is Status.OK:
            assert fact.value == value
        else:
            assert fact.reason in REASONS  # fixed text: nothing read from the environment


def test_the_software_fact_names_the_running_interpreter_and_packages():
    fact = software.software()
    assert (fact.status, fact.source) == (Status.OK, "runtime")
    assert fact.value == {
        "python": platform.python_version(),
        "awsiotsdk": importlib.metadata.version("awsiotsdk"),
        "awscrt": importlib.metadata.version("awscrt"),
        "suite": __version__,
    }


def test_a_package_without_a_version_attribute_says_unknown(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delattr(awscrt, "__version__", raising=False)
    assert software.software().value["awscrt"] == "unknown"


def test_a_version_attribute_that_is_not_a_string_is_capped(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(awscrt, "__version__", 10**100, raising=False)
    assert len(software.software().value["awscrt"]) == 64


def test_an_sdk_that_cannot_be_imported_is_an_error_fact_not_a_crash(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setitem(sys.modules, "awsiot", None)  # import awsiot now raises ImportError
    fact = software.software()
    assert fact.status is Status.ERROR
    assert fact.value is None
