"""Store maintenance: key rotation with incremental re-encryption, and crypto-erase.

Rotation makes a new data key active; `reencrypt` moves records to it in batches, each its own transaction,
and deletes an old key only at the end of a pass, once no record uses it. An interruption at any point
(error, kill, power cut) leaves every record sealed under its old key or its new one, both readable.

Erase deletes data keys first (in the same transaction as the records): from that commit on, no copy of
the records' pages in this database, wherever it lingers, can be opened. With `secure_delete` the freed
cells are zeroed, and the WAL is checkpointed and truncated so old page images do not stay in it. A copy
that recovery set aside still holds the keys wrapped under the same KEK: erase destroys those copies too.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence

from device_agent.errors import IntegrityError
from device_agent.store import _crypto, _files, _records
from device_agent.store._lifecycle import StoreBase
from device_agent.store._model import check_count, check_namespace, printable_namespace

logger = logging.getLogger(__name__)

SELECT = f"SELECT {_records.COLUMNS} FROM records"  # noqa: S608 - constant column list
# Records sealed under a key that is no longer its namespace's active one.
_STALE = "key_id NOT IN (SELECT key_id FROM data_keys WHERE active = 1)"


@dataclasses.dataclass(frozen=True)
class Reencryption:
    """One step of re-encryption: records moved to the active keys, and whether a full pass just ended."""

    records: int
    complete: bool
    retired_key_ids: tuple[int, ...] = ()


class Maintenance(StoreBase):
    """Rotation, re-encryption and erase; `Store` adds records and queues."""

    def rotate(self, namespace: str | None = None) -> dict[str, int]:
        """Make a new data key active for `namespace` (or every namespace); returns the new key ids.

        Records sealed before stay readable under their old key until `reencrypt` moves them.
        """
        with self._lock, self._write():
            now = self._clock()
            if namespace is not None:
                targets = [check_namespace(namespace)]
            else:
                targets = sorted(self._keyring.namespaces() | set(self._usage))
            return {ns: self._keyring.create(ns, now) for ns in targets}

    def pending_reencryption(self) -> int:
        """How many records are sealed under a key that is no longer active."""
        with self._lock:
            return int(
                self._db.scalar(
                    f"SELECT count(*) FROM records WHERE {_STALE}"  # noqa: S608 - constant
                )
            )

    def reencrypt(self, batch_size: int = 256) -> Reencryption:
        """Move up to `batch_size` records to their namespace's active key, in one transaction.

        Idempotent and safe to interrupt: each batch commits whole or not at all, and an old key is deleted
        only at the end of a pass, once no record uses it. Call it until `complete`.
        """
        check_count(batch_size, "batch_size", minimum=1)
        with self._lock:
            rows = self._db.query(
                f"{SELECT} WHERE seq > ? AND {_STALE} ORDER BY seq LIMIT ?",
                (self._reencrypt_cursor, batch_size),
            )
            moved, bad, retired = 0, [], []
            with self._write():
                for raw in rows:
                    try:
                        row = _records.parse(raw)
                        value = _records.open_row(self._keyring, row)
                    except IntegrityError:
                        self._integrity_failed(printable_namespace(raw[1]), raw[0], "reencrypt")
                        bad.append(raw[0])
                        continue
                    key_id, sealed = _records.seal_row(
                        self._keyring,
                        seq=row.seq,
                        namespace=row.namespace,
                        key=row.key,
                        created=row.created,
                        expires=row.expires,
                        value=value,
                    )
                    self._db.query(
                        "UPDATE records SET key_id = ?, sealed = ? WHERE seq = ?", (key_id, sealed, row.seq)
                    )
                    moved += 1
                self._discard(bad)
                complete = len(rows) < batch_size
                if complete:
                    retired = self._keyring.retire_unused()
            self._reencrypt_cursor = _records.REENCRYPT_START if complete else int(rows[-1][0])
        return Reencryption(moved, complete, tuple(retired))

    def reencrypt_all(self, batch_size: int = 256) -> int:
        """Run `reencrypt` until a pass completes; returns how many records moved."""
        total = 0
        while True:
            step = self.reencrypt(batch_size)
            total += step.records
            if step.complete:
                return total

    def erase_namespace(self, namespace: str) -> int:
        """Crypto-erase `namespace`: its data keys and records go in one transaction, the WAL is truncated,
        and every set-aside copy of the database is destroyed; returns how many copies were.

        A copy set aside by recovery holds the namespace's data keys wrapped under the same KEK, so salvage
        would still open its records: a namespace is not erased while such a copy exists. The copies of the
        other namespaces go with it (reported as `store.corrupt_copies_destroyed`).
        """
        ns = check_namespace(namespace)
        with self._lock:
            with self._write():
                self._db.query("DELETE FROM data_keys WHERE namespace = ?", (ns,))
                self._db.query("DELETE FROM records WHERE namespace = ?", (ns,))
                self._keyring.forget(ns)
                self._usage.pop(ns, None)
            self._checkpoint()
            copies = _files.destroy_corrupt(self._path)
            logger.warning("store.namespace_erased", extra={"namespace": ns})
            if copies:
                self._report("store.corrupt_copies_destroyed", logging.WARNING, namespace=ns, copies=copies)
            return copies

    def erase_all(self) -> None:
        """Crypto-erase the store: every data key, then the KEK, then the files. The store is closed after."""
        with self._lock:
            with self._write():
                self._db.query("DELETE FROM data_keys")
                self._db.query("DELETE FROM records")
                self._keyring.forget(None)
                self._usage.clear()
            self._checkpoint()
            self._db.close()
            self._kek_source.destroy()
            _files.remove_database(self._path)
            # Overwritten, not only unlinked: with a KEK from a secret, the copies' keys are still wrapped
            # under a KEK that lives on.
            _files.destroy_corrupt(self._path)
            _files.prune_corrupt(self._path.parent, self._side_names(), keep=0)
            logger.warning("store.erased", extra={"path": str(self._path)})

    def _discard(self, seqs: Sequence[int]) -> None:
        """Delete rows that failed authentication (inside a transaction); counted as dropped."""
        for seq in seqs:
            rows = self._db.query("SELECT namespace, length(sealed) FROM records WHERE seq = ?", (seq,))
            self._db.query("DELETE FROM records WHERE seq = ?", (seq,))
            if rows and isinstance(rows[0][1], int):
                size = max(0, rows[0][1] - _crypto.RECORD_OVERHEAD)
                self._account(printable_namespace(rows[0][0]), -1, -size)
                self._count(printable_namespace(rows[0][0]), "dropped_records", 1)
                self._count(printable_namespace(rows[0][0]), "dropped_bytes", size)

    def _checkpoint(self) -> None:
        """Fold the WAL into the database and truncate it, so erased pages do not linger in the log."""
        busy = self._db.query("PRAGMA wal_checkpoint(TRUNCATE)")
        if busy and busy[0][0]:
            logger.warning("store.checkpoint_incomplete", extra={"path": str(self._path)})
