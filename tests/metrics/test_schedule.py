"""The schedule: aligned ticks on the monotonic clock, late ticks skipped and counted, never bunched."""

from __future__ import annotations

import asyncio
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from device_agent.metrics.schedule import Schedule
from tests.metrics.fakes import Clock

# Wall clock = monotonic + OFFSET at start; OFFSET is chosen so that grid points are easy to read.
OFFSET = 1_800_000_000.0


class Wall:
    def __init__(self, clock: Clock, offset: float = OFFSET) -> None:
        self.clock, self.offset = clock, offset

    def __call__(self) -> float:
        return self.clock() + self.offset


class SleepingClock(Clock):
    """A monotonic clock that `sleep` advances: the async iterator runs in virtual time."""

    def __init__(self, now: float) -> None:
        super().__init__(now)
        self.sleeps: list[float] = []

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_ticks_align_to_wall_clock_multiples_of_the_interval():
    clock = Clock(now=1003.0)  # wall clock 1_800_001_003: the next :10 multiple is 1_800_001_010
    schedule = Schedule(10.0, clock=clock, wall=Wall(clock))
    first = schedule.next_tick()
    assert (first.due, first.wall, first.skipped) == (1010.0, 1_800_001_010.0, 0)
    clock.now = first.due
    assert schedule.next_tick().due == 1020.0


def test_a_start_on_a_grid_point_ticks_at_once():
    clock = Clock(now=1000.0)
    assert Schedule(10.0, clock=clock, wall=Wall(clock)).next_tick().due == 1000.0


def test_a_wall_clock_jump_changes_no_tick():
    clock = Clock(now=1003.0)
    wall = Wall(clock)
    schedule = Schedule(10.0, clock=clock, wall=wall)
    dues = []
    for step in range(6):
        tick = schedule.next_tick()
        dues.append(tick.due)
        clock.now = tick.due + 0.2
        if step == 2:
            wall.offset += 3600 * 5 + 7.3  # NTP steps the clock by hours
    assert dues == [1010.0, 1020.0, 1030.0, 1040.0, 1050.0, 1060.0]
    assert schedule.skipped == 0


def test_a_slightly_late_caller_keeps_every_tick():
    clock = Clock(now=1000.0)
    schedule = Schedule(10.0, clock=clock, wall=Wall(clock))
    schedule.next_tick()
    clock.now = 1012.4  # 2.4 s late for 1010, within a quarter of the interval
    tick = schedule.next_tick()
    assert (tick.due, tick.skipped) == (1010.0, 0)


def test_a_stall_skips_the_missed_ticks_and_counts_them_instead_of_bunching():
    clock = Clock(now=1000.0)
    schedule = Schedule(10.0, clock=clock, wall=Wall(clock))
    schedule.next_tick()
    clock.now = 1047.0  # the caller was stuck for 47 s: 1010..1040 are too late
    tick = schedule.next_tick()
    assert (tick.due, tick.skipped) == (1050.0, 4)
    clock.now = 1050.0
    assert schedule.next_tick().due == 1060.0
    assert schedule.skipped == 4


def test_an_interval_change_applies_from_the_next_tick_on_the_new_grid():
    clock = Clock(now=1000.0)
    schedule = Schedule(10.0, clock=clock, wall=Wall(clock))
    clock.now = schedule.next_tick().due
    schedule.set_interval(60.0)
    tick = schedule.next_tick()
    assert tick.due == 1020.0  # wall 1_800_001_020 is a multiple of 60
    assert tick.wall % 60 == 0
    clock.now = tick.due
    assert schedule.next_tick().due == 1080.0
    schedule.set_interval(10.0)
    clock.now = 1080.0
    assert schedule.next_tick().due == 1090.0


@pytest.mark.parametrize("bad", [0.0, -1.0, math.inf, math.nan])
def test_an_interval_must_be_a_positive_number(bad: float):
    with pytest.raises(ValueError, match="interval"):
        Schedule(bad)
    with pytest.raises(ValueError, match="interval"):
        Schedule(1.0).set_interval(bad)


