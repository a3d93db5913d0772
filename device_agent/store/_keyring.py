"""Data keys of one open store: which is active per namespace, unwrapping on demand, seal counting.

The rows live in `data_keys` (see `_db`); this keeps the in-memory view. Writes happen inside the engine's
transactions (`begin` … `roll_back` if it fails): the first change in a transaction saves the view, and a
rollback puts it back, so the view never claims a key the database does not hold. Unwrapped keys are cached
as AEAD objects only, by key id, and a key id is never reused (AUTOINCREMENT), so a cached key can never
stand for another.

Seal counting is a reservation: `data_keys.seals` holds a bound on the seals a key has made, written
`SEAL_RESERVATION` seals ahead (in the transaction of the seal that crosses the old bound), and a store
that opens starts each key's count at its bound. The count can only over-estimate, whatever crashes: every
committed record was sealed under a bound committed with it or before it. Seals of a transaction that
rolls back still count in memory (their nonces were drawn); only the written bound is put back.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from typing import NamedTuple

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from device_agent.errors import IntegrityError
from device_agent.store import _crypto, _keys
from device_agent.store._db import Database

logger = logging.getLogger(__name__)

# Seals reserved per write of a key's counter: one small UPDATE per 4096 seals instead of one per
# transaction. A restart forgets at most this many of a key's 2^30 seals.
SEAL_RESERVATION = 4096


@dataclasses.dataclass(frozen=True)
class KeyInfo:
    key_id: int
    namespace: str
    wrapped: bytes = dataclasses.field(repr=False)
    active: bool


class KeyringState(NamedTuple):
    """The view before a transaction changed it."""

    keys: dict[int, KeyInfo]
    seals: dict[int, int]
    reserved: dict[int, int]


@dataclasses.dataclass(frozen=True)
class Opener:
    """An unwrapped data key, its namespace, and the associated-data prefix of that namespace."""

    aead: AESGCM = dataclasses.field(repr=False)
    namespace: str
    aad_prefix: bytes = dataclasses.field(repr=False)


class Keyring:
    def __init__(self, db: Database, kek: _keys.KeyEncryptionKey, store_id: bytes, seal_limit: int) -> None:
        self._db = db
        self._kek = kek
        self._store_id = store_id
        self._seal_limit = seal_limit
        self._keys: dict[int, KeyInfo] = {}
        self._active: dict[str, int] = {}
        # Seals made (at least) per key, and the bound written in its row.
        self._seals: dict[int, int] = {}
        self._reserved: dict[int, int] = {}
        self._openers: dict[int, Opener] = {}
        # The unwrapped keys by id, read only: the read path of a get looks its key up here before it
        # calls `for_open` (a call costs more than the lookup).
        self.openers: Mapping[int, Opener] = self._openers
        self._saved: KeyringState | None = None

    def __repr__(self) -> str:
        return f"Keyring(keys={sorted(self._keys)})"

    @property
    def store_id(self) -> bytes:
        return self._store_id

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
                and seals >= 0
                and active in (0, 1)
            ):
                malformed += 1
                continue
            self._keys[key_id] = KeyInfo(key_id, namespace, wrapped, bool(active))
            # Whatever was sealed before, it was at most the bound: go on from there.
            self._seals[key_id] = self._reserved[key_id] = seals
        self._active = _actives(self._keys)
        return malformed

    def begin(self) -> None:
        """A write transaction starts: nothing of the view is saved until it changes."""
        self._saved = None

    def roll_back(self) -> None:
        """The transaction rolled back: the view as it was at `begin`, except seal counts, which only grow."""
        state, self._saved = self._saved, None
        if state is None:
            return
        seals = self._seals
        self._keys = dict(state.keys)
        self._active = _actives(self._keys)
        self._seals = {key_id: max(count, seals.get(key_id, 0)) for key_id, count in state.seals.items()}
        self._reserved = dict(state.reserved)
        for key_id in list(self._openers):
            if key_id not in self._keys:
                del self._openers[key_id]

    def _save(self) -> None:
        if self._saved is None:
            self._saved = KeyringState(dict(self._keys), dict(self._seals), dict(self._reserved))

    def active(self) -> dict[str, int]:
        return dict(self._active)

    def namespaces(self) -> set[str]:
        return {info.namespace for info in self._keys.values()}

    def for_open(self, key_id: int, namespace: str) -> Opener:
        """The key that sealed a record of `namespace`, or `IntegrityError` (unknown, foreign or damaged)."""
        opener = self._openers.get(key_id)
        if opener is not None and opener.namespace == namespace:
            return opener
        info = self._keys.get(key_id)
        if info is None or info.namespace != namespace:
            raise IntegrityError(f"no data key {key_id} for this namespace")
        aead = self._kek.unwrap(info.wrapped, self._store_id, namespace, key_id)
        opener = self._openers[key_id] = self._opener(aead, namespace)
        return opener

    def _opener(self, aead: AESGCM, namespace: str) -> Opener:
        return Opener(aead, namespace, _crypto.record_aad_prefix(self._store_id, namespace))

    def take_spare(self, namespace: str) -> tuple[int, Opener] | None:
        """The active key of `namespace` and its opener, with one seal counted, if that seal writes nothing
        (a key under its limit and its written bound); otherwise None, and nothing counted."""
        key_id = self._active.get(namespace)
        if key_id is None:
            return None
        seals = self._seals[key_id]
        if seals >= self._seal_limit or seals >= self._reserved[key_id]:
            return None
        self._seals[key_id] = seals + 1
        opener = self._openers.get(key_id)
        return key_id, (self.for_open(key_id, namespace) if opener is None else opener)

    def for_seal(self, namespace: str, now: float) -> tuple[int, Opener]:
        """The active key of `namespace` (made now if it has none or has used up its seals), counted."""
        key_id, opener, _ = self.for_seals(namespace, now, 1)
        return key_id, opener

    def for_seals(self, namespace: str, now: float, wanted: int) -> tuple[int, Opener, int]:
        """`for_seal` for up to `wanted` seals at once: (key id, key, how many it may seal, at least 1)."""
        key_id = self._active.get(namespace)
        if key_id is None or self._seals[key_id] >= self._seal_limit:
            if key_id is not None:
                logger.info("store.key_seal_limit", extra={"namespace": namespace, "key_id": key_id})
            key_id = self.create(namespace, now)
        seals = self._seals[key_id]
        granted = min(wanted, self._seal_limit - seals)
        if seals + granted > self._reserved[key_id]:
            self._reserve(key_id, min(self._seal_limit, seals + granted - 1 + SEAL_RESERVATION))
        self._seals[key_id] = seals + granted
        return key_id, self.for_open(key_id, namespace), granted

    def _reserve(self, key_id: int, bound: int) -> None:
        self._save()
        self._db.query("UPDATE data_keys SET seals = ? WHERE key_id = ?", (bound, key_id))
        self._reserved[key_id] = bound

    def create(self, namespace: str, now: float) -> int:
        """A new active data key for `namespace` (inside a transaction); the previous one becomes inactive."""
        last = self._db.scalar("SELECT seq FROM sqlite_sequence WHERE name = 'data_keys'")
        key_id = (last if isinstance(last, int) else 0) + 1
        self._save()
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
        self._active[namespace] = key_id
        self._seals[key_id] = self._reserved[key_id] = 0
        self._openers[key_id] = self._opener(AESGCM(material), namespace)
        logger.info("store.key_created", extra={"namespace": namespace, "key_id": key_id})
        return key_id

    def forget(self, namespace: str | None) -> None:
        """Drop keys from the view after their rows were deleted (all of them when `namespace` is None)."""
        self._save()
        for info in list(self._keys.values()):
            if namespace is None or info.namespace == namespace:
                self._drop(info.key_id)
        self._active = _actives(self._keys)

    def retire_unused(self) -> list[int]:
        """Delete inactive keys that no record uses any more (inside a transaction)."""
        used = {row[0] for row in self._db.query("SELECT DISTINCT key_id FROM records")}
        retired = [info.key_id for info in self._keys.values() if not info.active and info.key_id not in used]
        self._save()
        for key_id in retired:
            self._db.query("DELETE FROM data_keys WHERE key_id = ? AND active = 0", (key_id,))
            namespace = self._keys[key_id].namespace
            self._drop(key_id)
            logger.info("store.key_retired", extra={"namespace": namespace, "key_id": key_id})
        return retired

    def _drop(self, key_id: int) -> None:
        del self._keys[key_id]
        self._seals.pop(key_id, None)
        self._reserved.pop(key_id, None)
        self._openers.pop(key_id, None)


def _actives(keys: dict[int, KeyInfo]) -> dict[str, int]:
    return {info.namespace: info.key_id for info in keys.values() if info.active}
