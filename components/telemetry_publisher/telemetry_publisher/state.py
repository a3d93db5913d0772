"""The small async persistence protocol the publisher's state goes through (sequence, budget, baselines).

    class StateStore(Protocol):
        async def load(self) -> bytes | None: ...   # None: never saved
        async def save(self, data: bytes) -> None: ...  # durable when it returns

`StoredValue` implements it over one key of a key-value store with `get_or_none` and `put` (the encrypted
store's client has both), so the component wires each piece of state with one line:

    sequence = SequenceAllocator(StoredValue(store, "sequence"))
"""

from __future__ import annotations

from typing import Protocol


class StateStore(Protocol):
    async def load(self) -> bytes | None: ...
    async def save(self, data: bytes) -> None: ...


class KeyValueStore(Protocol):
    async def get_or_none(self, key: str) -> bytes | None: ...
    async def put(self, key: str, value: bytes) -> None: ...


class StoredValue:
    """One key of a key-value store as a `StateStore`."""

    def __init__(self, store: KeyValueStore, key: str) -> None:
        self._store = store
        self.key = key

    def __repr__(self) -> str:
        return f"StoredValue({self.key!r})"

    async def load(self) -> bytes | None:
        return await self._store.get_or_none(self.key)

    async def save(self, data: bytes) -> None:
        await self._store.put(self.key, data)
