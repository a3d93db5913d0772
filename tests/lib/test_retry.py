"""The retry policy: full-jitter bounds, what is retried and for how long, test mode, cancellation, logs."""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections.abc import Iterator

import pytest

from device_agent import retry as retry_module
from device_agent.errors import TimedOutError, UnavailableError
from device_agent.retry import Backoff, is_testing, reset_testing, retry, set_testing, sleep

SECRET = "token=s3cr3t-value-that-must-not-be-logged"


@pytest.fixture(autouse=True)
def _reset_retry_mode() -> Iterator[None]:
    reset_testing()
    yield
    reset_testing()


def seeded(seed: int) -> random.Random:
    return random.Random(seed)  # noqa: S311  (jitter, not cryptography)


class _Top(random.Random):
    """A jitter source that always picks the top of the range: the longest possible waits."""

    def uniform(self, a: float, b: float) -> float:
        return b


class Flaky:
    """An operation that raises the given errors in turn, then returns "done"."""

    def __init__(self, *errors: BaseException) -> None:
        self.errors = list(errors)
        self.calls = 0
        self.raised: list[BaseException] = []

    async def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            error = self.errors.pop(0)
            self.raised.append(error)
            raise error
        return "done"


class Always:
    """An operation that fails every time with a fresh error carrying a secret in its message."""

    def __init__(self, kind: type[Exception] = UnavailableError) -> None:
        self.kind = kind
        self.calls = 0
        self.last: Exception | None = None

    async def __call__(self) -> str:
        self.calls += 1
        self.last = self.kind(f"attempt {self.calls} {SECRET}")
        raise self.last


# --- Backoff --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"initial": 0, "maximum": 1},
        {"initial": -1, "maximum": 1},
        {"initial": 2, "maximum": 1},
        {"initial": 1, "maximum": 2, "multiplier": 0.5},
        {"initial": math.nan, "maximum": 1},
        {"initial": 1, "maximum": math.inf},
        {"initial": 1, "maximum": 2, "multiplier": math.inf},
    ],
)
def test_backoff_refuses_invalid_settings(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="Backoff"):
        Backoff(**kwargs)


def test_backoff_is_frozen_and_keyword_only() -> None:
    backoff = Backoff(initial=1, maximum=2)
    with pytest.raises(AttributeError):
        backoff.initial = 5  # type: ignore[misc]
    with pytest.raises(TypeError):
        Backoff(1, 2)  # type: ignore[call-arg]


def test_ceiling_grows_exponentially_then_caps_without_overflow() -> None:
    backoff = Backoff(initial=0.5, maximum=30, multiplier=2)
    assert [backoff.ceiling(n) for n in range(8)] == [0.5, 1, 2, 4, 8, 16, 30, 30]
    assert backoff.ceiling(100_000) == 30
    with pytest.raises(ValueError, match="attempt"):
        backoff.ceiling(-1)


def test_delays_stay_within_the_capped_range() -> None:
    backoff = Backoff(initial=0.1, maximum=5, multiplier=3)
    delays = backoff.delays(seeded(1))
    for attempt in range(200):
        delay = next(delays)
        assert 0 <= delay <= backoff.ceiling(attempt) <= 5


def test_delays_reach_the_ceiling_and_the_cap_but_no_further() -> None:
    delays = Backoff(initial=1, maximum=8).delays(_Top())
    assert [next(delays) for _ in range(7)] == [1, 2, 4, 8, 8, 8, 8]


def test_jitter_is_full_from_zero_to_the_ceiling() -> None:
    """Full jitter: the whole range [0, ceiling] is used, not [ceiling/2, ceiling] ("equal jitter")."""
    delays = Backoff(initial=10, maximum=10).delays(seeded(7))
    sample = [next(delays) for _ in range(2000)]
    assert min(sample) >= 0
    assert min(sample) < 0.1
    assert max(sample) > 9.9
    assert 4 < sum(sample) / len(sample) < 6


def test_delays_are_deterministic_with_a_seeded_random() -> None:
    backoff = Backoff(initial=0.2, maximum=10)
    first = backoff.delays(seeded(42))
    second = backoff.delays(seeded(42))
    other = backoff.delays(seeded(43))
    a = [next(first) for _ in range(20)]
    assert a == [next(second) for _ in range(20)]
    assert a != [next(other) for _ in range(20)]


def test_unseeded_delays_differ_between_clients() -> None:
    """Without an injected Random, every caller gets its own stream: clients do not retry in lockstep."""
    backoff = Backoff(initial=1, maximum=1)
    firsts = {next(backoff.delays()) for _ in range(50)}
    assert len(firsts) == 50


# --- retry: what is retried, and for how long -----------------------------------------------------


async def test_returns_the_result_after_matching_failures() -> None:
    operation = Flaky(UnavailableError("a"), UnavailableError("b"))
    with set_testing(True):
        assert await retry(operation, on=UnavailableError, name="op") == "done"
    assert operation.calls == 3


