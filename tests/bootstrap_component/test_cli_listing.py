"""The components fact from ListComponents, without a nucleus: a fake session answers or refuses, a fake
clock stands for time. End to end, with the Greengrass CLI and without it: test_bootstrap_e2e.py."""

from __future__ import annotations

import logging

import pytest
from bootstrap_reporter.cli_listing import FRESH_SECONDS, LIST_TIMEOUT, MAX_COMPONENTS, RETRY, CliListing

from device_agent.errors import (
    ConnectionLostError,
    DeviceAgentError,
    NotAuthorizedError,
    OperationNotSupportedError,
    TimedOutError,
)
from device_agent.ipc_types import ComponentInfo

STORE = ComponentInfo("com.deviceagent.EncryptedStore", "0.1.0", "RUNNING")
NUCLEUS = ComponentInfo("aws.greengrass.Nucleus", "2.14.0", "FINISHED")


class FakeSession:
    """Answers ListComponents with `infos`, or raises `error`; counts the calls."""

    def __init__(self, infos: list[ComponentInfo] | None = None) -> None:
        self.infos = infos or [STORE, NUCLEUS]
        self.error: DeviceAgentError | None = None
        self.calls = 0
        self.timeouts: list[float | None] = []

    async def list_components(self, *, timeout: float | None = None) -> list[ComponentInfo]:
        self.calls += 1
        self.timeouts.append(timeout)
        if self.error is not None:
            raise self.error
        return list(self.infos)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_the_cli_answer_becomes_name_and_version_sorted_by_name_without_state():
    session = FakeSession()
    fact = await CliListing().fact(session)
    assert fact is not None
    assert fact.source == "ListComponents"
    assert "omitted" not in fact.value
    assert fact.value == {
        "source": "greengrass-cli",
        "components": [
            {"name": "aws.greengrass.Nucleus", "version": "2.14.0"},
            {"name": "com.deviceagent.EncryptedStore", "version": "0.1.0"},
        ],
    }
    assert session.timeouts == [LIST_TIMEOUT]


async def test_garbage_in_the_answer_is_left_out_or_null_and_the_list_is_capped():
    session = FakeSession(
        [
            ComponentInfo("bad name/with slash", "1.0.0", "RUNNING"),
            ComponentInfo("com.example.NoVersion", None, "SLEEPING"),
            ComponentInfo("com.example.BadVersion", "not a version!", None),
            *(ComponentInfo(f"com.example.Z{i:03}", "1.0.0", "RUNNING") for i in range(MAX_COMPONENTS + 5)),
        ]
    )
    fact = await CliListing().fact(session)
    assert fact is not None
    listed = fact.value["components"]
    assert len(listed) == MAX_COMPONENTS
    assert fact.value["omitted"] == 2 + 5  # the list says how many it left out, sorted last by name
    assert all(c["name"] != "bad name/with slash" for c in listed)
    by_name = {c["name"]: c for c in listed}
    assert by_name["com.example.BadVersion"] == {"name": "com.example.BadVersion", "version": None}
    assert by_name["com.example.NoVersion"] == {"name": "com.example.NoVersion", "version": None}


@pytest.mark.parametrize(
    ("error", "why"),
    [
        (NotAuthorizedError("Not Authorized"), "ListComponents is not authorized"),
        (
            OperationNotSupportedError("aws.greengrass#ListComponents", "not supported"),
            "no aws.greengrass.Cli on this device",
        ),
    ],
    ids=["refused", "no CLI"],
)
async def test_a_refusal_or_no_cli_falls_back_and_is_not_asked_again_until_the_backoff_passes(
    error: DeviceAgentError, why: str, caplog: pytest.LogCaptureFixture
):
    clock, session = Clock(), FakeSession()
    session.error = error
    listing = CliListing(clock=clock)
    caplog.set_level(logging.INFO, logger="bootstrap_reporter.cli_listing")
    assert await listing.fact(session) is None
    assert listing.why_not == why
    for _ in range(50):  # collections in a tight loop do not ask again
        assert await listing.fact(session) is None
    assert session.calls == 1
    assert listing.next_try <= clock.now + RETRY.ceiling(0)
    clock.now = listing.next_try
    assert await listing.fact(session) is None
    assert session.calls == 2
    # The waits grow, capped: the n-th refusal waits at most RETRY.ceiling(n - 1), never more than the cap.
    for attempt in range(2, 12):
        asked_at = clock.now = listing.next_try
        await listing.fact(session)
        assert session.calls == attempt + 1
        assert listing.next_try - asked_at <= RETRY.ceiling(attempt)
    assert RETRY.ceiling(11) == RETRY.maximum
    # One log line per change of source, not one per refusal.
    assert [r.message for r in caplog.records].count("bootstrap.components_source") == 1


async def test_a_transient_failure_keeps_the_last_list_and_backs_off():
    clock, session = Clock(), FakeSession()
    listing = CliListing(clock=clock)
    first = await listing.fact(session)
    for error in (TimedOutError("ListComponents timed out"), ConnectionLostError("closed")):
        session.error = error
        clock.now = listing.next_try
        assert await listing.fact(session) == first  # a hiccup does not flip the source
        assert listing.next_try > clock.now - 1e-9
        calls = session.calls
        assert await listing.fact(session) == first
        assert session.calls == calls  # not asked again before the backoff passes


async def test_success_asks_at_every_collection_and_a_later_refusal_drops_the_list():
    clock, session = Clock(), FakeSession()
    listing = CliListing(clock=clock)
    for _ in range(3):
        assert await listing.fact(session) is not None
        clock.now += 60  # the shortest collection interval
    assert session.calls == 3  # every collection sees the current list
    session.error = NotAuthorizedError("Not Authorized")  # the grant taken away by a deployment
    assert await listing.fact(session) is None


async def test_an_answer_seconds_old_serves_again_unless_the_configuration_changed():
    """The settle's answer serves the first collection, a moment later: one ListComponents at start."""
    clock, session = Clock(), FakeSession()
    listing = CliListing(clock=clock)
    first = await listing.fact(session)
    clock.now += FRESH_SECONDS - 0.5
    assert await listing.fact(session) == first
    assert session.calls == 1
    listing.retry_now()  # a deployment changed the configuration: it may have changed the components
    assert await listing.fact(session) == first
    assert session.calls == 2
    clock.now += FRESH_SECONDS
    await listing.fact(session)
    assert session.calls == 3


async def test_retry_now_asks_at_the_next_collection_and_a_grant_then_brings_the_cli_list_back():
    clock, session = Clock(), FakeSession()
    session.error = NotAuthorizedError("Not Authorized")
    listing = CliListing(clock=clock)
    assert await listing.fact(session) is None
    session.error = None
    assert await listing.fact(session) is None  # still backing off
    listing.retry_now()  # what a configuration change does
    fact = await listing.fact(session)
    assert fact is not None
    assert fact.value["source"] == "greengrass-cli"
    assert listing.why_not is None


async def test_the_configuration_in_the_answer_is_neither_kept_nor_logged(caplog: pytest.LogCaptureFixture):
    """The real answer carries each component's whole configuration; the session's ComponentInfo has no
    field for it, and nothing of a component but its name and version reaches the fact or a log."""
    assert set(ComponentInfo.__dataclass_fields__) == {"name", "version", "state"}
    caplog.set_level(logging.DEBUG)
    session = FakeSession()
    fact = await CliListing().fact(session)
    assert fact is not None
    assert all(set(c) == {"name", "version"} for c in fact.value["components"])
    assert "EncryptedStore" not in caplog.text