def test_tolerance_is_a_fraction_of_the_interval():
    with pytest.raises(ValueError, match="tolerance"):
        Schedule(1.0, tolerance=1.0)


@given(
    interval=st.sampled_from([1.0, 2.5, 10.0, 60.0, 300.0]),
    start=st.floats(min_value=0, max_value=1e7),
    offset=st.floats(min_value=0, max_value=2e9),
    delays=st.lists(st.floats(min_value=0, max_value=700), min_size=1, max_size=30),
)
def test_ticks_strictly_increase_on_the_grid_and_account_for_every_grid_point(
    interval: float, start: float, offset: float, delays: list[float]
):
    clock = Clock(now=start)
    schedule = Schedule(interval, clock=clock, wall=Wall(clock, offset))
    previous = schedule.next_tick()
    first = previous.index
    for delay in delays:
        clock.now = max(clock.now, previous.due) + delay  # the caller works, then asks for the next tick
        tick = schedule.next_tick()
        assert tick.index == previous.index + 1 + tick.skipped  # every grid point: a tick or counted
        assert tick.due > previous.due
        assert tick.due >= clock.now - interval * 0.25 - 1e-6  # never a tick that is already too late
        assert math.isclose(tick.wall, tick.index * interval)
        previous = tick
    assert schedule.skipped == previous.index - first - len(delays)


async def test_the_async_iterator_waits_on_the_monotonic_clock():
    clock = SleepingClock(now=1003.0)
    schedule = Schedule(10.0, clock=clock, wall=Wall(clock))
    seen = []
    async for tick in schedule.ticks(sleep=clock.sleep):
        seen.append((tick.due, clock.now))
        if len(seen) == 3:
            break
        clock.now += 1.5  # the sample takes 1.5 s
    assert seen == [(1010.0, 1010.0), (1020.0, 1020.0), (1030.0, 1030.0)]
    assert clock.sleeps == [7.0, 8.5, 8.5]


async def test_the_async_iterator_sleeps_again_if_woken_early():
    clock = SleepingClock(now=1000.5)
    schedule = Schedule(10.0, clock=clock, wall=Wall(clock))

    async def short_sleep(seconds: float) -> None:
        await clock.sleep(min(seconds, 1.0))  # wakes up early from any wait over a second

    async for tick in schedule.ticks(sleep=short_sleep):
        assert clock.now >= tick.due
        break
    assert clock.sleeps == [1.0] * 9 + [0.5]


async def test_a_shorter_interval_set_while_waiting_applies_at_once_not_after_the_old_wait():
    clock = Clock(now=1000.0)  # wall 1_800_001_000: the next whole hour is 2600 s away
    schedule = Schedule(3600.0, clock=clock, wall=Wall(clock))
    forever = asyncio.Event()
    sleeps: list[float] = []

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        if seconds > 60:
            await forever.wait()  # only the interval change can end this wait
        clock.now += seconds

    ticks = schedule.ticks(sleep=sleep)
    waiting = asyncio.ensure_future(anext(ticks))
    await asyncio.sleep(0.01)
    assert sleeps == [2600.0]
    assert not waiting.done()
    clock.now = 1002.5
    schedule.set_interval(1.0)  # a live configuration change
    tick = await asyncio.wait_for(waiting, timeout=5)
    assert (tick.due, tick.interval, tick.skipped) == (1003.0, 1.0, 0)
    assert sleeps == [2600.0, 0.5]
    assert schedule.skipped == 0
    await ticks.aclose()


async def test_setting_the_same_interval_while_waiting_changes_nothing():
    clock = SleepingClock(now=1003.0)
    schedule = Schedule(10.0, clock=clock, wall=Wall(clock))
    async for tick in schedule.ticks(sleep=clock.sleep):
        schedule.set_interval(10.0)
        if tick.due >= 1020.0:
            break
    assert clock.sleeps == [7.0, 10.0]
