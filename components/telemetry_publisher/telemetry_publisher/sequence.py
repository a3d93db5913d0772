"""A per-device sequence number per sample that survives restarts and never repeats after a crash.

Writing the counter to the store for every sample would be a store write per sample. Instead the allocator
reserves a block: it persists "numbers up to R are taken" and hands out numbers up to R from memory. The
invariant is that no number above the persisted reservation is ever handed out, so after a crash (at any
moment) the next process starts at R + 1: the unused rest of the block becomes a gap, and a number is never
used twice. Gaps are expected (one per restart, up to a block); consumers must not read a gap as a loss.
Losses are reported by the counters in the messages, not by sequence numbers.

The next block is reserved ahead, when less than half of the current one is left, so that a store outage
shorter than half a block of samples (12 hours at the default block and a 10 s interval) never stops
numbering. If the store is still unavailable when the block runs out, `next()` raises
`SequenceUnavailableError` (an `UnavailableError`): the caller may not number samples until the store is
back. If the persisted state is missing (a new device, or a wiped store), numbering starts at 1.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Final

from device_agent.errors import DeviceAgentError, IntegrityError, UnavailableError
from telemetry_publisher.state import StateStore

logger = logging.getLogger(__name__)

DEFAULT_BLOCK: Final = 8640  # a day of samples at 10 s
STATE_VERSION: Final = 1
MAX_SEQUENCE: Final = 2**53 - 1  # exact in every JSON consumer (a double)


class SequenceUnavailableError(UnavailableError):
    """The reserved block is used up and the store cannot reserve another: no number can be handed out."""


class SequenceAllocator:
    """`await start()`, then `await next()` per sample. Safe to share between tasks."""

    def __init__(self, store: StateStore, *, block: int = DEFAULT_BLOCK) -> None:
        if block < 2:  # noqa: PLR2004
            raise ValueError("block must be at least 2")
        self._store = store
        self.block = block
        self._next: int | None = None
        self._reserved = 0  # persisted: every number up to this one may have been used
        self._retry_from = 0  # after a failed early reservation, the number at which to try again
        self._lock = asyncio.Lock()
        self.reservations = 0  # store writes made, for tests and stats

    def __repr__(self) -> str:
        return f"SequenceAllocator(next={self._next}, reserved={self._reserved})"

    @property
    def reserved(self) -> int:
        return self._reserved

    async def start(self) -> None:
        """Load the persisted reservation and reserve the first block. Raises what the store raises."""
        async with self._lock:
            data = await self._store.load()
            last = 0 if data is None else _decode(data)
            self._next = last + 1
            self._reserved = last
            await self._reserve()

    async def next(self) -> int:
        async with self._lock:
            if self._next is None:
                raise RuntimeError("SequenceAllocator.start() was not awaited")
            number = self._next
            if number > self._reserved:
                try:
                    await self._reserve()
                except DeviceAgentError as error:
                    raise SequenceUnavailableError(
                        "no sequence numbers left and the store is unavailable"
                    ) from error
            elif self._reserved - number < self.block // 2 and number >= self._retry_from:
                try:
                    await self._reserve()
                except DeviceAgentError as error:  # the rest of this block still covers us
                    # Don't wait on an unavailable store for every sample: try again a little later.
                    self._retry_from = number + max(1, self.block // 100)
                    logger.warning("sequence.reserve_failed", extra={"error": type(error).__name__})
            self._next = number + 1
            return number

    async def _reserve(self) -> None:
        """Persist one more block: after the current reservation, or from the next number if it is used up."""
        assert self._next is not None  # noqa: S101  (callers hold the lock after start)
        reserved = max(self._reserved, self._next - 1) + self.block
        if reserved > MAX_SEQUENCE:
            raise IntegrityError("sequence numbers exhausted")
        await self._store.save(encode_reservation(reserved))
        self._reserved = reserved
        self.reservations += 1


def encode_reservation(reserved: int) -> bytes:
    """The persisted form of a reservation: every number up to `reserved` may have been used."""
    return json.dumps({"v": STATE_VERSION, "reserved": reserved}, separators=(",", ":")).encode()


def _decode(data: bytes) -> int:
    try:
        document = json.loads(data)
    except (ValueError, RecursionError) as error:
        raise IntegrityError("sequence state is not JSON") from error
    if not isinstance(document, dict) or document.get("v") != STATE_VERSION:
        raise IntegrityError("sequence state is not a version 1 reservation")
    reserved = document.get("reserved")
    if not isinstance(reserved, int) or isinstance(reserved, bool):
        raise IntegrityError("sequence state has no reservation")
    if not 0 <= reserved <= MAX_SEQUENCE:
        raise IntegrityError("sequence state is out of range")
    return reserved
