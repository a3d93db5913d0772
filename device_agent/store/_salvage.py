"""Salvage: read what can still be authenticated from a store that was moved aside as corrupt.

Rows are read in `seq` order until the first unreadable page, then backwards from the end until the same,
so one damaged region costs only the rows in it. Every value is opened with the old store's identity and
keys: a salvaged record is exactly what was written, or it is not salvaged. Expired records are left behind.
A store of the previous format (2) is salvaged the same way, its records opened as record format 1: that is
how such a store is migrated.

The copy is opened read-only (with the standard driver), so it stays as it was found: a read-write
connection would fold its WAL into it and delete the WAL at close, and with it the frames behind a damaged
one, the evidence of what was lost.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path

from device_agent.errors import DeviceAgentError
from device_agent.store import _crypto, _files, _records
from device_agent.store._db import (
    BUSY_TIMEOUT,
    Database,
    DriverFactory,
    ErrorKind,
    Row,
    Sqlite3Driver,
    classify_sqlite3,
    connect,
    lenient_text,
)
from device_agent.store._keyring import Keyring
from device_agent.store._keys import KeyEncryptionKey

logger = logging.getLogger(__name__)

# The store format before this one: its records (record format 1) are salvaged too, which migrates them.
LEGACY_STORE_FORMAT = 2


@dataclasses.dataclass(frozen=True)
class Salvaged:
    namespace: str
    kind: int
    key: str | None
    seq: int
    created: float
    expires: float | None
    value: bytes = dataclasses.field(repr=False)


@dataclasses.dataclass
class SalvageReport:
    salvaged: int = 0
    unreadable: int = 0
    scan_failed: bool = False


def salvage(
    path: Path, kek: KeyEncryptionKey, factory: DriverFactory, now: float, report: SalvageReport
) -> Iterator[Salvaged]:
    """Yield the records of the store at `path` that still open; `report` counts what did not."""
    try:
        _files.precreate(path)
        db = connect(ReadOnlyCopy if factory is Sqlite3Driver else factory, path)
    except (DeviceAgentError, OSError) as error:
        logger.warning("store.salvage_impossible", extra={"path": str(path), "error": type(error).__name__})
        report.scan_failed = True
        return
    try:
        ring = _open_keyring(db, kek)
        if ring is None:
            report.scan_failed = True
            return
        legacy = _is_store_format_2(db)
        last = -1
        try:
            for raw in db.rows(f"SELECT {_records.COLUMNS} FROM records ORDER BY seq"):  # noqa: S608
                item = _one(ring, raw, now, report, legacy=legacy)
                # A damaged page can hold a smaller number than the rows before it: the backward scan
                # starts past the largest, so no record is read twice.
                last = max(last, raw[0]) if isinstance(raw[0], int) else last
                if item is not None:
                    yield item
        except DeviceAgentError:
            report.scan_failed = True
        else:
            return
        with contextlib.suppress(DeviceAgentError):
            for raw in db.rows(
                f"SELECT {_records.COLUMNS} FROM records WHERE seq > ? ORDER BY seq DESC",  # noqa: S608
                (last,),
            ):
                item = _one(ring, raw, now, report, legacy=legacy)
                if item is not None:
                    yield item
    finally:
        with contextlib.suppress(DeviceAgentError):
            db.close()


class ReadOnlyCopy:
    """A `Driver` like the standard one, read-only (`mode=ro`): SQLite reads the copy's WAL but never
    checkpoints it into the copy or removes it."""

    def __init__(self, path: Path) -> None:
        self._connection = sqlite3.connect(
            f"{path.resolve().as_uri()}?mode=ro",
            uri=True,
            timeout=BUSY_TIMEOUT,
            isolation_level=None,
            check_same_thread=False,
        )
        # As the standard driver: damaged text reaches the row checks instead of failing the statement.
        self._connection.text_factory = lenient_text

    def execute(self, sql: str, params: Sequence[object] = ()) -> Iterator[Row]:
        cursor: Iterator[Row] = self._connection.execute(sql, params)
        return cursor

    def close(self) -> None:
        self._connection.close()

    def classify(self, error: BaseException) -> ErrorKind | None:
        return classify_sqlite3(error)


def _open_keyring(db: Database, kek: KeyEncryptionKey) -> Keyring | None:
    try:
        meta = {str(name): value for name, value in db.query("SELECT name, value FROM meta")}
        store_id, check = meta.get("store_id"), meta.get("kek_check")
        if (
            not isinstance(store_id, bytes)
            or not isinstance(check, bytes)
            or not kek.matches(check, store_id)
        ):
            return None
        ring = Keyring(db, kek, store_id, seal_limit=_crypto.DEFAULT_SEAL_LIMIT)
        ring.load()
    except DeviceAgentError:
        return None
    return ring


def _is_store_format_2(db: Database) -> bool:
    """Whether the copy is of store format 2, whose records are of record format 1."""
    try:
        return bool(db.scalar("PRAGMA user_version") == LEGACY_STORE_FORMAT)
    except DeviceAgentError:
        return False


def _one(
    ring: Keyring, raw: tuple[object, ...], now: float, report: SalvageReport, *, legacy: bool
) -> Salvaged | None:
    try:
        row = _records.parse(raw)
        value = _records.open_legacy_row(ring, row) if legacy else _records.open_row(ring, row)
    except DeviceAgentError:
        report.unreadable += 1
        return None
    if row.expired(now):
        return None
    report.salvaged += 1
    return Salvaged(row.namespace, row.kind, row.key, row.seq, row.created, row.expires, value)
