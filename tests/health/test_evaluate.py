"""The check evaluator: thresholds held for a duration, hysteresis, UNKNOWN on silence, both directions,
and properties (hypothesis) that no state changes faster than its durations allow."""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
from collections.abc import Callable

import pytest
from health_monitor.evaluate import Change, Direction, Evaluator, Rule
from hypothesis import given, settings
from hypothesis import strategies as st

from device_agent.health_log import RANK, State

CPU = Rule(
    direction=Direction.ABOVE,
    warn=90,
    critical=97,
    hysteresis=5,
    for_seconds=300,
    recover_seconds=120,
    unknown_after_seconds=60,
)
DISK = Rule(
    direction=Direction.BELOW,
    warn=10,
    critical=5,
    hysteresis=2,
    for_seconds=60,
    recover_seconds=60,
    unknown_after_seconds=600,
)


def feed(evaluator: Evaluator, readings: list[tuple[float, float]]) -> list[Change]:
    changes: list[Change] = []
    for at, value in readings:
        changes.extend(evaluator.observe(value, at))
    return changes


def every(step: float, start: float, end: float, value: float) -> list[tuple[float, float]]:
    """Readings of `value` every `step` seconds from `start` up to and including `end`."""
    count = round((end - start) / step)
    return [(start + i * step, value) for i in range(count + 1)]


def transitions(changes: list[Change]) -> list[tuple[State, State, float]]:
    return [(c.old, c.new, c.at) for c in changes]


# --- examples -----------------------------------------------------------------------------------------------


def test_the_first_reading_makes_a_check_known() -> None:
    evaluator = Evaluator(CPU)
    assert evaluator.state is State.UNKNOWN
    [change] = evaluator.observe(20, at=0)
    assert (change.old, change.new, change.at, change.value) == (State.UNKNOWN, State.OK, 0, 20)
    assert change.evidence.condition == "readings resumed"


def test_above_a_threshold_for_its_duration_warns_with_evidence() -> None:
    evaluator = Evaluator(CPU)
    assert feed(evaluator, [(0, 20), *every(10, 10, 300, 93)])[-1].new is State.OK  # held 290 s of 300
    changes = feed(evaluator, [(310, 94)])
    assert transitions(changes) == [(State.OK, State.WARN, 310)]
    evidence = changes[-1].evidence
    assert evidence.condition == "at or above 90 for 300 s"  # from the first reading at 93 (t=10)
    assert evidence.threshold == 90
    assert evidence.readings == 31
    assert evidence.worst == 94
    assert str(evidence) == "at or above 90 for 300 s (31 readings, worst 94)"
    assert changes[-1].value == 94


def test_a_dip_below_the_threshold_restarts_the_duration() -> None:
    evaluator = Evaluator(CPU)
    readings = [(0, 20), *every(10, 10, 200, 95), (210, 80), *every(10, 220, 500, 95)]
    changes = feed(evaluator, readings)
    assert [c.new for c in changes] == [State.OK]  # 220 + 300 = 520 is not reached by t=500
    changes = feed(evaluator, every(10, 510, 520, 95))
    assert transitions(changes) == [(State.OK, State.WARN, 520)]


def test_critical_directly_when_critical_held_for_the_duration() -> None:
    evaluator = Evaluator(CPU)
    changes = feed(evaluator, [(0, 20), *every(10, 10, 310, 99)])
    assert transitions(changes) == [(State.UNKNOWN, State.OK, 0), (State.OK, State.CRITICAL, 310)]
    assert changes[-1].evidence.threshold == 97


def test_hysteresis_holds_warn_until_values_clear_it_for_the_recovery_duration() -> None:
    evaluator = Evaluator(CPU)
    feed(evaluator, [(0, 20), *every(10, 10, 310, 93)])
    assert evaluator.state is State.WARN
    assert feed(evaluator, every(10, 320, 1000, 87)) == []  # below 90 but not below 85: still WARN
    assert feed(evaluator, every(10, 1010, 1120, 80)) == []  # 110 s clear, 120 needed
    [change] = feed(evaluator, [(1130, 80)])
    assert (change.old, change.new, change.at) == (State.WARN, State.OK, 1130)
    assert change.evidence.condition == "below 85 for 120 s"
    assert change.evidence.worst == 80


