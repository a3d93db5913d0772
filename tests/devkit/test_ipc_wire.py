"""Frame-level tests of the RPC server: one test per trap in greengrass-ipc.md, with a raw socket client.

These speak bytes, not the SDK, so that each rule the real client depends on is pinned exactly: the SDK
tests (test_ipc_operations.py) show the client is happy, these show why.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path
from typing import Any

import pytest

from device_agent.devkit.ipc.errors import UnauthorizedError
from device_agent.devkit.ipc.eventstream import (
    PRELUDE_LENGTH,
    Frame,
    Header,
    HeaderType,
    decode_frame,
    decode_prelude,
    encode_frame,
)
from device_agent.devkit.ipc.server import CallContext, IpcServer

TOKEN = "GOODTOKEN1234567"

APP, ERR, PING, PING_RESPONSE, CONNECT, CONNECT_ACK, PROTOCOL_ERROR = 0, 1, 2, 3, 4, 5, 6
TERMINATE = 2


def proto(message_type: int, flags: int, stream_id: int) -> list[Header]:
    return [
        Header.int32(":message-type", message_type),
        Header.int32(":message-flags", flags),
        Header.int32(":stream-id", stream_id),
    ]


def request_frame(stream_id: int, operation: str, payload: dict[str, Any], flags: int = 0) -> bytes:
    headers = [
        Header.string(":content-type", "application/json"),
        Header.string("service-model-type", f"aws.greengrass#{operation}Request"),
        *proto(APP, flags, stream_id),
        Header.string("operation", f"aws.greengrass#{operation}"),
    ]
    return encode_frame(headers, json.dumps(payload).encode())


class RawClient:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def read(self, timeout: float = 5.0) -> Frame:
        prelude = await asyncio.wait_for(self.reader.readexactly(PRELUDE_LENGTH), timeout)
        total, _ = decode_prelude(prelude)
        rest = await asyncio.wait_for(self.reader.readexactly(total - PRELUDE_LENGTH), timeout)
        return decode_frame(prelude + rest)

    async def closed(self, timeout: float = 5.0) -> bool:
        try:
            data = await asyncio.wait_for(self.reader.read(1), timeout)
        except ConnectionError:
            return True
        return data == b""

    async def connect(self, token: str = TOKEN, version: str = "0.1.0") -> Frame:
        headers = [Header.string(":version", version), *proto(CONNECT, 0, 0)]
        await self.send(encode_frame(headers, ('{"authToken": "%s"}' % token).encode()))  # noqa: UP031 - as the SDK builds it
        return await self.read()

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()


def assert_protocol_headers(frame: Frame) -> None:
    for name in (":message-type", ":message-flags", ":stream-id"):
        header = frame.header(name)
        assert header is not None, f"{name} missing"
        assert header.type is HeaderType.INT32, f"{name} is {header.type.name}, must be INT32"


@pytest.fixture
async def server(tmp_path: Path):
    subscribers: list[Any] = []

    async def publish(ctx: CallContext, request: dict[str, Any]) -> dict[str, Any]:
        if request.get("topic") == "forbidden":
            raise UnauthorizedError("Principal test is not authorized")
        for stream in list(subscribers):
            stream.send_event(
                {"jsonMessage": {"message": request["publishMessage"]["jsonMessage"]["message"]}}
            )
        return {}

    async def subscribe(ctx: CallContext, request: dict[str, Any]) -> dict[str, Any]:
        subscribers.append(ctx.stream)
        ctx.stream.on_close(lambda: subscribers.remove(ctx.stream))
        # An event emitted before the handler returns must still go out after the response.
        ctx.stream.send_event({"jsonMessage": {"message": "early"}})
        return {}

    async def crash(ctx: CallContext, request: dict[str, Any]) -> dict[str, Any]:
        raise RuntimeError("boom")

    path = tmp_path / "ipc.socket"
    ipc = IpcServer(
        str(path),
        authenticate=lambda token: "com.test.Client" if token == TOKEN else None,
        handlers={
            "aws.greengrass#PublishToTopic": publish,
            "aws.greengrass#SubscribeToTopic": subscribe,
            "aws.greengrass#UpdateState": crash,
        },
    )
    await ipc.start()
    ipc.subscribers = subscribers  # type: ignore[attr-defined]
    yield ipc
    await ipc.close()


@pytest.fixture
async def client(server: IpcServer):
    reader, writer = await asyncio.open_unix_connection(server.path)
    raw = RawClient(reader, writer)
    yield raw
    await raw.close()


async def test_connect_ack_is_the_first_frame_with_int32_headers(client):
    ack = await client.connect()
    assert ack.int32(":message-type") == CONNECT_ACK
    assert ack.int32(":message-flags") == 1
    assert ack.int32(":stream-id") == 0
    assert_protocol_headers(ack)
    assert ack.payload == b""


async def test_socket_is_owner_only(server):
    assert Path(server.path).stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize(("token", "version"), [("WRONG", "0.1.0"), ("", "0.1.0"), (TOKEN, "0.2.0")])
async def test_refused_connect_gets_ack_without_flag_then_close(client, token, version):
    ack = await client.connect(token, version)
    assert ack.int32(":message-type") == CONNECT_ACK
    assert ack.int32(":message-flags") == 0
    assert await client.closed()


async def test_anything_before_connect_is_a_protocol_error(client):
    await client.send(encode_frame(proto(PING, 0, 0)))
    error = await client.read()
    assert error.int32(":message-type") == PROTOCOL_ERROR
    assert "CONNECT" in json.loads(error.payload)["message"]
    assert await client.closed()


async def test_non_streaming_response_carries_terminate_and_content_type(client):
    await client.connect()
    await client.send(
        request_frame(1, "PublishToTopic", {"topic": "t", "publishMessage": {"jsonMessage": {"message": 1}}})
    )
    response = await client.read()
    assert_protocol_headers(response)
    assert response.int32(":stream-id") == 1
    assert response.int32(":message-flags") == TERMINATE
    assert response.string(":content-type") == "application/json"
    assert response.string("service-model-type") == "aws.greengrass#PublishToTopicResponse"
    assert json.loads(response.payload) == {}


async def test_streaming_response_comes_before_events_and_keeps_the_stream_open(client):
    await client.connect()
    await client.send(request_frame(1, "SubscribeToTopic", {"topic": "t"}))
    response = await client.read()
    assert response.string("service-model-type") == "aws.greengrass#SubscribeToTopicResponse"
    assert response.int32(":message-flags") == 0
    early = await client.read()
    assert early.string("service-model-type") == "aws.greengrass#SubscriptionResponseMessage"
    assert json.loads(early.payload) == {"jsonMessage": {"message": "early"}}
    assert early.int32(":message-flags") == 0
    assert early.string(":content-type") == "application/json"


async def test_modeled_error_has_type_message_and_terminate(client):
    await client.connect()
    await client.send(request_frame(1, "PublishToTopic", {"topic": "forbidden", "publishMessage": {}}))
    error = await client.read()
    assert error.int32(":message-type") == ERR
    assert error.int32(":message-flags") == TERMINATE
    assert error.string(":content-type") == "application/json"
    assert error.string("service-model-type") == "aws.greengrass#UnauthorizedError"
    body = json.loads(error.payload)
    assert body["message"] == "Principal test is not authorized"
    assert body["_errorCode"] == "UnauthorizedError"


async def test_handler_crash_becomes_service_error(client):
    await client.connect()
    await client.send(request_frame(1, "UpdateState", {"state": "RUNNING"}))
    error = await client.read()
    assert error.string("service-model-type") == "aws.greengrass#ServiceError"
    assert "boom" in json.loads(error.payload)["message"]


async def test_unimplemented_model_operation_is_not_supported_service_error(client):
    await client.connect()
    await client.send(request_frame(1, "GetThingShadow", {"thingName": "x"}))
    error = await client.read()
    assert error.string("service-model-type") == "aws.greengrass#ServiceError"
    assert json.loads(error.payload)["message"] == (
        "Operation aws.greengrass#GetThingShadow is not supported by Greengrass"
    )


async def test_unknown_operation_gets_untyped_terminating_error(client):
    await client.connect()
    await client.send(request_frame(1, "NoSuchThing", {}))
    error = await client.read()
    assert error.int32(":message-type") == ERR
    assert error.int32(":message-flags") == TERMINATE
    assert error.string("service-model-type") is None
    # The connection survives: the next stream works.
    await client.send(
        request_frame(2, "PublishToTopic", {"topic": "t", "publishMessage": {"jsonMessage": {"message": 1}}})
    )
    assert (await client.read()).int32(":stream-id") == 2


async def test_duplicate_and_late_terminates_are_ignored(client):
    await client.connect()
    await client.send(request_frame(1, "PublishToTopic", {"topic": "forbidden", "publishMessage": {}}))
    await client.read()
    for _ in range(2):  # the real client sends TERMINATE twice after an error
        await client.send(encode_frame(proto(APP, TERMINATE, 1)))
    await client.send(
        request_frame(2, "PublishToTopic", {"topic": "t", "publishMessage": {"jsonMessage": {"message": 1}}})
    )
    response = await client.read()
    assert response.int32(":stream-id") == 2
    assert response.string("service-model-type") == "aws.greengrass#PublishToTopicResponse"


async def test_client_terminate_drops_the_subscription(client, server):
    await client.connect()
    await client.send(request_frame(1, "SubscribeToTopic", {"topic": "t"}))
    await client.read()
    await client.read()  # the early event
    assert len(server.subscribers) == 1
    await client.send(encode_frame(proto(APP, TERMINATE, 1)))
    await client.send(
        request_frame(2, "PublishToTopic", {"topic": "t", "publishMessage": {"jsonMessage": {"message": 1}}})
    )
    response = await client.read()
    assert response.int32(":stream-id") == 2  # no event for the closed stream came first
    assert server.subscribers == []


@pytest.mark.parametrize("stream_id", [2, 5])
async def test_skipping_a_stream_id_is_a_protocol_error(client, stream_id):
    await client.connect()
    await client.send(request_frame(stream_id, "PublishToTopic", {"topic": "t"}))
    error = await client.read()
    assert error.int32(":message-type") == PROTOCOL_ERROR
    assert await client.closed()


async def test_new_stream_without_operation_is_a_protocol_error(client):
    await client.connect()
    headers = [Header.string(":content-type", "application/json"), *proto(APP, 0, 1)]
    await client.send(encode_frame(headers, b"{}"))
    assert (await client.read()).int32(":message-type") == PROTOCOL_ERROR
    assert await client.closed()


async def test_int64_protocol_header_is_a_protocol_error(client):
    await client.connect()
    headers = [
        Header.int32(":message-type", APP),
        Header.int32(":message-flags", 0),
        Header(":stream-id", HeaderType.INT64, 1),
        Header.string("operation", "aws.greengrass#PublishToTopic"),
    ]
    await client.send(encode_frame(headers, b"{}"))
    error = await client.read()
    assert error.int32(":message-type") == PROTOCOL_ERROR
    assert "INT32" in json.loads(error.payload)["message"]
    assert await client.closed()


async def test_application_message_on_stream_zero_is_a_protocol_error(client):
    await client.connect()
    await client.send(encode_frame([*proto(APP, 0, 0)], b"{}"))
    assert (await client.read()).int32(":message-type") == PROTOCOL_ERROR


async def test_ping_is_answered_echoing_payload_and_plain_headers(client):
    await client.connect()
    await client.send(encode_frame([Header.string("x-probe", "1"), *proto(PING, 0, 0)], b"hello"))
    pong = await client.read()
    assert pong.int32(":message-type") == PING_RESPONSE
    assert pong.string("x-probe") == "1"
    assert pong.payload == b"hello"


async def test_coalesced_and_split_frames_are_framed_by_length(client):
    await client.connect()
    burst = b"".join(
        request_frame(i, "PublishToTopic", {"topic": "t", "publishMessage": {"jsonMessage": {"message": i}}})
        for i in range(1, 41)
    )
    # Split at awkward places, including inside a prelude.
    for start in range(0, len(burst), 7):
        await client.send(burst[start : start + 7])
    ids = sorted([(await client.read()).int32(":stream-id") for _ in range(40)])
    assert ids == list(range(1, 41))


async def test_many_concurrent_streams_and_events_never_interleave_bytes(client, server):
    await client.connect()
    await client.send(request_frame(1, "SubscribeToTopic", {"topic": "t"}))
    await client.read()
    await client.read()
    requests = b"".join(
        request_frame(
            i, "PublishToTopic", {"topic": "t", "publishMessage": {"jsonMessage": {"message": "x" * 500}}}
        )
        for i in range(2, 202)
    )
    await client.send(requests)
    frames = [await client.read() for _ in range(400)]  # 200 responses + 200 events, every one decodes
    kinds = [f.string("service-model-type") for f in frames]
    assert kinds.count("aws.greengrass#PublishToTopicResponse") == 200
    assert kinds.count("aws.greengrass#SubscriptionResponseMessage") == 200


async def test_server_close_ends_client_connections(server, client):
    await client.connect()
    await server.close()
    assert await client.closed()
