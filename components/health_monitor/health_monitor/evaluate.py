"""Check evaluation: readings in, state changes with evidence out. Pure: no I/O, time is given or injected.

A `Rule` says when a reading is a problem: `warn` and `critical` thresholds in a `direction` (ABOVE for
CPU or temperature, BELOW for free disk space or certificate days left), how long a level must hold before
the state changes (`for_seconds`: "at or above 90 for 5 minutes"), how far back a value must come and for
how long before the state recovers (`hysteresis`, `recover_seconds`: "recover only below 85 for 2
minutes"), and how long without readings makes the state UNKNOWN (`unknown_after_seconds`).

For ABOVE, a reading is *beyond* a level at or above its threshold, and has *cleared* it below the
threshold minus the hysteresis; BELOW mirrors both. With readings `(value, time)` on a monotonic clock:

- Escalation: the state rises to the highest level whose threshold every reading has been beyond,
  without a break, for at least `for_seconds` (0: at the first such reading).
- Recovery: from WARN or CRITICAL, once every reading for `recover_seconds` has cleared the current
  level, the state falls to the highest lower level that has not also been cleared that long (or OK).
- UNKNOWN: no reading for `unknown_after_seconds` (checked by `poll`, and by `observe` when a reading
  comes after such a gap). A gap breaks every run: durations count again from the next reading.
- Resuming: the first reading after UNKNOWN restores the last known state (OK at the very start), and
  the rules above go on from there. A problem does not vanish because data paused, and a recovery still
  needs its full duration of evidence.

So a state never flaps faster than its durations allow: after rising at time t it cannot fall before
t + recover_seconds, after falling it cannot rise before t + for_seconds, and tests check exactly that.
Readings older than the last one, and values that are not finite numbers, are ignored.
"""

from __future__ import annotations

import dataclasses
import enum
import math
import time
from collections.abc import Callable

from device_agent.health_log import RANK, State

_LEVELS = (State.WARN, State.CRITICAL)


class Direction(enum.StrEnum):
    ABOVE = "above"  # larger is worse: CPU, memory, temperature, seconds since the last heartbeat
    BELOW = "below"  # smaller is worse: free disk space, certificate days left


@dataclasses.dataclass(frozen=True, kw_only=True)
class Rule:
    direction: Direction
    warn: float | None = None
    critical: float | None = None
    hysteresis: float = 0.0
    for_seconds: float = 0.0
    recover_seconds: float = 0.0
    unknown_after_seconds: float | None = None  # None: never UNKNOWN for want of readings

    def __post_init__(self) -> None:
        numbers = (self.warn, self.critical, self.hysteresis, self.for_seconds, self.recover_seconds)
        if not all(n is None or math.isfinite(n) for n in (*numbers, self.unknown_after_seconds)):
            raise ValueError("rule values must be finite numbers")
        if min(self.hysteresis, self.for_seconds, self.recover_seconds) < 0:
            raise ValueError("hysteresis and durations must not be negative")
        if self.unknown_after_seconds is not None and self.unknown_after_seconds <= 0:
            raise ValueError("unknown_after_seconds must be positive")
        if self.warn is not None and self.critical is not None:
            ordered = (
                self.warn < self.critical if self.direction is Direction.ABOVE else self.warn > self.critical
            )
            if not ordered:
                side = "below" if self.direction is Direction.ABOVE else "above"
                raise ValueError(f"warn must be {side} critical for a rule on values {self.direction}")

    def threshold(self, level: State) -> float | None:
        return self.critical if level is State.CRITICAL else self.warn if level is State.WARN else None

    def clear_threshold(self, level: State) -> float | None:
        """The value a reading must get past (strictly) to clear `level`."""
        threshold = self.threshold(level)
        if threshold is None:
            return None
        return (
            threshold - self.hysteresis if self.direction is Direction.ABOVE else threshold + self.hysteresis
        )

    def beyond(self, value: float, level: State) -> bool:
        threshold = self.threshold(level)
        if threshold is None:
            return False
        return value >= threshold if self.direction is Direction.ABOVE else value <= threshold

    def cleared(self, value: float, level: State) -> bool:
        clear = self.clear_threshold(level)
        if clear is None:
            return True
        return value < clear if self.direction is Direction.ABOVE else value > clear


@dataclasses.dataclass(frozen=True, kw_only=True)
class Evidence:
    """Why a state changed: the condition in plain words, and the readings behind it."""

    condition: str
    threshold: float | None = None
    held_seconds: float = 0.0
    readings: int = 0
    worst: float | None = None  # the worst reading over the held run (highest for ABOVE, lowest for BELOW)

    def __str__(self) -> str:
        text = self.condition
        if self.readings:
            text += f" ({self.readings} readings"
            text += f", worst {_number(self.worst)})" if self.worst is not None else ")"
        return text


@dataclasses.dataclass(frozen=True, kw_only=True)
class Change:
    """A state change at monotonic time `at`, with the reading that caused it (None for UNKNOWN)."""

    old: State
    new: State
    at: float
    value: float | None
    evidence: Evidence


@dataclasses.dataclass
class _Run:
    """A run of consecutive readings that all satisfy one condition."""

    start: float
    count: int
    worst: float


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:g}"


