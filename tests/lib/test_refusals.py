"""Refused publishes: one event per topic per period, remembered until a publish there succeeds."""

from __future__ import annotations

from typing import Any

from device_agent.refusals import Destination, Refusals


class Events:
    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    async def emit_event(self, name: str, **fields: Any) -> None:
        self.sent.append({"name": name, **fields})


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def refusals() -> tuple[Refusals, Events, Clock]:
    events, clock = Events(), Clock()
    tracker = Refusals(events, "x.publish_unauthorized", what="samples", report_every=60, clock=clock)
    return tracker, events, clock


async def test_a_refusal_is_reported_once_per_topic_per_period():
    tracker, events, clock = refusals()
    for _ in range(3):
        await tracker.refused("dt/a", Destination.IOT_CORE)
    await tracker.refused("local/b", Destination.LOCAL)
    assert [(e["topic"], e["destination"]) for e in events.sent] == [("dt/a", "iot"), ("local/b", "local")]
    assert events.sent[0]["category"] == "security"
    assert "IoT Core" in events.sent[0]["message"]
    assert "local pub/sub" in events.sent[1]["message"]
    clock.now += 59
    await tracker.refused("dt/a", Destination.IOT_CORE)
    assert len(events.sent) == 2
    clock.now += 1
    await tracker.refused("dt/a", Destination.IOT_CORE)
    assert len(events.sent) == 3


async def test_degraded_until_every_refused_topic_gets_through():
    tracker, _, _ = refusals()
    assert tracker.detail() is None
    await tracker.refused("dt/b", Destination.IOT_CORE)
    await tracker.refused("dt/a", Destination.IOT_CORE)
    assert tracker.detail() == "not authorized to publish on dt/a, dt/b"
    tracker.succeeded("dt/a")
    assert tracker.topics == ("dt/b",)
    tracker.succeeded("dt/b")
    assert tracker.detail() is None


async def test_topics_no_longer_in_use_are_forgotten():
    tracker, _, _ = refusals()
    await tracker.refused("dt/old", Destination.IOT_CORE)
    await tracker.refused("dt/kept", Destination.IOT_CORE)
    tracker.forget_except({"dt/kept", "dt/new"})
    assert tracker.topics == ("dt/kept",)
