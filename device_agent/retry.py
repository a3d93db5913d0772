"""The one retry policy: capped exponential backoff with full jitter, and a test mode that makes it instant.

    backoff = Backoff(initial=0.5, maximum=30)
    session = await retry(connect, on=UnavailableError, backoff=backoff, name="ipc.connect")

Full jitter (the AWS Architecture Blog scheme, as aiomqtt reconnects): the wait before retry n is uniform
in [0, min(maximum, initial * multiplier**n)], so a fleet that lost its broker at once does not come back
at once.

Every backoff wait in the library goes through `sleep`, so `set_testing(True)` turns all of them into a
bare event-loop checkpoint; `set_testing(True, attempts=2)` also caps how often any `retry` loop tries.
Like stamina's test mode, the switch is global, guarded by a lock, and `set_testing` returns a context
manager that restores the previous mode. `reset_testing` puts everything back (a test suite's autouse
fixture calls it).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import math
import random
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from types import TracebackType
from typing import TypeVar

logger = logging.getLogger(__name__)

T = TypeVar("T")

RetryOn = type[BaseException] | tuple[type[BaseException], ...] | Callable[[BaseException], bool]


@dataclasses.dataclass(frozen=True, kw_only=True)
class Backoff:
    """Capped exponential backoff with full jitter; all times in seconds."""

    initial: float
    maximum: float
    multiplier: float = 2.0

    def __post_init__(self) -> None:
        for field in ("initial", "maximum", "multiplier"):
            if not math.isfinite(getattr(self, field)):
                raise ValueError(f"Backoff.{field} must be a finite number")
        if self.initial <= 0:
            raise ValueError("Backoff.initial must be greater than 0")
        if self.maximum < self.initial:
            raise ValueError("Backoff.maximum must be at least Backoff.initial")
        if self.multiplier < 1:
            raise ValueError("Backoff.multiplier must be at least 1")

    def ceiling(self, attempt: int) -> float:
        """The largest wait after failed attempt number `attempt` (0-based): the cap of the jitter range."""
        if attempt < 0:
            raise ValueError("attempt must be 0 or more")
        try:
            return min(self.maximum, self.initial * self.multiplier**attempt)
        except OverflowError:  # multiplier**attempt beyond a float: long past the cap
            return self.maximum

    def delays(self, rng: random.Random | None = None) -> Iterator[float]:
        """An endless series of waits, one per failed attempt. Pass a seeded `rng` for repeatable tests."""
        # Jitter spreads load; it is not a secret, so the non-cryptographic generator is the right tool.
        source = rng if rng is not None else random.Random()  # noqa: S311
        attempt = 0
        while True:
            ceiling = self.ceiling(attempt)
            yield source.uniform(0.0, ceiling)
            if ceiling < self.maximum:  # stop counting once capped: the exponent never grows unbounded
                attempt += 1


DEFAULT_BACKOFF = Backoff(initial=0.5, maximum=30.0)


class _Config:
    """The process-wide test mode. Read and written under a lock: tests may flip it from any thread."""

    __slots__ = ("_attempts", "_lock", "_testing")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._testing = False
        self._attempts: int | None = None

    def get(self) -> tuple[bool, int | None]:
        with self._lock:
            return self._testing, self._attempts

    def set(self, testing: bool, attempts: int | None) -> tuple[bool, int | None]:
        with self._lock:
            previous = self._testing, self._attempts
            self._testing, self._attempts = testing, attempts
            return previous


_CONFIG = _Config()


class _RestoreTesting(contextlib.AbstractContextManager[None]):
    def __init__(self, previous: tuple[bool, int | None]) -> None:
        self._previous = previous

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        _CONFIG.set(*self._previous)


def set_testing(testing: bool, *, attempts: int | None = None) -> contextlib.AbstractContextManager[None]:
    """Switch test mode on or off now; the result, used as a context manager, restores the previous mode.

    In test mode every `sleep` returns after one event-loop checkpoint, and if `attempts` is given every
    `retry` loop makes at most that many attempts (fewer if its own `attempts` is lower).
    """
    if attempts is not None and attempts < 1:
        raise ValueError("attempts must be at least 1")
    return _RestoreTesting(_CONFIG.set(testing, attempts if testing else None))


def is_testing() -> bool:
    return _CONFIG.get()[0]


def reset_testing() -> None:
    """Leave test mode and drop any attempts cap."""
    _CONFIG.set(testing=False, attempts=None)


async def sleep(delay: float) -> None:
    """Wait `delay` seconds, or only yield to the event loop in test mode. Cancellation propagates."""
    if not math.isfinite(delay) or delay < 0:
        raise ValueError("delay must be a finite number of seconds, 0 or more")
    testing, _ = _CONFIG.get()
    await asyncio.sleep(0 if testing else delay)


def _matches(on: RetryOn, error: BaseException) -> bool:
    if isinstance(on, type | tuple):
        return isinstance(error, on)
    return on(error)


async def retry(
    operation: Callable[[], Awaitable[T]],
    *,
    on: RetryOn,
    name: str,
    backoff: Backoff = DEFAULT_BACKOFF,
    attempts: int | None = None,
    deadline: float | None = None,
    rng: random.Random | None = None,
) -> T:
    """Await `operation()` until it returns, retrying errors that match `on`, with backoff between attempts.

    `on` is an exception type, a tuple of types, or a predicate. Only `Exception`s are ever retried:
    cancellation, `KeyboardInterrupt` and other `BaseException`s always propagate at once.
    `attempts` caps the number of calls (None: no cap). `deadline` is a time budget in seconds from this call,
    on the monotonic clock: no attempt starts after it, and a wait that would end past it is not begun.
    It does not interrupt an attempt in flight; wrap the call in `asyncio.timeout` for that.
    When attempts or the deadline run out, the last error is raised as it was.
    `name` names the operation in the `retry.scheduled` log event; the event carries the error's type only,
    because messages of foreign errors may carry data.
    """
    if not name:
        raise ValueError("name must not be empty")
    if attempts is not None and attempts < 1:
        raise ValueError("attempts must be at least 1")
    if deadline is not None and not (math.isfinite(deadline) and deadline >= 0):
        raise ValueError("deadline must be a finite number of seconds, 0 or more")
    _, testing_attempts = _CONFIG.get()
    if testing_attempts is not None:
        attempts = testing_attempts if attempts is None else min(attempts, testing_attempts)
    give_up_at = None if deadline is None else time.monotonic() + deadline
    delays = backoff.delays(rng)
    attempt = 0
    while True:
        attempt += 1
        try:
            return await operation()
        except Exception as error:
            if not _matches(on, error):
                raise
            if attempts is not None and attempt >= attempts:
                raise
            # In test mode the wait is instant, so the deadline judges it as such.
            delay = 0.0 if is_testing() else next(delays)
            if give_up_at is not None and time.monotonic() + delay > give_up_at:
                raise
            logger.info(
                "retry.scheduled",
                extra={
                    "operation": name,
                    "attempt": attempt,
                    "delay": round(delay, 3),
                    "error": type(error).__name__,
                },
            )
        # Outside the except block: the pending error is not kept alive (nor chained) while we wait.
        await sleep(delay)
