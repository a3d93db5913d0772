"""In-memory fakes of what the telemetry building blocks talk to, each able to fail on demand.

- `MemoryQueue`: the store client's queue (append / read_batch / ack / stats), with the store's semantics
  (strictly increasing sequence numbers, oldest first, never fewer than one record per read).
- `MemoryState`: a `StateStore` (load / save) for one value.
- `FakeIoTCore`: the publish coroutine a `MessageSink` calls; keeps every payload it accepted.
- `VirtualTime`: a monotonic clock, a wall clock and a `sleep` that advances both, for rates and backoff.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from device_agent.errors import TimedOutError, UnavailableError


@dataclasses.dataclass(frozen=True)
class Entry:
    seq: int
    value: bytes


@dataclasses.dataclass(frozen=True)
class Usage:
    records: int


class MemoryQueue:
    def __init__(self) -> None:
        self.entries: list[Entry] = []
        self.next_seq = 1
        self.unavailable = False
        self.fail_after_append = False  # the append is done, then the answer is lost
        self.calls: list[str] = []

    def _check(self, op: str) -> None:
        self.calls.append(op)
        if self.unavailable:
            raise UnavailableError("the store does not answer")

    async def append(self, values: Sequence[bytes]) -> list[int]:
        self._check("append")
        seqs = []
        for value in values:
            self.entries.append(Entry(self.next_seq, bytes(value)))
            seqs.append(self.next_seq)
            self.next_seq += 1
        if self.fail_after_append:
            raise TimedOutError("no answer in time")
        return seqs

    async def read_batch(self, *, max_records: int, max_bytes: int) -> list[Entry]:
        self._check("read")
        batch: list[Entry] = []
        size = 0
        for entry in self.entries[:max_records]:
            if batch and size + len(entry.value) > max_bytes:
                break
            batch.append(entry)
            size += len(entry.value)
        return batch

    async def ack(self, up_to_seq: int) -> int:
        self._check("ack")
        before = len(self.entries)
        self.entries = [e for e in self.entries if e.seq > up_to_seq]
        return before - len(self.entries)

    async def stats(self) -> Usage:
        self._check("stats")
        return Usage(records=len(self.entries))


class MemoryState:
    def __init__(self, data: bytes | None = None) -> None:
        self.data = data
        self.saves = 0
        self.unavailable = False

    async def load(self) -> bytes | None:
        if self.unavailable:
            raise UnavailableError("the store does not answer")
        return self.data

    async def save(self, data: bytes) -> None:
        if self.unavailable:
            raise UnavailableError("the store does not answer")
        self.data = data
        self.saves += 1


class FakeIoTCore:
    """Accepts payloads unless `down`, or for the next `fail_next` publishes. `after_accept(n)`, when set,
    runs after the n-th payload was accepted (to lose the answer, or make things happen mid-publish)."""

    def __init__(self) -> None:
        self.payloads: list[bytes] = []
        self.down = False
        self.fail_next = 0
        self.attempts = 0
        self.times: list[float] = []
        self.clock: Callable[[], float] | None = None
        self.after_accept: Callable[[int], Awaitable[None]] | None = None
        self.hold: asyncio.Event | None = None  # when set, a publish waits for it before answering
        self.holding = asyncio.Event()  # set while a publish waits on `hold`

    async def publish(self, payload: bytes) -> None:
        self.attempts += 1
        if self.hold is not None:
            self.holding.set()
            await self.hold.wait()
        if self.down:
            raise UnavailableError("not connected")
        if self.fail_next:
            self.fail_next -= 1
            raise TimedOutError("no PUBACK in time")
        self.payloads.append(payload)
        if self.clock is not None:
            self.times.append(self.clock())
        if self.after_accept is not None:
            await self.after_accept(len(self.payloads))

    @property
    def messages(self) -> list[dict[str, Any]]:
        return [json.loads(p) for p in self.payloads]

    def delivered_seqs(self) -> list[int]:
        return [s["seq"] for m in self.messages for s in m["samples"]]


class VirtualTime:
    def __init__(self, mono: float = 1000.0, wall: float = 1_800_000_000.0) -> None:
        self.mono = mono
        self.wall_offset = wall - mono
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.mono

    def wall(self) -> float:
        return self.mono + self.wall_offset

    def advance(self, seconds: float) -> None:
        self.mono += seconds

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.mono += max(0.0, seconds)
        await asyncio.sleep(0)  # a real checkpoint, so other tasks run while virtual time passes
