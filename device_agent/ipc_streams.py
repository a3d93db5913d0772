"""Stream subscriptions of the IPC session: SDK callbacks marshalled onto the loop, handlers run in order.

The SDK calls a stream handler on its network thread. Each event is handed to the session's loop with
`call_soon_threadsafe` and queued on its `Subscription`; one task per subscription, owned by the session,
converts the event to a plain value and calls the component's handler (sync, or async and awaited), so
events of one stream reach the handler in wire order and a slow handler never blocks the network thread.
A handler that raises is logged and the stream goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

logger = logging.getLogger(__name__)

T = TypeVar("T")
Handler = Callable[[T], Awaitable[None] | None]


class SdkStreamHandler:
    """Given to the SDK for one stream on one connection; every callback runs on the SDK's thread."""

    def __init__(
        self, subscription: Subscription[Any], loop: asyncio.AbstractEventLoop, generation: int
    ) -> None:
        self._subscription = subscription
        self._loop = loop
        self._generation = generation

    def on_stream_event(self, event: Any) -> None:
        self._post(self._subscription.deliver, self._generation, event)

    def on_stream_error(self, error: Exception) -> bool:
        self._post(self._subscription.stream_error, type(error).__name__)
        return False  # one malformed event must not end the subscription

    def on_stream_closed(self) -> None:
        self._post(self._subscription.stream_closed, self._generation)

    def _post(self, callback: Callable[..., None], *args: Any) -> None:
        # The loop may be closed when a late callback arrives after the session ended; nothing to do then.
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(callback, *args)


class Subscription(Generic[T]):
    """A stream subscription that the session re-establishes after every reconnection.

    `active` is False while the connection is down, after the nucleus ended the stream, or after a failed
    re-subscription (`last_error` then says why). `close()` unsubscribes for good.
    """

    def __init__(
        self,
        *,
        name: str,
        operation: str,
        make_request: Callable[[], Any],
        convert: Callable[[Any], T],
        handler: Handler[T],
        on_close: Callable[[Subscription[Any]], Awaitable[None]],
    ) -> None:
        self.name = name
        self.operation = operation
        self.make_request = make_request
        self.active = False
        self.last_error: BaseException | None = None
        self._convert = convert
        self._handler = handler
        self._on_close = on_close
        self._queue: asyncio.Queue[Any] = asyncio.Queue()
        self._worker: asyncio.Task[None] | None = None
        self._sdk_operation: Any = None
        self._generation = -1
        self.closed = False

    def __repr__(self) -> str:
        return f"<Subscription {self.name} active={self.active}>"

    # ---- driven by the session -----------------------------------------------------------------------

    def start(self) -> None:
        self._worker = asyncio.get_running_loop().create_task(self._run(), name=f"ipc.handler:{self.name}")

    def prepare(self, generation: int) -> None:
        """About to open the stream on connection `generation`: accept its events from now on."""
        self._generation = generation
        self.active = False

    def attach(self, sdk_operation: Any) -> None:
        self._sdk_operation = sdk_operation
        self.active = True
        self.last_error = None

    def detach(self) -> None:
        self.active = False
        self._sdk_operation = None

    def close_stream(self) -> None:
        """Send the SDK's TERMINATE for the current stream, if any (it ignores a stream already closed)."""
        operation, self._sdk_operation = self._sdk_operation, None
        if operation is not None:
            with contextlib.suppress(Exception):
                operation.close()

    async def stop(self) -> None:
        self.closed = True
        self.active = False
        self.close_stream()
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
            self._worker = None

    async def close(self) -> None:
        """Unsubscribe: end the stream and stop calling the handler. Idempotent."""
        if not self.closed:
            await self._on_close(self)

    # ---- on the loop, from the SDK thread ------------------------------------------------------------

    def deliver(self, generation: int, event: Any) -> None:
        if not self.closed and generation == self._generation:
            self._queue.put_nowait(event)

    def stream_error(self, error_type: str) -> None:
        logger.warning("ipc.stream_error", extra={"stream": self.name, "error": error_type})

    def stream_closed(self, generation: int) -> None:
        if self.closed or generation != self._generation or not self.active:
            return
        # The connection watcher handles drops; this is the nucleus ending one stream on a live connection.
        self.active = False
        self._sdk_operation = None
        logger.warning("ipc.stream_closed", extra={"stream": self.name})

    async def _run(self) -> None:
        while True:
            raw = await self._queue.get()
            try:
                event = self._convert(raw)
            except Exception as exc:  # noqa: BLE001 - a malformed event is dropped, the stream goes on
                logger.warning("ipc.event_dropped", extra={"stream": self.name, "error": type(exc).__name__})
                continue
            try:
                result = self._handler(event)
                if inspect.isawaitable(result):
                    await result
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("ipc.handler_failed", extra={"stream": self.name})
