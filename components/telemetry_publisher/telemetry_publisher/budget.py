"""What the publisher sent, per UTC day and month, and an optional byte budget that lowers resolution.

`Usage` counts payload bytes and messages sent, and the samples dropped, expired and backfilled, per UTC
day (and bytes and messages per UTC month), and the samples dropped, expired and backfilled since the
device's first sample (the totals). Its state is a small JSON value persisted through a `StateStore`
(`save_if_due` writes it at most once a minute, so a crash forgets at most a minute of counts).

Drops happen while offline, so the day's counts alone would lose them: an outage that crosses midnight
drops samples on a day whose messages never went out. The totals never roll over, and messages carry them
as last persisted (`reported`), so a consumer sees every loss once a message gets through, and a total
never goes back, not even after a crash.

`decide()` is the budget, a pure function of the settings, the usage and the time. Without a budget it
returns the configured interval and groups. With one, it projects what the rest of the period would cost
at the configured resolution:

    cost per sample = overhead per message + envelope + the sample's bytes (per group, as last measured)
    projected       = cost per sample * seconds left in the period / interval

and if that is more than what is left (minus a small reserve), it lowers the resolution in steps, stopping
at the first that fits:

1. a longer interval: 2, 3, 6, 12, 30, 60, ... times the configured one, up to `max_interval_seconds`;
2. at that longest interval, fewer groups: the largest (by measured bytes) first, never `keep_groups`;
3. the floor, `max_interval_seconds` with `keep_groups` only, even when it does not fit: the publisher
   never goes silent, and the message says it is over budget (`level` "floor").

The budget counts bytes sent by the backlog drain too (they are sent), so a long outage's backlog lowers
the live resolution afterwards rather than being held back. Resolution comes back by itself as the
period ends or the projection improves.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import logging
import math
import time
from collections.abc import Callable, Collection, Mapping
from datetime import UTC, datetime
from typing import Any, Final

from device_agent.errors import InvalidInputError
from device_agent.metrics import Group
from telemetry_publisher.payload import Degraded
from telemetry_publisher.state import StateStore

logger = logging.getLogger(__name__)

STATE_VERSION: Final = 1
SAVE_EVERY_SECONDS: Final = 60.0
INTERVAL_STEPS: Final = (1, 2, 3, 6, 12, 30, 60, 90, 180, 360)
ENVELOPE_BYTES: Final = 200  # a live message's header around its one sample (schema, thing, counters...)
SAMPLE_BASE_BYTES: Final = 40  # seq, at, dtS and the braces
# Until a group has been measured on this device: typical encoded sizes (a Raspberry Pi, one mount and
# one interface, the five default process matchers).
DEFAULT_GROUP_BYTES: Final[Mapping[str, int]] = {
    Group.CPU: 100,
    Group.MEMORY: 90,
    Group.DISK: 70,
    Group.DISKIO: 110,
    Group.NETWORK: 110,
    Group.TEMPERATURE: 40,
    Group.SYSTEM: 60,
    Group.PROCESSES: 450,
}


class Period(enum.StrEnum):
    DAY = "day"
    MONTH = "month"


@dataclasses.dataclass(frozen=True, kw_only=True)
class BudgetSettings:
    """`limit_bytes` per `period` (None: no budget). Bytes are payload bytes plus `overhead_bytes_per_message`
    (MQTT, TLS and TCP/IP framing and the acknowledgement: an estimate, about 120 bytes)."""

    limit_bytes: int | None = None
    period: Period = Period.MONTH
    max_interval_seconds: float = 600.0
    keep_groups: frozenset[Group] = frozenset({Group.CPU, Group.MEMORY, Group.SYSTEM})
    overhead_bytes_per_message: int = 120
    reserve: float = 0.05  # of the budget, kept back from the projection


def day_key(now: float) -> str:
    return datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%d")


def month_key(now: float) -> str:
    return datetime.fromtimestamp(now, UTC).strftime("%Y-%m")


def seconds_left(period: Period, now: float) -> float:
    """Seconds from `now` to the end of its UTC day or month (at least 1)."""
    moment = datetime.fromtimestamp(now, UTC)
    start = moment.replace(hour=0, minute=0, second=0, microsecond=0)
    if period is Period.DAY:
        end = start.timestamp() + 86400
    elif moment.month == 12:  # noqa: PLR2004
        end = start.replace(year=moment.year + 1, month=1, day=1).timestamp()
    else:
        end = start.replace(month=moment.month + 1, day=1).timestamp()
    return max(1.0, end - now)


@dataclasses.dataclass(frozen=True, kw_only=True)
class UsageState:
    day: str = ""
    day_bytes: int = 0
    day_messages: int = 0
    dropped: int = 0
    expired: int = 0
    backfilled: int = 0
    month: str = ""
    month_bytes: int = 0
    month_messages: int = 0
    dropped_total: int = 0  # since the first sample: never rolled over
    expired_total: int = 0
    backfilled_total: int = 0

    def rolled(self, now: float) -> UsageState:
        """This state as of `now`: a new UTC day (or month) starts its counts from zero (not the totals)."""
        state = self
        day, month = day_key(now), month_key(now)
        if state.day != day:
            state = dataclasses.replace(
                state, day=day, day_bytes=0, day_messages=0, dropped=0, expired=0, backfilled=0
            )
        if state.month != month:
            state = dataclasses.replace(state, month=month, month_bytes=0, month_messages=0)
        return state

    def bytes_in(self, period: Period) -> int:
        return self.day_bytes if period is Period.DAY else self.month_bytes

    def messages_in(self, period: Period) -> int:
        return self.day_messages if period is Period.DAY else self.month_messages

    def to_bytes(self) -> bytes:
        document = {"v": STATE_VERSION, **dataclasses.asdict(self)}
        return json.dumps(document, separators=(",", ":")).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> UsageState:
        """Parse a persisted state; `InvalidInputError` (never anything else) if it is not one."""
        try:
            document = json.loads(data)
        except (ValueError, RecursionError) as error:
            raise InvalidInputError("usage state is not JSON") from error
        if not isinstance(document, dict) or document.pop("v", None) != STATE_VERSION:
            raise InvalidInputError("usage state is not version 1")
        values: dict[str, Any] = {}
        for field in dataclasses.fields(cls):
            value = document.get(field.name, field.default)
            if field.type == "str":
                if not isinstance(value, str) or len(value) > 10:  # noqa: PLR2004
                    raise InvalidInputError(f"usage state: {field.name} is not a date key")
            elif not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise InvalidInputError(f"usage state: {field.name} is not a count")
            values[field.name] = value
        return cls(**values)


class Usage:
    """The running counts; `add` is the spool's `LossLedger`. Clock injectable (wall clock, UTC days)."""

    def __init__(
        self,
        state: UsageState | None = None,
        *,
        wall: Callable[[], float] = time.time,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._wall, self._clock = wall, clock
        self._state = (state or UsageState()).rolled(wall())
        self._reported = self._state  # as last persisted (or loaded): what messages carry as totals
        self._dirty = False
        self._saved_at: float | None = None

    @property
    def state(self) -> UsageState:
        self._state = self._state.rolled(self._wall())
        return self._state

    def add_sent(self, payload_bytes: int, messages: int = 1) -> None:
        s = self.state
        self._state = dataclasses.replace(
            s,
            day_bytes=s.day_bytes + payload_bytes,
            day_messages=s.day_messages + messages,
            month_bytes=s.month_bytes + payload_bytes,
            month_messages=s.month_messages + messages,
        )
        self._dirty = True

    def add(self, *, dropped: int = 0, expired: int = 0, backfilled: int = 0) -> None:
        s = self.state
        self._state = dataclasses.replace(
            s,
            dropped=s.dropped + dropped,
            expired=s.expired + expired,
            backfilled=s.backfilled + backfilled,
            dropped_total=s.dropped_total + dropped,
            expired_total=s.expired_total + expired,
            backfilled_total=s.backfilled_total + backfilled,
        )
        self._dirty = True

    @property
    def reported(self) -> UsageState:
        """The state as last persisted (or loaded): its totals are what messages carry. Never ahead of what
        a restart reloads, so a total a consumer saw never goes back (at most a minute behind the counts)."""
        return self._reported

    async def load(self, store: StateStore) -> bool:
        """Continue from the persisted state; a missing or unreadable one starts from zero (logged).
        True if there was a persisted state, readable or not (the device counted before)."""
        data = await store.load()
        if data is None:
            return False
        try:
            self._state = UsageState.from_bytes(data).rolled(self._wall())
        except InvalidInputError:
            logger.warning("usage.state_unreadable")
            return True
        self._reported = self._state
        return True

    async def save_if_due(self, store: StateStore, *, force: bool = False) -> bool:
        """Persist if something changed and the last save is a minute old (or `force`); True if saved."""
        now = self._clock()
        if not (self._dirty or force):
            return False
        if not force and self._saved_at is not None and now - self._saved_at < SAVE_EVERY_SECONDS:
            return False
        state = self.state
        await store.save(state.to_bytes())
        self._dirty, self._saved_at, self._reported = False, now, state
        return True


@dataclasses.dataclass(frozen=True, kw_only=True)
class Decision:
    """The resolution to sample at, and why. `degraded` is None at full resolution."""

    interval_seconds: float
    groups: tuple[Group, ...]
    degraded: Degraded | None
    reason: str
    projected_bytes: int | None = None
    remaining_bytes: int | None = None


def decide(
    settings: BudgetSettings,
    *,
    interval: float,
    groups: Collection[Group],
    usage: UsageState,
    now: float,
    group_bytes: Mapping[str, int] | None = None,
) -> Decision:
    """The effective interval and groups under the budget (module docstring). Deterministic."""
    wanted = tuple(g for g in Group if g in groups)
    if settings.limit_bytes is None:
        return Decision(interval_seconds=interval, groups=wanted, degraded=None, reason="no budget")
    usage = usage.rolled(now)
    used = usage.bytes_in(settings.period) + usage.messages_in(settings.period) * (
        settings.overhead_bytes_per_message
    )
    remaining = settings.limit_bytes - used
    allowance = remaining - settings.reserve * settings.limit_bytes
    left = seconds_left(settings.period, now)
    sizes = {**DEFAULT_GROUP_BYTES, **(group_bytes or {})}
    fixed = settings.overhead_bytes_per_message + ENVELOPE_BYTES + SAMPLE_BASE_BYTES

    def projected(every: float, chosen: Collection[Group]) -> int:
        per_sample = fixed + sum(sizes.get(g, 0) for g in chosen)
        return math.ceil(per_sample * left / every)

    def decision(every: float, chosen: tuple[Group, ...], level: str | None, reason: str) -> Decision:
        omitted = tuple(g.value for g in wanted if g not in chosen)
        degraded = None if level is None else Degraded(level=level, interval_s=every, omitted=omitted)
        return Decision(
            interval_seconds=every,
            groups=chosen,
            degraded=degraded,
            reason=reason,
            projected_bytes=projected(every, chosen),
            remaining_bytes=remaining,
        )

    longest = max(interval, settings.max_interval_seconds)
    steps = [interval * k for k in INTERVAL_STEPS if interval * k < longest] + [longest]
    for every in steps:
        if projected(every, wanted) <= allowance:
            if every == interval:
                return decision(every, wanted, None, "within budget")
            return decision(every, wanted, "interval", f"budget: interval {interval:g}s -> {every:g}s")
    chosen = list(wanted)
    droppable = sorted(
        (g for g in wanted if g not in settings.keep_groups), key=lambda g: (-sizes.get(g, 0), g.value)
    )
    for group in droppable:
        chosen.remove(group)
        if projected(longest, chosen) <= allowance:
            kept = tuple(chosen)
            return decision(longest, kept, "groups", f"budget: interval {longest:g}s, fewer groups")
    floor = tuple(g for g in wanted if g in settings.keep_groups)
    return decision(longest, floor, "floor", "budget: over budget, sending at the floor resolution")
