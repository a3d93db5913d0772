"""The telemetry publisher end to end: built as it ships, with the real store, on the local nucleus.

Messages validate against their schemas; a long outage is bridged by the durable spool (every sample within
the cap delivered in order, the rest counted as dropped); killing the publisher and the store in the middle
of a backlog loses no acknowledged sample; the drain keeps to its rate.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest
from telemetry_publisher.budget import Period, seconds_left

from device_agent.devkit.lifecycle import ComponentState
from tests.conftest import component_pid
from tests.telemetry.schemas import local_validator, telemetry_validator
from tests.telemetry_component.conftest import STORE, TELEMETRY, fill_spool, outage_records

pytestmark = pytest.mark.slow

TOPIC = "dt/device-agent/+/telemetry"
FAST = {"intervalSeconds": 1.0, "groups": ["cpu", "memory", "system"], "heartbeatIntervalSeconds": 1.0}


def telemetry_config(**extra: Any) -> dict[str, dict[str, Any]]:
    return {TELEMETRY: {"MERGE": {**FAST, **extra}}}


def messages(device) -> list[dict[str, Any]]:
    return [json.loads(r.payload) for r in device.published(TOPIC)]


def delivered_seqs(device) -> list[int]:
    return [s["seq"] for m in messages(device) for s in m["samples"]]


def local_seqs(device) -> list[int]:
    return [r.message["sample"]["seq"] for r in device.local_messages("device-agent/metrics")]


async def wait_until(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.1)


async def test_samples_reach_iot_core_and_the_local_topic_as_documented(start_device, telemetry_base: Path):
    async with start_device(
        telemetry_base, update_config=telemetry_config(), interpolate_component_configuration=True
    ) as device:
        await device.wait_for_published(TOPIC, count=3, timeout=30)
        await device.wait_for_local("device-agent/metrics", count=3)
        cloud, local = telemetry_validator(), local_validator()
        for message in messages(device):
            cloud.validate(message)
            assert message["thing"] == device.nucleus.thing_name
        for record in device.local_messages("device-agent/metrics"):
            local.validate(record.message)
        seqs = delivered_seqs(device)
        assert seqs == sorted(seqs)
        assert len(set(seqs)) == len(seqs)
        assert seqs[0] == 1  # a new device (no reservation, nothing in the store) numbers from 1
        topics = {r.topic for r in device.published(TOPIC)}
        assert topics == {f"dt/device-agent/{device.nucleus.thing_name}/telemetry"}


def at_by_seq(device) -> dict[int, set[float]]:
    """Each delivered seq with the sample times it was delivered with (one, if redeliveries are true)."""
    times: dict[int, set[float]] = {}
    for message in messages(device):
        for sample in message["samples"]:
            times.setdefault(sample["seq"], set()).add(sample["at"])
    return times


def assert_one_sample_per_seq(device) -> None:
    reused = {seq: ats for seq, ats in at_by_seq(device).items() if len(ats) > 1}
    assert reused == {}  # a duplicate is a redelivery (same sample), never another sample with that number


def assert_streams_in_order(device) -> None:
    """After de-duplication the backlog arrives oldest first and live samples in order; live samples do
    not wait behind the backlog, so the two interleave (consumers order by seq)."""
    seen: set[int] = set()
    streams: dict[bool, list[int]] = {True: [], False: []}
    for message in messages(device):
        seqs = [s["seq"] for s in message["samples"]]
        assert seqs == sorted(seqs)
        for seq in seqs:
            if seq not in seen:
                seen.add(seq)
                streams[bool(message.get("backfill"))].append(seq)
    assert streams[True] == sorted(streams[True])
    assert streams[False] == sorted(streams[False])


async def test_a_long_outage_delivers_exactly_the_newest_samples_within_the_cap_in_order_and_counts_the_rest(
    start_device, telemetry_base: Path
):
    cap, backlog = 500, 600  # ten minutes of outage at 1 s before the publisher even starts
    config = telemetry_config(
        spool={"capSamples": cap, "drainMessagesPerSecond": 20.0}, batchSize=10, maxMessageBytes=8192
    )
    async with start_device(
        telemetry_base, merge={STORE: ""}, interpolate_component_configuration=True
    ) as device:
        await device.wait_for_state(STORE, ComponentState.RUNNING, timeout=60)
        await device.go_offline()
        await fill_spool(device, outage_records(backlog))
        result = await device.deploy(merge={TELEMETRY: ""}, update_config=config)
        assert result.succeeded, result.reason
        await wait_until(lambda: len(local_seqs(device)) >= 5, 60, "sampling stalled offline")
        await device.go_online()
        # The drain is over when a live message no longer reports a backlog.
        await wait_until(
            lambda: any(not m.get("backfill") and "spool" not in m for m in messages(device)),
            60,
            "the backlog never drained",
        )
        delivered = set(delivered_seqs(device))
        live = {s["seq"] for m in messages(device) if not m.get("backfill") for s in m["samples"]}
        taken = {s for s in local_seqs(device) if s <= max(delivered)}
        spooled = sorted(set(range(1, backlog + 1)) | (taken - live))  # the outage: prefilled, then sampled
        assert len(spooled) > cap + 100
        kept, dropped = spooled[-cap:], spooled[:-cap]
        backfilled = {s["seq"] for m in messages(device) if m.get("backfill") for s in m["samples"]}
        assert backfilled == set(kept)  # exactly the newest `cap` samples of the outage...
        assert not delivered & set(dropped)  # ...and none of the older ones, which were dropped...
        await wait_until(  # ...and counted, every one of them
            lambda: max(m["counters"].get("dropped", 0) for m in messages(device)) == len(dropped),
            15,
            "the drops were not all counted",
        )
        assert_one_sample_per_seq(device)
        assert_streams_in_order(device)
        for message in messages(device):
            telemetry_validator().validate(message)


async def test_killing_the_publisher_and_the_store_mid_backlog_loses_no_spooled_sample_and_reuses_no_seq(
    start_device, telemetry_base: Path
):
    config = telemetry_config(spool={"drainMessagesPerSecond": 20.0}, maxMessageBytes=8192)
    async with start_device(
        telemetry_base, update_config=config, interpolate_component_configuration=True
    ) as device:
        await device.wait_for_published(TOPIC, count=1, timeout=30)
        await device.go_offline()
        await asyncio.sleep(0.5)
        first = max(local_seqs(device)) + 1
        await wait_until(lambda: max(local_seqs(device)) >= first + 8, 60, "sampling stalled offline")
        os.kill(component_pid(device, "telemetry_publisher"), signal.SIGKILL)
        os.kill(component_pid(device, "encrypted_store"), signal.SIGKILL)
        await asyncio.sleep(0.3)  # what the dead process sent has arrived
        used = set(local_seqs(device)) | set(delivered_seqs(device))
        taken = len(local_seqs(device))
        last = max(local_seqs(device))
        await device.go_online()
        # Every sample announced locally was spooled before the next tick; only the last may have been
        # killed between its announcement and its append (never acknowledged, so not a loss).
        await wait_until(
            lambda: set(range(first, last)) <= set(delivered_seqs(device)), 60, "spooled samples were lost"
        )
        await wait_until(lambda: len(local_seqs(device)) >= taken + 3, 60, "the publisher did not go on")
        assert min(local_seqs(device)[taken:]) > max(used)  # numbering went on above every number used
        assert_one_sample_per_seq(device)


async def test_killing_the_publisher_and_the_store_during_the_drain_loses_no_acknowledged_sample(
    start_device, telemetry_base: Path
):
    backlog = 200
    config = telemetry_config(spool={"drainMessagesPerSecond": 4.0}, batchSize=5, maxMessageBytes=8192)
    async with start_device(
        telemetry_base, merge={STORE: ""}, interpolate_component_configuration=True
    ) as device:
        await device.wait_for_state(STORE, ComponentState.RUNNING, timeout=60)
        await device.go_offline()
        await fill_spool(device, outage_records(backlog))
        result = await device.deploy(merge={TELEMETRY: ""}, update_config=config)
        assert result.succeeded, result.reason
        await wait_until(lambda: len(local_seqs(device)) >= 3, 60, "sampling stalled offline")
        await device.go_online()
        await wait_until(
            lambda: sum(1 for m in messages(device) if m.get("backfill")) >= 3, 30, "the drain did not start"
        )
        # Mid-drain: a batch may be published and not yet acknowledged in the store.
        os.kill(component_pid(device, "telemetry_publisher"), signal.SIGKILL)
        os.kill(component_pid(device, "encrypted_store"), signal.SIGKILL)
        await asyncio.sleep(0.3)
        delivered_at_kill = set(delivered_seqs(device))
        assert not set(range(1, backlog + 1)) <= delivered_at_kill  # the kill came before the drain's end
        used = set(local_seqs(device)) | delivered_at_kill
        taken = len(local_seqs(device))
        await wait_until(
            lambda: set(range(1, backlog + 1)) <= set(delivered_seqs(device)), 90, "acknowledged samples lost"
        )
        await wait_until(lambda: len(local_seqs(device)) > taken, 30, "the publisher did not go on")
        assert min(local_seqs(device)[taken:]) > max(used)
        assert_one_sample_per_seq(device)
        assert_streams_in_order(device)


async def test_the_drain_keeps_to_its_rate(start_device, telemetry_base: Path):
    config = telemetry_config(spool={"drainMessagesPerSecond": 2.0}, batchSize=1)
    async with start_device(
        telemetry_base, update_config=config, interpolate_component_configuration=True
    ) as device:
        await device.wait_for_published(TOPIC, count=1, timeout=30)
        await device.go_offline()
        await asyncio.sleep(0.5)
        start = max(local_seqs(device))
        await wait_until(lambda: max(local_seqs(device)) >= start + 10, 60, "sampling stalled offline")
        await device.go_online()
        await wait_until(
            lambda: sum(1 for m in messages(device) if m.get("backfill")) >= 8,
            60,
            "the backlog did not drain",
        )
        # When the publisher sent each (after its rate limiter), not when the nucleus passed it on: a stall
        # in the nucleus would bunch or spread the arrivals.
        times = sorted(m["sentAt"] for m in messages(device) if m.get("backfill"))
        span = times[7] - times[0]
        assert span >= 7 / 2.0 * 0.9  # eight backlog messages at two per second take at least 3.5 s


async def test_store_unavailable_keeps_samples_in_memory_and_says_so(start_device, telemetry_base: Path):
    async with start_device(
        telemetry_base, update_config=telemetry_config(), interpolate_component_configuration=True
    ) as device:
        await device.wait_for_published(TOPIC, count=1, timeout=30)
        await device.nucleus.lifecycle.stop(STORE)  # as `greengrass-cli component stop` would
        await device.go_offline()
        await asyncio.sleep(0.5)
        start = max(local_seqs(device))
        await wait_until(lambda: max(local_seqs(device)) >= start + 8, 60, "sampling stalled")
        await device.go_online()
        await wait_until(
            lambda: any(m.get("spool", {}).get("storeUnavailable") for m in messages(device)),
            60,
            "messages never said the store was unavailable",
        )
        await wait_until(
            lambda: set(range(start + 1, start + 8)) <= set(delivered_seqs(device)), 60, "memory lost"
        )


def samples_by_seq(device) -> list[dict[str, Any]]:
    """Every delivered sample once (a duplicate carries the same seq), in seq order."""
    return sorted(
        {s["seq"]: s for m in messages(device) for s in m["samples"]}.values(), key=lambda s: s["seq"]
    )


def window(sample: dict[str, Any]) -> float:
    """The longest window the sample's deltas cover (0 when it has none)."""
    dt = sample.get("dtS", 0.0)
    return max(dt.values(), default=0.0) if isinstance(dt, dict) else float(dt)


