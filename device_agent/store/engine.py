"""The encrypted local store: keyed records and spool queues, sealed per record, durable on return.

    with Store.open(work_dir / "store") as store:           # KEK from work_dir/store/store.key
        store.put("settings", "mode", b"eco", ttl=3600)
        seq = store.append("telemetry", payload)
        batch = store.read_batch("telemetry", max_records=100, max_bytes=64_000)
        store.ack("telemetry", batch[-1][0])

Durability: `put`, `put_many`, `append`, `append_many`, `delete`, `ack` and the erases return only after
their transaction committed with `synchronous=FULL` in WAL mode, so the caller may acknowledge upstream. (A
write of one record that needs nothing else written is a single INSERT: SQLite's own transaction around
one statement, committed and synced the same way, without a BEGIN and a COMMIT of ours.)
Everything is synchronous and serialised by one lock; from a coroutine call it through `asyncio.to_thread`.

Sequence numbers are store-wide, strictly increasing, never reused (a reserved bound in the file covers every
number ever issued, also across drops, acks and crashes; a restart goes on past it, so numbers may skip); a
store rebuilt after corruption starts past the salvaged records and past the current time in microseconds,
so a consumer never sees a number twice unless the clock went back.

Failure rules: a record that fails authentication is counted and reported every time it is met; `get`
raises `IntegrityError` and leaves it to the caller; bulk operations (`read_batch`, `reencrypt`) delete it,
because it can never be read and would stall them. A file that fails its checks at open is moved aside,
salvaged and replaced (see `_lifecycle`). An I/O error closes the handle; reopen to go on.
"""

from __future__ import annotations

import contextlib
import errno
import logging
from collections.abc import Iterable, Sequence

from device_agent.errors import DeviceAgentError, IntegrityError, NotFoundError, StorageError
from device_agent.store import _crypto, _db, _records
from device_agent.store._keyring import Opener
from device_agent.store._maintenance import SELECT, Maintenance
from device_agent.store._model import (
    NamespacePolicy,
    NamespaceStats,
    StoreStats,
    check_count,
    check_items,
    check_key,
    check_namespace,
    check_record,
    check_ttl,
    check_value,
    printable_namespace,
)

logger = logging.getLogger(__name__)

_DROP_CHUNK = 64
_UNUSED = (0, 0)
# A get reads the sealed record alone: its header holds what the other columns index (see `_crypto`).
_GET = "SELECT sealed FROM records WHERE namespace = ? AND key = ?"
_SEQ_OF_KEY = "SELECT seq FROM records WHERE namespace = ? AND key = ?"
_FIND_KEYS = "SELECT seq, key, length(sealed) FROM records WHERE namespace = ? AND seq < ? AND key IN ({})"
_KEYS = (
    "SELECT key FROM records WHERE namespace = ? AND key IS NOT NULL"
    " AND (expires IS NULL OR expires > ?) ORDER BY key"
)
# Queue entries are the rows without a key; `records_key` holds them in (namespace, NULL, seq) order.
_QUEUE = f"{SELECT} WHERE namespace = ? AND key IS NULL AND (expires IS NULL OR expires > ?) ORDER BY seq"
_QUEUED_UP_TO = "namespace = ? AND key IS NULL AND seq <= ?"
_OLDEST_ENTRIES = (
    "SELECT seq, length(sealed) FROM records WHERE namespace = ? AND key IS NULL ORDER BY seq LIMIT ?"
)
# Keyed records have no (namespace, seq) index (it would cost every put a third page): the index gives the
# namespace's sequence numbers, sorted here; only the chosen rows are read.
_OLDEST_KEYED = (
    "SELECT seq, length(sealed) FROM records WHERE seq IN (SELECT seq FROM records"
    " WHERE namespace = ? AND key IS NOT NULL ORDER BY seq LIMIT ?) ORDER BY seq"
)


