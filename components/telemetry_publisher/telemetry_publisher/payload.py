"""The telemetry message format (schema `telemetry/1`, docs/schemas/telemetry.schema.json).

    {"schema":"telemetry/1","thing":"pump-7","sentAt":1795528090.512,
     "counters":{"day":"2026-11-25","sentB":48213,"dropped":3,"backfilled":120,
                 "droppedTotal":1450,"backfilledTotal":20730},
     "backfill":true,
     "degraded":{"reason":"budget","level":"interval","intervalS":60,"omitted":[]},
     "spool":{"backlog":8000,"memory":0,"storeUnavailable":false},
     "samples":[{"seq":1201,"at":1795528080.004,"dtS":10.0,"cpu":{...},...}, ...]}

- `samples` holds one sample when live, and as many as fit when draining a backlog (`backfill`: true),
  oldest first. Each sample carries its per-device `seq` (a redelivered sample carries the same one) and
  the wall-clock time it was taken, `at`; units are in key names (`device_agent.metrics.groups`).
- `counters` are for the current UTC `day`: payload bytes sent before this message (`sentB`), and samples
  dropped (over the spool cap, or unreadable), expired (too old to send) and backfilled (delivered from the
  spool). A counter that is zero is left out.
- `degraded` is there only while the byte budget lowers the resolution; `spool` only while there is a
  backlog or the store is unavailable (samples then wait in a bounded memory buffer).

Size. A message never exceeds `max_bytes` (well under IoT Core's 128 KiB): samples are stored as their exact
JSON bytes and the message is assembled from them, so its size is known exactly before it is built. A
single sample too big for a message on its own is shrunk: whole groups are left out, largest first, and
named in the sample's `truncated` list, down to `seq`, `at` and `truncated` alone. So every sample is
delivered, at worst as a marker that it existed.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any, Final

from device_agent.errors import InvalidInputError

SCHEMA: Final = "telemetry/1"
LOCAL_SCHEMA: Final = "metrics-sample/1"
IOT_CORE_MAX_BYTES: Final = 128 * 1024
MIN_MESSAGE_BYTES: Final = 2048  # room for the largest envelope and a shrunk sample
MAX_THING_CHARS: Final = 128
_RESERVED_KEYS: Final = ("seq", "at", "truncated")


def _dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def encode_sample(seq: int, sample: Mapping[str, Any]) -> bytes:
    """A sample's record: its exact JSON bytes, `seq` first. What the spool stores and messages carry."""
    if seq < 1:
        raise InvalidInputError("a sample's seq starts at 1")
    if not isinstance(sample.get("at"), int | float):
        raise InvalidInputError("a sample needs its time, `at`")
    try:
        return _dumps({"seq": seq, **{k: v for k, v in sample.items() if k != "seq"}})
    except (TypeError, ValueError) as error:
        raise InvalidInputError("a sample must be JSON with finite numbers") from error


def decode_sample(record: bytes) -> dict[str, Any]:
    """The sample in a record; `InvalidInputError` if the record is not one (never anything else)."""
    try:
        sample = json.loads(record)
    except (ValueError, RecursionError) as error:
        raise InvalidInputError("a record is not JSON") from error
    if not isinstance(sample, dict):
        raise InvalidInputError("a record is not a JSON object")
    seq, at = sample.get("seq"), sample.get("at")
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 1:
        raise InvalidInputError("a record has no valid seq")
    if not isinstance(at, int | float) or isinstance(at, bool) or not math.isfinite(at):
        raise InvalidInputError("a record has no valid time")
    return sample


def group_sizes(sample: Mapping[str, Any]) -> dict[str, int]:
    """Encoded bytes per top-level key of a sample (with its key and separator): what each group costs."""
    return {key: len(_dumps({key: value})) - 1 for key, value in sample.items()}


def local_message(thing: str, record: bytes) -> dict[str, Any]:
    """The `device-agent/metrics` message (docs/schemas/metrics-sample.schema.json) for a sample record."""
    return {"schema": LOCAL_SCHEMA, "thing": thing, "sample": decode_sample(record)}


def telemetry_topic(template: str, thing: str) -> str:
    """The topic for this device: `{thing}` in `template` replaced by the thing name."""
    if not thing or len(thing) > MAX_THING_CHARS or any(c in thing for c in "/+#"):
        raise InvalidInputError("the thing name is not usable in a topic")
    return template.replace("{thing}", thing)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Degraded:
    """The budget lowered the resolution: to `interval_s`, or also without the `omitted` groups."""

    level: str  # "interval" | "groups" | "floor"
    interval_s: float
    omitted: tuple[str, ...] = ()

    def document(self) -> dict[str, Any]:
        interval = int(self.interval_s) if float(self.interval_s).is_integer() else self.interval_s
        return {"reason": "budget", "level": self.level, "intervalS": interval, "omitted": list(self.omitted)}