async def test_a_restart_after_the_store_was_down_does_not_count_a_window_twice(
    start_device, telemetry_base: Path
):
    async with start_device(
        telemetry_base, update_config=telemetry_config(), interpolate_component_configuration=True
    ) as device:
        lifecycle = device.nucleus.lifecycle
        await device.wait_for_published(TOPIC, count=2, timeout=30)
        await lifecycle.stop(STORE)  # baselines could not be saved in the store from here on
        before = len(delivered_seqs(device))
        await wait_until(
            lambda: len(delivered_seqs(device)) >= before + 4, 30, "no samples without the store"
        )
        await lifecycle.stop(TELEMETRY)
        await lifecycle.start([STORE])
        await device.wait_for_state(STORE, ComponentState.RUNNING, timeout=30)
        last = max(delivered_seqs(device))
        await lifecycle.start([TELEMETRY])
        await wait_until(lambda: max(delivered_seqs(device)) > last, 60, "the publisher did not start again")
        await wait_until(
            lambda: sum(1 for s in delivered_seqs(device) if s > last) >= 2, 30, "too few samples after"
        )
        samples = samples_by_seq(device)
        first_after = next(s for s in samples if s["seq"] > last)
        assert window(first_after) > 0  # the restart continued the counters (no fresh start)...
        for previous, sample in itertools.pairwise(samples):
            # ...and no sample's window reaches back before the sample delivered ahead of it.
            assert sample["at"] - window(sample) >= previous["at"] - 0.5, (previous["seq"], sample["seq"])


