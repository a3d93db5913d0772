"""Requests the nucleus refuses: reported once in a while, remembered until one gets through.

A `NotAuthorizedError` on a publish means the recipe (or the nucleus's interpolation setting) does not grant
the topic: an operator's mistake that retrying cannot fix. The same holds for a subscription, and for a
secret the component reads (`Destination.SECRET_MANAGER`: the resource is the secret's ARN or name, never
its value). A component then keeps running, and says so
where an operator looks (security-checks GG-7): a `security` event on `device-agent/events` and an error
line, at most once per topic per `report_every` seconds (not once per attempt), and DEGRADED in its
heartbeat while any topic is refused, until a publish there succeeds.

    refusals = Refusals(ctx, "health.publish_unauthorized", what="health summaries")
    try:
        await ctx.ipc.publish_to_iot_core(topic, body)
    except NotAuthorizedError:
        await refusals.refused(topic, Destination.IOT_CORE)
    else:
        refusals.succeeded(topic)
    reason = refusals.detail()  # with the component's own reasons, for ctx.set_health("DEGRADED", ...)
"""

from __future__ import annotations

import enum
import logging
import time
from collections.abc import Callable
from typing import Final, Protocol

from device_agent.messages import Category, Severity

logger = logging.getLogger(__name__)

REPORT_EVERY_SECONDS: Final = 3600.0


class Destination(enum.StrEnum):
    IOT_CORE = "iot"
    LOCAL = "local"
    SECRET_MANAGER = "secretManager"  # noqa: S105 (a service, not a secret)


# How an event names each destination, and what the refused resource is there (also its details key).
_WHERE: Final = {
    Destination.IOT_CORE: ("on IoT Core", "topic"),
    Destination.LOCAL: ("on local pub/sub", "topic"),
    Destination.SECRET_MANAGER: ("from the secret manager", "secret"),
}


class _EventSink(Protocol):
    async def emit_event(
        self,
        name: str,
        *,
        category: Category,
        severity: Severity,
        message: str,
        **details: str | float | bool | None,
    ) -> None: ...


class Refusals:
    """Which topics the nucleus refuses a component now, and when each was last reported.

    `what` names what was refused in the event's message, `doing` the action in `detail()` ("publish on",
    "subscribe to").
    """

    def __init__(
        self,
        events: _EventSink,
        event: str,
        *,
        what: str,
        doing: str = "publish on",
        report_every: float = REPORT_EVERY_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._events = events
        self._event = event
        self._what = what
        self._doing = doing
        self._report_every = report_every
        self._clock = clock
        self._refused: dict[str, Destination] = {}
        self._reported: dict[str, float] = {}

    @property
    def topics(self) -> tuple[str, ...]:
        """The topics refused now, sorted."""
        return tuple(sorted(self._refused))

    async def refused(self, topic: str, destination: Destination) -> None:
        """A publish on `topic` was refused: report it unless it was reported within `report_every`."""
        self._refused[topic] = destination
        now = self._clock()
        last = self._reported.get(topic)
        if last is not None and now - last < self._report_every:
            return
        self._reported[topic] = now
        where, noun = _WHERE[destination]
        logger.error(self._event, extra={noun: topic, "destination": destination.value})
        await self._events.emit_event(
            self._event,
            category=Category.SECURITY,
            severity=Severity.CRITICAL,
            message=f"The nucleus refused {self._what} {where}: the recipe does not grant the {noun}.",
            destination=destination.value,
            **{noun: topic},
        )

    def succeeded(self, topic: str) -> None:
        self._refused.pop(topic, None)

    def forget_except(self, topics: set[str]) -> None:
        """Drop topics no longer in use (the configuration changed): they say nothing about the new ones."""
        for topic in set(self._refused) - topics:
            del self._refused[topic]

    def detail(self) -> str | None:
        """Why the component is DEGRADED because of refusals, or None when nothing is refused."""
        if not self._refused:
            return None
        return f"not authorized to {self._doing} {', '.join(self.topics)}"
