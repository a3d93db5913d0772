"""Counters to deltas: the wrap/reset/plausibility rule, and baselines that survive serialisation."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from device_agent.errors import InvalidInputError
from device_agent.metrics.counters import Baseline, CounterWindow, GroupBaseline, counter_delta

U32 = 2**32
U64 = 2**64
HUGE = float(U64)


def test_growth_is_the_difference():
    assert counter_delta(100, 250, ceiling=HUGE) == 150
    assert counter_delta(7, 7, ceiling=HUGE) == 0


def test_a_32_bit_wrap_is_counted_across_the_top():
    assert counter_delta(U32 - 100, 50, ceiling=HUGE) == 150


def test_a_64_bit_wrap_is_counted_across_the_top():
    assert counter_delta(U64 - 10, 5, ceiling=HUGE) == 15


def test_a_reset_from_a_small_value_counts_what_came_after_it():
    # 100 -> 40 is far less than half of 2**32: an interface re-created, not a wrap.
    assert counter_delta(100, 40, ceiling=HUGE) == 40


def test_a_counter_beyond_32_bits_that_goes_down_is_a_reset_not_a_32_bit_wrap():
    assert counter_delta(U32 + 10**9, 3, ceiling=HUGE) == 3


def test_an_implausible_delta_is_left_out():
    assert counter_delta(0, 10**12, ceiling=10**9) is None
    assert counter_delta(10**12, 10**11, ceiling=10**9) is None  # a reset from a large value


def test_float_counters_never_wrap():
    assert counter_delta(100.5, 0.25, ceiling=HUGE) == 0.25


def test_negative_readings_are_refused():
    assert counter_delta(-1, 5, ceiling=HUGE) is None
    assert counter_delta(5, -1, ceiling=HUGE) is None


@given(
    previous=st.integers(min_value=0, max_value=U64 - 1),
    current=st.integers(min_value=0, max_value=U64 - 1),
    ceiling=st.floats(min_value=0, max_value=1e20, allow_nan=False),
)
def test_a_delta_is_never_negative_nor_above_the_ceiling(previous: int, current: int, ceiling: float):
    delta = counter_delta(previous, current, ceiling=ceiling)
    assert delta is None or 0 <= delta <= ceiling


@given(
    width=st.sampled_from([32, 64]),
    start=st.integers(min_value=0),
    steps=st.lists(st.integers(min_value=0, max_value=2**31 - 1), min_size=1, max_size=50),
)
def test_a_wrapping_counter_read_often_enough_yields_its_true_increments(
    width: int, start: int, steps: list[int]
):
    modulus = 2**width
    value = start % modulus
    for step in steps:
        following = (value + step) % modulus
        assert counter_delta(value, following, ceiling=HUGE) == step
        value = following


def test_a_window_without_baseline_only_establishes_one():
    window = CounterWindow(None, mono=50.0)
    assert window.delta("x", 10, max_rate=1e9) is None
    assert window.elapsed is None
    assert window.finish() == GroupBaseline(mono=50.0, values={"x": 10})


def test_a_window_gives_deltas_and_rates_over_its_elapsed_time():
    window = CounterWindow(GroupBaseline(mono=40.0, values={"x": 10}), mono=50.0)
    delta = window.delta("x", 110, max_rate=1e9)
    assert (delta, window.elapsed, window.rate(delta)) == (100, 10.0, 10.0)


def test_a_window_refuses_a_baseline_from_the_future():
    # A monotonic clock behind the baseline means another boot: start over.
    window = CounterWindow(GroupBaseline(mono=900.0, values={"x": 10}), mono=5.0)
    assert window.delta("x", 11, max_rate=1e9) is None


def test_the_plausibility_ceiling_scales_with_elapsed_time():
    window = CounterWindow(GroupBaseline(mono=0.0, values={"x": 0}), mono=2.0)
    assert window.delta("x", 200, max_rate=100) == 200
    window = CounterWindow(GroupBaseline(mono=0.0, values={"x": 0}), mono=2.0)
    assert window.delta("x", 201, max_rate=100) is None


counter_values = st.one_of(
    st.integers(min_value=0, max_value=U64 - 1), st.floats(min_value=0, max_value=1e15, allow_nan=False)
)
baselines = st.builds(
    Baseline,
    boot=st.text(max_size=40),
    groups=st.dictionaries(
        st.text(min_size=1, max_size=12),
        st.builds(
            GroupBaseline,
            mono=st.floats(min_value=0, max_value=1e9, allow_nan=False),
            values=st.dictionaries(st.text(max_size=30), counter_values, max_size=20),
        ),
        max_size=8,
    ),
)


@given(baselines)
def test_a_baseline_survives_serialisation(baseline: Baseline):
    again = Baseline.from_bytes(baseline.to_bytes())
    assert again.boot == baseline.boot
    assert {k: (g.mono, dict(g.values)) for k, g in again.groups.items()} == {
        k: (g.mono, dict(g.values)) for k, g in baseline.groups.items()
    }


@given(st.binary(max_size=300))
def test_garbage_is_never_a_baseline(data: bytes):
    with pytest.raises(InvalidInputError):
        Baseline.from_bytes(data)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children, max_size=4)
    ),
    max_leaves=20,
)


@given(st.fixed_dictionaries({"v": st.just(1), "boot": json_values, "groups": json_values}) | json_values)
def test_any_json_is_either_a_baseline_or_refused_cleanly(document: object):
    try:
        result = Baseline.from_bytes(json.dumps(document).encode())
    except InvalidInputError:
        return
    assert isinstance(result.boot, str)
    assert all(isinstance(group, GroupBaseline) for group in result.groups.values())


@pytest.mark.parametrize(
    "document",
    [
        {"v": 2, "boot": "b", "groups": {}},
        {"v": 1, "boot": 3, "groups": {}},
        {"v": 1, "boot": "b", "groups": {"cpu": {"mono": "x", "values": {}}}},
        {"v": 1, "boot": "b", "groups": {"cpu": {"mono": 1.0, "values": {"idle": -1}}}},
        {"v": 1, "boot": "b", "groups": {"cpu": {"mono": 1.0, "values": {"idle": True}}}},
        {"v": 1, "boot": "b", "groups": {"cpu": []}},
    ],
)
def test_malformed_baselines_are_refused(document: object):
    with pytest.raises(InvalidInputError):
        Baseline.from_bytes(json.dumps(document).encode())


def test_an_oversized_baseline_is_refused_before_parsing():
    with pytest.raises(InvalidInputError, match="too large"):
        Baseline.from_bytes(b" " * (256 * 1024 + 1))
