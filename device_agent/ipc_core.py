"""The core of the IPC session: one surviving connection, calls with timeouts, and re-established streams.

`IpcCore` owns the SDK's event-stream `Connection` (one for the whole session: the SDK allows `connect()`
again after a close) and the generated `GreengrassCoreIPCClient` operations, driven without blocking the
loop. It reconnects with backoff when the connection drops and re-subscribes every live `Subscription`
before letting calls through again. `device_agent.ipc.IpcSession` adds the typed operations on top.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any, Self, TypeVar

from device_agent.errors import DeviceAgentError, TimedOutError, UnavailableError
from device_agent.ipc_errors import CLOSED_ERRORS, translate
from device_agent.ipc_streams import Handler, SdkStreamHandler, Subscription
from device_agent.retry import Backoff, retry, sleep

logger = logging.getLogger(__name__)

T = TypeVar("T")
SOCKET_ENV = "AWS_GG_NUCLEUS_DOMAIN_SOCKET_FILEPATH_FOR_COMPONENT"
TOKEN_ENV = "SVCUID"  # noqa: S105 - the variable's name, not a token
THING_ENV = "AWS_IOT_THING_NAME"
# How long a failed call waits for the disconnect notice before deciding the stream, not the link, ended.
LOST_GRACE_S = 0.25
SHUTDOWN_WAIT_S = 5.0
PROMPT_SHUTDOWN_S = 0.1


class _Link:
    """One connection (a generation) and whether it has been lost.

    It holds no SDK object on purpose: a traceback that keeps a frame alive must not keep the native
    connection (and its thread) alive after `close()`.
    """

    def __init__(self, generation: int) -> None:
        self.generation = generation
        self.lost = asyncio.Event()


class _LifecycleHandler:
    """Given to the SDK for one connect attempt; its callbacks run on the CRT thread."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, callback: Callable[[int, str], None], generation: int
    ) -> None:
        self._loop = loop
        self._callback = callback
        self._generation = generation

    def on_connect(self) -> None:
        pass

    def on_disconnect(self, reason: Exception | None) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is gone: the session ended
            cause = "closed" if reason is None else type(reason).__name__
            self._loop.call_soon_threadsafe(self._callback, self._generation, cause)

    def on_error(self, _error: Exception) -> bool:
        return True  # a connection-level protocol error: close, and on_disconnect starts the reconnection

    def on_ping(self, headers: Any, payload: bytes) -> None:
        pass