@dataclasses.dataclass(frozen=True, kw_only=True)
class Status:
    """What a message says about the publisher besides its samples."""

    day: str
    sent_bytes: int = 0
    dropped: int = 0
    expired: int = 0
    backfilled: int = 0
    dropped_total: int = 0
    expired_total: int = 0
    backfilled_total: int = 0
    backlog: int = 0
    memory: int = 0
    store_unavailable: bool = False
    degraded: Degraded | None = None


@dataclasses.dataclass(frozen=True)
class Message:
    payload: bytes = dataclasses.field(repr=False)
    count: int  # how many of the leading records it carries
    shrunk: bool = False  # its single sample was too big and went out without some groups


class Packer:
    """Builds messages of at most `max_bytes` and at most `max_samples` samples each."""

    def __init__(self, *, thing: str, max_bytes: int, max_samples: int) -> None:
        if not MIN_MESSAGE_BYTES <= max_bytes <= IOT_CORE_MAX_BYTES:
            raise ValueError(f"max_bytes must be between {MIN_MESSAGE_BYTES} and {IOT_CORE_MAX_BYTES}")
        if max_samples < 1:
            raise ValueError("max_samples must be at least 1")
        if not thing or len(thing) > MAX_THING_CHARS:
            raise ValueError("thing must be 1 to 128 characters")
        self.thing = thing
        self.max_bytes = max_bytes
        self.max_samples = max_samples

    def envelope(self, status: Status, *, backfill: bool, sent_at: float) -> tuple[bytes, bytes]:
        """The bytes before the first sample and after the last."""
        counters: dict[str, Any] = {"day": status.day, "sentB": status.sent_bytes}
        for key in ("dropped", "expired", "backfilled"):
            if value := getattr(status, key):
                counters[key] = value
        for key in ("dropped", "expired", "backfilled"):
            if value := getattr(status, f"{key}_total"):
                counters[f"{key}Total"] = value
        header: dict[str, Any] = {
            "schema": SCHEMA,
            "thing": self.thing,
            "sentAt": round(sent_at, 3),
            "counters": counters,
        }
        if backfill:
            header["backfill"] = True
        if status.degraded is not None:
            header["degraded"] = status.degraded.document()
        if status.backlog or status.memory or status.store_unavailable:
            header["spool"] = {
                "backlog": status.backlog,
                "memory": status.memory,
                "storeUnavailable": status.store_unavailable,
            }
        return _dumps(header)[:-1] + b',"samples":[', b"]}"

    def fit(self, records: Sequence[bytes], status: Status, *, backfill: bool, sent_at: float = 0.0) -> int:
        """How many leading records one message can carry (0 if even the first is too big on its own)."""
        prefix, suffix = self.envelope(status, backfill=backfill, sent_at=sent_at)
        size = len(prefix) + len(suffix) - 1  # minus the comma the first sample does not need
        count = 0
        for record in records[: self.max_samples]:
            size += len(record) + 1
            if size > self.max_bytes:
                break
            count += 1
        return count

    def pack(self, records: Sequence[bytes], status: Status, *, backfill: bool, sent_at: float) -> Message:
        """One message with as many leading records as fit; at least one (shrunk if it must be)."""
        if not records:
            raise ValueError("nothing to pack")
        prefix, suffix = self.envelope(status, backfill=backfill, sent_at=sent_at)
        count = self.fit(records, status, backfill=backfill, sent_at=sent_at)
        shrunk = False
        if count:
            body = b",".join(records[:count])
        else:
            body, shrunk, count = shrink(records[0], self.max_bytes - len(prefix) - len(suffix)), True, 1
        payload = prefix + body + suffix
        if len(payload) > self.max_bytes:  # pragma: no cover  (fit() and shrink() make this impossible)
            raise AssertionError("a message exceeded max_bytes")
        return Message(payload, count, shrunk)


def shrink(record: bytes, limit: int) -> bytes:
    """The record without its largest groups (named in `truncated`) until it is at most `limit` bytes."""
    sample = decode_sample(record)
    truncated: list[str] = list(sample.get("truncated") or [])
    sizes = group_sizes({k: v for k, v in sample.items() if k not in _RESERVED_KEYS})
    for key in sorted(sizes, key=lambda k: (-sizes[k], k)):
        del sample[key]
        truncated.append(key)
        sample["truncated"] = truncated
        smaller = _dumps(sample)
        if len(smaller) <= limit:
            return smaller
    minimal = _dumps({"seq": sample["seq"], "at": sample["at"], "truncated": truncated[:16]})
    if len(minimal) > limit:
        raise InvalidInputError("no room for even a marker of the sample")
    return minimal