async def test_a_wiped_sequence_file_does_not_restart_numbering_on_a_device_that_numbered_before(
    start_device, telemetry_base: Path
):
    async with start_device(
        telemetry_base, update_config=telemetry_config(), interpolate_component_configuration=True
    ) as device:
        await device.wait_for_published(TOPIC, count=3, timeout=30)
        await asyncio.sleep(1.5)  # the usage is in the store (saved with the first sample sent)
        await device.nucleus.lifecycle.stop(TELEMETRY)
        before = delivered_seqs(device)
        (device.nucleus.work_dir(TELEMETRY) / "state" / "sequence.json").unlink()
        restarted_at_ms = time.time() * 1000
        await device.nucleus.lifecycle.start([TELEMETRY])
        await wait_until(lambda: len(delivered_seqs(device)) > len(before), 60, "no sample after the restart")
        after = delivered_seqs(device)[len(before) :]
        assert min(after) > max(before)
        assert min(after) >= restarted_at_ms  # the time-based floor, as for a corrupt file


async def test_a_live_interval_change_applies_at_once_and_an_invalid_deployment_leaves_the_last_good_one(
    start_device, telemetry_base: Path
):
    hourly = telemetry_config(intervalSeconds=3600.0, budget={"maxIntervalSeconds": 3600.0})
    async with start_device(
        telemetry_base, update_config=hourly, interpolate_component_configuration=True
    ) as device:
        await device.wait_for_state(TELEMETRY, ComponentState.RUNNING, timeout=60)
        await asyncio.sleep(1.0)  # waiting for the next whole hour
        before = len(local_seqs(device))
        result = await device.deploy(update_config={TELEMETRY: {"MERGE": {"intervalSeconds": 1.0}}})
        assert result.succeeded, result.reason
        # Not after the hour the publisher was waiting for: within seconds.
        await wait_until(lambda: len(local_seqs(device)) >= before + 3, 15, "the new interval waited")

        # drainMessagesPerSecond 10 x maxMessageBytes 64 KiB is over the drain's byte limit: the whole
        # deployment fails, and its valid intervalSeconds does not apply either.
        invalid = {"intervalSeconds": 5.0, "spool": {"drainMessagesPerSecond": 10.0}}
        result = await device.deploy(update_config={TELEMETRY: {"MERGE": invalid}})
        assert not result.succeeded
        assert "drainMessagesPerSecond" in result.reason
        count = len(local_seqs(device))
        await asyncio.sleep(4.0)
        assert len(local_seqs(device)) - count >= 3  # still a sample a second
        assert device.state(TELEMETRY) is ComponentState.RUNNING


