"""When to sample: ticks aligned to the interval, on the monotonic clock, late ticks skipped, never bunched.

    schedule = Schedule(10.0)
    async for tick in schedule.ticks():
        sample = sampler.sample()
        ...

Alignment. At start the schedule reads the wall clock once and fixes the offset between it and the
monotonic clock. Tick `k` is due at monotonic time `k * interval - offset`, i.e. at the wall-clock multiples
of the interval as they were at start (:00, :10, :20, ... for 10 s), so samples from a fleet line up. From
then on only the monotonic clock counts: a wall-clock jump (NTP stepping the clock of a device without a
real-time clock, a daylight-saving change) moves no tick. `Tick.wall` is the aligned wall-clock time the
tick stands for; a sample still records the wall clock it was taken at.

Lateness. A tick is on time if it starts within `tolerance` (a quarter of the interval by default) of its
due time. When a caller comes back later than that (a slow store call, a suspended process), the missed
ticks are skipped and counted (`Tick.skipped`, `Schedule.skipped`), and the next tick is the first grid point
not in the past: a stall yields one sample at the next aligned time, never a burst of catch-up samples.

Interval changes (a live configuration update, the byte budget) apply from the next tick, which is the first
point of the new interval's grid after the last tick. A change while `ticks()` waits re-plans the tick it
waits for, so a shorter interval takes effect at once, not after the old interval's wait (up to an hour).
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import time
from collections.abc import AsyncGenerator, Awaitable, Callable

from device_agent.waiting import sleep_unless

DEFAULT_TOLERANCE = 0.25  # of the interval


@dataclasses.dataclass(frozen=True, slots=True)
class Tick:
    index: int  # the grid point: due = index * interval - offset
    due: float  # monotonic time
    wall: float  # the aligned wall-clock time it stands for (offset fixed at start)
    interval: float
    skipped: int  # ticks skipped just before this one because the caller was late


class Schedule:
    """Pure tick arithmetic over an injectable monotonic clock, plus `ticks()` to wait for them."""

    def __init__(
        self,
        interval: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        tolerance: float = DEFAULT_TOLERANCE,
    ) -> None:
        _check_interval(interval)
        if not 0 <= tolerance < 1:
            raise ValueError("tolerance must be a fraction of the interval in [0, 1)")
        self._clock = clock
        self._offset = wall() - clock()  # read once: later wall-clock jumps change nothing
        self._interval = float(interval)
        self._tolerance = tolerance
        self._last: Tick | None = None
        self._changed: asyncio.Event | None = None  # set by `set_interval` while `ticks()` runs
        self.skipped = 0  # total late ticks skipped since start

    @property
    def interval(self) -> float:
        return self._interval

    def set_interval(self, interval: float) -> None:
        """Use `interval` from the next tick on (the first point of its grid after the last tick), including
        the tick `ticks()` is waiting for."""
        _check_interval(interval)
        if float(interval) == self._interval:
            return
        self._interval = float(interval)
        if self._changed is not None:
            self._changed.set()

    def next_tick(self) -> Tick:
        """The next tick to wait for, given the clock now; skips (and counts) ticks already too late."""
        now = self._clock()
        interval = self._interval
        if self._last is None:
            index = self._first_index_at_or_after(now)
            skipped = 0
        else:
            if self._last.interval == interval:
                index = self._last.index + 1
            else:  # the new grid's first point after the last tick (1 ms clear of float rounding)
                index = self._first_index_at_or_after(self._last.due + 1e-3)
            skipped = 0
            if now - self._due(index) > interval * self._tolerance:
                late_from = index
                index = self._first_index_at_or_after(now)
                skipped = index - late_from
        tick = Tick(
            index=index, due=self._due(index), wall=index * interval, interval=interval, skipped=skipped
        )
        self.skipped += skipped
        self._last = tick
        return tick

    async def ticks(
        self, *, sleep: Callable[[float], Awaitable[object]] = asyncio.sleep
    ) -> AsyncGenerator[Tick, None]:
        """Wait for each tick in turn (on the monotonic clock) and yield it; runs until cancelled.

        An interval change while waiting replaces the awaited tick with the new grid's first point after
        the last tick yielded."""
        changed = self._changed = asyncio.Event()
        while True:
            yielded = self._last
            changed.clear()
            tick = self.next_tick()
            while (wait := tick.due - self._clock()) > 0:
                await sleep_unless(wait, changed, sleep=sleep)
                if changed.is_set():
                    changed.clear()
                    self._last, self.skipped = yielded, self.skipped - tick.skipped
                    tick = self.next_tick()
            yield tick

    def _due(self, index: int) -> float:
        return index * self._interval - self._offset

    def _first_index_at_or_after(self, mono: float) -> int:
        index = math.ceil((mono + self._offset) / self._interval)
        while self._due(index) < mono:  # float rounding near a grid point
            index += 1
        while self._due(index - 1) >= mono:
            index -= 1
        return index


def _check_interval(interval: float) -> None:
    if not (math.isfinite(interval) and interval > 0):
        raise ValueError("interval must be a positive number of seconds")
