"""Messages: their format against the schema, their size never over the limit, oversize samples shrunk."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from telemetry_publisher.payload import (
    IOT_CORE_MAX_BYTES,
    Degraded,
    Packer,
    Status,
    decode_sample,
    encode_sample,
    group_sizes,
    local_message,
    shrink,
    telemetry_topic,
)

from device_agent.errors import InvalidInputError
from device_agent.metrics import ProcessMatcher, PsutilSource, Sampler, SamplerSettings
from tests.metrics.fakes import Clock, FakeSource
from tests.telemetry.schemas import local_validator, telemetry_validator

STATUS = Status(day="2026-11-25", sent_bytes=4812)


def fake_samples(count: int) -> list[dict[str, Any]]:
    source, clock = FakeSource(), Clock()
    sampler = Sampler(SamplerSettings(), source=source, clock=clock, wall=lambda: 1_800_000_000.0 + clock.now)
    samples = []
    for _ in range(count):
        samples.append(sampler.sample())
        clock.advance(10)
        source.tick(10)
    return samples


def records(count: int, first_seq: int = 1) -> list[bytes]:
    return [encode_sample(first_seq + i, s) for i, s in enumerate(fake_samples(count))]


def test_a_record_is_the_sample_with_its_seq_first():
    sample = {"at": 1.5, "cpu": {"usedPct": 3.0}}
    record = encode_sample(7, sample)
    assert record == b'{"seq":7,"at":1.5,"cpu":{"usedPct":3.0}}'
    assert decode_sample(record) == {"seq": 7, **sample}


@pytest.mark.parametrize(
    ("seq", "sample"),
    [
        (0, {"at": 1.0}),
        (1, {"cpu": {}}),
        (1, {"at": 1.0, "x": float("nan")}),
        (1, {"at": 1.0, "x": object()}),
    ],
)
def test_a_record_needs_a_seq_a_time_and_finite_json(seq: int, sample: dict[str, Any]):
    with pytest.raises(InvalidInputError):
        encode_sample(seq, sample)


@pytest.mark.parametrize(
    "record",
    [
        b"",
        b"[1]",
        b'{"at": 1.0}',
        b'{"seq": 0, "at": 1.0}',
        b'{"seq": true, "at": 1}',
        b'{"seq": 1, "at": "now"}',
    ],
)
def test_what_is_not_a_record_is_refused(record: bytes):
    with pytest.raises(InvalidInputError):
        decode_sample(record)


@given(st.binary(max_size=200))
def test_garbage_is_never_a_record(data: bytes):
    try:
        sample = decode_sample(data)
    except InvalidInputError:
        return
    assert sample["seq"] >= 1


def test_a_live_message_is_valid_and_carries_its_counters():
    packer = Packer(thing="pump-7", max_bytes=65536, max_samples=100)
    status = Status(day="2026-11-25", sent_bytes=4812, dropped=3, backfilled=0, expired=2)
    message = packer.pack(records(2)[1:], status, backfill=False, sent_at=1_800_000_020.5)
    document = json.loads(message.payload)
    telemetry_validator().validate(document)
    assert document["schema"] == "telemetry/1"
    assert document["thing"] == "pump-7"
    assert document["counters"] == {"day": "2026-11-25", "sentB": 4812, "dropped": 3, "expired": 2}
    assert "backfill" not in document
    assert "degraded" not in document
    assert "spool" not in document
    assert [s["seq"] for s in document["samples"]] == [2]


def test_a_backfill_message_says_so_with_the_spool_and_the_degradation():
    packer = Packer(thing="pump-7", max_bytes=65536, max_samples=100)
    status = Status(
        day="2026-11-25",
        backlog=8000,
        memory=3,
        store_unavailable=True,
        degraded=Degraded(level="groups", interval_s=600.0, omitted=("processes", "network")),
    )
    document = json.loads(packer.pack(records(5), status, backfill=True, sent_at=1.0).payload)
    telemetry_validator().validate(document)
    assert document["backfill"] is True
    assert document["spool"] == {"backlog": 8000, "memory": 3, "storeUnavailable": True}
    assert document["degraded"] == {
        "reason": "budget", "level": "groups", "intervalS": 600, "omitted": ["processes", "network"],
    }  # fmt: skip
    assert [s["seq"] for s in document["samples"]] == [1, 2, 3, 4, 5]


def test_messages_of_real_samples_from_this_machine_are_valid():
    sampler = Sampler(
        SamplerSettings(processes=(ProcessMatcher(name="me", cmdline_contains="pytest"),)),
        source=PsutilSource(),
    )
    recs = [encode_sample(i + 1, sampler.sample()) for i in range(3)]
    packer = Packer(thing="virtual-1", max_bytes=65536, max_samples=100)
    telemetry_validator().validate(json.loads(packer.pack(recs, STATUS, backfill=True, sent_at=1.0).payload))
    local_validator().validate(local_message("virtual-1", recs[-1]))


def test_the_local_message_is_valid():
    record = records(2)[1]
    message = local_message("pump-7", record)
    local_validator().validate(message)
    assert message["sample"]["seq"] == 2


@settings(max_examples=60, deadline=None)
@given(
    max_bytes=st.integers(min_value=2048, max_value=IOT_CORE_MAX_BYTES),
    max_samples=st.integers(min_value=1, max_value=300),
    sizes=st.lists(st.integers(min_value=0, max_value=3000), min_size=1, max_size=120),
    thing=st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789:_-", min_size=1, max_size=128),
)
def test_a_message_never_exceeds_its_limit_and_carries_as_many_as_fit(
    max_bytes: int, max_samples: int, sizes: list[int], thing: str
):
    recs = [encode_sample(i + 1, {"at": 1.0, "pad": "x" * size}) for i, size in enumerate(sizes)]
    packer = Packer(thing=thing, max_bytes=max_bytes, max_samples=max_samples)
    message = packer.pack(recs, STATUS, backfill=True, sent_at=1_800_000_000.123)
    assert len(message.payload) <= max_bytes
    document = json.loads(message.payload)
    assert len(document["samples"]) == message.count <= max_samples
    if not message.shrunk:
        assert document["samples"] == [json.loads(r) for r in recs[: message.count]]
        # One more would not have fitted (or the sample limit was reached, or there were no more).
        if message.count < min(len(recs), max_samples):
            bigger = packer.envelope(STATUS, backfill=True, sent_at=1_800_000_000.123)
            needed = sum(len(p) for p in bigger) + sum(len(r) + 1 for r in recs[: message.count + 1]) - 1
            assert needed > max_bytes


def test_an_oversize_sample_goes_out_without_its_largest_groups():
    sample = {"at": 1.0, "cpu": {"usedPct": 1.0}, "processes": {f"p{i}": {"rssB": 10**9} for i in range(400)}}
    record = encode_sample(9, sample)
    assert len(record) > 4096
    packer = Packer(thing="t", max_bytes=4096, max_samples=10)
    message = packer.pack([record, encode_sample(10, {"at": 2.0})], STATUS, backfill=True, sent_at=1.0)
    assert message.shrunk
    assert message.count == 1
    assert len(message.payload) <= 4096
    document = json.loads(message.payload)
    telemetry_validator().validate(document)
    assert document["samples"] == [{"seq": 9, "at": 1.0, "cpu": {"usedPct": 1.0}, "truncated": ["processes"]}]


def test_a_sample_too_big_in_every_group_shrinks_to_a_marker():
    sample = {"at": 1.0, **{f"g{i}": "x" * 3000 for i in range(5)}}
    shrunk = json.loads(shrink(encode_sample(3, sample), 200))
    assert shrunk == {"seq": 3, "at": 1.0, "truncated": ["g0", "g1", "g2", "g3", "g4"]}


def test_group_sizes_add_up_to_the_encoded_sample():
    sample = fake_samples(2)[1]
    sizes = group_sizes(sample)
    encoded = json.dumps(sample, separators=(",", ":"), ensure_ascii=False).encode()
    assert sum(sizes.values()) + 1 == len(encoded)  # +1: the braces, minus the comma the first key lacks


def test_the_topic_names_the_thing():
    assert (
        telemetry_topic("dt/device-agent/{thing}/telemetry", "pump-7") == "dt/device-agent/pump-7/telemetry"
    )
    for bad in ("", "a/b", "a+", "a#", "x" * 129):
        with pytest.raises(InvalidInputError):
            telemetry_topic("dt/{thing}", bad)


@pytest.mark.parametrize(
    ("max_bytes", "max_samples", "thing"), [(1024, 1, "t"), (200_000, 1, "t"), (4096, 0, "t"), (4096, 1, "")]
)
def test_a_packer_refuses_impossible_limits(max_bytes: int, max_samples: int, thing: str):
    with pytest.raises(ValueError):
        Packer(thing=thing, max_bytes=max_bytes, max_samples=max_samples)


def test_an_empty_pack_is_a_programming_error():
    with pytest.raises(ValueError, match="nothing"):
        Packer(thing="t", max_bytes=4096, max_samples=1).pack([], STATUS, backfill=False, sent_at=0.0)