class _RejectedError(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Store(Maintenance):
    """An open store; make one with `Store.open` (see `StoreBase.open` for the options)."""

    # ---- keyed records -------------------------------------------------------------------------------

    def put(self, namespace: str, key: str, value: bytes, *, ttl: float | None = None) -> None:
        """Store `value` under `key` (replacing it); durable when this returns."""
        ns, name, data = check_record(namespace, key, value, self._max_value_bytes)
        policy = self._policies.get(ns, self._default_policy)
        life = policy.ttl if ttl is None else check_ttl(ttl)
        with self._lock:
            if ns not in self._replacing:
                spare = self._spare_key(ns, len(data), policy)
                if spare is not None:
                    if self._insert_alone(ns, name, data, life, spare) is not None:
                        return
                    self._replacing.add(ns)  # the key is taken: replace it in a transaction
            self._put_locked(ns, [(name, data)], len(data), life)

    def put_many(
        self, namespace: str, items: Iterable[tuple[str, bytes]], *, ttl: float | None = None
    ) -> None:
        """Store several records in one transaction: all of them, or none."""
        ns = check_namespace(namespace)
        self._put(ns, check_items(items, self._max_value_bytes), ttl)

    def _put(self, ns: str, checked: list[tuple[str, bytes]], ttl: float | None) -> None:
        life = self._ttl(ns, ttl)
        size = sum(len(value) for _, value in checked)
        with self._lock:
            self._put_locked(ns, checked, size, life)

    def _put_locked(self, ns: str, checked: list[tuple[str, bytes]], size: int, life: float | None) -> None:
        try:
            with self._write():
                now = self._clock()
                if self._fits(ns, len(checked), size):
                    self._put_all(ns, checked, size, now, life)
                    return
                for key, value in checked:
                    self._delete_keys(ns, [key])
                    self._make_room(ns, len(value), now)
                    self._insert(ns, _crypto.KIND_VALUE, [(key, value)], now=now, ttl=life)
        except _RejectedError as rejected:
            raise self._refused(ns, len(checked), rejected.reason) from None

    def _put_all(
        self, ns: str, checked: list[tuple[str, bytes]], size: int, now: float, life: float | None
    ) -> None:
        """No quota can be reached on the way: the same result as record by record, in bulk. A key given
        twice keeps its last value, in the place of its last occurrence.

        Keys that are taken must be found and their rows deleted. Usually the rows simply go in, skipping
        taken keys (SQLite's uniqueness check finds them, so new keys are not looked up twice), and only
        the skipped ones are replaced then. In a namespace whose last put replaced keys, the keys are
        looked up first instead (a skipped row would cost a wasted INSERT). Either way, the same result.
        """
        if len(checked) > 1:
            latest: dict[str, bytes] = {}
            for key, value in checked:
                latest.pop(key, None)
                latest[key] = value
            checked = list(latest.items())
            size = sum(len(value) for _, value in checked)
        first = self._take_seqs(len(checked))
        expires = None if life is None else now + life
        runs = _records.seal_rows(self._keyring, ns, _crypto.KIND_VALUE, first, checked, now, expires)
        self._account(ns, len(checked), size)
        if ns in self._replacing:
            if not self._delete_older(ns, [key for key, _ in checked], first):
                self._replacing.discard(ns)
            _records.insert(self._db, runs)
            return
        if _records.insert(self._db, runs, keep_existing=True) == len(checked):
            return
        self._replacing.add(ns)
        taken = {key for _, key in self._delete_older(ns, [key for key, _ in checked], first)}
        for run in runs:
            for row in run.rows():
                if row[2] in taken:
                    self._db.query(_records.INSERT, row)

    def get(self, namespace: str, key: str) -> bytes:
        """The value under `key`; `NotFoundError` if absent or expired, `IntegrityError` if tampered with."""
        ns, name = check_namespace(namespace), check_key(key)
        # The lock by hand: `with` costs a get about 1,100 instructions more (its enter and exit lookups).
        lock = self._lock
        lock.acquire()
        try:
            try:  # the read fast path: `Database.one` without its layer
                row = self._db.read_one(_GET, (ns, name))
            except Exception as error:
                self._db.translate(error)
                raise
            if row is None:
                raise NotFoundError(f"namespace {ns} has no key {name!r}")
            try:
                value, expires = _records.open_value(self._keyring, row[0], ns, name)
            except IntegrityError:
                self._integrity_failed(ns, self._seq_of_key(ns, name), "get")
                raise
            if expires is not None and expires <= self._clock():
                raise NotFoundError(f"namespace {ns} has no key {name!r}")
            return value
        finally:
            lock.release()

    def _seq_of_key(self, ns: str, name: str) -> object:
        """The row's sequence number, for the report of a get that failed (which read only `sealed`)."""
        try:
            return self._db.scalar(_SEQ_OF_KEY, (ns, name))
        except DeviceAgentError:
            return None

    def delete(self, namespace: str, key: str) -> bool:
        """Remove `key`; True if it was there."""
        ns, name = check_namespace(namespace), check_key(key)
        with self._lock, self._write():
            return self._delete_keys(ns, [name]) > 0

    def keys(self, namespace: str) -> list[str]:
        """The live keys of `namespace`, sorted (names only: nothing is decrypted)."""
        ns = check_namespace(namespace)
        with self._lock:
            rows = self._db.query(_KEYS, (ns, self._clock()))
        return [key for (key,) in rows if isinstance(key, str)]

    # ---- queues --------------------------------------------------------------------------------------

    def append(self, namespace: str, value: bytes, *, ttl: float | None = None) -> int:
        """Add `value` at the tail of the queue `namespace`; returns its sequence number, once durable."""
        ns = check_namespace(namespace)
        data = check_value(value, self._max_value_bytes)
        policy = self._policies.get(ns, self._default_policy)
        life = policy.ttl if ttl is None else check_ttl(ttl)
        with self._lock:
            spare = self._spare_key(ns, len(data), policy)
            if spare is not None:
                seq = self._insert_alone(ns, None, data, life, spare)
                if seq is not None:
                    return seq
            return self._append_locked(ns, [data], life)[0]

    def append_many(self, namespace: str, values: Iterable[bytes], *, ttl: float | None = None) -> list[int]:
        """Append several values in one transaction (all or none); their sequence numbers, in order."""
        ns = check_namespace(namespace)
        return self._append(ns, [check_value(value, self._max_value_bytes) for value in values], ttl)

    def _append(self, ns: str, checked: list[bytes], ttl: float | None) -> list[int]:
        life = self._ttl(ns, ttl)
        with self._lock:
            return self._append_locked(ns, checked, life)

    def _append_locked(self, ns: str, checked: list[bytes], life: float | None) -> list[int]:
        try:
            with self._write():
                now = self._clock()
                if self._fits(ns, len(checked), sum(map(len, checked))):
                    first = self._insert(
                        ns, _crypto.KIND_QUEUE, [(None, v) for v in checked], now=now, ttl=life
                    )
                    return list(range(first, first + len(checked)))
                seqs = []
                for value in checked:
                    self._make_room(ns, len(value), now)
                    seqs.append(self._insert(ns, _crypto.KIND_QUEUE, [(None, value)], now=now, ttl=life))
                return seqs
        except _RejectedError as rejected:
            raise self._refused(ns, len(checked), rejected.reason) from None

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
            with contextlib.closing(self._db.rows(_QUEUE, (ns, self._clock()))) as rows:
                for raw in rows:
                    try:
                        row = _records.parse(raw)
                        value = _records.open_row(self._keyring, row, namespace=ns, kind=_crypto.KIND_QUEUE)
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
        params = (ns, up_to_seq)
        with self._lock, self._write():
            count, size = self._db.query(
                f"SELECT count(*), coalesce(sum(length(sealed)), 0) FROM records WHERE {_QUEUED_UP_TO}",  # noqa: S608
                params,
            )[0]
            if count:
                self._db.query(f"DELETE FROM records WHERE {_QUEUED_UP_TO}", params)  # noqa: S608
                self._account(ns, -count, -(size - count * _crypto.RECORD_OVERHEAD))
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

    def _refused(self, ns: str, records: int, reason: str) -> StorageError:
        """An overflow refusal, after its transaction rolled back: counted, and `StorageError(EDQUOT)`."""
        self._count(ns, "rejected", records, pending=False)
        logger.warning("store.quota_rejected", extra={"namespace": ns, "records": records})
        return StorageError(f"namespace {ns}: {reason}", errno_value=errno.EDQUOT)

    def _fits(self, ns: str, records: int, size: int) -> bool:
        """Whether `records` of `size` value bytes fit under the namespace's quota even if nothing they
        replace is deleted first (then no quota check on the way can fail or drop anything)."""
        policy = self.policy(ns)
        count, total = self._usage.get(ns, (0, 0))
        return (policy.max_records is None or count + records <= policy.max_records) and (
            policy.max_bytes is None or total + size <= policy.max_bytes
        )

    def _spare_key(self, ns: str, size: int, policy: NamespacePolicy) -> tuple[int, Opener] | None:
        """The data key (id and opener) to seal one record that can be written as one statement, in
        SQLite's own transaction (as durable as ours: WAL, synchronous=FULL, committed before the statement
        returns), with its seal counted; None if it cannot: something else needs writing with it (a
        sequence or seal bound) or a quota is in reach (`_fits`, inline)."""
        if self._in_write or self._next_seq > self._seq_reserved:
            return None
        if (policy.max_records is None and policy.max_bytes is None) or self._fits(ns, 1, size):
            return self._keyring.take_spare(ns)
        return None

    def _insert_alone(
        self, ns: str, key: str | None, value: bytes, life: float | None, spare: tuple[int, Opener]
    ) -> int | None:
        """Seal and write one record as one statement under the key `_spare_key` gave; its sequence number,
        or None (and nothing written) if its key is taken. Skips BEGIN and COMMIT and takes the shortest way
        through the code: a single put or append runs it on every call, often with its caches cold after
        waiting for the disk, where each function, object and statement it touches costs."""
        now = self._clock()
        seq = self._next_seq
        self._next_seq = seq + 1  # taken even if the INSERT fails: a number is never offered twice
        key_id, opener = spare
        expires = None if life is None else now + life
        sealed = _crypto.seal_record(opener.aead, opener.aad_prefix, key_id, seq, key, value, now, expires)
        # The row without its NULL columns (see `_records.ALONE`).
        row: tuple[object, ...]
        if expires is None:
            row = (seq, ns, key_id, now, sealed) if key is None else (seq, ns, key, key_id, now, sealed)
        elif key is None:
            row = (seq, ns, key_id, now, expires, sealed)
        else:
            row = (seq, ns, key, key_id, now, expires, sealed)
        if self._db.write(_records.ALONE[key is not None, expires is not None], row) == 0:
            return None
        count, size = self._usage.get(ns, _UNUSED)  # `_account`, inline
        self._usage[ns] = (count + 1, size + len(value))
        return seq

    def _insert(
        self,
        ns: str,
        kind: int,
        entries: Sequence[tuple[str | None, bytes]],
        *,
        now: float,
        ttl: float | None,
    ) -> int:
        """Seal and insert `(key, value)` entries of one namespace; the first of their sequence numbers."""
        first = self._take_seqs(len(entries))
        expires = None if ttl is None else now + ttl
        _records.insert(self._db, _records.seal_rows(self._keyring, ns, kind, first, entries, now, expires))
        self._account(ns, len(entries), sum(len(value) for _, value in entries))
        return first

    def _delete_keys(self, ns: str, keys: list[str]) -> int:
        """Delete the records under `keys` (distinct) of `ns`; returns how many there were."""
        return len(self._delete_older(ns, keys, self._next_seq))

    def _delete_older(self, ns: str, keys: list[str], before: int) -> list[tuple[int, str]]:
        """Delete the records of `ns` under `keys` (distinct) numbered below `before`: (seq, key) of each."""
        found: list[tuple[int, str, int]] = []
        start = 0
        while start < len(keys):
            count = _records.piece(len(keys) - start)
            found += self._db.query(
                _FIND_KEYS.format(_records.placeholders(count)), [ns, before, *keys[start : start + count]]
            )
            start += count
        if found:
            self._delete_seqs([seq for seq, _, _ in found])
            self._account(
                ns, -len(found), -sum(int(length) - _crypto.RECORD_OVERHEAD for _, _, length in found)
            )
        return [(seq, key) for seq, key, _ in found]

    def _delete_seqs(self, seqs: list[int]) -> None:
        start = 0
        while start < len(seqs):
            count = _records.piece(len(seqs) - start)
            self._db.query(
                f"DELETE FROM records WHERE seq IN ({_records.placeholders(count)})",  # noqa: S608
                seqs[start : start + count],
            )
            start += count

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
            rows = self._oldest(ns)
            if not rows:
                break
            count, total = self._usage.get(ns, (0, 0))
            doomed = []
            for seq, length in rows:
                value_bytes = int(length) - _crypto.RECORD_OVERHEAD
                count, total = count - 1, total - value_bytes
                dropped, dropped_bytes = dropped + 1, dropped_bytes + value_bytes
                doomed.append(seq)
                self._usage[ns] = (count, total)
                if not self._over(ns, size, policy):
                    break
            self._delete_seqs(doomed)
        self._count(ns, "dropped_records", dropped)
        self._count(ns, "dropped_bytes", dropped_bytes)
        self._report(
            "store.records_dropped", logging.INFO, namespace=ns, records=dropped, bytes=dropped_bytes
        )

    def _oldest(self, ns: str) -> list[tuple[int, int]]:
        """(seq, sealed length) of the oldest records of `ns`, oldest first, at most `_DROP_CHUNK`."""
        rows = self._db.query(_OLDEST_ENTRIES, (ns, _DROP_CHUNK))
        rows += self._db.query(_OLDEST_KEYED, (ns, _DROP_CHUNK))
        return sorted(rows)[:_DROP_CHUNK]

    def _purge(self, now: float, ns: str | None) -> int:
        # Only expired records are read: without the index named, SQLite prefers the namespace's equality
        # and scans all its records, on every write that reaches a quota.
        where = "expires IS NOT NULL AND expires <= ?" + ("" if ns is None else " AND namespace = ?")
        params: tuple[object, ...] = (now,) if ns is None else (now, ns)
        groups = self._db.query(
            "SELECT namespace, count(*), coalesce(sum(length(sealed)), 0)"  # noqa: S608 - constant
            f" FROM records INDEXED BY records_expires WHERE {where} GROUP BY namespace",
            params,
        )
        if not groups:
            return 0
        self._db.query(f"DELETE FROM records INDEXED BY records_expires WHERE {where}", params)  # noqa: S608
        purged = 0
        for name, count, size in groups:
            self._account(printable_namespace(name), -count, -(size - count * _crypto.RECORD_OVERHEAD))
            self._count(printable_namespace(name), "expired", count)
            purged += count
        return int(purged)
