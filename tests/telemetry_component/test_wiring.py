"""The component's wiring where the nucleus misbehaves in ways the local nucleus cannot be asked to: the
connection-status subscription failing for a while. A fake nucleus session stands in for the IPC session;
the spool is the real one, over the in-memory fakes."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from telemetry_publisher.component import TelemetryPublisher
from telemetry_publisher.spool import Spool

from device_agent import retry
from device_agent.errors import (
    ConnectionLostError,
    NotAuthorizedError,
    OperationNotSupportedError,
    TimedOutError,
    UnavailableError,
)
from device_agent.ipc_types import IotCoreConnectionStatus
from tests.telemetry.fakes import FakeIoTCore, MemoryQueue


class FlakyNucleus:
    """`subscribe_to_connection_status` raises each of `failures` in turn, then subscribes."""

    def __init__(self, failures: list[Exception]) -> None:
        self.failures = failures
        self.calls = 0
        self.handler: Any = None

    async def subscribe_to_connection_status(self, handler: Any) -> None:
        self.calls += 1
        if self.failures:
            raise self.failures.pop(0)
        self.handler = handler


class Sink:
    def __init__(self) -> None:
        self.iot = FakeIoTCore()

    async def send(self, records: Any, *, backfill: bool) -> int:
        await self.iot.publish(b"x")
        return 1


def publisher_on(nucleus: FlakyNucleus) -> tuple[TelemetryPublisher, Any]:
    publisher = TelemetryPublisher()
    publisher.spool = Spool(MemoryQueue(), Sink())
    return publisher, SimpleNamespace(ipc=nucleus)


async def test_the_connection_status_subscription_is_retried_after_transient_errors(caplog):
    nucleus = FlakyNucleus(
        [UnavailableError("restarting"), TimedOutError("no answer"), ConnectionLostError("x")]
    )
    publisher, ctx = publisher_on(nucleus)
    with retry.set_testing(True), caplog.at_level("INFO"):
        await publisher._follow_connection(ctx)
    assert nucleus.calls == 4
    retried = [r for r in caplog.records if r.getMessage() == "retry.scheduled"]
    assert [r.operation for r in retried] == ["telemetry.connection_status"] * 3
    assert publisher.status_known.is_set()  # after a failure, publish results decide meanwhile
    nucleus.handler(IotCoreConnectionStatus(connected=False))
    assert publisher.spool.stats.connected is False


async def test_sampling_and_the_drain_wait_for_the_first_status_once_subscribed():
    nucleus = FlakyNucleus([])
    publisher, ctx = publisher_on(nucleus)
    await publisher._follow_connection(ctx)
    # Until the nucleus says, a publish would "succeed" into its spooler even while offline.
    assert not publisher.status_known.is_set()
    nucleus.handler(IotCoreConnectionStatus(connected=False))
    assert publisher.status_known.is_set()
    assert publisher.spool.stats.connected is False


def test_the_backoff_is_capped_and_jittered():
    from telemetry_publisher.component import CONNECTION_STATUS_BACKOFF  # noqa: PLC0415

    waits = [w for w, _ in zip(CONNECTION_STATUS_BACKOFF.delays(), range(40), strict=False)]
    assert max(waits) <= 300.0
    assert len(set(waits)) > 1


@pytest.mark.parametrize(
    ("error", "event"),
    [
        (
            OperationNotSupportedError("SubscribeToIoTCoreConnectionStatus", "no"),
            "telemetry.no_connection_status",
        ),
        (NotAuthorizedError("not granted"), "telemetry.connection_status_unavailable"),
    ],
)
async def test_a_nucleus_that_cannot_give_the_status_is_not_asked_again(error: Exception, event: str, caplog):
    nucleus = FlakyNucleus([error])
    publisher, ctx = publisher_on(nucleus)
    with retry.set_testing(True), caplog.at_level("INFO"):
        await publisher._follow_connection(ctx)
    assert nucleus.calls == 1
    assert publisher.spool.stats.connected is None  # publish results decide, from now on
    assert publisher.status_known.is_set()
    assert event in [r.getMessage() for r in caplog.records]
