"""Counters become deltas and rates: across samples, restarts and reboots, with resets and wraps handled.

A counter (bytes sent, disk reads, CPU seconds) only grows, until it wraps or the kernel resets it. The rule
for one counter read `previous` then `current`, `elapsed` seconds apart, with `ceiling` the most it could
plausibly have grown in that time (its kind's rate ceiling times `elapsed`):

1. `current >= previous`: the delta is `current - previous`.
2. `current < previous`, integer counters: a **wrap** at 32 bits (when `previous < 2**32`), else at 64
   bits, if `previous - current` is more than half the counter's range. Half the range is the rule of
   serial-number arithmetic (RFC 1982): a counter read at least twice per wrap cannot have moved more than
   that, and a reset from a small value can never be mistaken for a wrap. The delta is
   `current + 2**width - previous`.
3. Otherwise a **reset** (an interface re-created, a driver reloaded): the counter restarted from zero, so
   the delta is `current`.
4. Any delta above `ceiling` is **implausible** (a reset from a large value, a wrap missed twice): it is
   left out of the sample (never a negative or absurd value), and the counter starts over from `current`.

Baselines. What the next sample needs of this one (each group's counter values and the monotonic time they
were read) is a `Baseline`, a small JSON value the telemetry component persists in the store. A sampler
started with the persisted baseline of the same boot yields, in its first sample, the deltas since the
last persisted sample: a restart neither spikes nor drops a value. After a reboot (the boot ID changed, or
the monotonic clock is behind the baseline's) the counters start fresh: the first sample has no deltas.
Same boot is decided by the kernel's boot ID, not by psutil's boot time, which moves with the wall clock
(a device without a real-time clock steps it at NTP sync). Monotonic times compare across processes
because Linux's CLOCK_MONOTONIC is system-wide.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Final, TypeGuard

from device_agent.errors import InvalidInputError

BASELINE_VERSION: Final = 1
MAX_BASELINE_BYTES: Final = 256 * 1024
_WRAP_WIDTHS: Final = (32, 64)

Number = int | float


def counter_delta(previous: Number, current: Number, *, ceiling: float) -> Number | None:
    """The increase of a counter read `previous` then `current` (module docstring), or None if implausible."""
    if current < 0 or previous < 0:
        return None
    if current >= previous:
        delta: Number = current - previous
    else:
        delta = current  # a reset, unless it is a wrap
        if isinstance(previous, int) and isinstance(current, int):
            for width in _WRAP_WIDTHS:
                modulus = 1 << width
                if previous < modulus and previous - current > modulus >> 1:
                    delta = current + modulus - previous
                    break
    return delta if delta <= ceiling else None


@dataclasses.dataclass(frozen=True)
class GroupBaseline:
    """One group's counter values and the monotonic time they were read."""

    mono: float
    values: Mapping[str, Number]


@dataclasses.dataclass(frozen=True)
class Baseline:
    """The counters of the last sample, per group, and the boot they belong to. `to_bytes` persists it."""

    boot: str
    groups: Mapping[str, GroupBaseline]

    def to_bytes(self) -> bytes:
        document = {
            "v": BASELINE_VERSION,
            "boot": self.boot,
            "groups": {
                name: {"mono": group.mono, "values": dict(group.values)}
                for name, group in self.groups.items()
            },
        }
        return json.dumps(document, separators=(",", ":"), sort_keys=True).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> Baseline:
        """Parse a persisted baseline; `InvalidInputError` (never anything else) if it is not one."""
        if len(data) > MAX_BASELINE_BYTES:
            raise InvalidInputError("baseline: too large")
        try:
            document = json.loads(data)
        except (ValueError, RecursionError) as error:
            raise InvalidInputError("baseline: not JSON") from error
        if not isinstance(document, dict) or document.get("v") != BASELINE_VERSION:
            raise InvalidInputError("baseline: not a version 1 baseline")
        boot, groups = document.get("boot"), document.get("groups")
        if not isinstance(boot, str) or not isinstance(groups, dict):
            raise InvalidInputError("baseline: boot or groups missing")
        return cls(boot=boot, groups=MappingProxyType({str(k): _group(v) for k, v in groups.items()}))


def _group(document: Any) -> GroupBaseline:
    if not isinstance(document, dict):
        raise InvalidInputError("baseline: a group is not an object")
    mono, values = document.get("mono"), document.get("values")
    if not _is_number(mono) or not isinstance(values, dict):
        raise InvalidInputError("baseline: a group lacks its time or values")
    if not all(_is_number(v) and v >= 0 for v in values.values()):
        raise InvalidInputError("baseline: a counter is not a non-negative number")
    return GroupBaseline(mono=float(mono), values=MappingProxyType(dict(values)))


def _is_number(value: object) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


class CounterWindow:
    """One group's counters in one sample: `delta()` each counter, then `finish()` for the new baseline.

    `elapsed` is the window the deltas cover (seconds since the group's baseline), None when there is no
    usable baseline, in which case every delta is None and this sample only establishes the baseline.
    """

    def __init__(self, previous: GroupBaseline | None, mono: float) -> None:
        self.mono = mono
        self.elapsed: float | None = None
        self._previous: Mapping[str, Number] = {}
        if previous is not None and mono > previous.mono:
            self.elapsed = mono - previous.mono
            self._previous = previous.values
        self._values: dict[str, Number] = {}

    def delta(self, key: str, value: Number, *, max_rate: float) -> Number | None:
        """The counter's increase since the baseline; `max_rate` is its plausible maximum per second."""
        self._values[key] = value
        previous = self._previous.get(key)
        if self.elapsed is None or previous is None:
            return None
        return counter_delta(previous, value, ceiling=max_rate * self.elapsed)

    def rate(self, delta: Number | None) -> float | None:
        if delta is None or not self.elapsed:
            return None
        return delta / self.elapsed

    def finish(self) -> GroupBaseline:
        return GroupBaseline(mono=self.mono, values=MappingProxyType(dict(self._values)))
