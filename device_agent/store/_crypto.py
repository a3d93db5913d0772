"""Record sealing: AES-256-GCM with a fresh random nonce and associated data that binds the whole record.

Sealed record (the `records.sealed` column), record format 2 (store format 3):

    header: u8 format (=2) | u8 kind | u64 seq | u64 key id | f64 created | u8 has-expiry | f64 expires
    | nonce (12 random bytes) | AES-256-GCM ciphertext | tag (16)                     → value + 63 bytes

Associated data of a record (never stored):

    b"device-agent/store/record" | u8 format | store id (16) | u32 len | namespace (UTF-8)
    | the record's 35-byte header | key (UTF-8; empty for queue entries; its length is the rest)

where kind is 0 for a keyed value and 1 for a queue entry. The prefix depends only on the namespace, so the
engine keeps it with the namespace's unwrapped key (`record_aad_prefix`). The namespace and key come from
what the caller asked for, the header from the record itself: a ciphertext copied onto another row,
namespace, store or key, or a header whose numbers or times were edited, fails to open. The header makes a
record self-describing: a get reads the `sealed` column alone (each column costs about as much as a
kilobyte of AES-GCM through Python's sqlite3), and the row's `seq`, `key_id`, `created` and `expires`
columns are an index over the headers, which every whole-row read checks against the header.

Record format 1 (store format 2) had a 1-byte header and rebuilt the rest of its associated data from the
row's columns; it is read only by salvage (`open_legacy`), which migrates such a store.

A wrapped data key is `u8 format (=1) | nonce | AES-256-GCM(KEK, data key)` with associated data binding
store id, namespace and key id; the KEK check value seals an empty message bound to the store id.

The nonce is made here from `os.urandom` and nowhere else: no caller can pass one (NIST SP 800-38D caps a
random-nonce key at 2^32 seals; the engine rotates long before, see `DEFAULT_SEAL_LIMIT`, and counts seals
so that a crash can only over-count them, see `_keyring`).
"""

from __future__ import annotations

import os
import struct
from collections.abc import Sequence
from typing import NamedTuple

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from device_agent.errors import IntegrityError

RECORD_FORMAT = 2
LEGACY_RECORD_FORMAT = 1  # store format 2: read by salvage only
WRAP_FORMAT = 1  # wrapped data keys and the KEK check value
NONCE_BYTES = 12
TAG_BYTES = 16
KEY_BYTES = 32
STORE_ID_BYTES = 16
# format, kind, seq, key id, created, has-expiry, expires
RECORD_HEADER = struct.Struct(">BBQQdBd")
HEADER_BYTES = RECORD_HEADER.size
RECORD_OVERHEAD = HEADER_BYTES + NONCE_BYTES + TAG_BYTES
SEALED_OVERHEAD = 1 + NONCE_BYTES + TAG_BYTES  # `seal`: a format byte, the nonce and the tag
WRAPPED_KEY_BYTES = SEALED_OVERHEAD + KEY_BYTES
# Rotate a data key well before the 2^32 random-nonce limit.
DEFAULT_SEAL_LIMIT = 1 << 30

KIND_VALUE = 0
KIND_QUEUE = 1

_RECORD = b"device-agent/store/record"
_DATA_KEY = b"device-agent/store/data-key"
_KEK_CHECK = b"device-agent/store/kek-check"
_BYTE = struct.Struct(">B")
_WRAP_FORMAT_BYTE = _BYTE.pack(WRAP_FORMAT)
_NONCE_END = 1 + NONCE_BYTES
_RECORD_NONCE_END = HEADER_BYTES + NONCE_BYTES
_U32 = struct.Struct(">I")
_LEGACY_TAIL = struct.Struct(">QQdBd")
_LEGACY_KIND_KEY = struct.Struct(">BI")  # u8 kind | u32 length of the key
# `bytearray().join` without making the empty bytearray on every call (join never changes its separator).
_join_into_bytearray = bytearray().join


class Header(NamedTuple):
    """A sealed record's header: only an opened record's header is authentic."""

    kind: int
    seq: int
    key_id: int
    created: float
    expires: float | None


def _text(value: str) -> bytes:
    data = value.encode("utf-8")
    return _U32.pack(len(data)) + data


def record_aad_prefix(store_id: bytes, namespace: str, record_format: int = RECORD_FORMAT) -> bytes:
    """The start of every record's associated data in `namespace` (made once per data key, not per row)."""
    return b"".join((_RECORD, _BYTE.pack(record_format), store_id, _text(namespace)))


def read_header(sealed: object) -> Header:
    """The header of a sealed record, unauthenticated, or `IntegrityError` if it cannot be one."""
    if type(sealed) is not bytes or len(sealed) < RECORD_OVERHEAD:
        raise IntegrityError("sealed value is malformed")
    record_format, kind, seq, key_id, created, has_expiry, expires = RECORD_HEADER.unpack_from(sealed)
    if record_format != RECORD_FORMAT or kind not in {KIND_VALUE, KIND_QUEUE} or has_expiry not in {0, 1}:
        raise header_error(record_format)
    return Header(kind, seq, key_id, created, expires if has_expiry else None)


def header_error(record_format: int) -> IntegrityError:
    """The error for a header `read_header` refuses."""
    if record_format != RECORD_FORMAT:
        return IntegrityError(f"sealed value has unknown format {record_format}")
    return IntegrityError("sealed value is malformed")


def open_record(aead: AESGCM, aad_prefix: bytes, key: bytes, sealed: bytes) -> bytes:
    """The plaintext of a sealed record of the namespace of `aad_prefix` under `key` (UTF-8; empty for a
    queue entry), or `IntegrityError`. The caller has checked the header (`read_header`)."""
    return _decrypt(
        aead,
        sealed[HEADER_BYTES:_RECORD_NONCE_END],
        sealed[_RECORD_NONCE_END:],
        aad_prefix + sealed[:HEADER_BYTES] + key,
    )