class Evaluator:
    """The state of one check (one rule, one subject), fed readings in time order.

    `clock` is a monotonic clock in seconds (time.monotonic by default); it is read only when `observe`
    or `poll` is not given a time. The evaluator starts UNKNOWN (no reading yet).
    """

    def __init__(self, rule: Rule, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.rule = rule
        self._clock = clock
        self.state = State.UNKNOWN
        self.since: float | None = None  # when the current state began (None: since the start)
        self.last_value: float | None = None
        self.last_reading: float | None = None
        self._resume = State.OK  # the state to restore when readings come back after UNKNOWN
        self._beyond: dict[State, _Run | None] = dict.fromkeys(_LEVELS)
        self._cleared: dict[State, _Run | None] = dict.fromkeys(_LEVELS)

    def reconfigure(self, rule: Rule) -> None:
        """Apply a new rule from now on: the state stays, runs start over (evidence is per rule)."""
        self.rule = rule
        self._reset_runs()

    def _reset_runs(self) -> None:
        self._beyond = dict.fromkeys(_LEVELS)
        self._cleared = dict.fromkeys(_LEVELS)

    def _worse(self, a: float, b: float) -> float:
        return max(a, b) if self.rule.direction is Direction.ABOVE else min(a, b)

    def _extend(self, run: _Run | None, value: float, at: float) -> _Run:
        if run is None:
            return _Run(start=at, count=1, worst=value)
        return _Run(start=run.start, count=run.count + 1, worst=self._worse(run.worst, value))

    def _change(self, new: State, at: float, value: float | None, evidence: Evidence) -> Change:
        change = Change(old=self.state, new=new, at=at, value=value, evidence=evidence)
        self.state = new
        self.since = at
        return change

    def poll(self, now: float | None = None) -> tuple[Change, ...]:
        """UNKNOWN if readings stopped for `unknown_after_seconds`; call it on every tick of the monitor."""
        now = self._clock() if now is None else now
        limit = self.rule.unknown_after_seconds
        if limit is None or self.state is State.UNKNOWN or self.last_reading is None:
            return ()
        silent = now - self.last_reading
        if silent < limit:
            return ()
        self._resume = self.state
        self._reset_runs()
        evidence = Evidence(condition=f"no reading for {silent:.0f} s (UNKNOWN after {limit:g} s)")
        return (self._change(State.UNKNOWN, self.last_reading + limit, None, evidence),)

    def unknown(self, reason: str, at: float | None = None) -> tuple[Change, ...]:
        """UNKNOWN now, for `reason` (the source failed, not merely fell silent); the next reading resumes."""
        at = self._clock() if at is None else at
        if self.state is State.UNKNOWN:
            return ()
        self._resume = self.state
        self._reset_runs()
        return (self._change(State.UNKNOWN, at, None, Evidence(condition=reason)),)

    def observe(self, value: object, at: float | None = None) -> tuple[Change, ...]:
        """Take one reading; returns the state changes it causes, in order (usually none)."""
        at = self._clock() if at is None else at
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            return ()
        if self.last_reading is not None and at < self.last_reading:
            return ()
        changes = list(self.poll(at))  # a reading after a long gap: UNKNOWN first, then resume
        self.last_reading, self.last_value = at, value
        if self.state is State.UNKNOWN:
            self._reset_runs()
            changes.append(self._change(self._resume, at, value, Evidence(condition="readings resumed")))
        self._track(value, at)
        change = self._escalation(value, at) or self._recovery(value, at)
        if change is not None:
            changes.append(change)
        return tuple(changes)

    def _track(self, value: float, at: float) -> None:
        rule = self.rule
        for level in _LEVELS:
            run = self._beyond[level]
            self._beyond[level] = self._extend(run, value, at) if rule.beyond(value, level) else None
            run = self._cleared[level]
            self._cleared[level] = self._extend(run, value, at) if rule.cleared(value, level) else None

    def _held(self, run: _Run | None, at: float, seconds: float) -> bool:
        return run is not None and at - run.start >= seconds

    def _escalation(self, value: float, at: float) -> Change | None:
        rule = self.rule
        for level in reversed(_LEVELS):
            if RANK[level] <= RANK[self.state]:
                break
            run = self._beyond[level]
            if run is not None and self._held(run, at, rule.for_seconds):
                word = "at or above" if rule.direction is Direction.ABOVE else "at or below"
                threshold = rule.threshold(level)
                evidence = Evidence(
                    condition=f"{word} {_number(threshold)} for {at - run.start:.0f} s",
                    threshold=threshold,
                    held_seconds=at - run.start,
                    readings=run.count,
                    worst=run.worst,
                )
                return self._change(level, at, value, evidence)
        return None

    def _recovery(self, value: float, at: float) -> Change | None:
        rule = self.rule
        current = self.state
        if current not in _LEVELS:
            return None
        run = self._cleared[current]
        if run is None or not self._held(run, at, rule.recover_seconds):
            return None
        target = State.OK
        for level in reversed(_LEVELS):
            if RANK[level] < RANK[current] and not self._held(self._cleared[level], at, rule.recover_seconds):
                target = level
                break
        word = "below" if rule.direction is Direction.ABOVE else "above"
        clear = rule.clear_threshold(current)
        evidence = Evidence(
            condition=f"{word} {_number(clear)} for {at - run.start:.0f} s",
            threshold=clear,
            held_seconds=at - run.start,
            readings=run.count,
            worst=run.worst,
        )
        return self._change(target, at, value, evidence)