# Seconds before midnight UTC when the test waits for the next day: at the default sizes (about 610 bytes a
# sample with its overhead) a 1 s interval fits the 9,500 bytes allowed only within 15 s of midnight, and
# 3 s within about 47 s.
MIDNIGHT_MARGIN = 60.0
MAX_INTERVAL = 600  # seconds: the default `budget.maxIntervalSeconds`


@pytest.mark.timeout(MIDNIGHT_MARGIN + 120)
async def test_the_byte_budget_lowers_the_resolution_and_real_messages_say_so(
    start_device, telemetry_base: Path
):
    # The budget projects what is left of the UTC day, so how far it lowers the resolution depends on the
    # time of day: in the evening a 600 s interval fits 10 kB, earlier only the floor does (the budget's
    # unit tests pin each step at fixed times). Within seconds of midnight even a sample a second could
    # fit what is left: then start on the next day.
    left = seconds_left(Period.DAY, time.time())
    if left < MIDNIGHT_MARGIN:
        await asyncio.sleep(left + 1)
    budget = telemetry_config(budget={"limitBytes": 10_000, "period": "day"})
    async with start_device(
        telemetry_base, update_config=budget, interpolate_component_configuration=True
    ) as device:
        [record] = await device.wait_for_published(TOPIC, count=1, timeout=30)
        message = json.loads(record.payload)
        telemetry_validator().validate(message)
        # 10 kB a day cannot carry a sample a second: a longer interval, at most the floor (the longest
        # interval, with the kept groups: all of them here).
        degraded = message["degraded"]
        assert (degraded["reason"], degraded["omitted"]) == ("budget", [])
        assert degraded["level"] in {"interval", "floor"}
        assert 1 < degraded["intervalS"] <= MAX_INTERVAL
        assert degraded["level"] == "interval" or degraded["intervalS"] == MAX_INTERVAL
        await asyncio.sleep(3.0)
        assert len(messages(device)) <= 2  # not a sample a second any more


