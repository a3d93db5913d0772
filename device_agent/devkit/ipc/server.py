"""The event-stream RPC server: one connection per component client, over a Unix socket.

What this mirrors (greengrass-ipc.md §2, §3 and the Traps list), because the real client drops the whole
connection on any mistake:
- the three protocol headers, as INT32, on every frame, after the application headers;
- CONNECT first; CONNECT_ACK is the first frame we send, with flag 1 on success, or flag 0 and a close;
- stream ids start at 1 and grow by exactly 1; a new stream must name its operation; frames on old or closed
  streams (duplicate TERMINATEs included) are ignored;
- the response is written before any stream event; non-streaming responses and every error carry TERMINATE;
- modeled errors carry `service-model-type` and a JSON `message`; unknown operations get the untyped error
  the Java RpcServer sends;
- PING is answered (echoing payload and non-`:` headers) but never relied on: the Python client never pings;
- writes are serialized per connection through one writer task, so frames never interleave.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from device_agent.devkit.ipc.errors import InvalidArgumentsError, IpcError, ServiceError, not_supported
from device_agent.devkit.ipc.eventstream import (
    PRELUDE_LENGTH,
    Frame,
    FrameError,
    Header,
    decode_frame,
    decode_prelude,
    encode_frame,
)
from device_agent.devkit.ipc.operations import OPERATIONS, OperationSpec

logger = logging.getLogger(__name__)

PROTOCOL_VERSION = "0.1.0"
CONTENT_TYPE_JSON = "application/json"
INT32_MAX = 2**31 - 1
# Stream events queued for one slow client beyond this are dropped (and logged) rather than letting one
# stuck component grow the nucleus's memory without bound. Responses and errors are never dropped.
MAX_QUEUED_FRAMES = 10_000
# How long a refused connection stays open for the client to read the refusal and close its end.
REFUSED_LINGER_SECONDS = 2.0


class MessageType(enum.IntEnum):
    APPLICATION_MESSAGE = 0
    APPLICATION_ERROR = 1
    PING = 2
    PING_RESPONSE = 3
    CONNECT = 4
    CONNECT_ACK = 5
    PROTOCOL_ERROR = 6
    INTERNAL_ERROR = 7


class MessageFlag(enum.IntFlag):
    NONE = 0
    CONNECTION_ACCEPTED = 1
    TERMINATE_STREAM = 2


class ProtocolViolation(Exception):  # noqa: N818 - internal control flow, never leaves this module
    """The peer broke the protocol: answer PROTOCOL_ERROR and close."""


@dataclass(frozen=True, slots=True)
class CallContext:
    """What a handler knows about the call: who made it, which operation, and its stream."""

    component: str
    operation: OperationSpec
    stream: ServerStream
    connection_id: int


Handler = Callable[[CallContext, dict[str, Any]], Awaitable[dict[str, Any]]]
Authenticator = Callable[[str], str | None]


def _protocol_headers(message_type: MessageType, flags: int, stream_id: int) -> list[Header]:
    return [
        Header.int32(":message-type", int(message_type)),
        Header.int32(":message-flags", int(flags)),
        Header.int32(":stream-id", stream_id),
    ]


def _json_bytes(payload: Mapping[str, Any]) -> bytes:
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()


class ServerStream:
    """One operation stream, as the server sees it.

    Events are held back until the initial response has been queued (the nucleus's "response sent" gate),
    then flushed in order. Close callbacks run once, whoever closes the stream.
    """

    def __init__(self, connection: IpcConnection, stream_id: int, operation: OperationSpec) -> None:
        self._connection = connection
        self.stream_id = stream_id
        self.operation = operation
        self._responded = False
        self._held: list[dict[str, Any]] = []
        self._closed = False
        self._close_callbacks: list[Callable[[], None]] = []

    @property
    def closed(self) -> bool:
        return self._closed

    def on_close(self, callback: Callable[[], None]) -> None:
        if self._closed:
            callback()
        else:
            self._close_callbacks.append(callback)

    def send_event(self, payload: Mapping[str, Any]) -> bool:
        """Queue a stream event; False if the stream is closed (the caller should drop its subscription)."""
        if self._closed:
            return False
        if self.operation.event_shape is None:
            msg = f"{self.operation.name} is not a streaming operation"
            raise TypeError(msg)
        if not self._responded:
            self._held.append(dict(payload))
            return True
        self._connection.send_application(
            self.stream_id, self.operation.event_shape, payload, MessageFlag.NONE, droppable=True
        )
        return True

    def close(self) -> None:
        """Close from the server side: an empty TERMINATE frame, then the close callbacks."""
        if self._closed:
            return
        if self._responded:
            self._connection.send_frame(
                _protocol_headers(
                    MessageType.APPLICATION_MESSAGE, MessageFlag.TERMINATE_STREAM, self.stream_id
                )
            )
        self._mark_closed()

    def _respond(self, payload: Mapping[str, Any]) -> None:
        flags = MessageFlag.NONE if self.operation.streaming else MessageFlag.TERMINATE_STREAM
        self._connection.send_application(self.stream_id, self.operation.response_shape, payload, flags)
        self._responded = True
        if not self.operation.streaming:
            self._mark_closed()
            return
        held, self._held = self._held, []
        for event in held:
            self.send_event(event)

    def _fail(self, error: IpcError) -> None:
        self._connection.send_application(
            self.stream_id,
            error.shape,
            error.payload(),
            MessageFlag.TERMINATE_STREAM,
            message_type=MessageType.APPLICATION_ERROR,
        )
        self._mark_closed()

    def _mark_closed(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._held.clear()
        callbacks, self._close_callbacks = self._close_callbacks, []
        for callback in callbacks:
            try:
                callback()
            except Exception:
                logger.exception("ipc.stream_close_callback_failed operation=%s", self.operation.name)


class IpcConnection:
    """Serves one client connection until it closes. Create one per accepted socket and await `serve()`."""

    _next_id = 0

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        authenticate: Authenticator,
        handlers: Mapping[str, Handler],
    ) -> None:
        IpcConnection._next_id += 1
        self.connection_id = IpcConnection._next_id
        self._reader = reader
        self._writer = writer
        self._authenticate = authenticate
        self._handlers = handlers
        self.component: str | None = None
        self._latest_stream_id = 0
        self._streams: dict[int, ServerStream] = {}
        self._outbox: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._closing = False
        self._handler_tasks: set[asyncio.Task[None]] = set()

    # ---- sending -----------------------------------------------------------------------------------------

    def send_frame(self, headers: list[Header], payload: bytes = b"", *, droppable: bool = False) -> None:
        if self._closing:
            return
        if droppable and self._outbox.qsize() >= MAX_QUEUED_FRAMES:
            logger.warning("ipc.event_dropped component=%s reason=client_too_slow", self.component)
            return
        self._outbox.put_nowait(encode_frame(headers, payload))

    def send_application(
        self,
        stream_id: int,
        shape: str,
        payload: Mapping[str, Any],
        flags: int,
        *,
        message_type: MessageType = MessageType.APPLICATION_MESSAGE,
        droppable: bool = False,
    ) -> None:
        headers = [
            Header.string(":content-type", CONTENT_TYPE_JSON),
            Header.string("service-model-type", shape),
            *_protocol_headers(message_type, flags, stream_id),
        ]
        self.send_frame(headers, _json_bytes(payload), droppable=droppable)

    def _send_connection_error(self, message_type: MessageType, message: str) -> None:
        headers = [Header.string(":content-type", CONTENT_TYPE_JSON), *_protocol_headers(message_type, 0, 0)]
        self.send_frame(headers, _json_bytes({"message": message}))

    async def _write_loop(self) -> None:
        while (data := await self._outbox.get()) is not None:
            self._writer.write(data)
            await self._writer.drain()

    # ---- serving -----------------------------------------------------------------------------------------

    async def serve(self) -> None:
        try:
            async with asyncio.TaskGroup() as tasks:
                writer_task = tasks.create_task(self._write_loop(), name=f"ipc[{self.connection_id}].writer")
                try:
                    await self._read_loop(tasks)
                finally:
                    self._shutdown_streams()
                    self._outbox.put_nowait(None)  # flush what is queued (e.g. a PROTOCOL_ERROR), then stop
                    self._closing = True
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(asyncio.shield(writer_task), timeout=2.0)
                    writer_task.cancel()
                    for task in list(self._handler_tasks):
                        task.cancel()
        except* (ConnectionError, asyncio.IncompleteReadError):
            logger.debug("ipc.connection_lost component=%s", self.component)
        finally:
            self._writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await self._writer.wait_closed()
            logger.info("ipc.disconnected component=%s connection=%d", self.component, self.connection_id)

    async def _read_frame(self) -> Frame:
        prelude = await self._reader.readexactly(PRELUDE_LENGTH)
        total, _ = decode_prelude(prelude)
        rest = await self._reader.readexactly(total - PRELUDE_LENGTH)
        return decode_frame(prelude + rest)

    async def _read_loop(self, tasks: asyncio.TaskGroup) -> None:
        try:
            if not await self._handshake():
                # The client closes by itself when it reads a refused CONNECT_ACK. Closing first could reach
                # it before the ACK does (it then sees "socket closed", not AccessDeniedError): let it go
                # first, for a bounded while.
                with contextlib.suppress(TimeoutError, ConnectionError):
                    await asyncio.wait_for(self._reader.read(), timeout=REFUSED_LINGER_SECONDS)
                return
            while True:
                frame = await self._read_frame()
                self._route(frame, tasks)
        except asyncio.IncompleteReadError:
            return  # the client went away: normal end of a connection
        except ProtocolViolation as exc:
            logger.warning("ipc.protocol_error component=%s error=%s", self.component, exc)
            self._send_connection_error(MessageType.PROTOCOL_ERROR, str(exc))
        except FrameError as exc:
            logger.warning("ipc.bad_frame component=%s error=%s", self.component, exc)
            self._send_connection_error(MessageType.PROTOCOL_ERROR, f"malformed frame: {exc}")

    @staticmethod
    def _metadata(frame: Frame) -> tuple[MessageType, int, int]:
        message_type = frame.int32(":message-type")
        flags = frame.int32(":message-flags")
        stream_id = frame.int32(":stream-id")
        if message_type is None or flags is None or stream_id is None:
            msg = "missing required fields :message-type, :message-flags, and :stream-id (INT32)"
            raise ProtocolViolation(msg)
        try:
            kind = MessageType(message_type)
        except ValueError as exc:
            raise ProtocolViolation(f"unknown message type {message_type}") from exc
        stream_scoped = kind in (MessageType.APPLICATION_MESSAGE, MessageType.APPLICATION_ERROR)
        if stream_scoped != (stream_id > 0) or stream_id < 0:
            raise ProtocolViolation(f"message type {kind.name} is not valid on stream {stream_id}")
        return kind, flags, stream_id

    async def _handshake(self) -> bool:
        frame = await self._read_frame()
        kind, _, _ = self._metadata(frame)
        if kind is not MessageType.CONNECT:
            raise ProtocolViolation("a CONNECT message must be received before any other message")
        component = None
        if frame.string(":version") == PROTOCOL_VERSION:
            component = self._component_for(frame.payload)
        if component is None:
            self.send_frame(_protocol_headers(MessageType.CONNECT_ACK, MessageFlag.NONE, 0))
            logger.warning("ipc.connect_refused connection=%d", self.connection_id)
            return False
        self.component = component
        self.send_frame(_protocol_headers(MessageType.CONNECT_ACK, MessageFlag.CONNECTION_ACCEPTED, 0))
        logger.info("ipc.connected component=%s connection=%d", component, self.connection_id)
        return True

    def _component_for(self, payload: bytes) -> str | None:
        try:
            document = json.loads(payload or b"{}")
        except (ValueError, UnicodeDecodeError):
            return None
        token = document.get("authToken") if isinstance(document, dict) else None
        if not isinstance(token, str) or not token:
            return None
        return self._authenticate(token)

    def _route(self, frame: Frame, tasks: asyncio.TaskGroup) -> None:
        kind, flags, stream_id = self._metadata(frame)
        match kind:
            case MessageType.PING:
                echoed = [h for h in frame.headers if not h.name.startswith(":")]
                self.send_frame([*echoed, *_protocol_headers(MessageType.PING_RESPONSE, 0, 0)], frame.payload)
            case MessageType.PING_RESPONSE:
                pass
            case MessageType.PROTOCOL_ERROR | MessageType.INTERNAL_ERROR:
                logger.warning("ipc.client_reported_error component=%s", self.component)
                raise asyncio.IncompleteReadError(b"", None)
            case MessageType.CONNECT | MessageType.CONNECT_ACK:
                raise ProtocolViolation("connection is already established")
            case _:
                self._route_stream_frame(frame, flags, stream_id, tasks)

    def _route_stream_frame(self, frame: Frame, flags: int, stream_id: int, tasks: asyncio.TaskGroup) -> None:
        if stream_id <= self._latest_stream_id:
            stream = self._streams.get(stream_id)
            if stream is not None and flags & MessageFlag.TERMINATE_STREAM:
                self._streams.pop(stream_id, None)
                stream._mark_closed()  # noqa: SLF001 - the connection owns its streams
            return  # frames on old or closed streams are ignored ("simultaneous close")
        if stream_id != self._latest_stream_id + 1 or stream_id > INT32_MAX:
            raise ProtocolViolation(
                f"stream id {stream_id} is not the next one ({self._latest_stream_id + 1})"
            )
        operation_name = frame.string("operation")
        if not operation_name:
            raise ProtocolViolation("a new stream must carry an operation header")
        self._latest_stream_id = stream_id
        spec = OPERATIONS.get(operation_name)
        if spec is None:
            self._unsupported_operation(stream_id, operation_name)
            return
        stream = ServerStream(self, stream_id, spec)
        self._streams[stream_id] = stream
        stream.on_close(lambda: self._forget_stream(stream_id))
        task = tasks.create_task(
            self._call(stream, frame.payload), name=f"ipc[{self.connection_id}].{spec.name}"
        )
        self._handler_tasks.add(task)
        task.add_done_callback(self._handler_tasks.discard)

    def _forget_stream(self, stream_id: int) -> None:
        self._streams.pop(stream_id, None)

    def _unsupported_operation(self, stream_id: int, operation_name: str) -> None:
        # What the Java RpcServer sends for an operation with no handler: JSON without service-model-type.
        headers = [
            Header.string(":content-type", CONTENT_TYPE_JSON),
            *_protocol_headers(MessageType.APPLICATION_ERROR, MessageFlag.TERMINATE_STREAM, stream_id),
        ]
        body = {"error": "Unsupported Operation", "message": f"Unsupported operation: {operation_name}"}
        self.send_frame(headers, _json_bytes(body))

    async def _call(self, stream: ServerStream, payload: bytes) -> None:
        spec = stream.operation
        assert self.component is not None  # noqa: S101 - only called after the handshake
        context = CallContext(self.component, spec, stream, self.connection_id)
        try:
            request = json.loads(payload) if payload else {}
            if not isinstance(request, dict):
                raise InvalidArgumentsError(f"{spec.name} request must be a JSON object")
            handler = self._handlers.get(spec.model_name)
            if handler is None:
                raise not_supported(spec.model_name)
            response = await handler(context, request)
        except IpcError as error:
            logger.info(
                "ipc.call_failed component=%s operation=%s error=%s", self.component, spec.name, error.name
            )
            stream._fail(error)  # noqa: SLF001
        except (ValueError, UnicodeDecodeError):
            stream._fail(InvalidArgumentsError(f"{spec.name} request is not valid JSON"))  # noqa: SLF001
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # The nucleus turns any RuntimeException into a ServiceError with its message.
            logger.exception("ipc.handler_crashed component=%s operation=%s", self.component, spec.name)
            stream._fail(ServiceError(f"{type(exc).__name__}: {exc}"))  # noqa: SLF001
        else:
            if not stream.closed:
                stream._respond(response)  # noqa: SLF001

    def abort(self) -> None:
        """End the connection from the server side, as a nucleus shutting down does."""
        self._writer.transport.abort()
        self._reader.feed_eof()

    def _shutdown_streams(self) -> None:
        self._closing = True
        for stream in list(self._streams.values()):
            stream._mark_closed()  # noqa: SLF001
        self._streams.clear()


class IpcServer:
    """Accepts component connections on a Unix socket and serves each with an IpcConnection."""

    def __init__(self, path: str, *, authenticate: Authenticator, handlers: Mapping[str, Handler]) -> None:
        self.path = path
        self._authenticate = authenticate
        self._handlers = handlers
        self._server: asyncio.Server | None = None
        self._connections: dict[IpcConnection, asyncio.Future[None]] = {}

    async def start(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            Path(self.path).unlink()  # noqa: ASYNC240 - a stale socket from a crashed run
        self._server = await asyncio.start_unix_server(self._accept, path=self.path)
        # Components run as the same user as the virtual device, so owner-only is enough (the real nucleus
        # opens the socket to everyone because it runs components as other users).
        Path(self.path).chmod(0o600)  # noqa: ASYNC240

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connection = IpcConnection(reader, writer, authenticate=self._authenticate, handlers=self._handlers)
        done = asyncio.get_running_loop().create_future()
        self._connections[connection] = done
        try:
            await connection.serve()
        finally:
            del self._connections[connection]
            done.set_result(None)

    @property
    def connections(self) -> list[IpcConnection]:
        return list(self._connections)

    async def close(self) -> None:
        """Stop accepting, end every connection (the clients see the socket close), and remove the socket."""
        if self._server is None:
            return
        self._server.close()
        waiters = list(self._connections.values())
        for connection in list(self._connections):
            connection.abort()
        if waiters:
            await asyncio.wait(waiters, timeout=5)
        await self._server.wait_closed()
        self._server = None
        with contextlib.suppress(FileNotFoundError):
            Path(self.path).unlink()  # noqa: ASYNC240