class IpcCore:
    """A Greengrass IPC session for one component process. Use as `async with IpcSession() as ipc:`.

    Args:
        timeout: default seconds for every call (waiting for a reconnection included).
        connect_timeout: seconds for one connect attempt (socket plus handshake).
        open_timeout: seconds `open()` keeps retrying before it raises `UnavailableError`.
        backoff: delays between connect attempts (capped exponential, full jitter).
        socket_path, token: default to the nucleus's environment variables, read here (not at import).
    """

    def __init__(
        self,
        *,
        timeout: float = 10.0,
        connect_timeout: float = 5.0,
        open_timeout: float = 30.0,
        backoff: Backoff | None = None,
        socket_path: str | None = None,
        token: str | None = None,
    ) -> None:
        self.thing_name: str | None = os.environ.get(THING_ENV) or None
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.open_timeout = open_timeout
        self._backoff = backoff or Backoff(initial=0.1, maximum=2.0, multiplier=2)
        self._socket_path = socket_path or os.environ.get(SOCKET_ENV, "")
        secret = token or os.environ.get(TOKEN_ENV, "")
        if not self._socket_path or not secret:
            msg = f"not running under a Greengrass nucleus: {SOCKET_ENV} and {TOKEN_ENV} must be set"
            raise UnavailableError(msg)
        self._amender = _token_amender(secret)  # the only place the token lives
        del secret
        self._loop: asyncio.AbstractEventLoop | None = None
        self._connection: Any = None
        self._client: Any = None
        self._crt_shutdown: list[Any] = []  # threading.Events that fire when CRT objects have shut down
        self._generation = 0
        self._link: _Link | None = None  # the established connection, None while down
        self._attempt: _Link | None = None  # the latest connect attempt (it may drop before it is used)
        self._up = asyncio.Event()
        self._wake = asyncio.Event()
        self._watcher: asyncio.Task[None] | None = None
        self._subscriptions: list[Subscription[Any]] = []
        self._state = "new"  # new → open → closing → closed

    def __repr__(self) -> str:
        return f"<IpcSession thing={self.thing_name!r} state={self._state} connected={self.connected}>"

    @property
    def connected(self) -> bool:
        return self._link is not None and not self._link.lost.is_set()

    # ---- lifetime -------------------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def open(self) -> None:
        """Connect (retrying with backoff for up to `open_timeout`), then watch the connection."""
        if self._state != "new":
            raise UnavailableError("IPC session already opened")
        self._loop = asyncio.get_running_loop()
        self._state = "open"
        try:
            self._build_connection()
            await retry(
                self._connect_once,
                on=UnavailableError,
                backoff=self._backoff,
                deadline=self.open_timeout,
                name="ipc.connect",
            )
        except BaseException:
            await self.close()
            raise
        self._up.set()
        self._watcher = self._loop.create_task(self._watch(), name="ipc.watcher")

    async def close(self) -> None:
        """End every stream, close the connection and wait until the SDK's native resources are gone."""
        if self._state in ("closing", "closed"):
            return
        self._state = "closing"
        self._up.set()  # callers waiting for a reconnection wake up and see the session closing
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
            self._watcher = None
        for subscription in list(self._subscriptions):
            await subscription.stop()
        self._subscriptions.clear()
        await self._shutdown_connection()
        self._state = "closed"
        logger.info("ipc.closed")

    # ---- calls --------------------------------------------------------------------------------------------

    async def _call(self, operation: str, request: Any, timeout: float | None) -> Any:
        limit = self.timeout if timeout is None else timeout
        deadline = asyncio.timeout(limit)
        try:
            async with deadline:
                link = await self._ready()
                return await self._request(link, operation, request, None)
        except TimeoutError as exc:
            if not deadline.expired():
                raise
            raise TimedOutError(f"{operation}: no answer within {limit:g}s") from exc

    async def _subscribe(
        self,
        name: str,
        *,
        operation: str,
        make_request: Callable[[], Any],
        convert: Callable[[Any], T],
        handler: Handler[T],
        timeout: float | None,
    ) -> Subscription[T]:
        subscription = Subscription(
            name=name,
            operation=operation,
            make_request=make_request,
            convert=convert,
            handler=handler,
            on_close=self._unsubscribe,
        )
        limit = self.timeout if timeout is None else timeout
        deadline = asyncio.timeout(limit)
        try:
            async with deadline:
                link = await self._ready()
                await self._open_stream(link, subscription)
        except TimeoutError as exc:
            subscription.close_stream()
            if not deadline.expired():
                raise
            raise TimedOutError(f"{operation}: no answer within {limit:g}s") from exc
        except BaseException:
            subscription.close_stream()
            raise
        subscription.start()
        self._subscriptions.append(subscription)
        return subscription

    async def _unsubscribe(self, subscription: Subscription[Any]) -> None:
        with contextlib.suppress(ValueError):
            self._subscriptions.remove(subscription)
        await subscription.stop()

    async def _open_stream(self, link: _Link, subscription: Subscription[Any]) -> None:
        assert self._loop is not None  # noqa: S101 - set by open()
        stream_handler = SdkStreamHandler(subscription, self._loop, link.generation)
        subscription.prepare(link.generation)  # events that race the response are kept, in order
        operation = await self._request(
            link, subscription.operation, subscription.make_request(), stream_handler
        )
        subscription.attach(operation)

    async def _ready(self) -> _Link:
        """The current connection, waiting (within the caller's timeout) while it is being re-established."""
        while True:
            if self._state != "open":
                raise UnavailableError("the IPC session is closed")
            link = self._link
            if link is not None and not link.lost.is_set() and self._up.is_set():
                return link
            await self._up.wait()
            if self._link is None or self._link.lost.is_set():
                await asyncio.sleep(0)  # `_up` is only set with a live link, unless closing

    async def _request(self, link: _Link, operation: str, request: Any, stream_handler: Any) -> Any:
        """Run one operation on `link`: the response for plain calls, the SDK operation for streams."""
        sdk_operation: Any = None
        try:
            if link.lost.is_set() or self._client is None:
                raise UnavailableError(f"{operation}: the IPC connection is down")
            sdk_operation = getattr(self._client, f"new_{operation}")(
                *(() if stream_handler is None else (stream_handler,))
            )
            response = _settle_on(self._loop, sdk_operation.get_response())
            sdk_operation.activate(request).add_done_callback(_fail_on_write_error(self._loop, response))
            result = await response
        except (Exception, asyncio.CancelledError) as exc:
            if sdk_operation is not None and (stream_handler is not None or not _is_modeled(exc)):
                with contextlib.suppress(Exception):
                    sdk_operation.close()
            # The traceback keeps this frame: it must not keep the SDK's native objects alive too.
            sdk_operation = None
            if isinstance(exc, asyncio.CancelledError | DeviceAgentError):
                raise
            lost = type(exc).__name__ in CLOSED_ERRORS and await self._lost(link)
            raise translate(exc, operation, connection_lost=lost) from _detached(exc)
        return sdk_operation if stream_handler is not None else result

    async def _lost(self, link: _Link) -> bool:
        # The SDK fails the streams before it reports the disconnect: give the notice a moment to arrive.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(LOST_GRACE_S):
                await link.lost.wait()
        return link.lost.is_set()

    # ---- connection -------------------------------------------------------------------------------------

    def _build_connection(self) -> None:
        from awscrt.io import (  # noqa: PLC0415 - the SDK loads only when a session opens
            ClientBootstrap,
            DefaultHostResolver,
            EventLoopGroup,
            SocketDomain,
            SocketOptions,
        )
        from awsiot.eventstreamrpc import Connection  # noqa: PLC0415
        from awsiot.greengrasscoreipc.client import GreengrassCoreIPCClient  # noqa: PLC0415

        # As `awsiot.greengrasscoreipc.connect()` builds it, but without blocking the loop, and kept for
        # reconnecting (that function also leaks a half-open connection when its handshake times out).
        group = EventLoopGroup(num_threads=1)
        resolver = DefaultHostResolver(group)
        bootstrap = ClientBootstrap(group, resolver)
        self._crt_shutdown = [group.shutdown_event, bootstrap.shutdown_event]
        options = SocketOptions()
        options.domain = SocketDomain.Local
        self._connection = Connection(
            host_name=self._socket_path,
            port=0,
            bootstrap=bootstrap,
            socket_options=options,
            connect_message_amender=self._amender,
        )
        self._client = GreengrassCoreIPCClient(self._connection)

    async def _connect_once(self) -> None:
        assert self._loop is not None  # noqa: S101 - set by open()
        self._generation += 1
        generation = self._generation
        # Known before the handshake, so a drop reported before this coroutine resumes is not missed.
        link = self._attempt = _Link(generation)
        handler = _LifecycleHandler(self._loop, self._on_disconnect, generation)
        try:
            connected = _settle_on(self._loop, self._connection.connect(handler))
            async with asyncio.timeout(self.connect_timeout):
                await connected
        except TimeoutError as exc:
            await self._close_connection()
            raise UnavailableError(f"IPC connect: no handshake within {self.connect_timeout:g}s") from exc
        except asyncio.CancelledError:
            await self._close_connection()
            raise
        except Exception as exc:  # noqa: BLE001 - translated and re-raised, the cause chained
            raise translate(exc, "IPC connect") from _detached(exc)
        if link.lost.is_set():
            raise UnavailableError("IPC connect: the connection closed right after the handshake")
        self._link = link
        logger.info("ipc.connected", extra={"generation": generation})

    def _on_disconnect(self, generation: int, reason: str) -> None:
        attempt = self._attempt
        if attempt is not None and attempt.generation == generation:
            attempt.lost.set()
        link = self._link
        if link is None or link.generation != generation:
            return
        self._link = None
        if self._state != "open":
            return
        self._up.clear()
        for subscription in self._subscriptions:
            subscription.detach()
        logger.warning("ipc.disconnected", extra={"generation": generation, "reason": reason})
        self._wake.set()

    async def _watch(self) -> None:
        """Reconnect and re-subscribe whenever the connection drops, until the session closes."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                await self._recover()
            except Exception as exc:  # noqa: BLE001 - the watcher must outlive any single failure
                logger.warning("ipc.recover_failed", extra={"error": type(exc).__name__})
                self._wake.set()
                await sleep(self._backoff.maximum)

    async def _recover(self) -> None:
        started = time.monotonic()
        logger.info("ipc.reconnecting")
        await self._reconnect()
        link = self._link
        if link is None:
            return  # dropped again already, and the drop set the wake flag
        await self._resubscribe(link)
        if link.lost.is_set():
            return
        self._up.set()
        logger.info(
            "ipc.reconnected",
            extra={"elapsed_s": round(time.monotonic() - started, 3), "streams": len(self._subscriptions)},
        )

    async def _reconnect(self) -> None:
        while True:
            try:
                await retry(
                    self._connect_once, on=UnavailableError, backoff=self._backoff, name="ipc.reconnect"
                )
            except UnavailableError:
                # Only a test-mode attempts cap ends `retry` here; the watcher itself never gives up.
                await sleep(self._backoff.maximum)
            else:
                return

    async def _resubscribe(self, link: _Link) -> None:
        restored = 0
        for subscription in list(self._subscriptions):
            if subscription.closed:
                continue
            try:
                async with asyncio.timeout(self.timeout):
                    await self._open_stream(link, subscription)
                restored += 1
            except (DeviceAgentError, TimeoutError) as exc:
                subscription.detach()
                subscription.last_error = exc
                if link.lost.is_set():
                    return
                logger.warning(
                    "ipc.resubscribe_failed",
                    extra={"stream": subscription.name, "error": type(exc).__name__},
                )
        logger.info("ipc.resubscribed", extra={"streams": restored, "generation": link.generation})

    async def _close_connection(self) -> None:
        """Close the current (or half-open) connection and wait until the SDK reports it closed."""
        if self._connection is None:
            return
        closed = _settle_on(self._loop, self._connection.close())
        with contextlib.suppress(Exception):
            async with asyncio.timeout(SHUTDOWN_WAIT_S):
                await closed

    async def _shutdown_connection(self) -> None:
        for link in (self._link, self._attempt):
            if link is not None:
                link.lost.set()
        self._link = self._attempt = None
        del link
        await self._close_connection()
        # Drop every reference to the CRT objects, then wait for their threads to finish.
        self._client = None
        self._connection = None
        events, self._crt_shutdown = self._crt_shutdown, []
        if not await _all_set(events, PROMPT_SHUTDOWN_S):
            # SDK objects caught in reference cycles (a failed call's exception and traceback, say) are
            # freed only by the cycle collector; collect once rather than keep the CRT thread alive.
            gc.collect()
        if not await _all_set(events, SHUTDOWN_WAIT_S):
            # Something still holds an SDK object (e.g. a stored operation): the thread ends when it is freed.
            logger.warning("ipc.native_shutdown_slow", extra={"waited_s": SHUTDOWN_WAIT_S})


def _detached(error: BaseException) -> BaseException:
    """The SDK's error without its traceback, to chain as a cause.

    Its frames are the SDK's own and hold its connection: a caller that keeps our error (logs, retries)
    would otherwise keep the native connection and its thread alive after `close()`.
    """
    return error.with_traceback(None)


async def _all_set(events: list[Any], timeout: float) -> bool:
    """Wait for `threading.Event`s set on the CRT's thread (polled: the loop must not block)."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout):
            while not all(event.is_set() for event in events):  # noqa: ASYNC110
                await asyncio.sleep(0.01)
    return all(event.is_set() for event in events)


