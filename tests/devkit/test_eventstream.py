"""The event-stream codec: byte-exact against the reference frame, round trips, and hostile input."""

from __future__ import annotations

import contextlib
import struct
import uuid
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from device_agent.devkit.ipc.eventstream import (
    MAX_MESSAGE_SIZE,
    PRELUDE_LENGTH,
    FrameError,
    Header,
    HeaderType,
    decode_frame,
    decode_prelude,
    encode_frame,
)

# The CONNECT_ACK the real nucleus sends, as captured in greengrass-ipc.md §3.2 (71 bytes).
CONNECT_ACK_BYTES = bytes.fromhex(
    "00000047"
    "00000037"
    "374cfe3f"
    "0d" + b":message-type".hex() + "04"
    "00000005"
    "0e" + b":message-flags".hex() + "04"
    "00000001"
    "0a" + b":stream-id".hex() + "04"
    "00000000"
    "e237e27d"
)


def test_connect_ack_is_byte_identical_to_the_reference_capture():
    frame = encode_frame(
        [Header.int32(":message-type", 5), Header.int32(":message-flags", 1), Header.int32(":stream-id", 0)]
    )
    assert frame == CONNECT_ACK_BYTES
    assert len(frame) == 71


def test_reference_frame_decodes_to_int32_protocol_headers():
    frame = decode_frame(CONNECT_ACK_BYTES)
    assert [(h.name, h.type, h.value) for h in frame.headers] == [
        (":message-type", HeaderType.INT32, 5),
        (":message-flags", HeaderType.INT32, 1),
        (":stream-id", HeaderType.INT32, 0),
    ]
    assert frame.payload == b""
    assert frame.int32(":MESSAGE-TYPE") == 5  # names compare case-insensitively, like the CRT


def test_every_header_type_round_trips():
    headers = [
        Header("t", HeaderType.BOOL_TRUE, True),
        Header("f", HeaderType.BOOL_FALSE, False),
        Header("b", HeaderType.BYTE, -3),
        Header("s", HeaderType.INT16, -300),
        Header("i", HeaderType.INT32, 2**31 - 1),
        Header("l", HeaderType.INT64, -(2**40)),
        Header("buf", HeaderType.BYTE_BUF, b"\x00\xff"),
        Header("str", HeaderType.STRING, "héllo"),
        Header("ts", HeaderType.TIMESTAMP, 1_700_000_000_000),
        Header("id", HeaderType.UUID, uuid.UUID(int=42)),
    ]
    frame = decode_frame(encode_frame(headers, b"payload"))
    assert list(frame.headers) == headers
    assert frame.payload == b"payload"


def test_int32_accessor_refuses_other_widths():
    frame = decode_frame(encode_frame([Header(":stream-id", HeaderType.INT64, 1)]))
    assert frame.int32(":stream-id") is None


@pytest.mark.parametrize("flip_at", [0, 5, 9, 20, 40, 70])
def test_any_flipped_bit_is_a_frame_error(flip_at):
    data = bytearray(CONNECT_ACK_BYTES)
    data[flip_at] ^= 0x01
    with pytest.raises(FrameError):
        decode_frame(bytes(data))


def test_oversized_prelude_is_refused_before_reading_the_body():
    prelude = struct.pack(">II", MAX_MESSAGE_SIZE + 1, 0)
    prelude += struct.pack(">I", zlib.crc32(prelude) & 0xFFFFFFFF)
    with pytest.raises(FrameError, match="exceeds"):
        decode_prelude(prelude)


def test_headers_longer_than_the_frame_are_refused():
    prelude = struct.pack(">II", 16, 100)
    prelude += struct.pack(">I", zlib.crc32(prelude) & 0xFFFFFFFF)
    with pytest.raises(FrameError, match="smaller"):
        decode_prelude(prelude)


def test_string_header_value_limit():
    with pytest.raises(FrameError):
        encode_frame([Header.string("x", "a" * 40000)])


header_strategy = st.one_of(
    st.builds(Header.int32, st.text(min_size=1, max_size=20), st.integers(-(2**31), 2**31 - 1)),
    st.builds(Header.string, st.text(min_size=1, max_size=20), st.text(max_size=200)),
).filter(lambda h: 0 < len(h.name.encode()) <= 255)


@given(st.lists(header_strategy, max_size=8), st.binary(max_size=2000))
def test_round_trip_property(headers, payload):
    frame = decode_frame(encode_frame(headers, payload))
    assert list(frame.headers) == headers
    assert frame.payload == payload


@settings(max_examples=300)
@given(st.binary(min_size=PRELUDE_LENGTH, max_size=300))
def test_garbage_never_raises_anything_but_frame_error(data):
    with contextlib.suppress(FrameError):
        decode_frame(data)