async def test_a_success_first_time_calls_once() -> None:
    operation = Flaky()
    assert await retry(operation, on=UnavailableError, name="op") == "done"
    assert operation.calls == 1


@pytest.mark.parametrize(
    "on",
    [
        UnavailableError,
        (KeyError, UnavailableError),
        lambda error: isinstance(error, UnavailableError) and "retry me" in str(error),
    ],
    ids=["type", "tuple", "predicate"],
)
async def test_retries_only_matching_errors(on: retry_module.RetryOn) -> None:
    with set_testing(True):
        operation = Flaky(UnavailableError("retry me"), ValueError("no"))
        with pytest.raises(ValueError, match="no"):
            await retry(operation, on=on, name="op")
        assert operation.calls == 2


async def test_a_subclass_matches_its_base() -> None:
    with set_testing(True):
        operation = Flaky(TimedOutError("slow"))
        assert await retry(operation, on=TimeoutError, name="op") == "done"


async def test_a_predicate_refusing_stops_at_once() -> None:
    operation = Flaky(UnavailableError("x"))
    with pytest.raises(UnavailableError):
        await retry(operation, on=lambda _: False, name="op")
    assert operation.calls == 1


class _Stop(BaseException):
    pass


@pytest.mark.parametrize("error", [_Stop(), KeyboardInterrupt(), asyncio.CancelledError()])
async def test_base_exceptions_are_never_retried(error: BaseException) -> None:
    operation = Flaky(error)
    with pytest.raises(type(error)):
        await retry(operation, on=BaseException, name="op")
    assert operation.calls == 1


@pytest.mark.parametrize("attempts", [1, 2, 5])
async def test_attempts_are_honoured_and_the_last_error_is_raised(attempts: int) -> None:
    operation = Always(UnavailableError)
    with set_testing(True), pytest.raises(UnavailableError) as caught:
        await retry(operation, on=UnavailableError, attempts=attempts, name="op")
    assert operation.calls == attempts
    assert caught.value is operation.last
    assert type(caught.value) is UnavailableError


async def test_the_deadline_stops_retrying_on_the_monotonic_clock() -> None:
    operation = Always(UnavailableError)
    started = time.monotonic()
    with pytest.raises(UnavailableError) as caught:
        await retry(
            operation,
            on=UnavailableError,
            backoff=Backoff(initial=0.01, maximum=0.02),
            deadline=0.2,
            name="op",
        )
    elapsed = time.monotonic() - started
    assert caught.value is operation.last
    assert operation.calls > 2
    # No wait is begun that would end past the deadline (the margin is for a loaded CI machine only).
    assert 0.1 < elapsed < 0.2 + 0.5


async def test_a_wait_that_would_end_past_the_deadline_is_not_begun() -> None:
    operation = Always(UnavailableError)
    started = time.monotonic()
    with pytest.raises(UnavailableError):
        await retry(
            operation,
            on=UnavailableError,
            backoff=Backoff(initial=60, maximum=60),
            deadline=5,
            rng=_Top(),
            name="op",
        )
    assert operation.calls == 1
    assert time.monotonic() - started < 1


async def test_attempts_and_deadline_combine_whichever_comes_first() -> None:
    operation = Always(UnavailableError)
    with pytest.raises(UnavailableError):
        await retry(
            operation,
            on=UnavailableError,
            backoff=Backoff(initial=0.001, maximum=0.001),
            attempts=3,
            deadline=60,
            name="op",
        )
    assert operation.calls == 3


@pytest.mark.parametrize(
    "kwargs",
    [{"attempts": 0}, {"deadline": -1}, {"deadline": math.nan}, {"name": ""}],
)
async def test_invalid_arguments_are_refused_before_any_call(kwargs: dict[str, object]) -> None:
    operation = Flaky()
    arguments: dict[str, object] = {"name": "op"} | kwargs
    with pytest.raises(ValueError, match=r"attempts|deadline|name"):
        await retry(operation, on=UnavailableError, **arguments)  # type: ignore[arg-type]
    assert operation.calls == 0


# --- test mode ------------------------------------------------------------------------------------


async def test_test_mode_makes_a_thousand_retries_take_milliseconds() -> None:
    operation = Always(UnavailableError)
    started = time.monotonic()
    with set_testing(True, attempts=1000), pytest.raises(UnavailableError):
        await retry(operation, on=UnavailableError, backoff=Backoff(initial=10, maximum=3600), name="op")
    assert operation.calls == 1000
    assert time.monotonic() - started < 0.5


async def test_test_mode_without_a_cap_retries_until_success() -> None:
    operation = Flaky(*(UnavailableError(str(n)) for n in range(999)))
    started = time.monotonic()
    with set_testing(True):
        assert await retry(operation, on=UnavailableError, name="op") == "done"
    assert operation.calls == 1000
    assert time.monotonic() - started < 0.5


async def test_test_mode_caps_attempts_at_the_lower_of_the_two() -> None:
    with set_testing(True, attempts=3):
        high = Always()
        with pytest.raises(UnavailableError):
            await retry(high, on=UnavailableError, attempts=10, name="op")
        low = Always()
        with pytest.raises(UnavailableError):
            await retry(low, on=UnavailableError, attempts=2, name="op")
    assert (high.calls, low.calls) == (3, 2)


