"""Opening, recovering and closing a store, and the bookkeeping every operation shares.

Open: make the directory 0700; load the KEK (a malformed key file is set aside and replaced); pre-create the
database, -wal and -shm 0600 and check them (no links, ours, private); check that the WAL holds no committed
transaction SQLite would drop behind a damaged frame (`_wal`); connect; set and read back WAL and
`synchronous=FULL`; run `integrity_check`; check the file's identity (application id, format) and that the
KEK opens its check value; load the data keys, the sequence bound and per-namespace usage; purge expired
records. A file of another format (format 1 included) is recovered like a damaged one, its records salvaged.

Sequence numbers are reserved like seal counts (see `_keyring`): `meta.seq_reserved` bounds every number
ever issued, is raised `SEQ_RESERVATION` ahead in the transaction that needs it, and an opened store goes on
past it, so no number is issued twice whatever crashed (AUTOINCREMENT would write its counter every time).

Recovery: when any check fails, the database (with its -wal and -shm) is renamed to
`<name>.corrupt-<UTC stamp>`, a new store is created, the records that still authenticate are copied into it
(re-sealed under new keys), older set-aside copies beyond `keep_corrupt` are deleted, and one
`store.corrupt_replaced` event is reported. Recovery happens at most once per open and never loops: a store
that cannot be created fresh is a `StorageError` of the disk, not a corruption.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Self

from device_agent.errors import DeviceAgentError, IntegrityError
from device_agent.fileio import StrPath
from device_agent.files import ensure_private_dir
from device_agent.store import _crypto, _db, _files, _records, _wal
from device_agent.store._db import CorruptStoreError, Database, DriverFactory, Sqlite3Driver
from device_agent.store._keyring import Keyring
from device_agent.store._keys import KekSource, KeyEncryptionKey, KeyFile
from device_agent.store._model import (
    DEFAULT_MAX_VALUE_BYTES,
    EventHook,
    NamespacePolicy,
    StoreEvent,
    check_namespace,
    printable_namespace,
)
from device_agent.store._salvage import Salvaged, SalvageReport, salvage

logger = logging.getLogger(__name__)

DEFAULT_NAME = "store.db"
KEY_FILE_NAME = "store.key"
_SALVAGE_BATCH = 256
_SALVAGED_INSERT = f"INSERT OR IGNORE INTO records({_records.COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)"  # noqa: S608
# Sequence numbers reserved per write of `meta.seq_reserved`: one small UPDATE per 4096 records. A store
# that opens goes on past the bound, so a number is never issued twice, whatever crashed; a restart skips
# at most this many numbers (they are 64-bit).
SEQ_RESERVATION = 4096
_COUNTERS = ("dropped_records", "dropped_bytes", "rejected", "expired", "integrity_failures")


class StoreBase:
    """State and lifecycle of an open store; `Store` adds the operations."""

    def __init__(
        self,
        path: Path,
        kek_source: KekSource,
        *,
        policies: Mapping[str, NamespacePolicy],
        default_policy: NamespacePolicy,
        on_event: EventHook | None,
        clock: Callable[[], float],
        seal_limit: int,
        driver: DriverFactory,
        keep_corrupt: int,
        max_value_bytes: int,
    ) -> None:
        self._path = path
        self._kek_source = kek_source
        self._policies = {check_namespace(ns): policy for ns, policy in policies.items()}
        self._default_policy = default_policy
        self._on_event = on_event
        self._clock = clock
        self._seal_limit = seal_limit
        self._driver = driver
        self._keep_corrupt = keep_corrupt
        self._max_value_bytes = max_value_bytes
        self._lock = threading.RLock()
        self._usage: dict[str, tuple[int, int]] = {}
        self._counters: dict[str, dict[str, int]] = {}
        self._pending_counts: list[tuple[str, str, int]] = []
        self._pending_events: list[tuple[StoreEvent, int]] = []
        self._in_write = False
        self._next_seq = 1
        self._seq_reserved = 0
        self._integrity_total = 0
        self._recoveries = 0
        self._reencrypt_cursor = _records.REENCRYPT_START
        # Namespaces whose last put replaced a key (a hint for `Store._put_all`, never a fact it relies on).
        self._replacing: set[str] = set()
        self._saved: tuple[dict[str, tuple[int, int]], int, int] = ({}, 1, 0)
        # Set by _bind; every public path runs after a successful open.
        self._db: Database
        self._store_id: bytes
        self._keyring: Keyring
        self._transaction: WriteTransaction

    @classmethod
    def open(
        cls,
        directory: StrPath,
        *,
        kek: KekSource | None = None,
        name: str = DEFAULT_NAME,
        policies: Mapping[str, NamespacePolicy] | None = None,
        default_policy: NamespacePolicy | None = None,
        on_event: EventHook | None = None,
        clock: Callable[[], float] = time.time,
        seal_limit: int = _crypto.DEFAULT_SEAL_LIMIT,
        driver: DriverFactory = Sqlite3Driver,
        keep_corrupt: int = 2,
        max_value_bytes: int = DEFAULT_MAX_VALUE_BYTES,
    ) -> Self:
        """Open (creating, or recovering) the store `name` in `directory`.

        - `kek`: where the key-encryption key comes from; default `KeyFile(directory / "store.key")`.
        - `policies`, `default_policy`: quotas, overflow and time-to-live per namespace (see `set_policy`).
        - `on_event`: called with each `StoreEvent` (corruption replaced, integrity failure, drops).
        - `clock`: wall-clock seconds for times and expiry (records outlive the process, so not monotonic).
        - `seal_limit`: seals per data key before a new one is made (far under GCM's 2^32).
        - `driver`: the SQL seam (see `_db.Driver`); `keep_corrupt`: set-aside copies kept for forensics.
        """
        if seal_limit < 1 or keep_corrupt < 0 or max_value_bytes < 1:
            raise ValueError("seal_limit and max_value_bytes are at least 1, keep_corrupt at least 0")
        folder = ensure_private_dir(directory)
        store = cls(
            folder / _files.clean_name(name),
            kek if kek is not None else KeyFile(folder / KEY_FILE_NAME),
            policies=policies or {},
            default_policy=default_policy or NamespacePolicy(),
            on_event=on_event,
            clock=clock,
            seal_limit=seal_limit,
            driver=driver,
            keep_corrupt=keep_corrupt,
            max_value_bytes=max_value_bytes,
        )
        store._open()
        return store

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"{type(self).__name__}({str(self._path)!r}, {state})"

    @property
    def path(self) -> Path:
        return self._path

    @property
    def closed(self) -> bool:
        return not hasattr(self, "_db") or self._db.closed

    def close(self) -> None:
        with self._lock:
            if hasattr(self, "_db"):
                self._db.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()

    def policy(self, namespace: str) -> NamespacePolicy:
        return self._policies.get(namespace, self._default_policy)

    def set_policy(self, namespace: str, policy: NamespacePolicy | None) -> None:
        """Replace the policy of `namespace` (None: back to the default). Applies from the next write."""
        with self._lock:
            ns = check_namespace(namespace)
            if policy is None:
                self._policies.pop(ns, None)
            else:
                self._policies[ns] = policy

    # ---- opening and recovery ------------------------------------------------------------------------

    def _open(self) -> None:
        kek = self._load_kek()
        try:
            self._attach(kek)
        except CorruptStoreError as corrupt:
            self._recover(kek, corrupt.reason)
        with self._write():
            self._purge(self._clock(), None)

    def _load_kek(self) -> KeyEncryptionKey:
        try:
            return self._kek_source.load()
        except IntegrityError:
            if not isinstance(self._kek_source, KeyFile):
                raise
            moved = self._kek_source.set_aside(_files.CORRUPT_MARK + _files.stamp(time.time()))
            self._report("store.key_replaced", logging.WARNING, moved_to=moved.name)
            return self._kek_source.load()

    def _connect(self) -> tuple[Database, bool]:
        """A configured, checked connection, and whether the file already holds a store."""
        new_file = _files.precreate(self._path)
        # Before SQLite replays the WAL (and the next write overwrites what lies past where it stopped).
        damaged = _wal.damage(self._path.with_name(self._path.name + "-wal"))
        if damaged is not None:
            raise CorruptStoreError(damaged)
        db = _db.connect(self._driver, self._path)
        try:
            try:
                _db.configure(db)
                existing = _db.check(db)
            except (IntegrityError, _db.DatabaseFailureError) as error:
                raise CorruptStoreError("unreadable database") from error
            if not existing and not new_file:
                raise CorruptStoreError("store file has no content")
        except BaseException:
            with contextlib.suppress(DeviceAgentError):
                db.close()
            raise
        return db, existing

    def _attach(self, kek: KeyEncryptionKey) -> None:
        db, existing = self._connect()
        try:
            store_id = self._identify(db, kek) if existing else self._initialise(db, kek, first_seq=1)
            self._bind(db, kek, store_id)
        except BaseException:
            with contextlib.suppress(DeviceAgentError):
                db.close()
            raise

    @staticmethod
    def _initialise(db: Database, kek: KeyEncryptionKey, first_seq: int) -> bytes:
        store_id = os.urandom(_crypto.STORE_ID_BYTES)
        _db.create_schema(db, {"store_id": store_id, "kek_check": kek.check_value(store_id)}, first_seq)
        return store_id

    @staticmethod
    def _identify(db: Database, kek: KeyEncryptionKey) -> bytes:
        try:
            meta = {str(name): value for name, value in db.query("SELECT name, value FROM meta")}
        except (IntegrityError, _db.DatabaseFailureError) as error:
            raise CorruptStoreError("unreadable metadata") from error
        store_id, check = meta.get("store_id"), meta.get("kek_check")
        reserved = meta.get(_db.SEQ_RESERVED)
        if (
            not isinstance(store_id, bytes)
            or len(store_id) != _crypto.STORE_ID_BYTES
            or not isinstance(check, bytes)
            or type(reserved) is not int
            or reserved < 0
        ):
            raise CorruptStoreError("metadata is damaged")
        if not kek.matches(check, store_id):
            raise CorruptStoreError("the key-encryption key does not open this store")
        return store_id

    def _bind(self, db: Database, kek: KeyEncryptionKey, store_id: bytes) -> None:
        keyring = Keyring(db, kek, store_id, self._seal_limit)
        try:
            malformed = keyring.load()
            usage: dict[str, tuple[int, int]] = {}
            for ns, count, size in db.query(
                "SELECT namespace, count(*), coalesce(sum(length(sealed)), 0) FROM records GROUP BY namespace"
            ):
                name = printable_namespace(ns)
                previous = usage.get(name, (0, 0))
                value_bytes = int(size) - int(count) * _crypto.RECORD_OVERHEAD
                usage[name] = (previous[0] + int(count), previous[1] + value_bytes)
            reserved = db.scalar("SELECT value FROM meta WHERE name = ?", (_db.SEQ_RESERVED,))
            highest = db.scalar("SELECT max(seq) FROM records")
        except (IntegrityError, _db.DatabaseFailureError) as error:
            raise CorruptStoreError("unreadable records") from error
        if malformed:
            logger.warning("store.data_keys_malformed", extra={"keys": malformed})
        self._db, self._store_id, self._keyring, self._usage = db, store_id, keyring, usage
        # One object serves every transaction (they never nest): it holds no state of its own.
        self._transaction = WriteTransaction(db, self._start_write, self._settle, self._undo)
        # Numbers up to the reserved bound may have been issued and acknowledged (then acked or dropped):
        # go on past it. A row past the bound cannot come from this engine, but is not reissued either.
        self._seq_reserved = max(v for v in (reserved, highest, 0) if isinstance(v, int))
        self._next_seq = self._seq_reserved + 1
        self._reencrypt_cursor = _records.REENCRYPT_START

    def _recover(self, kek: KeyEncryptionKey, reason: str) -> None:
        moved = _files.move_aside(self._path, time.time())
        logger.warning("store.corrupt_moved_aside", extra={"reason": reason, "moved_to": moved.name})
        db, existing = self._connect()
        try:
            if existing:
                raise IntegrityError(f"{self._path}: a store file reappeared during recovery")
            floor = max(1, int(self._clock() * 1_000_000))
            self._bind(db, kek, self._initialise(db, kek, first_seq=floor))
        except BaseException:
            with contextlib.suppress(DeviceAgentError):
                db.close()
            raise
        report = SalvageReport()
        batch: list[Salvaged] = []
        for item in salvage(moved, kek, self._driver, self._clock(), report):
            batch.append(item)
            if len(batch) >= _SALVAGE_BATCH:
                self._insert_salvaged(batch)
                batch = []
        self._insert_salvaged(batch)
        _files.prune_corrupt(self._path.parent, self._side_names(), self._keep_corrupt)
        self._recoveries += 1
        self._report(
            "store.corrupt_replaced",
            logging.WARNING,
            moved_to=moved.name,
            reason=reason,
            salvaged=report.salvaged,
            unreadable=report.unreadable,
            scan_failed=int(report.scan_failed),
        )

    def _insert_salvaged(self, batch: list[Salvaged]) -> None:
        if not batch:
            return
        with self._write():
            self._cover_seq(max(item.seq for item in batch))
            for item in batch:
                key_id, sealed = _records.seal_row(
                    self._keyring,
                    seq=item.seq,
                    namespace=item.namespace,
                    key=item.key,
                    created=item.created,
                    expires=item.expires,
                    value=item.value,
                )
                # A damaged b-tree can hand salvage one record twice: the second is skipped, not an error
                # that would fail the open.
                if self._db.write(
                    _SALVAGED_INSERT,
                    (item.seq, item.namespace, item.key, key_id, item.created, item.expires, sealed),
                ):
                    self._account(item.namespace, 1, len(item.value))

    def _side_names(self) -> tuple[str, ...]:
        if isinstance(self._kek_source, KeyFile):
            return (self._path.name, self._kek_source.path.name)
        return (self._path.name,)

    # ---- transactions, accounting and reporting ------------------------------------------------------

    def _take_seqs(self, count: int) -> int:
        """The first of `count` new sequence numbers (inside a transaction), reserving more as needed."""
        first = self._next_seq
        self._next_seq = first + count
        if self._next_seq > self._seq_reserved + 1:
            self._cover_seq(self._next_seq - 1)
        return first

    def _cover_seq(self, seq: int) -> None:
        """Make sure the reserved bound covers `seq` (inside the transaction that uses it)."""
        if seq > self._seq_reserved:
            bound = seq + SEQ_RESERVATION - 1
            self._db.query("UPDATE meta SET value = ? WHERE name = ?", (bound, _db.SEQ_RESERVED))
            self._seq_reserved = bound
        self._next_seq = max(self._next_seq, seq + 1)

    def _write(self) -> WriteTransaction:
        """A write transaction; on failure every in-memory view is put back as it was before it."""
        return self._transaction

    def _start_write(self) -> None:
        if self._in_write:
            raise RuntimeError("write transactions do not nest")
        self._keyring.begin()
        self._saved = (dict(self._usage), self._next_seq, self._seq_reserved)
        self._in_write = True

    def _undo(self) -> None:
        self._in_write = False
        self._keyring.roll_back()
        self._usage, self._next_seq, self._seq_reserved = self._saved
        self._pending_counts.clear()
        self._pending_events.clear()

    def _settle(self) -> None:
        """After a commit: the counts and events its transaction held back take effect."""
        self._in_write = False
        if self._pending_counts:
            counts, self._pending_counts = self._pending_counts, []
            for ns, counter, amount in counts:
                self._count(ns, counter, amount, pending=False)
        if self._pending_events:
            events, self._pending_events = self._pending_events, []
            for event, level in events:
                self._deliver(event, level)

    def _account(self, ns: str, records: int, value_bytes: int) -> None:
        count, size = self._usage.get(ns, (0, 0))
        count, size = count + records, size + value_bytes
        if count <= 0:
            self._usage.pop(ns, None)
        else:
            self._usage[ns] = (count, max(0, size))

    def _count(self, ns: str, counter: str, amount: int, *, pending: bool = True) -> None:
        if amount <= 0:
            return
        if pending and self._in_write:
            self._pending_counts.append((ns, counter, amount))
            return
        counters = self._counters.setdefault(ns, dict.fromkeys(_COUNTERS, 0))
        counters[counter] += amount

    def _integrity_failed(self, ns: str, seq: object, operation: str) -> None:
        # Counted and reported at once, even inside a transaction that later rolls back: it was seen.
        self._integrity_total += 1
        self._count(ns, "integrity_failures", 1, pending=False)
        event = StoreEvent(
            "store.integrity_failed",
            {"namespace": ns, "seq": seq if isinstance(seq, int) else -1, "operation": operation},
        )
        self._deliver(event, logging.WARNING)

    def _report(self, name: str, level: int, **details: str | float) -> None:
        event = StoreEvent(name, details)
        if self._in_write:
            self._pending_events.append((event, level))
        else:
            self._deliver(event, level)

    def _deliver(self, event: StoreEvent, level: int) -> None:
        logger.log(level, event.name, extra=dict(event.details))
        if self._on_event is None:
            return
        try:
            self._on_event(event)
        except Exception as error:  # noqa: BLE001 - a faulty observer must not break the store
            logger.warning(
                "store.event_hook_failed", extra={"event": event.name, "error": type(error).__name__}
            )

    def _purge(self, now: float, ns: str | None) -> int:
        raise NotImplementedError


class WriteTransaction:
    """`with store._write():` BEGIN IMMEDIATE … COMMIT around the body: `start` readies the store's views,
    `settle` runs once the commit is durable, `undo` puts the views back if the transaction rolled back.

    A class rather than a generator-based context manager: it runs around every write, and this is a few
    microseconds cheaper.
    """

    __slots__ = ("_db", "_settle", "_start", "_undo")

    def __init__(
        self, db: Database, start: Callable[[], None], settle: Callable[[], None], undo: Callable[[], None]
    ) -> None:
        self._db, self._start, self._settle, self._undo = db, start, settle, undo

    def __enter__(self) -> None:
        self._start()
        try:
            self._db.begin()
        except BaseException:
            self._undo()
            raise

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        if kind is not None:
            self._db.rollback()
            self._undo()
            return
        try:
            self._db.commit()
        except BaseException:
            self._undo()
            raise
        self._settle()