def test_critical_recovers_to_warn_while_values_stay_high() -> None:
    evaluator = Evaluator(CPU)
    feed(evaluator, [(0, 20), *every(10, 10, 310, 99)])
    [change] = feed(evaluator, every(10, 320, 440, 91))
    assert (change.old, change.new, change.at) == (State.CRITICAL, State.WARN, 440)
    assert change.evidence.threshold == 92  # critical 97 minus hysteresis 5


def test_critical_recovers_straight_to_ok_when_both_levels_cleared() -> None:
    evaluator = Evaluator(CPU)
    feed(evaluator, [(0, 20), *every(10, 10, 310, 99)])
    [change] = feed(evaluator, every(10, 320, 440, 30))
    assert (change.old, change.new) == (State.CRITICAL, State.OK)


def test_below_rules_mirror_above_rules() -> None:
    evaluator = Evaluator(DISK)
    changes = feed(evaluator, [(0, 50), *every(10, 10, 70, 8)])
    assert transitions(changes) == [(State.UNKNOWN, State.OK, 0), (State.OK, State.WARN, 70)]
    assert changes[-1].evidence.condition == "at or below 10 for 60 s"
    assert changes[-1].evidence.worst == 8
    assert feed(evaluator, every(10, 80, 200, 11)) == []  # above 10 but not above 12
    changes = feed(evaluator, every(10, 210, 270, 13))
    assert transitions(changes) == [(State.WARN, State.OK, 270)]
    assert changes[-1].evidence.condition == "above 12 for 60 s"


def test_certificate_days_left_going_negative_is_critical_at_once() -> None:
    rule = Rule(direction=Direction.BELOW, warn=30, critical=7, hysteresis=1, unknown_after_seconds=172800)
    evaluator = Evaluator(rule)
    assert [c.new for c in feed(evaluator, [(0, 45), (3600, 29), (7200, -2)])] == [
        State.OK,
        State.WARN,
        State.CRITICAL,
    ]


def test_silence_makes_a_check_unknown_and_data_restores_the_last_state() -> None:
    clock = [0.0]
    evaluator = Evaluator(CPU, clock=lambda: clock[0])
    feed(evaluator, [(0, 20), *every(10, 10, 310, 93)])
    assert evaluator.state is State.WARN
    clock[0] = 369
    assert evaluator.poll() == ()
    clock[0] = 370
    [change] = evaluator.poll()
    assert (change.old, change.new, change.at, change.value) == (State.WARN, State.UNKNOWN, 370, None)
    assert change.evidence.condition == "no reading for 60 s (UNKNOWN after 60 s)"
    assert evaluator.poll(1000) == ()  # once
    [change] = evaluator.observe(20, at=1000)  # low now, but recovery needs its own evidence
    assert (change.old, change.new) == (State.UNKNOWN, State.WARN)
    assert change.evidence.condition == "readings resumed"


def test_a_source_that_fails_makes_a_check_unknown_at_once_with_the_reason() -> None:
    evaluator = Evaluator(DISK)
    feed(evaluator, [(0, 50.0), *every(10, 10, 70, 8.0)])
    assert evaluator.state is State.WARN
    [change] = evaluator.unknown("the file cannot be read", at=75)
    assert (change.old, change.new, change.at, change.value) == (State.WARN, State.UNKNOWN, 75, None)
    assert str(change.evidence) == "the file cannot be read"
    assert evaluator.unknown("again", at=80) == ()  # once
    [change] = evaluator.observe(50.0, at=90)  # back: the last known state, then recovery needs evidence
    assert (change.old, change.new) == (State.UNKNOWN, State.WARN)
    assert Evaluator(DISK).unknown("never read", at=0) == ()  # it starts UNKNOWN


def test_a_reading_after_a_long_gap_reports_the_gap_then_resumes() -> None:
    evaluator = Evaluator(CPU)
    feed(evaluator, [(0, 20)])
    changes = evaluator.observe(30, at=500)
    assert transitions(list(changes)) == [(State.OK, State.UNKNOWN, 60), (State.UNKNOWN, State.OK, 500)]


def test_a_gap_breaks_a_run() -> None:
    evaluator = Evaluator(CPU)
    feed(evaluator, [(0, 20), *every(10, 10, 200, 95)])
    changes = feed(evaluator, every(10, 300, 590, 95))  # 100 s gap: the run restarts at 300
    assert [c.new for c in changes] == [State.UNKNOWN, State.OK]
    [change] = feed(evaluator, [(600, 95)])
    assert (change.new, change.at) == (State.WARN, 600)


