"""Waiting for whichever comes first: a number of seconds, or one of some events.

Three loops of the suite need it (the sampling schedule, the telemetry drain, the bootstrap reporter); each
had its own copy. The helper tasks are cancelled and awaited before it returns, so none outlives the wait.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable


async def sleep_unless(
    seconds: float,
    *events: asyncio.Event,
    sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
) -> None:
    """Sleep `seconds` (through `sleep`, which tests replace), or less if any of `events` is set meanwhile."""
    sleeper = asyncio.ensure_future(sleep(seconds))
    waiters = [asyncio.ensure_future(event.wait()) for event in events]
    try:
        await asyncio.wait({sleeper, *waiters}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (sleeper, *waiters):
            task.cancel()
        await asyncio.gather(sleeper, *waiters, return_exceptions=True)
