"""Rows of the `records` table: parsed defensively (the file is untrusted input) and opened or sealed.

A row read back is checked for types and ranges before anything uses it; a bit flip that changes a column's
type or range is an `IntegrityError`, like a failed tag. Opening a row rebuilds its associated data from
what the caller asked for (namespace, kind, key) when it asked for something, not only from the row: a
damaged index that hands back the wrong row then fails authentication instead of answering with it.
"""

from __future__ import annotations

import dataclasses
import math

from device_agent.errors import IntegrityError
from device_agent.store import _crypto
from device_agent.store._keyring import Keyring

COLUMNS = "seq, namespace, kind, key, key_id, created, expires, sealed"
INSERT = f"INSERT INTO records({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"  # noqa: S608 - constant
_MAX_U64 = (1 << 64) - 1


@dataclasses.dataclass(frozen=True)
class Row:
    seq: int
    namespace: str
    kind: int
    key: str | None
    key_id: int
    created: float
    expires: float | None
    sealed: bytes = dataclasses.field(repr=False)

    @property
    def value_bytes(self) -> int:
        return max(0, len(self.sealed) - _crypto.OVERHEAD)

    def expired(self, now: float) -> bool:
        return self.expires is not None and self.expires <= now


def _time(value: object) -> float | None:
    if isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if isinstance(value, float) and math.isfinite(value):
        return value
    return None


def parse(raw: tuple[object, ...]) -> Row:
    """A row from `SELECT {COLUMNS}`, or `IntegrityError` if any column has the wrong type or range."""
    seq, namespace, kind, key, key_id, created, expires, sealed = raw
    created_time = _time(created)
    expires_time = None if expires is None else _time(expires)
    if (
        not isinstance(seq, int)
        or not 0 <= seq <= _MAX_U64
        or not isinstance(namespace, str)
        or not isinstance(kind, int)
        or kind not in (_crypto.KIND_VALUE, _crypto.KIND_QUEUE)
        or not (key is None or isinstance(key, str))
        or (kind == _crypto.KIND_VALUE) != (key is not None)
        or not isinstance(key_id, int)
        or not 0 <= key_id <= _MAX_U64
        or created_time is None
        or (expires is not None and expires_time is None)
        or not isinstance(sealed, bytes)
    ):
        raise IntegrityError("record row is malformed")
    return Row(seq, namespace, kind, key, key_id, created_time, expires_time, sealed)


def open_row(
    keyring: Keyring,
    store_id: bytes,
    row: Row,
    *,
    namespace: str | None = None,
    kind: int | None = None,
    key: str | None = None,
) -> bytes:
    """The plaintext of `row`, authenticated against the identity the caller expects, or `IntegrityError`."""
    expected_namespace = row.namespace if namespace is None else namespace
    expected_kind = row.kind if kind is None else kind
    expected_key = row.key if key is None else key
    try:
        aad = _crypto.record_aad(
            store_id,
            expected_namespace,
            kind=expected_kind,
            key=expected_key,
            seq=row.seq,
            key_id=row.key_id,
            created=row.created,
            expires=row.expires,
        )
    except (ValueError, OverflowError, UnicodeEncodeError) as error:
        raise IntegrityError("record row is malformed") from error
    aead = keyring.for_open(row.key_id, expected_namespace)
    return _crypto.open_sealed(aead, row.sealed, aad)


def seal_row(
    keyring: Keyring,
    store_id: bytes,
    *,
    seq: int,
    namespace: str,
    kind: int,
    key: str | None,
    created: float,
    expires: float | None,
    value: bytes,
) -> tuple[int, bytes]:
    """Seal `value` for a row under the namespace's active key; returns (key id, sealed)."""
    key_id, aead = keyring.for_seal(namespace, created)
    aad = _crypto.record_aad(
        store_id, namespace, kind=kind, key=key, seq=seq, key_id=key_id, created=created, expires=expires
    )
    return key_id, _crypto.seal(aead, value, aad)