def test_the_clock_is_read_when_no_time_is_given() -> None:
    clock = [100.0]
    evaluator = Evaluator(CPU, clock=lambda: clock[0])
    [change] = evaluator.observe(10)
    assert change.at == 100
    assert evaluator.last_reading == 100


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, True, "90", None])
def test_values_that_are_not_finite_numbers_are_ignored(value: object) -> None:
    evaluator = Evaluator(CPU)
    assert evaluator.observe(value, at=0) == ()
    assert evaluator.state is State.UNKNOWN
    assert evaluator.last_reading is None


def test_readings_older_than_the_last_are_ignored() -> None:
    evaluator = Evaluator(CPU)
    feed(evaluator, [(100, 20)])
    assert evaluator.observe(99, at=50) == ()
    assert evaluator.last_value == 20


def test_without_unknown_after_a_check_never_goes_unknown() -> None:
    evaluator = Evaluator(dataclasses.replace(CPU, unknown_after_seconds=None))
    feed(evaluator, [(0, 20)])
    assert evaluator.poll(10**9) == ()
    assert evaluator.state is State.OK


def test_reconfigure_keeps_the_state_and_restarts_the_runs() -> None:
    evaluator = Evaluator(CPU)
    feed(evaluator, [(0, 20), *every(10, 10, 250, 93)])
    evaluator.reconfigure(dataclasses.replace(CPU, for_seconds=100))
    assert evaluator.state is State.OK
    assert feed(evaluator, every(10, 260, 350, 93)) == []  # the run started again at 260
    [change] = feed(evaluator, [(360, 93)])
    assert (change.new, change.at) == (State.WARN, 360)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"direction": Direction.ABOVE, "warn": 90, "critical": 80}, "warn must be below critical"),
        ({"direction": Direction.BELOW, "warn": 5, "critical": 10}, "warn must be above critical"),
        ({"direction": Direction.ABOVE, "warn": 90, "hysteresis": -1}, "negative"),
        ({"direction": Direction.ABOVE, "warn": 90, "for_seconds": -1}, "negative"),
        ({"direction": Direction.ABOVE, "warn": math.nan}, "finite"),
        ({"direction": Direction.ABOVE, "warn": 1, "unknown_after_seconds": 0}, "positive"),
    ],
)
def test_rules_refuse_what_could_not_work(fields: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Rule(**fields)  # type: ignore[arg-type]


# --- properties ---------------------------------------------------------------------------------------------

rules = st.builds(
    lambda direction, warn, gap, hysteresis, for_s, recover_s, unknown: Rule(
        direction=direction,
        warn=warn,
        critical=(warn + gap) if direction is Direction.ABOVE else (warn - gap),
        hysteresis=hysteresis,
        for_seconds=for_s,
        recover_seconds=recover_s,
        unknown_after_seconds=unknown,
    ),
    st.sampled_from(Direction),
    st.integers(min_value=20, max_value=80).map(float),
    st.integers(min_value=1, max_value=15).map(float),
    st.sampled_from([0.0, 1.0, 3.0, 5.0]),
    st.sampled_from([0.0, 10.0, 30.0, 60.0]),
    st.sampled_from([0.0, 10.0, 30.0, 60.0]),
    st.sampled_from([None, 25.0, 45.0, 120.0]),
)
# A step: wait `dt` seconds, then read a value (or only poll, for None). Values cluster near thresholds.
steps = st.lists(
    st.tuples(
        st.sampled_from([0.0, 1.0, 5.0, 10.0, 10.0, 10.0, 30.0, 50.0]),
        st.one_of(st.none(), st.integers(min_value=0, max_value=100).map(float)),
    ),
    min_size=1,
    max_size=150,
)


Script = list[tuple[float, float | None]]


@dataclasses.dataclass
class Event:
    at: float
    value: float | None  # None: a poll
    changes: tuple[Change, ...]


def run(rule: Rule, script: Script) -> tuple[Evaluator, list[Event]]:
    evaluator = Evaluator(rule, clock=lambda: 0.0)
    at = 0.0
    events = []
    for dt, value in script:
        at += dt
        changes = evaluator.poll(at) if value is None else evaluator.observe(value, at)
        events.append(Event(at, value, changes))
    return evaluator, events


def readings_between(events: list[Event], start: float, end: float) -> list[Event]:
    return [e for e in events if e.value is not None and start <= e.at <= end]


def run_start(events: list[Event], end_index: int, holds: Callable[[float], bool]) -> float | None:
    """When the run of readings that all satisfy `holds`, ending at reading `end_index`, began; runs are
    broken by a reading that does not hold and by any change to UNKNOWN."""
    start = None
    for event in events[: end_index + 1]:
        if any(c.new is State.UNKNOWN for c in event.changes):
            start = None
        if event.value is None:
            continue
        start = (event.at if start is None else start) if holds(event.value) else None
    return start


@settings(max_examples=400, deadline=None)
@given(rule=rules, script=steps)
def test_no_state_changes_faster_than_its_durations_allow(
    rule: Rule, script: list[tuple[float, float | None]]
) -> None:
    _, events = run(rule, script)
    state = State.UNKNOWN
    last_known = State.OK
    for index, event in enumerate(events):
        for change in event.changes:
            assert change.old is state  # a chain: each change starts where the last one ended
            old, new = change.old, change.new
            if new is State.UNKNOWN:
                # Only after unknown_after_seconds of silence, dated at the end of that silence.
                assert rule.unknown_after_seconds is not None
                last = [e for e in events[:index] if e.value is not None]
                assert last, "UNKNOWN before any reading"
                assert change.at == last[-1].at + rule.unknown_after_seconds
                assert change.at <= event.at
                last_known = old
            elif old is State.UNKNOWN:
                # Only at a reading, back to the last known state.
                assert event.value is not None
                assert change.at == event.at
                assert new is last_known
            elif RANK[new] > RANK[old]:
                # Rising to a level: every reading for for_seconds was at or beyond its threshold.
                assert event.value is not None
                start = run_start(events, index, functools.partial(rule.beyond, level=new))
                assert start is not None
                assert event.at - start >= rule.for_seconds
            else:
                # Falling: every reading for recover_seconds cleared the old level (beyond the hysteresis).
                assert event.value is not None
                start = run_start(events, index, functools.partial(rule.cleared, level=old))
                assert start is not None
                assert event.at - start >= rule.recover_seconds
            state = new


@settings(max_examples=300, deadline=None)
@given(rule=rules, script=steps)
def test_no_flapping_a_reversal_waits_for_the_duration(
    rule: Rule, script: list[tuple[float, float | None]]
) -> None:
    _, events = run(rule, script)
    known = [c for e in events for c in e.changes if State.UNKNOWN not in (c.old, c.new)]
    gaps = [c for e in events for c in e.changes if State.UNKNOWN in (c.old, c.new)]
    for first, second in itertools.pairwise(known):
        if any(first.at <= g.at <= second.at for g in gaps):
            continue  # a silence in between resets the story
        went_up = RANK[first.new] > RANK[first.old]
        comes_down = RANK[second.new] < RANK[second.old]
        if went_up and comes_down:
            assert second.at - first.at >= rule.recover_seconds
        if not went_up and not comes_down:
            assert second.at - first.at >= rule.for_seconds


@settings(max_examples=300, deadline=None)
@given(rule=rules.filter(lambda r: r.unknown_after_seconds is not None), script=steps)
def test_unknown_appears_when_readings_stop(rule: Rule, script: Script) -> None:
    evaluator, _ = run(rule, script)
    if evaluator.last_reading is None:
        assert evaluator.state is State.UNKNOWN
        return
    assert rule.unknown_after_seconds is not None
    silence = evaluator.last_reading + rule.unknown_after_seconds
    if evaluator.state is not State.UNKNOWN:
        assert evaluator.poll(silence - 0.001) == ()
        [change] = evaluator.poll(silence)
        assert change.new is State.UNKNOWN
    assert evaluator.state is State.UNKNOWN
    assert evaluator.poll(silence + 1e6) == ()


@settings(max_examples=200, deadline=None)
@given(rule=rules, value=st.integers(min_value=0, max_value=100).map(float))
def test_a_steady_value_settles_on_its_level_and_stays(rule: Rule, value: float) -> None:
    readings = [(float(t), value) for t in range(0, 400, 10)]
    evaluator = Evaluator(rule)
    feed(evaluator, readings)
    expected = State.OK
    for level in (State.WARN, State.CRITICAL):
        if rule.beyond(value, level):
            expected = level
    assert evaluator.state is expected
    assert feed(evaluator, [(float(t), value) for t in range(400, 800, 10)]) == []
