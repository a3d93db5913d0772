"""The core of the IPC session: one surviving connection, calls with timeouts, and re-established streams.

`IpcCore` owns the SDK's event-stream `Connection` (one for the whole session: the SDK allows `connect()`
again after a close) and the generated `GreengrassCoreIPCClient` operations, driven without blocking the
loop. It reconnects with backoff when the connection drops and re-subscribes every live `Subscription`
before letting calls through again. `device_agent.ipc.IpcSession` adds the typed operations on top.
"""

from __future__ import annotations

import asyncio
import contextlib
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


class _Link:
    """One established connection (a generation): its client and whether it has been lost."""

    def __init__(self, generation: int, client: Any) -> None:
        self.generation = generation
        self.client = client
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
            self._loop.call_soon_threadsafe(self._callback, self._generation, type(reason).__name__)

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
        self._link: _Link | None = None
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
        subscription.attach(None, link.generation)  # events that race the response are kept, in order
        subscription.active = False
        operation = await self._request(
            link, subscription.operation, subscription.make_request(), stream_handler
        )
        subscription.attach(operation, link.generation)

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
            make = getattr(link.client, f"new_{operation}")
            sdk_operation = make() if stream_handler is None else make(stream_handler)
            response = _settle_on(self._loop, sdk_operation.get_response())
            written = sdk_operation.activate(request)
            written.add_done_callback(_fail_on_write_error(self._loop, response))
            result = await response
        except (Exception, asyncio.CancelledError) as exc:
            if sdk_operation is not None and (stream_handler is not None or not _is_modeled(exc)):
                with contextlib.suppress(Exception):
                    sdk_operation.close()
            if isinstance(exc, asyncio.CancelledError | DeviceAgentError):
                raise
            lost = type(exc).__name__ in CLOSED_ERRORS and await self._lost(link)
            raise translate(exc, operation, connection_lost=lost) from exc
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
        except Exception as exc:
            raise translate(exc, "IPC connect") from exc
        self._link = _Link(generation, self._client)
        logger.info("ipc.connected", extra={"generation": generation})

    def _on_disconnect(self, generation: int, reason: str) -> None:
        link = self._link
        if link is None or link.generation != generation:
            return
        link.lost.set()
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
            started = time.monotonic()
            logger.info("ipc.reconnecting")
            await self._reconnect()
            link = self._link
            if link is None:
                continue  # dropped again already; the wake flag is set
            await self._resubscribe(link)
            if link.lost.is_set():
                continue
            self._up.set()
            logger.info(
                "ipc.reconnected",
                extra={
                    "elapsed_s": round(time.monotonic() - started, 3),
                    "streams": len(self._subscriptions),
                },
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
        if self._link is not None:
            self._link.lost.set()
            self._link = None
        await self._close_connection()
        # Drop every reference to the CRT objects, then wait for their threads to finish.
        self._client = None
        self._connection = None
        events, self._crt_shutdown = self._crt_shutdown, []
        try:
            async with asyncio.timeout(SHUTDOWN_WAIT_S):
                # threading.Events set on the CRT's thread: poll them rather than block the loop.
                while not all(event.is_set() for event in events):  # noqa: ASYNC110
                    await asyncio.sleep(0.01)
        except TimeoutError:
            # Something still holds an SDK object (e.g. a stored operation): the thread ends when it is freed.
            logger.warning("ipc.native_shutdown_slow", extra={"waited_s": SHUTDOWN_WAIT_S})


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
