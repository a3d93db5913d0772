"""Store-and-forward against fakes that fail on demand: outages, caps, failures, an absent store, the rate.

Every test wires the real pieces (Spool, MessageSink, Packer, Usage) to in-memory fakes of the store's queue
and of IoT Core, with virtual time, and checks what a cloud consumer would see: which sample sequence
numbers arrived, in which messages, and what the messages say about drops.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import pytest
from telemetry_publisher.budget import Usage
from telemetry_publisher.payload import Packer, Status, encode_sample
from telemetry_publisher.sink import MessageSink, current_status
from telemetry_publisher.spool import Outcome, Spool, SpoolSettings

from device_agent.errors import TimedOutError
from tests.telemetry.fakes import FakeIoTCore, MemoryQueue, MemoryState, VirtualTime
from tests.telemetry.schemas import telemetry_validator


class Rig:
    """A spool wired to fakes; `sample()` makes the next record, as the component would each tick."""

    def __init__(
        self, queue: MemoryQueue | None = None, iot: FakeIoTCore | None = None, **settings: Any
    ) -> None:
        self.time = VirtualTime()
        self.queue = queue or MemoryQueue()
        self.iot = iot or FakeIoTCore()
        self.iot.clock = self.time.clock
        self.usage = Usage(wall=self.time.wall, clock=self.time.clock)
        options: dict[str, Any] = {"cap": 100, "memory_cap": 50, "batch_size": 20, "max_age_seconds": None}
        options.update(settings)
        self.settings = SpoolSettings(**options)
        packer = Packer(
            thing="pump-7", max_bytes=self.settings.max_message_bytes, max_samples=self.settings.batch_size
        )
        self.sink = MessageSink(
            packer, publish=self.iot.publish, status=self.status, usage=self.usage, wall=self.time.wall
        )
        self.spool = Spool(
            self.queue,
            self.sink,
            self.settings,
            ledger=self.usage,
            clock=self.time.clock,
            wall=self.time.wall,
            sleep=self.time.sleep,
            rng=random.Random(7),  # noqa: S311  (reproducible jitter)
        )
        self.seq = 0

    def status(self) -> Status:
        return current_status(self.usage, self.spool.stats)

    def record(self, at: float | None = None) -> bytes:
        self.seq += 1
        return encode_sample(
            self.seq, {"at": self.time.wall() if at is None else at, "cpu": {"usedPct": 1.0}}
        )

    async def tick(self, seconds: float = 10.0) -> Outcome:
        self.time.advance(seconds)
        return await self.spool.submit(self.record())

    async def drain_all(self, limit: int = 10_000) -> int:
        """Drain step by step as `run` would (the rate is tested on its own); how many messages went."""
        messages = 0
        for _ in range(limit):
            if not (self.spool.stats.backlog or self.spool.stats.memory):
                return messages
            self.time.advance(300)  # past any backoff
            if await self.spool.drain_once():
                messages += 1
        raise AssertionError("the backlog never drained")


def backfilled_seqs(iot: FakeIoTCore) -> list[int]:
    return [s["seq"] for m in iot.messages if m.get("backfill") for s in m["samples"]]


def live_seqs(iot: FakeIoTCore) -> list[int]:
    return [s["seq"] for m in iot.messages if not m.get("backfill") for s in m["samples"]]


async def test_online_samples_go_out_live_one_per_message():
    rig = Rig()
    await rig.spool.open()
    assert [await rig.tick() for _ in range(3)] == [Outcome.SENT] * 3
    assert live_seqs(rig.iot) == [1, 2, 3]
    assert rig.queue.entries == []
    for message in rig.iot.messages:
        telemetry_validator().validate(message)
    assert rig.usage.state.day_bytes == sum(len(p) for p in rig.iot.payloads)


async def test_a_long_outage_delivers_every_sample_within_the_cap_in_order_and_counts_the_rest():
    rig = Rig(cap=100, batch_size=20)
    await rig.spool.open()
    rig.spool.set_connected(False)
    outcomes = [await rig.tick() for _ in range(250)]
    assert set(outcomes) == {Outcome.SPOOLED}
    assert rig.iot.attempts == 0  # known to be offline: no publish is even tried
    assert [e.seq for e in rig.queue.entries] == list(range(151, 251))
    assert rig.spool.stats.dropped == 150
    rig.spool.set_connected(True)
    assert await rig.drain_all() == 5
    assert backfilled_seqs(rig.iot) == list(range(151, 251))  # every sample within the cap, oldest first
    assert rig.usage.state.dropped == 150
    assert rig.usage.state.backfilled == 100
    last = rig.iot.messages[-1]
    telemetry_validator().validate(last)
    assert last["counters"]["dropped"] == 150
    assert last["backfill"] is True


async def test_drops_of_an_outage_that_crosses_midnight_are_reported_after_it_in_the_totals():
    rig = Rig(cap=100, batch_size=20)
    rig.time.wall_offset = datetime(2026, 11, 30, 22, 0, tzinfo=UTC).timestamp() - rig.time.mono
    saved = MemoryState()
    await rig.spool.open()
    rig.spool.set_connected(False)
    for _ in range(250):  # 250 minutes offline: from 22:00 to 02:10 the next day
        await rig.tick(60.0)
        await rig.usage.save_if_due(saved)  # as the component does after each sample
    assert rig.usage.state.day == "2026-12-01"
    dropped_today = rig.usage.state.dropped
    assert 0 < dropped_today < 150  # most of the drops happened yesterday
    rig.spool.set_connected(True)
    await rig.drain_all()
    assert backfilled_seqs(rig.iot) == list(range(151, 251))
    for message in rig.iot.messages:
        telemetry_validator().validate(message)
        assert message["counters"]["day"] == "2026-12-01"
        assert message["counters"]["dropped"] == dropped_today
        assert message["counters"]["droppedTotal"] == 150  # yesterday's drops too
    # A restart (or a crash) reloads the totals: they never go back.
    again = Usage(wall=rig.time.wall, clock=rig.time.clock)
    await again.load(saved)
    assert again.reported.dropped_total == 150


async def test_a_publish_failure_spools_the_sample_and_the_drain_sends_it_later():
    rig = Rig()
    await rig.spool.open()
    await rig.tick()
    rig.iot.down = True
    assert await rig.tick() == Outcome.SPOOLED
    assert rig.spool.stats.healthy is False
    assert await rig.spool.drain_once() == 0  # backing off after the failure
    rig.iot.down = False
    assert await rig.tick() == Outcome.SENT  # a live publish succeeds: the drain may go at once
    assert await rig.spool.drain_once() == 1
    assert sorted(rig.iot.delivered_seqs()) == [1, 2, 3]


async def test_publish_failures_mid_batch_lose_nothing_and_ack_only_what_went_out():
    rig = Rig(batch_size=20)
    await rig.spool.open()
    rig.spool.set_connected(False)
    for _ in range(60):
        await rig.tick()
    rig.spool.set_connected(True)
    assert await rig.spool.drain_once() == 20
    rig.iot.fail_next = 2
    assert await rig.spool.drain_once() == 0
    assert rig.queue.entries[0].seq == 21  # the failed batch stays queued
    assert await rig.spool.drain_once() == 0  # backoff after a failure: no hammering
    await rig.drain_all()
    assert backfilled_seqs(rig.iot) == list(range(1, 61))
    assert rig.spool.stats.publish_failures == 2


async def test_a_publish_whose_answer_is_lost_is_sent_again_with_the_same_seq():
    """At least once: the message went out but the publisher could not know, so it goes again."""
    rig = Rig(batch_size=10)
    await rig.spool.open()
    rig.spool.set_connected(False)
    for _ in range(15):
        await rig.tick()
    rig.spool.set_connected(True)

    async def answer_lost_the_first_time(accepted: int) -> None:
        if accepted == 1:
            raise TimedOutError("no PUBACK in time")

    rig.iot.after_accept = answer_lost_the_first_time
    await rig.drain_all()
    seqs = backfilled_seqs(rig.iot)
    assert sorted(set(seqs)) == list(range(1, 16))
    duplicates = [seq for seq, n in Counter(seqs).items() if n > 1]
    assert duplicates == list(range(1, 11))
    first, again = rig.iot.messages[0]["samples"], rig.iot.messages[1]["samples"]
    assert first == again  # the same samples, byte for byte apart from the envelope


async def test_a_crash_between_publish_and_ack_redelivers_after_restart():
    rig = Rig(batch_size=10)
    await rig.spool.open()
    rig.spool.set_connected(False)
    for _ in range(10):
        await rig.tick()
    rig.spool.set_connected(True)

    async def the_process_dies_before_the_ack(accepted: int) -> None:
        rig.queue.unavailable = True

    rig.iot.after_accept = the_process_dies_before_the_ack
    assert await rig.spool.drain_once() == 10
    assert len(rig.queue.entries) == 10  # not acknowledged
    # A new process over the same store:
    rig.queue.unavailable = False
    rig.iot.after_accept = None
    restarted = Rig(queue=rig.queue, iot=rig.iot, batch_size=10)
    await restarted.spool.open()
    assert restarted.spool.stats.backlog == 10
    await restarted.drain_all()
    assert backfilled_seqs(rig.iot) == list(range(1, 11)) * 2
    assert rig.queue.entries == []


async def test_live_samples_keep_flowing_while_the_backlog_drains():
    rig = Rig(batch_size=10)
    await rig.spool.open()
    rig.spool.set_connected(False)
    for _ in range(40):
        await rig.tick()
    rig.spool.set_connected(True)
    await rig.spool.drain_once()
    assert await rig.tick() == Outcome.SENT  # seq 41 goes out at once, not behind the backlog
    await rig.drain_all()
    order = rig.iot.delivered_seqs()
    assert order.index(41) < order.index(40)
    assert backfilled_seqs(rig.iot) == list(range(1, 41))
    assert live_seqs(rig.iot) == [41]


async def test_messages_tell_the_backlog_while_there_is_one():
    rig = Rig(batch_size=10)
    await rig.spool.open()
    rig.spool.set_connected(False)
    for _ in range(25):
        await rig.tick()
    rig.spool.set_connected(True)
    await rig.drain_all()
    backlogs = [m.get("spool", {}).get("backlog", 0) for m in rig.iot.messages]
    assert backlogs == [25, 15, 5]


async def test_when_the_store_is_unavailable_a_bounded_memory_buffer_keeps_going_and_says_so():
    rig = Rig(memory_cap=30)
    await rig.spool.open()
    rig.queue.unavailable = True
    rig.spool.set_connected(False)
    outcomes = [await rig.tick() for _ in range(50)]
    assert set(outcomes) == {Outcome.BUFFERED}
    stats = rig.spool.stats
    assert (stats.memory, stats.dropped, stats.store_available) == (30, 20, False)
    # Connected again, the store still down: the memory buffer drains directly, and messages say so.
    rig.spool.set_connected(True)
    await rig.drain_all()
    assert backfilled_seqs(rig.iot) == list(range(21, 51))
    first = rig.iot.messages[0]
    telemetry_validator().validate(first)
    assert first["spool"] == {"backlog": 0, "memory": 30, "storeUnavailable": True}
    assert first["counters"]["dropped"] == 20


async def test_the_memory_buffer_moves_to_the_store_in_order_when_it_returns():
    rig = Rig(memory_cap=30)
    await rig.spool.open()
    rig.spool.set_connected(False)
    for _ in range(5):
        await rig.tick()  # 1..5 in the store
    rig.queue.unavailable = True
    for _ in range(10):
        assert await rig.tick() == Outcome.BUFFERED  # 6..15 in memory
    rig.queue.unavailable = False
    rig.time.advance(600)  # past the store's retry backoff
    assert await rig.tick() == Outcome.SPOOLED  # 16, after the buffer moved over
    assert [e.seq for e in rig.queue.entries] == list(range(1, 17))
    assert [json.loads(e.value)["seq"] for e in rig.queue.entries] == list(range(1, 17))
    assert rig.spool.stats.memory == 0
    rig.spool.set_connected(True)
    await rig.drain_all()
    assert backfilled_seqs(rig.iot) == list(range(1, 17))


async def test_an_unavailable_store_is_not_asked_again_for_every_sample():
    rig = Rig()
    await rig.spool.open()
    rig.spool.set_connected(False)
    rig.queue.unavailable = True
    for _ in range(30):
        await rig.tick(seconds=1.0)
    # One failed append, then probes only when the backoff (from 5 s, capped) allows: a handful, not 30.
    assert 2 <= len(rig.queue.calls) <= 8


async def test_a_store_that_fails_at_start_means_memory_mode_until_it_answers():
    rig = Rig()
    rig.queue.unavailable = True
    await rig.spool.open()
    assert rig.spool.stats.store_available is False
    rig.spool.set_connected(False)
    assert await rig.tick() == Outcome.BUFFERED


async def test_a_timed_out_append_may_be_kept_twice_but_is_never_lost():
    """The store may have appended although its answer was lost; the spool cannot know, so it keeps the
    record in memory too: at least once, with the same seq."""
    rig = Rig()
    await rig.spool.open()
    rig.spool.set_connected(False)
    rig.queue.fail_after_append = True
    assert await rig.tick() == Outcome.BUFFERED
    rig.queue.fail_after_append = False
    rig.time.advance(600)
    rig.spool.set_connected(True)
    await rig.drain_all()
    assert rig.iot.delivered_seqs() == [1, 1]


async def test_the_cap_never_drops_a_batch_in_flight():
    rig = Rig(cap=10, batch_size=10)
    await rig.spool.open()
    rig.spool.set_connected(False)
    for _ in range(10):
        await rig.tick()
    rig.spool.set_connected(True)

    async def new_samples_arrive_mid_publish(accepted: int) -> None:
        if accepted == 1:
            rig.spool.set_connected(False)
            for _ in range(3):
                assert await rig.tick() == Outcome.SPOOLED  # the queue holds 13 > cap while in flight

    rig.iot.after_accept = new_samples_arrive_mid_publish
    assert await rig.spool.drain_once() == 10
    assert rig.spool.stats.dropped == 0
    rig.spool.set_connected(True)
    await rig.drain_all()
    assert backfilled_seqs(rig.iot) == list(range(1, 14))


async def test_too_old_samples_expire_unsent_and_are_counted():
    rig = Rig(max_age_seconds=3600.0)
    await rig.spool.open()
    rig.spool.set_connected(False)
    for _ in range(10):
        await rig.tick(seconds=600)  # 10 samples over 100 minutes
    await rig.spool.submit(rig.record(at=100.0))  # stamped by an unset clock (1970): never "expired"
    rig.spool.set_connected(True)
    await rig.drain_all()
    delivered = backfilled_seqs(rig.iot)
    assert delivered == [5, 6, 7, 8, 9, 10, 11]  # drained 5 minutes after seq 10: 1..4 are over an hour old
    assert rig.spool.stats.expired == 4
    assert rig.usage.state.expired == 4
    assert rig.queue.entries == []


async def test_an_unreadable_record_is_dropped_and_counted_not_stuck():
    rig = Rig()
    await rig.spool.open()
    rig.spool.set_connected(False)
    await rig.tick()
    await rig.spool.submit(b"\x00 not a sample")
    await rig.tick()
    rig.spool.set_connected(True)
    await rig.drain_all()
    assert backfilled_seqs(rig.iot) == [1, 2]
    assert rig.spool.stats.dropped == 1
    assert rig.queue.entries == []


async def test_a_backlog_left_by_the_previous_process_drains_after_open():
    rig = Rig()
    for seq in range(1, 6):
        await rig.queue.append([encode_sample(seq, {"at": rig.time.wall()})])
    await rig.spool.open()
    assert rig.spool.stats.backlog == 5
    await rig.drain_all()
    assert backfilled_seqs(rig.iot) == [1, 2, 3, 4, 5]


async def test_a_lower_cap_or_memory_cap_applies_live():
    rig = Rig(cap=100, memory_cap=50)
    await rig.spool.open()
    rig.spool.set_connected(False)
    for _ in range(40):
        await rig.tick()
    rig.spool.configure(SpoolSettings(cap=10, memory_cap=50, batch_size=20, max_age_seconds=None))
    await rig.tick()
    assert [e.seq for e in rig.queue.entries] == list(range(32, 42))
    assert rig.spool.stats.dropped == 31


# ---- the drain loop and its rate ---------------------------------------------------------------------


async def wait_until(condition: Any, limit: int = 100_000) -> None:
    for _ in range(limit):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition never met")


async def test_the_drain_respects_its_rate_in_messages_per_second():
    rig = Rig(cap=10_000, batch_size=10, drain_messages_per_second=4.0)
    await rig.spool.open()
    rig.spool.set_connected(False)
    for _ in range(300):
        await rig.tick(seconds=0.0)
    rig.spool.set_connected(True)
    async with asyncio.TaskGroup() as group:
        task = group.create_task(rig.spool.run(), name="drain")
        await wait_until(lambda: not rig.queue.entries)
        task.cancel()
    assert backfilled_seqs(rig.iot) == list(range(1, 301))
    gaps = [b - a for a, b in zip(rig.iot.times, rig.iot.times[1:], strict=False)]
    assert len(rig.iot.times) == 30
    assert min(gaps) >= 0.25 - 1e-9  # never faster than 4 per second...
    assert rig.iot.times[-1] - rig.iot.times[0] == pytest.approx(29 * 0.25)  # ...and no slower when it can go


async def test_the_drain_loop_waits_for_the_connection_and_resumes_when_it_returns():
    rig = Rig(batch_size=10)
    await rig.spool.open()
    rig.spool.set_connected(False)
    for _ in range(30):
        await rig.tick()
    async with asyncio.TaskGroup() as group:
        task = group.create_task(rig.spool.run(), name="drain")
        for _ in range(100):
            await asyncio.sleep(0)
        assert rig.iot.attempts == 0  # offline: it waits on an event, it does not poll
        rig.spool.set_connected(True)
        await wait_until(lambda: not rig.queue.entries)
        task.cancel()
    assert backfilled_seqs(rig.iot) == list(range(1, 31))


async def test_the_drain_loop_backs_off_after_failures_and_probes_again():
    rig = Rig(batch_size=10)
    await rig.spool.open()
    rig.spool.set_connected(False)
    for _ in range(20):
        await rig.tick()
    rig.spool.set_connected(True)
    rig.iot.fail_next = 3
    async with asyncio.TaskGroup() as group:
        task = group.create_task(rig.spool.run(), name="drain")
        await wait_until(lambda: not rig.queue.entries)
        task.cancel()
    assert backfilled_seqs(rig.iot) == list(range(1, 21))
    # Three failures in a row: waits grow (5 s, 10 s, 20 s ceilings, jittered) before the probe that worked.
    backoffs = [s for s in rig.time.sleeps if s > 1]
    assert len(backoffs) == 3
    assert backoffs == sorted(backoffs)


async def test_the_drain_loop_waits_for_the_store_when_only_it_holds_the_backlog():
    rig = Rig(batch_size=10)
    await rig.spool.open()
    rig.spool.set_connected(False)
    for _ in range(10):
        await rig.tick()
    rig.queue.unavailable = True
    rig.spool.set_connected(True)
    async with asyncio.TaskGroup() as group:
        task = group.create_task(rig.spool.run(), name="drain")
        await wait_until(lambda: rig.spool.stats.store_available is False)
        failed_at = len(rig.queue.calls)
        await wait_until(lambda: rig.queue.calls[failed_at:].count("stats") >= 3)  # three probes
        probes, waits = rig.queue.calls[failed_at:].count("stats"), len(rig.time.sleeps)
        rig.queue.unavailable = False
        await wait_until(lambda: not rig.queue.entries)
        task.cancel()
    assert backfilled_seqs(rig.iot) == list(range(1, 11))
    assert waits >= probes  # each probe came after a backoff wait: not a busy loop


async def test_cancelling_the_drain_mid_publish_leaves_the_batch_queued_for_the_next_drain():
    rig = Rig(batch_size=10)
    await rig.spool.open()
    rig.spool.set_connected(False)
    for _ in range(10):
        await rig.tick()
    rig.spool.set_connected(True)
    rig.iot.hold = asyncio.Event()
    async with asyncio.TaskGroup() as group:
        task = group.create_task(rig.spool.run(), name="drain")
        await rig.iot.holding.wait()  # the batch is in flight
        task.cancel()
    assert task.cancelled()
    assert [e.seq for e in rig.queue.entries] == list(range(1, 11))  # nothing acknowledged
    assert rig.spool.stats.backfilled == 0
    rig.iot.hold = None
    await rig.drain_all()  # not stuck "in flight": the next drain sends them, and the cap works again
    assert backfilled_seqs(rig.iot) == list(range(1, 11))


def test_settings_refuse_nonsense():
    with pytest.raises(ValueError, match="at least 1"):
        SpoolSettings(cap=0)
    with pytest.raises(ValueError, match="positive"):
        SpoolSettings(drain_messages_per_second=0)
