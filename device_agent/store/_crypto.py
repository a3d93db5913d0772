"""Record sealing: AES-256-GCM with a fresh random nonce and associated data that binds every column.

Sealed value (the `records.sealed` column), format 1 (the same in store formats 1 and 2):

    u8 format (=1) | nonce (12 random bytes) | AES-256-GCM ciphertext | tag (16)      → value + 29 bytes

Associated data of a record (never stored; rebuilt from the row on every read):

    b"device-agent/store/record" | u8 format | store id (16) | u32 len | namespace (UTF-8) | u8 kind
    | u32 len | key (UTF-8; empty for queue entries) | u64 seq | u64 key id | f64 created
    | u8 has-expiry | f64 expires

where kind is 0 for a keyed value and 1 for a queue entry (a row's kind is whether it has a key). All but
the last 33 bytes depend only on the namespace and kind, so the engine keeps the namespace's prefix with its
unwrapped key (`record_aad_prefix`).

so a ciphertext copied onto another row, namespace, store or key id, or a row whose times were edited, fails
to open. A wrapped data key is `u8 format | nonce | AES-256-GCM(KEK, data key)` with associated data
binding store id, namespace and key id; the KEK check value seals an empty message bound to the store id.

The nonce is made here from `os.urandom` and nowhere else: no caller can pass one (NIST SP 800-38D caps a
random-nonce key at 2^32 seals; the engine rotates long before, see `DEFAULT_SEAL_LIMIT`, and counts seals
so that a crash can only over-count them, see `_keyring`).
"""

from __future__ import annotations

import functools
import os
import struct
from collections.abc import Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from device_agent.errors import IntegrityError

FORMAT_VERSION = 1
NONCE_BYTES = 12
TAG_BYTES = 16
KEY_BYTES = 32
STORE_ID_BYTES = 16
OVERHEAD = 1 + NONCE_BYTES + TAG_BYTES
WRAPPED_KEY_BYTES = OVERHEAD + KEY_BYTES
# Rotate a data key well before the 2^32 random-nonce limit.
DEFAULT_SEAL_LIMIT = 1 << 30

KIND_VALUE = 0
KIND_QUEUE = 1

_RECORD = b"device-agent/store/record"
_DATA_KEY = b"device-agent/store/data-key"
_KEK_CHECK = b"device-agent/store/kek-check"
_HEADER = struct.Struct(">B")
_FORMAT_BYTE = _HEADER.pack(FORMAT_VERSION)
_NONCE_END = 1 + NONCE_BYTES
_U32 = struct.Struct(">I")
_TAIL = struct.Struct(">QQdBd")
_KIND_KEY = struct.Struct(">BI")  # u8 kind | u32 length of the key
# `bytearray().join` without making the empty bytearray on every call (join never changes its separator).
_join_into_bytearray = bytearray().join


def _text(value: str) -> bytes:
    data = value.encode("utf-8")
    return _U32.pack(len(data)) + data


def record_aad_prefix(store_id: bytes, namespace: str) -> bytes:
    """The start of every record's associated data in `namespace` (made once per data key, not per row)."""
    return b"".join((_RECORD, _HEADER.pack(FORMAT_VERSION), store_id, _text(namespace)))


def record_aad_from(  # noqa: PLR0917 - positional: it runs for every record read or written
    prefix: bytes, kind: int, key: bytes, seq: int, key_id: int, created: float, expires: float | None
) -> bytes:
    """The associated data of one record from its namespace's prefix; `key` is UTF-8 (empty for an entry).

    Raises `struct.error` when a number is out of range (a damaged row).
    """
    if expires is None:
        tail = _TAIL.pack(seq, key_id, created, 0, 0.0)
    else:
        tail = _TAIL.pack(seq, key_id, created, 1, expires)
    return b"".join((prefix, _KIND_KEY.pack(kind, len(key)), key, tail))


def record_aad(
    store_id: bytes,
    namespace: str,
    *,
    kind: int,
    key: str | None,
    seq: int,
    key_id: int,
    created: float,
    expires: float | None,
) -> bytes:
    """The associated data of one record: everything in its row except the sealed value itself."""
    key_bytes = (key or "").encode("utf-8")
    return record_aad_from(
        record_aad_prefix(store_id, namespace), kind, key_bytes, seq, key_id, created, expires
    )


def data_key_aad(store_id: bytes, namespace: str, key_id: int) -> bytes:
    return b"".join(
        (_DATA_KEY, _HEADER.pack(FORMAT_VERSION), store_id, _text(namespace), struct.pack(">Q", key_id))
    )


def kek_check_aad(store_id: bytes) -> bytes:
    return _KEK_CHECK + _HEADER.pack(FORMAT_VERSION) + store_id