async def test_test_mode_does_not_spend_the_deadline_on_waits() -> None:
    """A deadline shorter than the backoff still allows retries when waits are instant."""
    operation = Flaky(UnavailableError("a"), UnavailableError("b"))
    with set_testing(True):
        result = await retry(
            operation, on=UnavailableError, backoff=Backoff(initial=60, maximum=60), deadline=1, name="op"
        )
    assert result == "done"


def test_set_testing_returns_a_context_manager_that_restores_the_previous_mode() -> None:
    assert not is_testing()
    with set_testing(True, attempts=2):
        assert is_testing()
        assert retry_module._CONFIG.get() == (True, 2)
        with set_testing(False):
            assert retry_module._CONFIG.get() == (False, None)
        assert retry_module._CONFIG.get() == (True, 2)
    assert retry_module._CONFIG.get() == (False, None)


def test_set_testing_applies_at_once_even_without_with() -> None:
    set_testing(True)
    assert is_testing()
    reset_testing()
    assert not is_testing()


def test_set_testing_refuses_a_cap_below_one() -> None:
    with pytest.raises(ValueError, match="attempts"):
        set_testing(True, attempts=0)
    assert not is_testing()


async def test_sleep_is_instant_in_test_mode_and_real_otherwise() -> None:
    with set_testing(True):
        started = time.monotonic()
        await sleep(3600)
        assert time.monotonic() - started < 0.1
    started = time.monotonic()
    await sleep(0.05)
    assert time.monotonic() - started >= 0.04


async def test_sleep_in_test_mode_still_yields_to_other_tasks() -> None:
    """A retry loop in test mode must not starve the loop: other tasks run between attempts."""
    ran = asyncio.Event()

    async def other() -> None:
        ran.set()

    with set_testing(True):
        task = asyncio.create_task(other())
        await sleep(10)
        assert ran.is_set()
        await task


@pytest.mark.parametrize("delay", [-1, math.nan, math.inf])
async def test_sleep_refuses_invalid_delays(delay: float) -> None:
    with pytest.raises(ValueError, match="delay"):
        await sleep(delay)


# --- cancellation ---------------------------------------------------------------------------------


async def test_cancellation_mid_sleep_propagates_promptly() -> None:
    operation = Always(UnavailableError)
    task = asyncio.create_task(
        retry(
            operation, on=UnavailableError, backoff=Backoff(initial=100, maximum=100), rng=_Top(), name="op"
        )
    )
    while operation.calls == 0:
        await asyncio.sleep(0)
    await asyncio.sleep(0.01)  # now in the 100 s wait
    started = time.monotonic()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert time.monotonic() - started < 0.5
    assert operation.calls == 1
    assert task.cancelled()


async def test_cancellation_in_test_mode_interrupts_an_endless_retry() -> None:
    operation = Always(UnavailableError)
    with set_testing(True):
        task = asyncio.create_task(retry(operation, on=UnavailableError, name="op"))
        while operation.calls < 10:
            await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert task.cancelled()


async def test_an_outer_timeout_cancels_the_retry_loop() -> None:
    operation = Always(UnavailableError)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.05):
            await retry(operation, on=UnavailableError, backoff=Backoff(initial=10, maximum=10), name="op")


# --- logging --------------------------------------------------------------------------------------


async def test_each_retry_logs_a_stable_event_with_structured_fields_and_no_message_text(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="device_agent.retry")
    operation = Always(UnavailableError)
    with pytest.raises(UnavailableError):
        await retry(
            operation,
            on=UnavailableError,
            backoff=Backoff(initial=0.001, maximum=0.001),
            attempts=3,
            name="ipc.connect",
        )
    records = [r for r in caplog.records if r.name == "device_agent.retry"]
    assert [r.getMessage() for r in records] == ["retry.scheduled", "retry.scheduled"]
    assert [r.__dict__["attempt"] for r in records] == [1, 2]
    for record in records:
        assert record.levelno in (logging.DEBUG, logging.INFO)
        assert record.__dict__["operation"] == "ipc.connect"
        assert record.__dict__["error"] == "UnavailableError"
        assert 0 <= record.__dict__["delay"] <= 0.001
        assert record.exc_info is None
        assert all(SECRET not in str(value) for value in record.__dict__.values())
    assert SECRET not in caplog.text
    assert "s3cr3t" not in caplog.text


async def test_giving_up_and_succeeding_log_nothing_more(caplog: pytest.LogCaptureFixture) -> None:
    """The caller owns the final error: the retry loop does not log it a second time."""
    caplog.set_level(logging.DEBUG, logger="device_agent.retry")
    with pytest.raises(ValueError, match="x"):
        await retry(Flaky(ValueError("x")), on=UnavailableError, name="op")
    assert await retry(Flaky(), on=UnavailableError, name="op") == "done"
    assert not [r for r in caplog.records if r.name == "device_agent.retry"]
