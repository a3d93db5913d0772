"""Data keys of one open store: which is active per namespace, unwrapping on demand, seal counting.

The rows live in `data_keys` (see `_db`); this keeps the in-memory view. Writes happen inside the engine's
transactions; if one rolls back, the engine restores the `snapshot` taken before it, so the view never
claims a key the database does not hold. Unwrapped keys are cached as AEAD objects only, by key id, and a
key id is never reused (AUTOINCREMENT), so a cached key can never stand for another.
"""

from __future__ import annotations

import dataclasses
import logging

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from device_agent.errors import IntegrityError
from device_agent.store import _keys
from device_agent.store._db import Database

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class KeyInfo:
    key_id: int
    namespace: str
    wrapped: bytes = dataclasses.field(repr=False)
    active: bool


@dataclasses.dataclass(frozen=True)
class KeyringState:
    keys: dict[int, KeyInfo]
    seals: dict[int, int]
    dirty: frozenset[int]


class Keyring:
    def __init__(self, db: Database, kek: _keys.KeyEncryptionKey, store_id: bytes, seal_limit: int) -> None:
        self._db = db
        self._kek = kek
        self._store_id = store_id
        self._seal_limit = seal_limit
        self._keys: dict[int, KeyInfo] = {}
        self._seals: dict[int, int] = {}
        self._dirty: set[int] = set()
        self._aeads: dict[int, AESGCM] = {}

    def __repr__(self) -> str:
        return f"Keyring(keys={sorted(self._keys)})"

    def load(self) -> int:
        """Read the key rows; returns how many were malformed (their records will fail to open)."""
        malformed = 0
        for key_id, namespace, wrapped, seals, active in self._db.query(
            "SELECT key_id, namespace, wrapped, seals, active FROM data_keys"
        ):
            if not (
                isinstance(key_id, int)
                and isinstance(namespace, str)
                and isinstance(wrapped, bytes)
                and isinstance(seals, int)
                and active in (0, 1)
            ):
                malformed += 1
                continue
            self._keys[key_id] = KeyInfo(key_id, namespace, wrapped, bool(active))
            self._seals[key_id] = seals
        return malformed

    def snapshot(self) -> KeyringState:
        return KeyringState(dict(self._keys), dict(self._seals), frozenset(self._dirty))

    def restore(self, state: KeyringState) -> None:
        self._keys = dict(state.keys)
        self._seals = dict(state.seals)
        self._dirty = set(state.dirty)
        for key_id in list(self._aeads):
            if key_id not in self._keys:
                del self._aeads[key_id]

    def active(self) -> dict[str, int]:
        return {info.namespace: info.key_id for info in self._keys.values() if info.active}

    def namespaces(self) -> set[str]:
        return {info.namespace for info in self._keys.values()}

    def for_open(self, key_id: int, namespace: str) -> AESGCM:
        """The key that sealed a record of `namespace`, or `IntegrityError` (unknown, foreign or damaged)."""
        info = self._keys.get(key_id)
        if info is None or info.namespace != namespace:
            raise IntegrityError(f"no data key {key_id} for this namespace")
        aead = self._aeads.get(key_id)
        if aead is None:
            aead = self._kek.unwrap(info.wrapped, self._store_id, namespace, key_id)
            self._aeads[key_id] = aead
        return aead

    def for_seal(self, namespace: str, now: float) -> tuple[int, AESGCM]:
        """The active key of `namespace` (made now if it has none or has used up its seals), counted."""
        active = [info for info in self._keys.values() if info.active and info.namespace == namespace]
        if not active or self._seals.get(active[0].key_id, 0) >= self._seal_limit:
            if active:
                logger.info(
                    "store.key_seal_limit", extra={"namespace": namespace, "key_id": active[0].key_id}
                )
            key_id = self.create(namespace, now)
        else:
            key_id = active[0].key_id
        self._seals[key_id] = self._seals.get(key_id, 0) + 1
        self._dirty.add(key_id)
        return key_id, self.for_open(key_id, namespace)

    def create(self, namespace: str, now: float) -> int:
        """A new active data key for `namespace` (inside a transaction); the previous one becomes inactive."""
        last = self._db.scalar("SELECT seq FROM sqlite_sequence WHERE name = 'data_keys'")
        key_id = (last if isinstance(last, int) else 0) + 1
        material = _keys.new_data_key()
        wrapped = self._kek.wrap(material, self._store_id, namespace, key_id)
        self._db.query("UPDATE data_keys SET active = 0 WHERE namespace = ? AND active = 1", (namespace,))
        self._db.query(
            "INSERT INTO data_keys(key_id, namespace, wrapped, created, seals, active)"
            " VALUES (?, ?, ?, ?, 0, 1)",
            (key_id, namespace, wrapped, now),
        )
        for old in [info for info in self._keys.values() if info.namespace == namespace and info.active]:
            self._keys[old.key_id] = dataclasses.replace(old, active=False)
        self._keys[key_id] = KeyInfo(key_id, namespace, wrapped, active=True)
        self._seals[key_id] = 0
        self._aeads[key_id] = AESGCM(material)
        logger.info("store.key_created", extra={"namespace": namespace, "key_id": key_id})
        return key_id

    def flush(self) -> None:
        """Persist the seal counts changed in this transaction (one UPDATE per key, not per seal)."""
        for key_id in sorted(self._dirty):
            if key_id in self._keys:
                self._db.query(
                    "UPDATE data_keys SET seals = ? WHERE key_id = ?", (self._seals[key_id], key_id)
                )
        self._dirty.clear()

    def forget(self, namespace: str | None) -> None:
        """Drop keys from the view after their rows were deleted (all of them when `namespace` is None)."""
        for info in list(self._keys.values()):
            if namespace is None or info.namespace == namespace:
                del self._keys[info.key_id]
                self._seals.pop(info.key_id, None)
                self._aeads.pop(info.key_id, None)
                self._dirty.discard(info.key_id)

    def retire_unused(self) -> list[int]:
        """Delete inactive keys that no record uses any more (inside a transaction)."""
        used = {row[0] for row in self._db.query("SELECT DISTINCT key_id FROM records")}
        retired = [info.key_id for info in self._keys.values() if not info.active and info.key_id not in used]
        for key_id in retired:
            self._db.query("DELETE FROM data_keys WHERE key_id = ? AND active = 0", (key_id,))
            namespace = self._keys[key_id].namespace
            del self._keys[key_id]
            self._seals.pop(key_id, None)
            self._aeads.pop(key_id, None)
            logger.info("store.key_retired", extra={"namespace": namespace, "key_id": key_id})
        return retired