async def test_without_connection_status_publish_results_decide_and_no_sample_is_lost(
    start_device, telemetry_base: Path
):
    # A nucleus without SubscribeToIoTCoreConnectionStatus, whose in-memory spooler holds ~3 messages.
    async with start_device(
        telemetry_base,
        merge={STORE: ""},
        spool_max_bytes=2048,
        interpolate_component_configuration=True,
        unsupported_operations=frozenset({"aws.greengrass#SubscribeToIoTCoreConnectionStatus"}),
    ) as device:
        result = await device.deploy(merge={TELEMETRY: ""}, update_config=telemetry_config())
        assert result.succeeded, result.reason
        await device.wait_for_published(TOPIC, count=2, timeout=30)
        assert "telemetry.no_connection_status" in device.log(TELEMETRY)
        await device.go_offline()
        first = max(local_seqs(device)) + 1
        await wait_until(lambda: max(local_seqs(device)) >= first + 8, 60, "sampling stalled offline")
        last = max(local_seqs(device))
        # The first went into the nucleus's spooler ("published"); once it was full, into the durable spool.
        await device.go_online()
        await wait_until(
            lambda: set(range(first, last + 1)) <= set(delivered_seqs(device)), 60, "samples were lost"
        )
        assert any(m.get("backfill") for m in messages(device))
