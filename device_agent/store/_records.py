"""Rows of the `records` table: parsed defensively (the file is untrusted input) and opened or sealed.

A row read back is checked for types and ranges before anything uses it; a bit flip that changes a column's
type or range is an `IntegrityError`, like a failed tag. A sealed record carries its own header (see
`_crypto`); a whole row is opened only when its columns agree with that header, so an edited column is an
`IntegrityError` too. Opening a record builds its associated data from what the caller asked for
(namespace, kind, key) when it asked for something, not only from the row: a damaged index that hands back
the wrong row then fails authentication instead of answering with it.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import struct
from collections.abc import Sequence
from itertools import chain
from typing import NamedTuple, TypeGuard

from cryptography.exceptions import InvalidTag

from device_agent.errors import IntegrityError
from device_agent.store import _crypto
from device_agent.store._db import Database
from device_agent.store._keyring import Keyring

# A record is a keyed value when it has a key, a queue entry when it has none (its kind in the associated
# data follows from that).
COLUMNS = "seq, namespace, key, key_id, created, expires, sealed"
INSERT = f"INSERT INTO records({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)"  # noqa: S608 - constant
_MAX_U64 = (1 << 64) - 1
# The smallest `seq` SQLite can hold: a pass over the records by `seq > ?` starts here, so a row whose number
# was damaged into a negative one is read (and found damaged) too.
REENCRYPT_START = -(1 << 63)
# Rows per INSERT statement (2 parameters each, and 5 shared: far under SQLite's oldest limit of 999).
# Batches go in power-of-two pieces so that only a few statement texts are ever prepared.
MAX_ROWS_PER_STATEMENT = 64
_MALFORMED = (struct.error, ValueError, OverflowError, TypeError, UnicodeEncodeError)
# `open_value`'s constants, as module globals (one lookup each, not two).
_unpack_header = _crypto.RECORD_HEADER.unpack_from
_RECORD_OVERHEAD = _crypto.RECORD_OVERHEAD
_RECORD_FORMAT = _crypto.RECORD_FORMAT
_KIND_VALUE = _crypto.KIND_VALUE
_HEADER_BYTES = _crypto.HEADER_BYTES
_NONCE_END = _crypto.HEADER_BYTES + _crypto.NONCE_BYTES


@dataclasses.dataclass(frozen=True)
class Row:
    seq: int
    namespace: str
    key: str | None
    key_id: int
    created: float
    expires: float | None
    sealed: bytes = dataclasses.field(repr=False)

    @property
    def kind(self) -> int:
        return _crypto.KIND_QUEUE if self.key is None else _crypto.KIND_VALUE

    @property
    def value_bytes(self) -> int:
        return max(0, len(self.sealed) - _crypto.RECORD_OVERHEAD)

    def expired(self, now: float) -> bool:
        return self.expires is not None and self.expires <= now


def _time(value: object) -> float | None:
    if type(value) is int:
        value = float(value)
    if type(value) is float and math.isfinite(value):
        return value
    return None


def _u64(value: object) -> TypeGuard[int]:
    return type(value) is int and 0 <= value <= _MAX_U64


def parse(raw: tuple[object, ...]) -> Row:
    """A row from `SELECT {COLUMNS}`, or `IntegrityError` if any column has the wrong type or range."""
    seq, namespace, key, key_id, created, expires, sealed = raw
    created_time = _time(created)
    expires_time = None if expires is None else _time(expires)
    if (
        not _u64(seq)
        or not isinstance(namespace, str)
        or not (key is None or isinstance(key, str))
        or not _u64(key_id)
        or created_time is None
        or (expires is not None and expires_time is None)
        or not isinstance(sealed, bytes)
    ):
        raise IntegrityError("record row is malformed")
    return Row(seq, namespace, key, key_id, created_time, expires_time, sealed)


def open_row(
    keyring: Keyring,
    row: Row,
    *,
    namespace: str | None = None,
    kind: int | None = None,
    key: str | None = None,
) -> bytes:
    """The plaintext of `row`, authenticated against the identity the caller expects, or `IntegrityError`."""
    header = _crypto.read_header(row.sealed)
    if header != (row.kind, row.seq, row.key_id, row.created, row.expires):
        raise IntegrityError("record row does not match its sealed header")
    expected_namespace = row.namespace if namespace is None else namespace
    if kind is not None and kind != header.kind:
        raise IntegrityError("record is of another kind")
    expected_key = row.key if key is None else key
    opener = keyring.for_open(row.key_id, expected_namespace)
    try:
        key_bytes = (expected_key or "").encode("utf-8")
    except _MALFORMED as error:
        raise IntegrityError("record row is malformed") from error
    return _crypto.open_record(opener.aead, opener.aad_prefix, key_bytes, row.sealed)


def open_value(keyring: Keyring, sealed: object, namespace: str, key: str) -> tuple[bytes, float | None]:
    """The plaintext and expiry of the keyed record `sealed` (its row's `sealed` column alone) of
    `namespace` and `key`, or `IntegrityError`: the read path of every get, so `_crypto.read_header` and
    `_crypto.open_record` are written out here, with the header unpacked once.

    The header's key id picks the key, and the rest of the header is authenticated with the value: the
    expiry returned is the one written.
    """
    if type(sealed) is not bytes or len(sealed) < _RECORD_OVERHEAD:
        raise IntegrityError("sealed value is malformed")
    record_format, kind, _, key_id, _, has_expiry, expires = _unpack_header(sealed)
    if record_format != _RECORD_FORMAT or kind != _KIND_VALUE or has_expiry > 1:
        raise _crypto.header_error(record_format)
    opener = keyring.openers.get(key_id)
    if opener is None or opener.namespace != namespace:
        opener = keyring.for_open(key_id, namespace)
    try:
        value = opener.aead.decrypt(
            sealed[_HEADER_BYTES:_NONCE_END],
            sealed[_NONCE_END:],
            opener.aad_prefix + sealed[:_HEADER_BYTES] + key.encode(),
        )
    except InvalidTag:
        raise IntegrityError("sealed value failed authentication") from None
    return value, (expires if has_expiry else None)


def open_legacy_row(keyring: Keyring, row: Row) -> bytes:
    """The plaintext of a record-format-1 row (store format 2: salvage only), or `IntegrityError`."""
    opener = keyring.for_open(row.key_id, row.namespace)
    try:
        aad = _crypto.legacy_record_aad(
            keyring.store_id, row.namespace, row.kind, row.key, row.seq, row.key_id, row.created, row.expires
        )
    except _MALFORMED as error:
        raise IntegrityError("record row is malformed") from error
    return _crypto.open_legacy(opener.aead, row.sealed, aad)


def seal_row(
    keyring: Keyring,
    *,
    seq: int,
    namespace: str,
    key: str | None,
    created: float,
    expires: float | None,
    value: bytes,
) -> tuple[int, bytearray]:
    """Seal `value` for a row under the namespace's active key; returns (key id, sealed)."""
    key_id, opener = keyring.for_seal(namespace, created)
    try:
        sealed = _crypto.seal_record(
            opener.aead, opener.aad_prefix, key_id, seq, key, value, created, expires
        )
    except _MALFORMED as error:
        raise IntegrityError("record row is malformed") from error
    return key_id, sealed


class SealedRun(NamedTuple):
    """Records of one namespace sealed under one data key, numbered from `first_seq`: ready to INSERT.

    A named tuple rather than a frozen dataclass: one is made for every write, and a frozen dataclass
    costs about two microseconds to build (it sets each field through `object.__setattr__`).
    """

    namespace: str
    key_id: int
    first_seq: int
    created: float
    expires: float | None
    keys: list[str | None]
    sealed: list[bytearray]

    def rows(self) -> list[tuple[object, ...]]:
        """The rows in `COLUMNS` order (for `INSERT`, one by one)."""
        return [
            (self.first_seq + offset, self.namespace, key, self.key_id, self.created, self.expires, sealed)
            for offset, (key, sealed) in enumerate(zip(self.keys, self.sealed, strict=True))
        ]


def seal_rows(  # noqa: PLR0917 - one call per write; all of it is the rows' identity
    keyring: Keyring,
    namespace: str,
    kind: int,
    first_seq: int,
    entries: Sequence[tuple[str | None, bytes]],
    created: float,
    expires: float | None,
) -> list[SealedRun]:
    """`(key, value)` entries of one namespace, numbered from `first_seq` and sealed, in runs that share a
    data key (a new key is made when one reaches its seal limit)."""
    runs = []
    done = 0
    while done < len(entries):
        key_id, opener, granted = keyring.for_seals(namespace, created, len(entries) - done)
        part = entries[done : done + granted]
        seq = first_seq + done
        sealed = _crypto.seal_records(
            opener.aead, opener.aad_prefix, kind, key_id, seq, created, expires, part
        )
        runs.append(SealedRun(namespace, key_id, seq, created, expires, [key for key, _ in part], sealed))
        done += granted
    return runs


def insert(db: Database, runs: Sequence[SealedRun], *, keep_existing: bool = False) -> int:
    """INSERT sealed runs with as few statements as SQLite's parameter limit allows; returns how many rows
    went in. With `keep_existing`, a row whose (namespace, key) is taken is skipped, not an error.

    What a run's rows share (namespace, key id, times, the first sequence number) is bound once per
    statement; each row binds only its key and sealed value. Python 3.11's sqlite3 also tries its adapter
    protocol (raising and clearing an exception inside) for every parameter that is not an int, float, str
    or bytearray: so NULL is in the SQL text rather than a parameter, and sealed values are bytearrays.
    """
    inserted = 0
    for run in runs:
        with_expiry = run.expires is not None
        if len(run.keys) == 1:  # one row: its parameters in column order are cheaper to bind
            row: list[object] = [run.first_seq, run.namespace, run.keys[0], run.key_id, run.created]
            if with_expiry:
                row.append(run.expires)
            row.append(run.sealed[0])
            inserted += db.write(_insert_one_sql(with_expiry=with_expiry, keep_existing=keep_existing), row)
            continue
        shared: list[object] = [run.first_seq, run.namespace, run.key_id, run.created]
        if with_expiry:
            shared.append(run.expires)
        rows, start = len(run.keys), 0
        while start < rows:
            count = piece(rows - start)
            end = start + count
            shared[0] = run.first_seq + start
            params = shared + list(
                chain.from_iterable(zip(run.keys[start:end], run.sealed[start:end], strict=True))
            )
            inserted += db.write(
                _insert_sql(count, with_expiry=with_expiry, keep_existing=keep_existing), params
            )
            start = end
    return inserted


def piece(remaining: int) -> int:
    """The largest power of two that is at most `remaining` and `MAX_ROWS_PER_STATEMENT`."""
    if remaining >= MAX_ROWS_PER_STATEMENT:
        return MAX_ROWS_PER_STATEMENT
    return 1 << (remaining.bit_length() - 1)


@functools.cache
def _insert_one_sql(*, with_expiry: bool, keep_existing: bool) -> str:
    values = "(?, ?, ?, ?, ?, ?, ?)" if with_expiry else "(?, ?, ?, ?, ?, NULL, ?)"
    conflict = " ON CONFLICT(namespace, key) DO NOTHING" if keep_existing else ""
    return f"INSERT INTO records({COLUMNS}) VALUES {values}{conflict}"  # noqa: S608 - constant


@functools.cache
def _insert_sql(rows: int, *, with_expiry: bool, keep_existing: bool) -> str:
    # ?1 the first row's seq, ?2 namespace, ?3 key id, ?4 created, [?5 expires]; then each row's key and
    # sealed value.
    expires, first = ("?5", 6) if with_expiry else ("NULL", 5)
    values = ", ".join(
        f"(?1 + {row}, ?2, ?{first + 2 * row}, ?3, ?4, {expires}, ?{first + 2 * row + 1})"
        for row in range(rows)
    )
    conflict = " ON CONFLICT(namespace, key) DO NOTHING" if keep_existing else ""
    return f"INSERT INTO records({COLUMNS}) VALUES {values}{conflict}"  # noqa: S608 - numbers only


def _alone_sql(*, keyed: bool, with_expiry: bool) -> str:
    key = "?" if keyed else "NULL"
    expires = "?" if with_expiry else "NULL"
    conflict = " ON CONFLICT(namespace, key) DO NOTHING" if keyed else ""
    return f"INSERT INTO records({COLUMNS}) VALUES (?, ?, {key}, ?, ?, {expires}, ?){conflict}"  # noqa: S608


# One record written alone (the engine's shortest path), by (keyed, with expiry): the parameters are the
# row's columns in `COLUMNS` order without the NULL ones. A keyed row whose key is taken is skipped.
ALONE = {
    (keyed, with_expiry): _alone_sql(keyed=keyed, with_expiry=with_expiry)
    for keyed in (False, True)
    for with_expiry in (False, True)
}


@functools.cache
def placeholders(count: int) -> str:
    """`?, ?, …` for an IN list of `count` values."""
    return ", ".join("?" * count)
