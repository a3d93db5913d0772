"""Fixtures for the store engine tests: a private directory, a settable clock, a fixed KEK."""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from device_agent.store import SecretKekSource, Store
from device_agent.store._db import Row, Sqlite3Driver

SECRET = b"0123456789abcdef-test-secret-for-the-kek"


class Clock:
    """Wall-clock seconds the test moves by hand (records outlive processes, so the store uses wall time)."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class InterceptingDriver(Sqlite3Driver):
    """The real driver, showing every statement to `intercept` first, whichever way it runs (`execute`, or
    the kept cursors of `fetch`, `fetch_one` and `write`): tests subclass it to watch statements or fail
    them."""

    def intercept(self, sql: str) -> list[Row] | None:
        """Raise to fail `sql`; return rows to answer a query in its place; None to run it."""
        return None

    def execute(self, sql: str, params: Sequence[object] = ()) -> Iterator[Row]:
        answer = self.intercept(sql)
        return iter(answer) if answer is not None else super().execute(sql, params)

    def fetch(self, sql: str, params: Sequence[object] = ()) -> list[Row]:
        answer = self.intercept(sql)
        return answer if answer is not None else super().fetch(sql, params)

    def fetch_one(self, sql: str, params: Sequence[object] = ()) -> Row | None:
        answer = self.intercept(sql)
        if answer is None:
            return super().fetch_one(sql, params)
        return answer[0] if answer else None

    def write(self, sql: str, params: Sequence[object] = ()) -> int:
        if self.intercept(sql) is not None:
            raise AssertionError("a write statement has no rows to answer with")
        return super().write(sql, params)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def scratch(tmp_path: Path) -> Iterator[Path]:
    """A directory in memory (tmpfs) where the system has one: the tamper loops open thousands of stores,
    and what they test is the store's answers, not the disk's fsync latency."""
    shm = Path("/dev/shm")  # the standard Linux tmpfs mount, used only if present
    if not (shm.is_dir() and os.access(shm, os.W_OK)):
        yield tmp_path
        return
    directory = Path(tempfile.mkdtemp(prefix="store-tests-", dir=shm))
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def store_dir(tmp_path: Path) -> Path:
    return tmp_path / "store"


@pytest.fixture
def open_store(store_dir: Path, clock: Clock) -> Iterator[Any]:
    """`open_store(**options)` opens a store in `store_dir` with the test clock; all are closed at the end."""
    opened: list[Store] = []

    def make(**options: Any) -> Store:
        options.setdefault("clock", clock)
        directory = options.pop("directory", store_dir)
        store = Store.open(directory, **options)
        opened.append(store)
        return store

    yield make
    for store in opened:
        store.close()


def secret_kek() -> SecretKekSource:
    return SecretKekSource(lambda: SECRET)


@contextlib.contextmanager
def raw_db(path: Path) -> Iterator[sqlite3.Connection]:
    """A plain connection for editing a closed store's file the way an attacker would (committed on exit)."""
    connection = sqlite3.connect(path, isolation_level=None)
    try:
        yield connection
    finally:
        connection.close()
