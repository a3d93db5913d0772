"""The key hierarchy: a key-encryption key (KEK) wraps per-namespace data keys.

    KEK (32 bytes; a key file by default, or derived from a Greengrass secret)
     └── wraps data keys (32 bytes each, one active per namespace, older ones until re-encryption retires
         them), stored wrapped in the `data_keys` table with an integer key id that is never reused
          └── seal record values (see `_crypto`)

Data keys are per namespace so that erasing a namespace is destroying its keys: its records become
unreadable at once, wherever their pages linger in the database. A copy of the database made before (one
that recovery set aside) still holds the keys, wrapped under the same KEK, so erase destroys those copies
too (`_maintenance`). Destroying the KEK makes every copy of the store unreadable.

Key file format (42 bytes, 0600, created exclusively, never followed through a symbolic link):

    b"DAKEK" | u8 version (=1) | key (32) | first 4 bytes of SHA-256 over the preceding 38 bytes

The check bytes catch a torn or damaged file; they are not a secret's fingerprint worth anything (32 random
bytes are not guessable from 32 bits of hash). Key material never appears in a repr, log or exception.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from device_agent.errors import IntegrityError, InvalidInputError, StorageError
from device_agent.fileio import OS_FILE_IO, FileIO, StrPath
from device_agent.files import check_private_file, open_private, read_private
from device_agent.store import _crypto

logger = logging.getLogger(__name__)

KEY_FILE_MAGIC = b"DAKEK\x01"
KEY_FILE_BYTES = len(KEY_FILE_MAGIC) + _crypto.KEY_BYTES + 4
MIN_SECRET_BYTES = 16
_HKDF_INFO = b"device-agent/store/kek/v1"


class KeyEncryptionKey:
    """The KEK. Holds the key only as an AEAD object; its repr says nothing about it."""

    __slots__ = ("_aead",)

    def __init__(self, material: bytes) -> None:
        if len(material) != _crypto.KEY_BYTES:
            raise InvalidInputError(f"a key-encryption key is {_crypto.KEY_BYTES} bytes")
        self._aead = AESGCM(material)

    def __repr__(self) -> str:
        return "KeyEncryptionKey(<redacted>)"

    def __reduce__(self) -> str | tuple[object, ...]:
        raise TypeError("a key-encryption key cannot be pickled")

    def wrap(self, data_key: bytes, store_id: bytes, namespace: str, key_id: int) -> bytes:
        return _crypto.seal(self._aead, data_key, _crypto.data_key_aad(store_id, namespace, key_id))

    def unwrap(self, wrapped: bytes, store_id: bytes, namespace: str, key_id: int) -> AESGCM:
        material = _crypto.open_sealed(self._aead, wrapped, _crypto.data_key_aad(store_id, namespace, key_id))
        if len(material) != _crypto.KEY_BYTES:
            raise IntegrityError(f"data key {key_id} has the wrong length")
        return AESGCM(material)

    def check_value(self, store_id: bytes) -> bytes:
        return _crypto.seal(self._aead, b"", _crypto.kek_check_aad(store_id))

    def matches(self, check_value: bytes, store_id: bytes) -> bool:
        try:
            _crypto.open_sealed(self._aead, check_value, _crypto.kek_check_aad(store_id))
        except IntegrityError:
            return False
        return True


def new_data_key() -> bytes:
    return AESGCM.generate_key(bit_length=256)


class KekSource(Protocol):
    """Where the KEK comes from. `load` returns it (creating it if the source can); `destroy` erases it."""

    def load(self) -> KeyEncryptionKey: ...
    def destroy(self) -> None: ...


def _file_check(body: bytes) -> bytes:
    return hashlib.sha256(body).digest()[:4]


class KeyFile:
    """A KEK in a private key file: created exclusively 0600, refused if a link, not ours, or shared."""

    def __init__(self, path: StrPath, *, io: FileIO | None = None) -> None:
        self.path = Path(path)
        self._io = io if io is not None else OS_FILE_IO

    def __repr__(self) -> str:
        return f"KeyFile({str(self.path)!r})"

    def exists(self) -> bool:
        try:
            self._io.lstat(self.path)
        except FileNotFoundError:
            return False
        return True

    def load(self) -> KeyEncryptionKey:
        """Read the key; create it first when there is no file. A malformed file raises `IntegrityError`."""
        if not self.exists():
            self._create()
        content = read_private(self.path, max_bytes=KEY_FILE_BYTES, io=self._io)
        body, check = content[:-4], content[-4:]
        if (
            len(content) != KEY_FILE_BYTES
            or not body.startswith(KEY_FILE_MAGIC)
            or _file_check(body) != check
        ):
            raise IntegrityError(f"{self.path}: not a valid key file")
        return KeyEncryptionKey(body[len(KEY_FILE_MAGIC) :])

    def _create(self) -> None:
        body = KEY_FILE_MAGIC + os.urandom(_crypto.KEY_BYTES)
        fd = open_private(self.path, create=True, exclusive=True, io=self._io)
        try:
            _write(self._io, fd, body + _file_check(body), self.path)
            self._sync(fd)
        finally:
            self._io.close(fd)
        self._sync_dir()
        logger.info("store.key_file_created", extra={"path": str(self.path)})

    def set_aside(self, suffix: str) -> Path:
        """Rename an unusable key file out of the way (kept: it may still open a moved-aside store)."""
        target = self.path.with_name(self.path.name + suffix)
        try:
            self._io.replace(self.path, target)
            self._io.fsync_dir(self.path.parent)
        except OSError as error:
            raise StorageError(f"rename {self.path}: {error.strerror}", errno_value=error.errno) from error
        return target

    def destroy(self) -> None:
        """Overwrite the key with zeros, sync, unlink, sync the directory. A missing file is already gone."""
        if not self.exists():
            return
        check_private_file(self.path, io=self._io)
        fd = open_private(self.path, create=False, io=self._io)
        try:
            _write(self._io, fd, bytes(KEY_FILE_BYTES), self.path)
            self._sync(fd)
        finally:
            self._io.close(fd)
        try:
            self._io.unlink(self.path)
        except OSError as error:
            raise StorageError(f"unlink {self.path}: {error.strerror}", errno_value=error.errno) from error
        self._sync_dir()
        logger.warning("store.key_destroyed", extra={"path": str(self.path)})

    def _sync(self, fd: int) -> None:
        try:
            self._io.fsync(fd)
        except OSError as error:
            raise StorageError(f"fsync {self.path}: {error.strerror}", errno_value=error.errno) from error

    def _sync_dir(self) -> None:
        try:
            self._io.fsync_dir(self.path.parent)
        except OSError as error:
            raise StorageError(
                f"fsync {self.path.parent}: {error.strerror}", errno_value=error.errno
            ) from error


def _write(io: FileIO, fd: int, data: bytes, path: Path) -> None:
    view = memoryview(data)
    try:
        while view:
            written = io.write(fd, view)
            if written <= 0:
                raise OSError(5, "write made no progress")
            view = view[written:]
    except OSError as error:
        raise StorageError(f"write {path}: {error.strerror}", errno_value=error.errno) from error


class SecretKekSource:
    """A KEK derived (HKDF-SHA256) from secret material fetched on demand, e.g. a Greengrass secret.

    `fetch` returns the secret (at least 16 bytes; a string is taken as UTF-8), for example the
    `secret_string` of GetSecretValue. The material is not kept. `destroy` cannot erase a secret owned by
    the cloud: a store-level erase then relies on destroying every wrapped data key.
    """

    def __init__(self, fetch: Callable[[], bytes | str]) -> None:
        self._fetch = fetch

    def __repr__(self) -> str:
        return "SecretKekSource(<redacted>)"

    def load(self) -> KeyEncryptionKey:
        secret = self._fetch()
        material = secret.encode("utf-8") if isinstance(secret, str) else bytes(secret)
        if len(material) < MIN_SECRET_BYTES:
            raise InvalidInputError(
                f"the secret for the key-encryption key is under {MIN_SECRET_BYTES} bytes"
            )
        kdf = HKDF(algorithm=hashes.SHA256(), length=_crypto.KEY_BYTES, salt=None, info=_HKDF_INFO)
        return KeyEncryptionKey(kdf.derive(material))

    def destroy(self) -> None:
        logger.warning("store.kek_not_destroyed", extra={"reason": "external secret"})
