"""The encrypted local store: keyed records and spool queues, sealed per record, durable on return.

    with Store.open(work_dir / "store") as store:           # KEK from work_dir/store/store.key
        store.put("settings", "mode", b"eco", ttl=3600)
        seq = store.append("telemetry", payload)
        batch = store.read_batch("telemetry", max_records=100, max_bytes=64_000)
        store.ack("telemetry", batch[-1][0])

Durability: `put`, `put_many`, `append`, `append_many`, `delete`, `ack` and the erases return only after
their transaction committed with `synchronous=FULL` in WAL mode, so the caller may acknowledge upstream.
Everything is synchronous and serialised by one lock; from a coroutine call it through `asyncio.to_thread`.

Sequence numbers are store-wide, strictly increasing, never reused (AUTOINCREMENT keeps the highest ever
issued, also across drops and acks); a store rebuilt after corruption starts past the salvaged records and
past the current time in microseconds, so a consumer never sees a number twice unless the clock went back.

Failure rules: a record that fails authentication is counted and reported every time it is met; `get`
raises `IntegrityError` and leaves it to the caller; bulk operations (`read_batch`, `reencrypt`) delete it,
because it can never be read and would stall them. A file that fails its checks at open is moved aside,
salvaged and replaced (see `_lifecycle`). An I/O error closes the handle; reopen to go on.
"""

from __future__ import annotations

import contextlib
import errno
import logging
from collections.abc import Iterable, Iterator

from device_agent.errors import IntegrityError, NotFoundError, StorageError
from device_agent.store import _crypto, _db, _records
from device_agent.store._maintenance import SELECT, Maintenance
from device_agent.store._model import (
    NamespacePolicy,
    NamespaceStats,
    StoreStats,
    check_count,
    check_key,
    check_namespace,
    check_ttl,
    check_value,
    printable_namespace,
)

logger = logging.getLogger(__name__)

_DROP_CHUNK = 64


