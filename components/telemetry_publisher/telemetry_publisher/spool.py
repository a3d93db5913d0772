"""Store-and-forward: every sample delivered at least once, through outages, within a bounded spool.

The spool sits between sampling and publishing. Its durable queue is a `QueueStore` (the encrypted store's
client, one namespace) and it publishes through a `Sink` (which packs records into one message and
publishes it to IoT Core). Records are sample records (`payload.encode_sample`), kept as exact bytes.

Live samples (`submit`): published at once unless the connection is known to be down; if the publish
fails, or the connection is down, the sample is appended to the durable queue instead. A live sample never
waits behind the backlog: samples from the backlog and live ones interleave, and consumers order by `seq`.

Cap: the durable queue holds at most `cap` samples. Beyond it the oldest are dropped first, by
acknowledging the oldest sequence numbers (`ack(up_to_seq)` removes everything up to it), and counted as
`dropped`. Samples older than `max_age_seconds` when their turn comes are acknowledged unsent and counted as
`expired` (only when their time is plausible: a sample stamped before 2020 by an unset clock never expires).

Drain (`run`, or `drain_once` per step): while connected, the backlog goes out oldest first, one message at
a time with as many samples as fit (`batch_size`, `max_message_bytes`), at most `drain_messages_per_second`
messages per second, measured on the monotonic clock. The rate is in messages because each message is
bounded in size, so it caps both IoT Core's per-connection publish rate and the bytes per second; at the
defaults (4 messages/s, 64 KiB, ~1 KB samples) a day of 10 s samples drains in well under a minute.

At least once: records are acknowledged in the store only after the publish that carried them succeeded.
A crash or a failed publish between the two sends them again, with the same `seq`. The drain never counts
a record as both delivered and dropped: the cap is enforced only while no batch is in flight.

Connectivity: `set_connected` (from SubscribeToIoTCoreConnectionStatus, where the nucleus offers it) says
when not to try; without it, publish results decide: after a failure the drain pauses until a live publish
succeeds (each sample interval probes) or its own backoff expires.

Store unavailable (the client raises `UnavailableError`): samples go to a bounded memory buffer (oldest
dropped and counted beyond `memory_cap`), messages say so (`spool.storeUnavailable`), the drain sends from
memory while connected, and the buffer moves to the store, in order, when the store answers again (tried
with capped exponential backoff).
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import enum
import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Final, Protocol

from device_agent.errors import DeviceAgentError, InvalidInputError, UnavailableError
from device_agent.retry import Backoff
from device_agent.waiting import sleep_unless
from telemetry_publisher.payload import decode_sample

logger = logging.getLogger(__name__)

PLAUSIBLE_SINCE: Final = 1577836800.0  # 2020-01-01: earlier sample times come from an unset clock
MAX_CAP_READ: Final = 1000  # records read at once to find the sequence number to drop up to
MOVE_CHUNK: Final = 500  # memory records appended to the store per call
STORE_BACKOFF: Final = Backoff(initial=5.0, maximum=300.0)
DRAIN_BACKOFF: Final = Backoff(initial=5.0, maximum=300.0)


class SpoolEntry(Protocol):
    """One queued record (the store client's `QueueEntry` is one)."""

    @property
    def seq(self) -> int: ...
    @property
    def value(self) -> bytes: ...


class QueueUsage(Protocol):
    @property
    def records(self) -> int: ...


class QueueStore(Protocol):
    """The durable queue, one namespace of the encrypted store (`device_agent.store_client.StoreClient`)."""

    async def append(self, values: Sequence[bytes]) -> list[int]: ...
    async def read_batch(self, *, max_records: int, max_bytes: int) -> Sequence[SpoolEntry]: ...
    async def ack(self, up_to_seq: int) -> int: ...
    async def stats(self) -> QueueUsage: ...


class Sink(Protocol):
    """Publishes one message carrying as many of the leading `records` as fit (at least one); returns how
    many it carried. Raises a `DeviceAgentError` (e.g. `UnavailableError`, `TimedOutError`) if it failed."""

    async def send(self, records: Sequence[bytes], *, backfill: bool) -> int: ...


class LossLedger(Protocol):
    """Where dropped, expired and backfilled samples are counted (`budget.Usage`)."""

    def add(self, *, dropped: int = 0, expired: int = 0, backfilled: int = 0) -> None: ...


class Outcome(enum.StrEnum):
    SENT = "sent"  # published live
    SPOOLED = "spooled"  # in the durable queue
    BUFFERED = "buffered"  # in the memory buffer (the store is unavailable)


@dataclasses.dataclass(frozen=True, kw_only=True)
class SpoolSettings:
    cap: int = 25920  # three days at 10 s
    memory_cap: int = 720  # two hours at 10 s
    batch_size: int = 100
    max_message_bytes: int = 65536
    drain_messages_per_second: float = 4.0
    max_age_seconds: float | None = 30 * 86400.0

    def __post_init__(self) -> None:
        if self.cap < 1 or self.memory_cap < 1 or self.batch_size < 1 or self.max_message_bytes < 1:
            raise ValueError("spool sizes must be at least 1")
        if not self.drain_messages_per_second > 0:
            raise ValueError("drain_messages_per_second must be positive")


@dataclasses.dataclass(frozen=True, kw_only=True)
class SpoolStats:
    backlog: int  # records in the durable queue (as last known)
    memory: int  # records in the memory buffer
    store_available: bool
    connected: bool | None  # None: the nucleus never said
    healthy: bool  # the last publish succeeded
    sent: int  # live samples published
    spooled: int
    buffered: int
    backfilled: int
    dropped: int
    expired: int
    publish_failures: int


class RateLimiter:
    """At most `per_second` starts per second on the monotonic clock; `wait()` sleeps until the next."""

    def __init__(
        self,
        per_second: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    ) -> None:
        self.per_second = per_second
        self._clock, self._sleep = clock, sleep
        self._next: float | None = None

    async def wait(self) -> None:
        now = self._clock()
        if self._next is not None and now < self._next:
            await self._sleep(self._next - now)
            now = max(now, self._clock())
        self._next = max(now, self._next or now) + 1.0 / self.per_second


class Spool:
    """Store-and-forward over a `QueueStore` and a `Sink` (module docstring). `await open()` first."""

    def __init__(
        self,
        queue: QueueStore,
        sink: Sink,
        settings: SpoolSettings | None = None,
        *,
        ledger: LossLedger | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self._queue, self._sink = queue, sink
        self.settings = settings or SpoolSettings()
        self._ledger = ledger
        self._clock, self._wall, self._sleep = clock, wall, sleep
        self._limiter = RateLimiter(self.settings.drain_messages_per_second, clock=clock, sleep=sleep)
        self._rng = rng or random.Random()  # noqa: S311  (jitter, not a secret)
        self._lock = asyncio.Lock()  # one sequence of store operations at a time
        self._work = asyncio.Event()
        self._memory: collections.deque[bytes] = collections.deque()
        self._memory_popped = 0  # records ever removed from the memory buffer's left end
        self._backlog = 0
        self._store_ok = True
        self._store_retry_at = 0.0
        self._store_delays = STORE_BACKOFF.delays(self._rng)
        self._connected: bool | None = None
        self._failures = 0  # publishes failed in a row
        self._drain_not_before = 0.0
        self._in_flight = False
        self._counts: collections.Counter[str] = collections.Counter()

    def __repr__(self) -> str:
        return f"<Spool backlog={self._backlog} memory={len(self._memory)} store_ok={self._store_ok}>"

    # ---- state ---------------------------------------------------------------------------------------

    @property
    def stats(self) -> SpoolStats:
        c = self._counts
        return SpoolStats(
            backlog=self._backlog,
            memory=len(self._memory),
            store_available=self._store_ok,
            connected=self._connected,
            healthy=self._failures == 0,
            sent=c["sent"],
            spooled=c["spooled"],
            buffered=c["buffered"],
            backfilled=c["backfilled"],
            dropped=c["dropped"],
            expired=c["expired"],
            publish_failures=c["publish_failures"],
        )

    def configure(self, settings: SpoolSettings) -> None:
        """Apply new settings (live configuration); a lower cap takes effect at the next store write."""
        self.settings = settings
        self._limiter.per_second = settings.drain_messages_per_second
        while len(self._memory) > settings.memory_cap:
            self._pop_memory()
            self._count(dropped=1)

    def set_connected(self, connected: bool) -> None:
        """The nucleus's view of the IoT Core connection."""
        self._connected = connected
        if connected:
            self._failures, self._drain_not_before = 0, 0.0
        self._work.set()

    async def open(self) -> None:
        """Learn the backlog left by the previous process (the store may be unavailable: memory mode)."""
        async with self._lock:
            try:
                self._backlog = (await self._queue.stats()).records
            except DeviceAgentError as error:
                self._store_down(error)
        self._work.set()

    # ---- live samples --------------------------------------------------------------------------------

    async def submit(self, record: bytes) -> Outcome:
        """A new sample: published live if possible, else kept (durably if the store is available)."""
        if self._connected is not False:
            try:
                await self._send([record], backfill=False)
            except DeviceAgentError as error:
                self._publish_failed(error)
            else:
                self._count(sent=1)
                return Outcome.SENT
        return await self._keep([record])

    async def _keep(self, records: Sequence[bytes]) -> Outcome:
        async with self._lock:
            # Older records in memory go to the store first, to keep the queue in order; while the drain is
            # sending from memory they stay there, and so do the new ones, behind them.
            if self._memory and not self._in_flight and await self._store_usable():
                await self._move_memory()
            if not self._memory and await self._store_usable():
                try:
                    await self._queue.append(records)
                except DeviceAgentError as error:
                    self._store_down(error)
                else:
                    self._backlog += len(records)
                    self._count(spooled=len(records))
                    await self._enforce_cap()
                    self._work.set()
                    return Outcome.SPOOLED
            for record in records:
                if len(self._memory) >= self.settings.memory_cap:
                    self._pop_memory()
                    self._count(dropped=1)
                self._memory.append(record)
            self._count(buffered=len(records))
            self._work.set()
            return Outcome.BUFFERED

    # ---- the drain -----------------------------------------------------------------------------------

    async def run(self) -> None:
        """Drain until cancelled: wait until a message can go, respect the rate, send it."""
        while True:
            delay = self._next_attempt()
            if delay is None:
                self._work.clear()
                await self._work.wait()
            elif delay > 0:
                self._work.clear()
                await self._wait_for_work_or(delay)
            else:
                await self._limiter.wait()
                await self.drain_once()

    async def drain_once(self) -> int:
        """Send one message of backlog if one may go now; the samples it delivered (0: none, or failed)."""
        if self._next_attempt() != 0:
            return 0
        async with self._lock:
            if (self._memory or not self._store_ok) and await self._store_usable():
                await self._move_memory()
            from_memory = not self._store_ok
            if from_memory:
                if not self._memory:
                    return 0
                head = self._memory_popped
                batch = list(self._memory)[: self.settings.batch_size]
                entries: list[SpoolEntry] = [_MemoryEntry(head + i, value) for i, value in enumerate(batch)]
            else:
                entries = await self._read_batch()
                if not entries:
                    return 0
            self._in_flight = True
        try:
            return await self._deliver(entries, from_memory=from_memory)
        finally:
            self._in_flight = False

    async def _read_batch(self) -> list[SpoolEntry]:
        if self._backlog <= 0:
            return []
        try:
            batch = await self._queue.read_batch(
                max_records=self.settings.batch_size, max_bytes=self.settings.max_message_bytes
            )
        except DeviceAgentError as error:
            self._store_down(error)
            return []
        if not batch:
            self._backlog = 0  # our count was stale (the store expired or dropped records itself)
        return list(batch)

    async def _deliver(self, entries: Sequence[SpoolEntry], *, from_memory: bool) -> int:
        sendable, skipped = self._screen([e.value for e in entries])
        sent = 0
        if sendable:
            try:
                sent = await self._send([entries[i].value for i in sendable], backfill=True)
            except DeviceAgentError as error:
                self._publish_failed(error)
                return 0
        # Everything up to the last record sent (or all of them, if none could be sent) leaves the queue.
        upto = sendable[sent - 1] + 1 if sendable else len(entries)
        expired = sum(1 for i in range(upto) if skipped.get(i) == "expired")
        dropped = sum(1 for i in range(upto) if skipped.get(i) == "dropped")
        async with self._lock:
            if from_memory:
                # Records the buffer dropped from its left end meanwhile are already gone.
                for _ in range(max(0, entries[upto - 1].seq + 1 - self._memory_popped)):
                    self._pop_memory()
            else:
                try:
                    self._backlog = max(0, self._backlog - await self._queue.ack(entries[upto - 1].seq))
                except DeviceAgentError as error:
                    self._store_down(error)  # they stay queued and go out again: at least once
                    return sent
                await self._enforce_cap()
        self._count(backfilled=sent, expired=expired, dropped=dropped)
        return sent

    def _screen(self, records: Sequence[bytes]) -> tuple[list[int], dict[int, str]]:
        """Indexes of the records to send, and why the others are not (expired, or unreadable: dropped)."""
        max_age = self.settings.max_age_seconds
        now = self._wall()
        sendable: list[int] = []
        skipped: dict[int, str] = {}
        for index, record in enumerate(records):
            try:
                at = decode_sample(record)["at"]
            except InvalidInputError:
                logger.warning("spool.record_unreadable")
                skipped[index] = "dropped"
                continue
            if max_age is not None and at >= PLAUSIBLE_SINCE and now - at > max_age:
                skipped[index] = "expired"
                continue
            sendable.append(index)
        return sendable, skipped

    async def _send(self, records: Sequence[bytes], *, backfill: bool) -> int:
        sent = await self._sink.send(records, backfill=backfill)
        if not 1 <= sent <= len(records):
            raise UnavailableError("the sink reported an impossible number of records sent")
        if self._failures:
            logger.info("spool.publish_recovered")
        self._failures, self._drain_not_before = 0, 0.0
        self._work.set()
        return sent

    # ---- store ---------------------------------------------------------------------------------------

    async def _enforce_cap(self) -> None:
        """Drop the oldest beyond the cap (not while a batch is in flight: those leave by their ack)."""
        try:
            while not self._in_flight and self._backlog > self.settings.cap:
                excess = min(self._backlog - self.settings.cap, MAX_CAP_READ)
                oldest = await self._queue.read_batch(
                    max_records=excess, max_bytes=self.settings.max_message_bytes
                )
                if not oldest:
                    self._backlog = 0
                    return
                removed = await self._queue.ack(oldest[min(excess, len(oldest)) - 1].seq)
                self._backlog -= removed
                self._count(dropped=removed)
                logger.info("spool.dropped_over_cap", extra={"count": removed})
        except DeviceAgentError as error:
            self._store_down(error)  # the append stands; the cap is enforced at the next write

    async def _store_usable(self) -> bool:
        if self._store_ok:
            return True
        if self._clock() < self._store_retry_at:
            return False
        try:  # probe: is it back? (and what does it hold now)
            self._backlog = (await self._queue.stats()).records
        except DeviceAgentError as error:
            self._store_down(error)
            return False
        logger.info("spool.store_available")
        self._store_ok = True
        self._store_delays = STORE_BACKOFF.delays(self._rng)
        return True

    async def _move_memory(self) -> None:
        """Append the memory buffer to the store, oldest first, removing each chunk once it is durable."""
        while self._memory and self._store_ok:
            chunk = list(self._memory)[:MOVE_CHUNK]
            try:
                await self._queue.append(chunk)
            except DeviceAgentError as error:
                self._store_down(error)
                return
            for _ in chunk:
                self._pop_memory()
            self._backlog += len(chunk)
            await self._enforce_cap()

    def _store_down(self, error: BaseException) -> None:
        if self._store_ok:
            logger.warning("spool.store_unavailable", extra={"error": type(error).__name__})
        self._store_ok = False
        self._store_retry_at = self._clock() + next(self._store_delays)

    def _pop_memory(self) -> None:
        self._memory.popleft()
        self._memory_popped += 1

    # ---- when to try ---------------------------------------------------------------------------------

    def _next_attempt(self) -> float | None:
        """Seconds until a drain attempt makes sense: 0 now, None when only an event can change that."""
        if self._connected is False or not (self._memory or self._backlog > 0):
            return None
        now = self._clock()
        if now < self._drain_not_before:
            return self._drain_not_before - now
        if not self._store_ok and not self._memory:
            return max(0.0, self._store_retry_at - now)
        return 0.0

    async def _wait_for_work_or(self, seconds: float) -> None:
        await sleep_unless(seconds, self._work, sleep=self._sleep)

    def _publish_failed(self, error: BaseException) -> None:
        self._count(publish_failures=1)
        if not self._failures:
            logger.warning("spool.publish_failed", extra={"error": type(error).__name__})
        self._failures += 1
        ceiling = DRAIN_BACKOFF.ceiling(self._failures - 1)
        self._drain_not_before = self._clock() + self._rng.uniform(ceiling / 2, ceiling)

    def _count(self, **counts: int) -> None:
        self._counts.update({k: v for k, v in counts.items() if v})
        if self._ledger is not None:
            loss = {k: counts[k] for k in ("dropped", "expired", "backfilled") if counts.get(k)}
            if loss:
                self._ledger.add(**loss)


@dataclasses.dataclass(frozen=True)
class _MemoryEntry:
    """A memory-buffer record as a queue entry; `seq` counts records ever taken into the buffer."""

    seq: int
    value: bytes = dataclasses.field(repr=False)
