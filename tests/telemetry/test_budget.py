"""The byte budget: usage per UTC day and month, and a deterministic, never silent, lower resolution."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from telemetry_publisher.budget import (
    DEFAULT_GROUP_BYTES,
    ENVELOPE_BYTES,
    SAMPLE_BASE_BYTES,
    BudgetSettings,
    Decision,
    Period,
    Usage,
    UsageState,
    decide,
    seconds_left,
)

from device_agent.errors import InvalidInputError
from device_agent.metrics import ALL_GROUPS, Group
from tests.telemetry.fakes import MemoryState


def at(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


NOON = at("2026-11-25T12:00:00")
# At 10 s with every group, a sample costs (by default estimates) 1,390 bytes on the wire: ~12 MB a day.
FULL_SAMPLE = 120 + ENVELOPE_BYTES + SAMPLE_BASE_BYTES + sum(DEFAULT_GROUP_BYTES.values())


def used(day_bytes: int, messages: int = 0, when: float = NOON) -> UsageState:
    return UsageState(
        day="2026-11-25", day_bytes=day_bytes, day_messages=messages, month="2026-11", month_bytes=day_bytes
    ).rolled(when)


def test_no_budget_means_the_configured_resolution():
    decision = decide(BudgetSettings(), interval=10, groups=ALL_GROUPS, usage=UsageState(), now=NOON)
    assert (decision.interval_seconds, decision.groups, decision.degraded) == (10, ALL_GROUPS, None)


def test_a_budget_with_room_changes_nothing():
    settings_ = BudgetSettings(limit_bytes=10**8, period=Period.DAY)
    decision = decide(settings_, interval=10, groups=ALL_GROUPS, usage=used(0), now=NOON)
    assert decision.degraded is None
    assert decision.reason == "within budget"
    assert decision.projected_bytes == FULL_SAMPLE * 4320  # 12 hours left at 10 s


def test_running_out_lengthens_the_interval_first():
    # Half a day and 1 MB left: every 10 s would cost ~6 MB, every 60 s just over 1 MB; 120 s fits.
    settings_ = BudgetSettings(limit_bytes=20_000_000, period=Period.DAY, reserve=0.0)
    decision = decide(settings_, interval=10, groups=ALL_GROUPS, usage=used(19_000_000), now=NOON)
    assert decision.degraded is not None
    assert decision.degraded.level == "interval"
    assert decision.groups == ALL_GROUPS
    assert decision.interval_seconds == 120
    assert decision.projected_bytes == FULL_SAMPLE * 43200 // 120 <= 1_000_000
    assert FULL_SAMPLE * 43200 / 60 > 1_000_000  # the step before did not fit


def test_then_it_leaves_out_the_largest_groups_but_never_the_kept_ones():
    settings_ = BudgetSettings(
        limit_bytes=20_000_000, period=Period.DAY, reserve=0.0, max_interval_seconds=600
    )
    decision = decide(settings_, interval=10, groups=ALL_GROUPS, usage=used(19_950_000), now=NOON)
    assert decision.degraded is not None
    assert decision.degraded.level == "groups"
    assert decision.interval_seconds == 600
    assert Group.PROCESSES not in decision.groups  # the largest goes first
    assert {Group.CPU, Group.MEMORY, Group.SYSTEM} <= set(decision.groups)
    assert decision.degraded.omitted == tuple(g.value for g in ALL_GROUPS if g not in decision.groups)


def test_over_budget_it_sends_the_floor_rather_than_nothing():
    settings_ = BudgetSettings(limit_bytes=20_000_000, period=Period.DAY)
    decision = decide(settings_, interval=10, groups=ALL_GROUPS, usage=used(25_000_000), now=NOON)
    assert decision.degraded is not None
    assert decision.degraded.level == "floor"
    assert decision.interval_seconds == 600
    assert decision.groups == (Group.CPU, Group.MEMORY, Group.SYSTEM)
    assert decision.remaining_bytes is not None
    assert decision.remaining_bytes < 0


def test_measured_group_sizes_decide_which_groups_go_first():
    settings_ = BudgetSettings(limit_bytes=20_000_000, period=Period.DAY, reserve=0.0)
    measured = {"network": 5000}  # a device with many interfaces
    decision = decide(
        settings_, interval=10, groups=ALL_GROUPS, usage=used(19_950_000), now=NOON, group_bytes=measured
    )
    assert Group.NETWORK not in decision.groups
    assert Group.PROCESSES in decision.groups or decision.degraded is not None


def test_message_overhead_counts_against_the_budget():
    settings_ = BudgetSettings(limit_bytes=10_000_000, period=Period.DAY, overhead_bytes_per_message=120)
    lots_of_messages = decide(
        settings_, interval=10, groups=ALL_GROUPS, usage=used(1_000_000, 70_000), now=NOON
    )
    assert lots_of_messages.remaining_bytes == 10_000_000 - 1_000_000 - 70_000 * 120


def test_a_new_period_restores_the_resolution():
    settings_ = BudgetSettings(limit_bytes=20_000_000, period=Period.DAY)
    state = used(25_000_000)
    assert decide(settings_, interval=10, groups=ALL_GROUPS, usage=state, now=NOON).degraded is not None
    tomorrow = at("2026-11-26T00:00:01")
    assert decide(settings_, interval=10, groups=ALL_GROUPS, usage=state, now=tomorrow).degraded is None


def test_a_monthly_budget_spreads_over_the_month():
    settings_ = BudgetSettings(limit_bytes=100_000_000, period=Period.MONTH, reserve=0.0)
    early = decide(
        settings_, interval=10, groups=ALL_GROUPS, usage=UsageState(), now=at("2026-11-01T00:00:00")
    )
    # ~12 MB a day at 10 s is ~360 MB a month: every 30 s would still be 120 MB, every 60 s fits.
    assert early.interval_seconds == 60
    assert FULL_SAMPLE * 30 * 86400 / 30 > 100_000_000
    late = decide(
        settings_, interval=10, groups=ALL_GROUPS, usage=UsageState(), now=at("2026-11-29T00:00:00")
    )
    assert late.degraded is None


def test_a_decision_is_deterministic():
    settings_ = BudgetSettings(limit_bytes=20_000_000, period=Period.DAY)
    args = {"interval": 10, "groups": ALL_GROUPS, "usage": used(19_500_000), "now": NOON}
    assert decide(settings_, **args) == decide(settings_, **args)  # type: ignore[arg-type]


@settings(max_examples=200, deadline=None)
@given(
    limit=st.integers(min_value=10_000, max_value=10**10),
    spending=st.tuples(st.integers(min_value=0, max_value=10**10), st.integers(min_value=0, max_value=10**9)),
    now=st.floats(min_value=at("2024-01-01T00:00:00"), max_value=at("2030-01-01T00:00:00")),
    period=st.sampled_from(list(Period)),
    interval=st.sampled_from([1.0, 10.0, 60.0]),
)
def test_more_spending_never_raises_the_resolution_and_never_silences(
    limit: int, spending: tuple[int, int], now: float, period: Period, interval: float
):
    spent, more = spending
    settings_ = BudgetSettings(limit_bytes=limit, period=period)
    usage = UsageState().rolled(now)

    def decision(bytes_: int) -> Decision:
        state = UsageState(day=usage.day, day_bytes=bytes_, month=usage.month, month_bytes=bytes_)
        return decide(settings_, interval=interval, groups=ALL_GROUPS, usage=state, now=now)

    before, after = decision(spent), decision(spent + more)
    assert after.interval_seconds >= before.interval_seconds
    assert len(after.groups) <= len(before.groups)
    assert set(after.groups) >= set(settings_.keep_groups)  # never silent: the kept groups always go
    assert after.interval_seconds <= max(interval, settings_.max_interval_seconds)


def test_seconds_left_in_the_utc_day_and_month():
    assert seconds_left(Period.DAY, NOON) == 43200
    assert seconds_left(Period.MONTH, at("2026-12-31T23:00:00")) == 3600
    assert seconds_left(Period.MONTH, at("2026-02-28T00:00:00")) == 86400


# ---- usage ---------------------------------------------------------------------------------------------


class Wall:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_usage_counts_per_utc_day_and_month_and_rolls_over():
    wall = Wall(at("2026-11-30T23:59:00"))
    usage = Usage(wall=wall)
    usage.add_sent(1000)
    usage.add(dropped=2, backfilled=5)
    state = usage.state
    assert (state.day, state.day_bytes, state.day_messages, state.dropped, state.backfilled) == (
        "2026-11-30", 1000, 1, 2, 5,
    )  # fmt: skip
    wall.now = at("2026-12-01T00:00:30")
    usage.add_sent(10)
    state = usage.state
    assert (state.day, state.day_bytes, state.dropped, state.month, state.month_bytes) == (
        "2026-12-01", 10, 0, "2026-12", 10,
    )  # fmt: skip


async def test_usage_is_saved_at_most_once_a_minute_and_survives_a_restart():
    wall, mono = Wall(NOON), Wall(0.0)
    store = MemoryState()
    usage = Usage(wall=wall, clock=mono)
    assert not await usage.save_if_due(store)  # nothing to save
    usage.add_sent(500)
    assert await usage.save_if_due(store)
    usage.add_sent(500)
    mono.now = 30
    assert not await usage.save_if_due(store)
    mono.now = 61
    assert await usage.save_if_due(store)
    again = Usage(wall=wall, clock=mono)
    await again.load(store)
    assert again.state.day_bytes == 1000
    assert store.saves == 2


async def test_totals_never_roll_over_and_messages_carry_them_as_last_persisted():
    wall, mono = Wall(at("2026-11-30T23:59:00")), Wall(0.0)
    store = MemoryState()
    usage = Usage(wall=wall, clock=mono)
    usage.add(dropped=3, expired=1, backfilled=7)
    assert usage.reported.dropped_total == 0  # not persisted yet: a crash now would forget it
    assert await usage.save_if_due(store)
    assert (usage.reported.dropped_total, usage.reported.expired_total) == (3, 1)
    wall.now = at("2026-12-01T00:00:30")
    usage.add(dropped=2)
    assert (usage.state.dropped, usage.state.dropped_total) == (2, 5)  # a new day; the total goes on
    assert usage.reported.dropped_total == 3
    crashed = Usage(wall=wall, clock=mono)  # the process dies before the next save
    await crashed.load(store)
    assert crashed.reported.dropped_total == 3  # what messages said, not less
    assert crashed.state.backfilled_total == 7
    assert crashed.state.dropped == 0  # yesterday's day count rolled over


async def test_an_unreadable_usage_state_starts_from_zero():
    usage = Usage(wall=Wall(NOON))
    await usage.load(MemoryState(b"{broken"))
    assert usage.state.day_bytes == 0


@pytest.mark.parametrize(
    "data",
    [b"[]", b'{"v": 2}', b'{"v": 1, "day_bytes": -1}', b'{"v": 1, "day": 5}', b'{"v": 1, "dropped": true}'],
)
def test_malformed_usage_states_are_refused(data: bytes):
    with pytest.raises(InvalidInputError):
        UsageState.from_bytes(data)


@given(st.binary(max_size=200))
def test_garbage_is_never_a_usage_state(data: bytes):
    try:
        state = UsageState.from_bytes(data)
    except InvalidInputError:
        return
    assert state.day_bytes >= 0
