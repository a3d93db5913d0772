"""sleep_unless: the sleep or the first of the events, whichever comes first, with nothing left running."""

from __future__ import annotations

import asyncio

from device_agent.waiting import sleep_unless


async def test_an_event_set_meanwhile_ends_the_sleep_early():
    event = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.call_later(0.05, event.set)
    started = loop.time()
    await sleep_unless(30.0, event)
    assert loop.time() - started < 5.0


async def test_any_of_several_events_ends_it():
    first, second = asyncio.Event(), asyncio.Event()
    asyncio.get_running_loop().call_later(0.05, second.set)
    await asyncio.wait_for(sleep_unless(30.0, first, second), timeout=5.0)
    assert second.is_set()
    assert not first.is_set()


async def test_without_an_event_it_sleeps_through_the_given_sleep():
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    await sleep_unless(12.5, asyncio.Event(), sleep=sleep)
    assert slept == [12.5]


async def test_no_task_outlives_the_wait():
    event = asyncio.Event()
    before = asyncio.all_tasks()
    asyncio.get_running_loop().call_later(0.01, event.set)
    await sleep_unless(30.0, event)
    assert asyncio.all_tasks() == before


async def test_cancelling_the_wait_cancels_its_helpers():
    before = asyncio.all_tasks()
    waiting = asyncio.ensure_future(sleep_unless(30.0, asyncio.Event()))
    await asyncio.sleep(0.01)
    waiting.cancel()
    await asyncio.gather(waiting, return_exceptions=True)
    await asyncio.sleep(0)
    assert asyncio.all_tasks() == before