def seal(aead: AESGCM, plaintext: bytes, aad: bytes) -> bytes:
    """Encrypt under a fresh random nonce; the result carries the format byte and the nonce."""
    return _seal_with(aead, os.urandom(NONCE_BYTES), plaintext, aad)


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
    """`seal` for each `(key, value)` of one namespace, numbered from `first_seq`, with the associated data
    of `record_aad_from` (the same bytes, built in this loop: it runs for every record written).

    The nonces come from one `os.urandom` call: each is still 12 fresh random bytes from the operating
    system, used once; only the system call is shared. Nothing is kept between calls, so a fork cannot hand
    the same bytes to two processes. The results are bytearrays, which sqlite3 binds without trying its
    adapters first.
    """
    pool = os.urandom(NONCE_BYTES * len(entries))
    has_expiry, expiry = (0, 0.0) if expires is None else (1, expires)
    pack_tail, pack_kind_key, encrypt, join = _TAIL.pack, _KIND_KEY.pack, aead.encrypt, bytearray().join
    sealed = []
    seq, end = first_seq, 0
    for key, value in entries:
        key_bytes = b"" if key is None else key.encode("utf-8")
        tail = pack_tail(seq, key_id, created, has_expiry, expiry)
        aad = b"".join((aad_prefix, pack_kind_key(kind, len(key_bytes)), key_bytes, tail))
        start, end = end, end + NONCE_BYTES
        nonce = pool[start:end]
        sealed.append(join((_FORMAT_BYTE, nonce, encrypt(nonce, value, aad))))
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
    """`seal_records` for one record (a keyed value, or a queue entry when `key` is None), with the bytes of
    `record_aad_from` built here: a single put or append runs it every time."""
    key_bytes, kind = (b"", KIND_QUEUE) if key is None else (key.encode(), KIND_VALUE)
    if expires is None:
        tail = _TAIL.pack(seq, key_id, created, 0, 0.0)
    else:
        tail = _TAIL.pack(seq, key_id, created, 1, expires)
    aad = b"".join((aad_prefix, _KIND_KEY.pack(kind, len(key_bytes)), key_bytes, tail))
    nonce = os.urandom(NONCE_BYTES)
    return _join_into_bytearray((_FORMAT_BYTE, nonce, aead.encrypt(nonce, value, aad)))


@functools.cache
def _value_suffix(key_bytes: int) -> struct.Struct:
    """The associated data of a keyed value after its namespace's prefix, for a key of `key_bytes` bytes:
    kind, key length, key and `_TAIL` packed in one call (the same bytes as `record_aad_from`; one
    `Struct` per key length, and a key is at most 512 bytes)."""
    return struct.Struct(f">BI{key_bytes}sQQdBd")


def open_value_record(  # noqa: PLR0917 - positional: it runs for every get
    aead: AESGCM,
    aad_prefix: bytes,
    key: bytes,
    seq: int,
    key_id: int,
    created: float,
    expires: float | None,
    sealed: bytes,
) -> bytes:
    """`open_sealed` of a keyed value with the associated data of `record_aad_from`, built here in one
    `struct` call: every get runs it. Raises `struct.error` when a number is out of range (a damaged row).
    """
    size = len(key)
    if expires is None:
        suffix = _value_suffix(size).pack(KIND_VALUE, size, key, seq, key_id, created, 0, 0.0)
    else:
        suffix = _value_suffix(size).pack(KIND_VALUE, size, key, seq, key_id, created, 1, expires)
    # `open_sealed`'s body: one call fewer on the path of every get.
    if len(sealed) < OVERHEAD:
        raise IntegrityError("sealed value is malformed")
    if sealed[0] != FORMAT_VERSION:
        raise IntegrityError(f"sealed value has unknown format {sealed[0]}")
    try:
        return aead.decrypt(sealed[1:_NONCE_END], sealed[_NONCE_END:], aad_prefix + suffix)
    except InvalidTag:
        raise IntegrityError("sealed value failed authentication") from None


def _seal_with(aead: AESGCM, nonce: bytes, plaintext: bytes, aad: bytes) -> bytes:
    return _FORMAT_BYTE + nonce + aead.encrypt(nonce, plaintext, aad)


def open_sealed(aead: AESGCM, sealed: bytes, aad: bytes) -> bytes:
    """Decrypt and authenticate, or raise `IntegrityError` (the message holds no bytes of the input)."""
    if len(sealed) < OVERHEAD:
        raise IntegrityError("sealed value is malformed")
    if sealed[0] != FORMAT_VERSION:
        raise IntegrityError(f"sealed value has unknown format {sealed[0]}")
    try:
        return aead.decrypt(sealed[1:_NONCE_END], sealed[_NONCE_END:], aad)
    except InvalidTag:
        # `from None`: InvalidTag carries nothing useful, and nothing of the input may travel on.
        raise IntegrityError("sealed value failed authentication") from None