class _RejectedError(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Store(Maintenance):
    """An open store; make one with `Store.open` (see `StoreBase.open` for the options)."""

    # ---- keyed records -------------------------------------------------------------------------------

    def put(self, namespace: str, key: str, value: bytes, *, ttl: float | None = None) -> None:
        """Store `value` under `key` (replacing it); durable when this returns."""
        self.put_many(namespace, [(key, value)], ttl=ttl)

    def put_many(
        self, namespace: str, items: Iterable[tuple[str, bytes]], *, ttl: float | None = None
    ) -> None:
        """Store several records in one transaction: all of them, or none."""
        ns = check_namespace(namespace)
        checked = [(check_key(key), check_value(value, self._max_value_bytes)) for key, value in items]
        life = self._ttl(ns, ttl)
        with self._lock, self._refusals(ns, len(checked)), self._write():
            now = self._clock()
            for key, value in checked:
                self._delete_key(ns, key)
                self._make_room(ns, len(value), now)
                self._insert(ns, _crypto.KIND_VALUE, key, value, now=now, ttl=life)

    def get(self, namespace: str, key: str) -> bytes:
        """The value under `key`; `NotFoundError` if absent or expired, `IntegrityError` if tampered with."""
        ns, name = check_namespace(namespace), check_key(key)
        with self._lock:
            rows = self._db.query(f"{SELECT} WHERE namespace = ? AND key = ?", (ns, name))
            if not rows:
                raise NotFoundError(f"namespace {ns} has no key {name!r}")
            try:
                row = _records.parse(rows[0])
                value = _records.open_row(
                    self._keyring, self._store_id, row, namespace=ns, kind=_crypto.KIND_VALUE, key=name
                )
            except IntegrityError:
                self._integrity_failed(ns, rows[0][0], "get")
                raise
            if row.expired(self._clock()):
                raise NotFoundError(f"namespace {ns} has no key {name!r}")
            return value

    def delete(self, namespace: str, key: str) -> bool:
        """Remove `key`; True if it was there."""
        ns, name = check_namespace(namespace), check_key(key)
        with self._lock, self._write():
            return self._delete_key(ns, name)

    def keys(self, namespace: str) -> list[str]:
        """The live keys of `namespace`, sorted (names only: nothing is decrypted)."""
        ns = check_namespace(namespace)
        with self._lock:
            rows = self._db.query(
                "SELECT key FROM records WHERE namespace = ? AND kind = ? AND key IS NOT NULL"
                " AND (expires IS NULL OR expires > ?) ORDER BY key",
                (ns, _crypto.KIND_VALUE, self._clock()),
            )
        return [key for (key,) in rows if isinstance(key, str)]

    # ---- queues --------------------------------------------------------------------------------------

    def append(self, namespace: str, value: bytes, *, ttl: float | None = None) -> int:
        """Add `value` at the tail of the queue `namespace`; returns its sequence number, once durable."""
        return self.append_many(namespace, [value], ttl=ttl)[0]

    def append_many(self, namespace: str, values: Iterable[bytes], *, ttl: float | None = None) -> list[int]:
        """Append several values in one transaction (all or none); their sequence numbers, in order."""
        ns = check_namespace(namespace)
        checked = [check_value(value, self._max_value_bytes) for value in values]
        life = self._ttl(ns, ttl)
        seqs: list[int] = []
        with self._lock, self._refusals(ns, len(checked)), self._write():
            now = self._clock()
            for value in checked:
                self._make_room(ns, len(value), now)
                seqs.append(self._insert(ns, _crypto.KIND_QUEUE, None, value, now=now, ttl=life))
        return seqs

    def read_batch(
        self, namespace: str, max_records: int = 100, max_bytes: int = 1 << 20
    ) -> list[tuple[int, bytes]]:
        """The oldest live entries, `(seq, value)` in order, within both limits.

        The first entry is returned even if it alone exceeds `max_bytes`, so a queue never stalls on it.
        """
        ns = check_namespace(namespace)
        check_count(max_records, "max_records", minimum=1)
        check_count(max_bytes, "max_bytes", minimum=1)
        out: list[tuple[int, bytes]] = []
        bad: list[int] = []
        total = 0
        with self._lock:
            query = f"{SELECT} WHERE namespace = ? AND kind = ? AND (expires IS NULL OR expires > ?)"
            query += " ORDER BY seq"
            with contextlib.closing(self._db.rows(query, (ns, _crypto.KIND_QUEUE, self._clock()))) as rows:
                for raw in rows:
                    try:
                        row = _records.parse(raw)
                        value = _records.open_row(
                            self._keyring, self._store_id, row, namespace=ns, kind=_crypto.KIND_QUEUE
                        )
                    except IntegrityError:
                        self._integrity_failed(ns, raw[0], "read_batch")
                        bad.append(raw[0])
                        continue
                    if out and total + len(value) > max_bytes:
                        break
                    out.append((row.seq, value))
                    total += len(value)
                    if len(out) >= max_records:
                        break
            if bad:
                with self._write():
                    self._discard(bad)
        return out

    def ack(self, namespace: str, up_to_seq: int) -> int:
        """Remove the queue entries of `namespace` up to and including `up_to_seq`; returns how many."""
        ns = check_namespace(namespace)
        up_to_seq = check_count(up_to_seq, "up_to_seq", minimum=0)
        where = "namespace = ? AND kind = ? AND seq <= ?"
        params = (ns, _crypto.KIND_QUEUE, up_to_seq)
        with self._lock, self._write():
            count, size = self._db.query(
                f"SELECT count(*), coalesce(sum(length(sealed)), 0) FROM records WHERE {where}",  # noqa: S608
                params,
            )[0]
            if count:
                self._db.query(f"DELETE FROM records WHERE {where}", params)  # noqa: S608
                self._account(ns, -count, -(size - count * _crypto.OVERHEAD))
        return int(count)

    # ---- expiry --------------------------------------------------------------------------------------

    def purge_expired(self) -> int:
        """Delete every expired record now; returns how many (reads already hide them)."""
        with self._lock, self._write():
            return self._purge(self._clock(), None)

    # ---- observation ---------------------------------------------------------------------------------

    def stats(self) -> StoreStats:
        with self._lock:
            names = sorted(set(self._usage) | set(self._counters))
            namespaces = {}
            for ns in names:
                count, size = self._usage.get(ns, (0, 0))
                counters = self._counters.get(ns, {})
                namespaces[ns] = NamespaceStats(records=count, value_bytes=size, **counters)
            return StoreStats(namespaces, self._integrity_total, self._recoveries, self._keyring.active())

    def pragmas(self) -> dict[str, object]:
        """The durability settings as SQLite reports them (journal_mode, synchronous, secure_delete)."""
        with self._lock:
            return _db.pragmas(self._db)

    # ---- internals -----------------------------------------------------------------------------------

    def _ttl(self, ns: str, ttl: float | None) -> float | None:
        return check_ttl(ttl) if ttl is not None else self.policy(ns).ttl

    @contextlib.contextmanager
    def _refusals(self, ns: str, records: int) -> Iterator[None]:
        """Turn an overflow refusal into `StorageError(EDQUOT)` after the transaction rolled back, counted."""
        try:
            yield
        except _RejectedError as rejected:
            self._count(ns, "rejected", records, pending=False)
            logger.warning("store.quota_rejected", extra={"namespace": ns, "records": records})
            raise StorageError(f"namespace {ns}: {rejected.reason}", errno_value=errno.EDQUOT) from None

    def _insert(
        self, ns: str, kind: int, key: str | None, value: bytes, *, now: float, ttl: float | None
    ) -> int:
        seq = self._next_seq
        expires = None if ttl is None else now + ttl
        key_id, sealed = _records.seal_row(
            self._keyring,
            self._store_id,
            seq=seq,
            namespace=ns,
            kind=kind,
            key=key,
            created=now,
            expires=expires,
            value=value,
        )
        self._db.query(
            _records.INSERT,
            (seq, ns, kind, key, key_id, now, expires, sealed),
        )
        self._next_seq = seq + 1
        self._account(ns, 1, len(value))
        return seq

    def _delete_key(self, ns: str, key: str) -> bool:
        rows = self._db.query(
            "SELECT seq, length(sealed) FROM records WHERE namespace = ? AND key = ?", (ns, key)
        )
        if not rows:
            return False
        self._db.query("DELETE FROM records WHERE seq = ?", (rows[0][0],))
        self._account(ns, -1, -(int(rows[0][1]) - _crypto.OVERHEAD))
        return True

    def _over(self, ns: str, size: int, policy: NamespacePolicy) -> bool:
        count, total = self._usage.get(ns, (0, 0))
        return (policy.max_records is not None and count + 1 > policy.max_records) or (
            policy.max_bytes is not None and total + size > policy.max_bytes
        )

    def _make_room(self, ns: str, size: int, now: float) -> None:
        policy = self.policy(ns)
        if policy.max_bytes is not None and size > policy.max_bytes:
            raise _RejectedError("value larger than the namespace's byte quota")
        if not self._over(ns, size, policy):
            return
        self._purge(now, ns)
        if not self._over(ns, size, policy):
            return
        if policy.overflow == "reject":
            raise _RejectedError("quota full")
        dropped = dropped_bytes = 0
        while self._over(ns, size, policy):
            rows = self._db.query(
                "SELECT seq, length(sealed) FROM records WHERE namespace = ? ORDER BY seq LIMIT ?",
                (ns, _DROP_CHUNK),
            )
            if not rows:
                break
            count, total = self._usage.get(ns, (0, 0))
            cut = None
            for seq, length in rows:
                value_bytes = int(length) - _crypto.OVERHEAD
                count, total, cut = count - 1, total - value_bytes, seq
                dropped, dropped_bytes = dropped + 1, dropped_bytes + value_bytes
                self._usage[ns] = (count, total)
                if not self._over(ns, size, policy):
                    break
            self._db.query("DELETE FROM records WHERE namespace = ? AND seq <= ?", (ns, cut))
        self._count(ns, "dropped_records", dropped)
        self._count(ns, "dropped_bytes", dropped_bytes)
        self._report(
            "store.records_dropped", logging.INFO, namespace=ns, records=dropped, bytes=dropped_bytes
        )

    def _purge(self, now: float, ns: str | None) -> int:
        where = "expires IS NOT NULL AND expires <= ?" + ("" if ns is None else " AND namespace = ?")
        params: tuple[object, ...] = (now,) if ns is None else (now, ns)
        groups = self._db.query(
            f"SELECT namespace, count(*), coalesce(sum(length(sealed)), 0) FROM records WHERE {where}"  # noqa: S608
            " GROUP BY namespace",
            params,
        )
        if not groups:
            return 0
        self._db.query(f"DELETE FROM records WHERE {where}", params)  # noqa: S608
        purged = 0
        for name, count, size in groups:
            self._account(printable_namespace(name), -count, -(size - count * _crypto.OVERHEAD))
            self._count(printable_namespace(name), "expired", count)
            purged += count
        return int(purged)
