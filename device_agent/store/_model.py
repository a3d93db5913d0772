"""Value types of the store: namespace policies, statistics, events, and validation of names."""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Literal

from device_agent.errors import InvalidInputError

Overflow = Literal["reject", "drop_oldest"]
# Namespaces appear in pub/sub topics (device-agent/store/<namespace>/request): no '/', '+' or '#'.
_NAMESPACE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
MAX_KEY_BYTES = 512
DEFAULT_MAX_VALUE_BYTES = 1 << 20


@dataclasses.dataclass(frozen=True, kw_only=True)
class NamespacePolicy:
    """Data minimisation for one namespace. `None` means no limit; `ttl` is the default time-to-live (s).

    `max_bytes` counts value bytes; each record also costs 63 bytes of sealing and a row.
    """

    max_records: int | None = None
    max_bytes: int | None = None
    overflow: Overflow = "reject"
    ttl: float | None = None

    def __post_init__(self) -> None:
        for name in ("max_records", "max_bytes"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                raise InvalidInputError(f"NamespacePolicy.{name} must be a positive integer or None")
        if self.overflow not in ("reject", "drop_oldest"):
            raise InvalidInputError("NamespacePolicy.overflow must be 'reject' or 'drop_oldest'")
        if self.ttl is not None:
            check_ttl(self.ttl)


@dataclasses.dataclass(frozen=True)
class NamespaceStats:
    """Counters since the store was opened (like any metric counter they restart at zero)."""

    records: int = 0
    value_bytes: int = 0
    dropped_records: int = 0
    dropped_bytes: int = 0
    rejected: int = 0
    expired: int = 0
    integrity_failures: int = 0


@dataclasses.dataclass(frozen=True)
class StoreStats:
    namespaces: Mapping[str, NamespaceStats]
    integrity_failures: int
    recoveries: int
    active_key_ids: Mapping[str, int]


@dataclasses.dataclass(frozen=True)
class StoreEvent:
    """Something an operator should hear about. `name` is the stable event name the log line uses too.

    Names: `store.integrity_failed` (details: namespace, seq, operation), `store.corrupt_replaced`
    (details: moved_to, reason, salvaged, unreadable), `store.records_dropped` (namespace, records, bytes).
    """

    name: str
    details: Mapping[str, str | int | float]


EventHook = Callable[[StoreEvent], None]


# Namespaces already found valid (every call checks one; there are few). Bounded, so that a caller trying
# many names cannot grow it: past the bound, names are checked each time as before.
_VALID_NAMESPACES: set[str] = set()
_REMEMBERED_NAMESPACES = 1024


def check_namespace(namespace: object) -> str:
    if type(namespace) is str and namespace in _VALID_NAMESPACES:
        return namespace
    if not isinstance(namespace, str) or not _NAMESPACE.fullmatch(namespace):
        raise InvalidInputError("a namespace is 1-64 characters of A-Z a-z 0-9 . _ - (starting alphanumeric)")
    if type(namespace) is str and len(_VALID_NAMESPACES) < _REMEMBERED_NAMESPACES:
        _VALID_NAMESPACES.add(namespace)
    return namespace


DAMAGED_NAMESPACE = "<damaged>"


def printable_namespace(value: object) -> str:
    """`value` if it is a valid namespace, else a placeholder: a damaged row's name is never echoed."""
    try:
        return check_namespace(value)
    except InvalidInputError:
        return DAMAGED_NAMESPACE


def check_key(key: object) -> str:
    # ASCII text is its own UTF-8: no need to encode it to learn its size.
    if type(key) is str and key.isascii() and 0 < len(key) <= MAX_KEY_BYTES and "\x00" not in key:
        return key
    if not isinstance(key, str) or not key or "\x00" in key:
        raise InvalidInputError("a key is a non-empty string without NUL characters")
    try:
        size = len(key.encode("utf-8"))
    except UnicodeEncodeError:
        raise InvalidInputError("a key must be valid Unicode text") from None
    if size > MAX_KEY_BYTES:
        raise InvalidInputError(f"a key is at most {MAX_KEY_BYTES} bytes of UTF-8")
    return key


_BYTES_LIKE = (bytes, bytearray, memoryview)


def check_value(value: object, max_bytes: int) -> bytes:
    if type(value) is bytes:
        data = value
    elif isinstance(value, _BYTES_LIKE):
        data = bytes(value)
    else:
        raise InvalidInputError("a value is bytes")
    if len(data) > max_bytes:
        raise InvalidInputError(f"a value is at most {max_bytes} bytes")
    return data


def check_record(namespace: object, key: object, value: object, max_bytes: int) -> tuple[str, str, bytes]:
    """`check_namespace`, `check_key` and `check_value` in one call, the usual case inline (a single put
    runs it every time, often with cold caches, where each call costs)."""
    if not (type(namespace) is str and namespace in _VALID_NAMESPACES):
        namespace = check_namespace(namespace)
    if not (type(key) is str and key.isascii() and 0 < len(key) <= MAX_KEY_BYTES and "\x00" not in key):
        key = check_key(key)
    if not (type(value) is bytes and len(value) <= max_bytes):
        value = check_value(value, max_bytes)
    return namespace, key, value


def check_items(items: Iterable[tuple[object, object]], max_bytes: int) -> list[tuple[str, bytes]]:
    """`check_key` and `check_value` of every (key, value), the usual case (ASCII keys, bytes) inline: a
    batch checks every record, and two calls per record cost more than the check."""
    checked: list[tuple[str, bytes]] = []
    for key, value in items:
        if type(key) is str and key.isascii() and 0 < len(key) <= MAX_KEY_BYTES and "\x00" not in key:
            name = key
        else:
            name = check_key(key)
        data = value if type(value) is bytes and len(value) <= max_bytes else check_value(value, max_bytes)
        checked.append((name, data))
    return checked


def check_count(value: object, name: str, *, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InvalidInputError(f"{name} is an integer of at least {minimum}")
    return value


def check_ttl(ttl: object) -> float:
    if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not math.isfinite(ttl) or ttl <= 0:
        raise InvalidInputError("a time-to-live is a positive, finite number of seconds")
    return float(ttl)