def _decrypt(aead: AESGCM, nonce: bytes, data: bytes, aad: bytes) -> bytes:
    """AES-GCM open, or `IntegrityError` (the message holds no bytes of the input)."""
    try:
        return aead.decrypt(nonce, data, aad)
    except InvalidTag:
        # `from None`: InvalidTag carries nothing useful, and nothing of the input may travel on.
        raise IntegrityError("sealed value failed authentication") from None


def data_key_aad(store_id: bytes, namespace: str, key_id: int) -> bytes:
    return b"".join((_DATA_KEY, _WRAP_FORMAT_BYTE, store_id, _text(namespace), struct.pack(">Q", key_id)))


def kek_check_aad(store_id: bytes) -> bytes:
    return _KEK_CHECK + _WRAP_FORMAT_BYTE + store_id


def seal(aead: AESGCM, plaintext: bytes, aad: bytes) -> bytes:
    """Encrypt a data key or the KEK check under a fresh random nonce: `u8 format | nonce | ciphertext`."""
    nonce = os.urandom(NONCE_BYTES)
    return _WRAP_FORMAT_BYTE + nonce + aead.encrypt(nonce, plaintext, aad)


def open_sealed(aead: AESGCM, sealed: bytes, aad: bytes) -> bytes:
    """Open what `seal` made, or raise `IntegrityError` (the message holds no bytes of the input)."""
    if len(sealed) < SEALED_OVERHEAD:
        raise IntegrityError("sealed value is malformed")
    if sealed[0] != WRAP_FORMAT:
        raise IntegrityError(f"sealed value has unknown format {sealed[0]}")
    return _decrypt(aead, sealed[1:_NONCE_END], sealed[_NONCE_END:], aad)


def seal_records(  # noqa: PLR0917 - one call per run of records sealed under one key
    aead: AESGCM,
    aad_prefix: bytes,
    kind: int,
    key_id: int,
    first_seq: int,
    created: float,
    expires: float | None,
    entries: Sequence[tuple[str | None, bytes]],
) -> list[bytearray]:
    """Seal each `(key, value)` of one namespace, numbered from `first_seq`: a header, a fresh nonce, the
    ciphertext and tag, with the associated data described above (built in this loop: it runs for every
    record written).

    The nonces come from one `os.urandom` call: each is still 12 fresh random bytes from the operating
    system, used once; only the system call is shared. Nothing is kept between calls, so a fork cannot hand
    the same bytes to two processes. The results are bytearrays, which sqlite3 binds without trying its
    adapters first.
    """
    pool = os.urandom(NONCE_BYTES * len(entries))
    has_expiry, expiry = (0, 0.0) if expires is None else (1, expires)
    pack_header, encrypt, join = RECORD_HEADER.pack, aead.encrypt, _join_into_bytearray
    sealed = []
    seq, end = first_seq, 0
    for key, value in entries:
        header = pack_header(RECORD_FORMAT, kind, seq, key_id, created, has_expiry, expiry)
        aad = aad_prefix + header if key is None else b"".join((aad_prefix, header, key.encode("utf-8")))
        start, end = end, end + NONCE_BYTES
        nonce = pool[start:end]
        sealed.append(join((header, nonce, encrypt(nonce, value, aad))))
        seq += 1
    return sealed


def seal_record(  # noqa: PLR0917 - one record's identity
    aead: AESGCM,
    aad_prefix: bytes,
    key_id: int,
    seq: int,
    key: str | None,
    value: bytes,
    created: float,
    expires: float | None,
) -> bytearray:
    """`seal_records` for one record (a keyed value, or a queue entry when `key` is None): a single put or
    append runs it every time."""
    kind = KIND_QUEUE if key is None else KIND_VALUE
    if expires is None:
        header = RECORD_HEADER.pack(RECORD_FORMAT, kind, seq, key_id, created, 0, 0.0)
    else:
        header = RECORD_HEADER.pack(RECORD_FORMAT, kind, seq, key_id, created, 1, expires)
    aad = aad_prefix + header if key is None else b"".join((aad_prefix, header, key.encode()))
    nonce = os.urandom(NONCE_BYTES)
    return _join_into_bytearray((header, nonce, aead.encrypt(nonce, value, aad)))


# --- record format 1 (store format 2), for salvage -----------------------------------------------------


def legacy_record_aad(  # noqa: PLR0917 - one record's identity, as its row holds it
    store_id: bytes,
    namespace: str,
    kind: int,
    key: str | None,
    seq: int,
    key_id: int,
    created: float,
    expires: float | None,
) -> bytes:
    """The associated data of a format-1 record: the prefix, kind, key and the row's other columns.

    Raises `struct.error` when a number is out of range (a damaged row).
    """
    key_bytes = (key or "").encode("utf-8")
    prefix = record_aad_prefix(store_id, namespace, LEGACY_RECORD_FORMAT)
    tail = _LEGACY_TAIL.pack(
        seq, key_id, created, 0 if expires is None else 1, 0.0 if expires is None else expires
    )
    return b"".join((prefix, _LEGACY_KIND_KEY.pack(kind, len(key_bytes)), key_bytes, tail))


def open_legacy(aead: AESGCM, sealed: bytes, aad: bytes) -> bytes:
    """Open a format-1 record (`u8 format | nonce | ciphertext`), or raise `IntegrityError`."""
    if len(sealed) < SEALED_OVERHEAD or sealed[0] != LEGACY_RECORD_FORMAT:
        raise IntegrityError("sealed value is malformed")
    return _decrypt(aead, sealed[1:_NONCE_END], sealed[_NONCE_END:], aad)
