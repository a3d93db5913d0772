"""Engine events (from the store's thread) to `device-agent/events`, without flooding the bus.

Integrity failures and corruption recoveries are published as they happen, but at most one per event name
every `MIN_GAP_SECONDS`; the ones held back are counted into the next. Drops under a `drop_oldest` policy
happen on every write of a full namespace, so they are summed per namespace and published once per
`MIN_GAP_SECONDS` at most.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from typing import Any

from device_agent.component import Context
from device_agent.messages import Category, Severity
from device_agent.store import StoreEvent

logger = logging.getLogger(__name__)

MIN_GAP_SECONDS = 10.0
_DESCRIPTIONS: dict[str, tuple[Category, Severity, str]] = {
    "store.integrity_failed": (
        Category.INTEGRITY,
        Severity.CRITICAL,
        "A stored record failed authentication: it was set aside and never returned.",
    ),
    "store.corrupt_replaced": (
        Category.INTEGRITY,
        Severity.CRITICAL,
        "The store file failed its checks: it was moved aside, readable records were salvaged.",
    ),
    "store.key_replaced": (
        Category.INTEGRITY,
        Severity.CRITICAL,
        "The key file failed its check and was replaced: records under the old key cannot be read.",
    ),
    "store.corrupt_copies_destroyed": (
        Category.SECURITY,
        Severity.WARNING,
        "A wipe also destroyed the copies of the store set aside after corruption: they held wiped records.",
    ),
    "store.records_dropped": (
        Category.HEALTH,
        Severity.WARNING,
        "A full namespace dropped its oldest records to make room, as its policy says.",
    ),
}


class EventRelay:
    """Thread-safe intake (`from_engine`), rate-limited output (`run`, a task on the component's loop)."""

    def __init__(self) -> None:
        self.ctx: Context[Any] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._inbox: asyncio.Queue[StoreEvent] = asyncio.Queue()
        self._last_sent: dict[str, float] = {}
        self._held: collections.Counter[str] = collections.Counter()
        self._drops: dict[str, list[int]] = {}
        self._pending_details: dict[str, dict[str, Any]] = {}
        self.published = 0

    def bind(self, ctx: Context[Any]) -> None:
        self.ctx = ctx
        self._loop = asyncio.get_running_loop()

    def from_engine(self, event: StoreEvent) -> None:
        """Called by the engine on its own thread."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._inbox.put_nowait, event)

    async def run(self) -> None:
        while True:
            try:
                event = await asyncio.wait_for(self._inbox.get(), timeout=MIN_GAP_SECONDS)
            except TimeoutError:
                event = None
            if event is not None:
                self._take(event)
            await self._flush()

    def _take(self, event: StoreEvent) -> None:
        if event.name == "store.records_dropped":
            namespace = str(event.details.get("namespace", ""))
            totals = self._drops.setdefault(namespace, [0, 0])
            totals[0] += int(event.details.get("records", 0))
            totals[1] += int(event.details.get("bytes", 0))
            return
        self._held[event.name] += 1
        self._pending_details[event.name] = dict(event.details)

    async def _flush(self) -> None:
        now = time.monotonic()
        for name in list(self._held):
            if now - self._last_sent.get(name, -MIN_GAP_SECONDS) < MIN_GAP_SECONDS:
                continue
            count = self._held.pop(name)
            details = self._pending_details.pop(name, {})
            await self._emit(name, occurrences=count, **details)
            self._last_sent[name] = now
        drops_name = "store.records_dropped"
        if self._drops and now - self._last_sent.get(drops_name, -MIN_GAP_SECONDS) >= MIN_GAP_SECONDS:
            drops, self._drops = self._drops, {}
            for namespace, (records, size) in sorted(drops.items()):
                await self._emit(drops_name, namespace=namespace, records=records, bytes=size)
            self._last_sent[drops_name] = now

    async def _emit(self, name: str, **details: Any) -> None:
        ctx = self.ctx
        if ctx is None:
            return
        category, severity, message = _DESCRIPTIONS.get(
            name, (Category.INTEGRITY, Severity.WARNING, "The store reported an event.")
        )
        clean = {k: v for k, v in details.items() if isinstance(v, str | int | float | bool) or v is None}
        await ctx.emit_event(name, category=category, severity=severity, message=message, **clean)
        self.published += 1
