"""The per-device sequence: block reservations, restarts and crashes never repeat a number."""

from __future__ import annotations

import asyncio
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from telemetry_publisher.sequence import SequenceAllocator, SequenceUnavailableError

from device_agent.errors import IntegrityError, UnavailableError
from tests.telemetry.fakes import MemoryState


async def started(state: MemoryState, block: int = 10) -> SequenceAllocator:
    allocator = SequenceAllocator(state, block=block)
    await allocator.start()
    return allocator


async def test_a_new_device_numbers_from_one():
    allocator = await started(MemoryState())
    assert [await allocator.next() for _ in range(3)] == [1, 2, 3]


async def test_a_block_costs_one_store_write_not_one_per_sample():
    state = MemoryState()
    allocator = await started(state, block=100)
    for _ in range(1000):
        await allocator.next()
    # One write at start, then one each time half a block is left: ~1000 / 100 + 1.
    assert state.saves == 11
    assert allocator.reservations == state.saves


async def test_a_restart_continues_after_the_reservation_leaving_a_gap():
    state = MemoryState()
    first = await started(state, block=10)
    assert [await first.next() for _ in range(3)] == [1, 2, 3]
    second = await started(state, block=10)  # the process restarted (or crashed) here
    assert await second.next() == 11


async def test_the_reservation_is_durable_before_a_number_is_handed_out():
    state = MemoryState()
    allocator = await started(state, block=4)
    for _ in range(50):
        number = await allocator.next()
        assert json.loads(state.data or b"{}")["reserved"] >= number


@settings(max_examples=60, deadline=None)
@given(
    block=st.integers(min_value=2, max_value=50),
    runs=st.lists(st.integers(min_value=0, max_value=120), min_size=1, max_size=8),
)
async def test_crashes_at_any_point_never_repeat_a_number(block: int, runs: list[int]):
    state = MemoryState()
    seen: list[int] = []
    for count in runs:  # each run: start, take `count` numbers, crash (nothing saved at exit)
        allocator = await started(state, block=block)
        seen.extend([await allocator.next() for _ in range(count)])
    assert len(seen) == len(set(seen))
    assert seen == sorted(seen)


async def test_a_short_store_outage_does_not_stop_numbering():
    state = MemoryState()
    allocator = await started(state, block=10)
    state.unavailable = True
    assert [await allocator.next() for _ in range(10)] == list(range(1, 11))
    with pytest.raises(SequenceUnavailableError):
        await allocator.next()
    assert isinstance(SequenceUnavailableError("x"), UnavailableError)
    state.unavailable = False
    assert await allocator.next() == 11


async def test_an_unavailable_store_is_not_asked_again_for_every_sample():
    state = MemoryState()
    allocator = await started(state, block=1000)
    state.unavailable = True
    saves_tried = 0

    async def counting_save(data: bytes) -> None:
        nonlocal saves_tried
        saves_tried += 1
        raise UnavailableError("down")

    state.save = counting_save  # type: ignore[method-assign]
    for _ in range(900):
        await allocator.next()
    # Early reservations start at 501 (half a block left) and retry every 10 numbers: 40 tries, not 400.
    assert saves_tried == 40


@pytest.mark.parametrize(
    "data",
    [
        b"not json",
        b"[]",
        b'{"v": 2, "reserved": 5}',
        b'{"v": 1}',
        b'{"v": 1, "reserved": -1}',
        b'{"v": 1, "reserved": true}',
    ],
)
async def test_an_unreadable_state_is_an_integrity_error_not_a_restart_from_one(data: bytes):
    with pytest.raises(IntegrityError):
        await started(MemoryState(data))


async def test_next_before_start_is_a_programming_error():
    with pytest.raises(RuntimeError, match="start"):
        await SequenceAllocator(MemoryState()).next()


async def test_concurrent_callers_get_distinct_numbers():
    allocator = await started(MemoryState(), block=7)
    numbers = await asyncio.gather(*(allocator.next() for _ in range(100)))
    assert sorted(numbers) == list(range(1, 101))


def test_a_block_needs_room_for_half_of_it():
    with pytest.raises(ValueError, match="block"):
        SequenceAllocator(MemoryState(), block=1)
