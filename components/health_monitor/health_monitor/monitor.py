"""Every check's evaluator, by check and subject: readings in, state-change records and statuses out.

No I/O. Evaluators are created at a check's first reading, so a check the device cannot measure (no
temperature sensor, no connection status) is absent rather than UNKNOWN forever. That first reading
settles the state silently (the evaluator leaves its initial UNKNOWN): only real changes are reported.
Event counts are readings too: the number of events in the check's window, observed on every tick.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta

from device_agent.health_log import CheckStatus, State, StateChange, utc_now, worst
from health_monitor.evaluate import Change, Evaluator, Rule
from health_monitor.settings import CheckThresholds, EventCount

Key = tuple[str, str | None]

UNITS = {
    "cpu": "%",
    "memory": "%",
    "swap": "%",
    "disk_space": "% free",
    "inodes": "% free",
    "temperature": "C",
    "heartbeat": "intervals",
    "cloud_connection": "s",
    "last_publish": "s",
    "certificate": "days",
    "clock_jump": "s",
    "store": "s",
}
EVENT_UNIT = "events"


class Monitor:
    """The checks' states. `clock` is monotonic; `wall` gives UTC datetimes for the records."""

    def __init__(
        self,
        thresholds: CheckThresholds,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], datetime] = utc_now,
    ) -> None:
        self._clock, self._wall = clock, wall
        self._rules: dict[str, Rule] = {}
        self._windows: dict[str, float] = {}
        self.evaluators: dict[Key, Evaluator] = {}
        self.verified: dict[Key, datetime] = {}
        self._events: dict[str, collections.deque[float]] = collections.defaultdict(collections.deque)
        self.configure(thresholds)

    def configure(self, thresholds: CheckThresholds) -> None:
        """New rules from now on; a check turned off is forgotten, one turned on starts afresh."""
        self._rules = thresholds.rules()
        self._windows = {
            name: check.window_seconds
            for name, check in thresholds.checks().items()
            if isinstance(check, EventCount)
        }
        for key in list(self.evaluators):
            rule = self._rules.get(key[0])
            if rule is None:
                del self.evaluators[key]
                self.verified.pop(key, None)
            else:
                self.evaluators[key].reconfigure(rule)

    def enabled(self, check: str) -> bool:
        return check in self._rules

    def _at(self, mono: float, now_mono: float, now_wall: datetime) -> datetime:
        return now_wall - timedelta(seconds=max(0.0, now_mono - mono))

    def _records(self, key: Key, changes: Iterable[Change], now: float, wall: datetime) -> list[StateChange]:
        unit = self.unit(key[0])
        return [
            StateChange(
                time=self._at(c.at, now, wall),
                check=key[0],
                subject=key[1],
                old=c.old,
                new=c.new,
                value=None if c.value is None else round(c.value, 3),
                unit=unit,
                threshold=c.evidence.threshold,
                evidence=str(c.evidence),
                since=self._at(c.at, now, wall),
            )
            for c in changes
        ]

    def unit(self, check: str) -> str | None:
        return EVENT_UNIT if check in self._windows else UNITS.get(check)

    def observe(self, check: str, value: float, subject: str | None = None) -> list[StateChange]:
        """One reading; the state changes it causes (none for a check that is off)."""
        found = self._evaluator(check, subject)
        if found is None:
            return []
        key, evaluator, first = found
        now, wall = self._clock(), self._wall()
        changes = evaluator.observe(value, now)
        if first:  # leaving the initial UNKNOWN is not news
            changes = tuple(c for c in changes if c.old is not State.UNKNOWN)
        self.verified[key] = wall
        return self._records(key, changes, now, wall)

    def unknown(self, check: str, reason: str, subject: str | None = None) -> list[StateChange]:
        """The check cannot be read (`reason`): UNKNOWN, shown at once even if it never had a reading."""
        found = self._evaluator(check, subject)
        if found is None:
            return []
        key, evaluator, first = found
        now, wall = self._clock(), self._wall()
        self.verified[key] = wall
        if first:  # it starts UNKNOWN: no change to record
            return []
        return self._records(key, evaluator.unknown(reason, now), now, wall)

    def _evaluator(
        self, check: str, subject: str | None
    ) -> tuple[tuple[str, str | None], Evaluator, bool] | None:
        """The key and evaluator of a check's subject, made at its first use (True then); None if off."""
        rule = self._rules.get(check)
        if rule is None:
            return None
        key = (check, subject)
        evaluator = self.evaluators.get(key)
        if evaluator is not None:
            return key, evaluator, False
        evaluator = self.evaluators[key] = Evaluator(rule, clock=self._clock)
        return key, evaluator, True

    def forget(self, check: str, subject: str | None) -> None:
        """Stop judging a subject (a component that stopped on purpose)."""
        self.evaluators.pop((check, subject), None)
        self.verified.pop((check, subject), None)

    def count_event(self, check: str) -> None:
        self._events[check].append(self._clock())

    def tick(self) -> list[StateChange]:
        """Event counts as readings, then silences (UNKNOWN)."""
        records: list[StateChange] = []
        now = self._clock()
        for check, window in self._windows.items():
            events = self._events[check]
            while events and events[0] <= now - window:
                events.popleft()
            records += self.observe(check, float(len(events)))
        wall = self._wall()
        for key, evaluator in list(self.evaluators.items()):
            records += self._records(key, evaluator.poll(now), now, wall)
        return records

    def statuses(self) -> tuple[CheckStatus, ...]:
        now, wall = self._clock(), self._wall()
        out = []
        for key, evaluator in sorted(
            self.evaluators.items(), key=lambda item: (item[0][0], item[0][1] or "")
        ):
            state = evaluator.state
            threshold = None
            if state in (State.WARN, State.CRITICAL):
                threshold = evaluator.rule.threshold(state)
            out.append(
                CheckStatus(
                    check=key[0],
                    subject=key[1],
                    state=state,
                    value=None if evaluator.last_value is None else round(evaluator.last_value, 3),
                    unit=self.unit(key[0]),
                    threshold=threshold,
                    since=None if evaluator.since is None else self._at(evaluator.since, now, wall),
                    verified=self.verified.get(key),
                )
            )
        return tuple(out)

    def overall(self) -> State:
        return worst(e.state for e in self.evaluators.values())