def _token_amender(token: str) -> Callable[[], Any]:
    """The SDK's CONNECT amender for `token`; the token stays in this closure only."""

    def amend() -> Any:
        from awsiot.eventstreamrpc import MessageAmendment  # noqa: PLC0415

        return MessageAmendment.create_static_authtoken_amender(token)()

    return amend


def _settle_on(loop: asyncio.AbstractEventLoop | None, future: Any) -> asyncio.Future[Any]:
    """An asyncio future settled, on `loop`, by an SDK `concurrent.futures.Future`.

    Unlike `asyncio.wrap_future`, cancelling the asyncio side never touches the SDK's future (the SDK
    sets results on its own thread and does not expect them cancelled).
    """
    assert loop is not None  # noqa: S101 - set by open()
    result: asyncio.Future[Any] = loop.create_future()

    def settle(source: Any) -> None:
        if result.done():
            return
        error = source.exception()
        if error is not None:
            result.set_exception(error)
        else:
            result.set_result(source.result())

    def on_done(source: Any) -> None:
        with contextlib.suppress(RuntimeError):  # loop closed: nobody is waiting any more
            loop.call_soon_threadsafe(settle, source)

    future.add_done_callback(on_done)
    return result


def _fail_on_write_error(loop: asyncio.AbstractEventLoop | None, response: asyncio.Future[Any]) -> Any:
    assert loop is not None  # noqa: S101 - set by open()

    def fail(error: BaseException) -> None:
        if not response.done():
            response.set_exception(error)

    def on_written(source: Any) -> None:
        error = None if source.cancelled() else source.exception()
        if error is not None:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(fail, error)

    return on_written


def _is_modeled(error: BaseException) -> bool:
    return hasattr(error, "_get_error_type_string")
