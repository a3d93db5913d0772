"""AWS event-stream framing: encode and decode frames, standard library only.

A frame is a 12-byte prelude (total length, headers length, prelude CRC), a header block, a payload and a
trailing CRC-32 over every byte before it. All integers are big-endian. The reference is
`aws-c-event-stream` (`source/event_stream.c`); `greengrass-ipc.md` §1 has the layout.

Greengrass IPC uses only INT32 headers (the three protocol headers) and STRING headers, but every header
type is decoded so that a client sending something unusual gets a clean protocol error, not a crash.
"""

from __future__ import annotations

import enum
import struct
import uuid
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from device_agent.devkit.errors import DevkitError

PRELUDE_LENGTH = 12
TRAILER_LENGTH = 4
MAX_MESSAGE_SIZE = 24 * 1024 * 1024  # aws-c-event-stream's AWS_EVENT_STREAM_MAX_MESSAGE_SIZE
MAX_HEADER_NAME_LENGTH = 255
MAX_HEADER_VALUE_LENGTH = 32767  # INT16_MAX: string and byte-buffer values
MAX_HEADERS = 1024

_PRELUDE = struct.Struct(">III")
_U32 = struct.Struct(">I")


class FrameError(DevkitError):
    """A frame that cannot be decoded or encoded: bad CRC, bad length, unknown header type."""


class HeaderType(enum.IntEnum):
    BOOL_TRUE = 0
    BOOL_FALSE = 1
    BYTE = 2
    INT16 = 3
    INT32 = 4
    INT64 = 5
    BYTE_BUF = 6
    STRING = 7
    TIMESTAMP = 8
    UUID = 9


HeaderValue = bool | int | bytes | str | uuid.UUID


@dataclass(frozen=True, slots=True)
class Header:
    name: str
    type: HeaderType
    value: HeaderValue

    @classmethod
    def int32(cls, name: str, value: int) -> Header:
        return cls(name, HeaderType.INT32, value)

    @classmethod
    def string(cls, name: str, value: str) -> Header:
        return cls(name, HeaderType.STRING, value)


@dataclass(frozen=True, slots=True)
class Frame:
    headers: tuple[Header, ...] = ()
    payload: bytes = b""
    # Case-insensitive view of the headers, first occurrence wins (the CRT compares names case-insensitively).
    _by_name: Mapping[str, Header] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        index: dict[str, Header] = {}
        for header in self.headers:
            index.setdefault(header.name.lower(), header)
        object.__setattr__(self, "_by_name", MappingProxyType(index))

    def header(self, name: str) -> Header | None:
        return self._by_name.get(name.lower())

    def int32(self, name: str) -> int | None:
        """An INT32 header's value; None if absent or of another type (the CRT rejects other widths)."""
        header = self._by_name.get(name.lower())
        if header is None or header.type is not HeaderType.INT32:
            return None
        return int(header.value)

    def string(self, name: str) -> str | None:
        header = self._by_name.get(name.lower())
        if header is None or header.type is not HeaderType.STRING:
            return None
        return str(header.value)


def _crc(data: bytes | memoryview) -> int:
    return zlib.crc32(data) & 0xFFFFFFFF


def _encode_header(header: Header, out: bytearray) -> None:
    name = header.name.encode()
    if not 0 < len(name) <= MAX_HEADER_NAME_LENGTH:
        raise FrameError(f"header name length {len(name)} out of range")
    out.append(len(name))
    out += name
    out.append(header.type)
    value = header.value
    match header.type:
        case HeaderType.BOOL_TRUE | HeaderType.BOOL_FALSE:
            pass
        case HeaderType.BYTE:
            out += struct.pack(">b", _as_int(value))
        case HeaderType.INT16:
            out += struct.pack(">h", _as_int(value))
        case HeaderType.INT32:
            out += struct.pack(">i", _as_int(value))
        case HeaderType.INT64 | HeaderType.TIMESTAMP:
            out += struct.pack(">q", _as_int(value))
        case HeaderType.BYTE_BUF | HeaderType.STRING:
            raw = value.encode() if isinstance(value, str) else value
            if not isinstance(raw, bytes) or len(raw) > MAX_HEADER_VALUE_LENGTH:
                raise FrameError(f"header {header.name!r}: value too long or of the wrong type")
            out += struct.pack(">H", len(raw))
            out += raw
        case HeaderType.UUID:
            if not isinstance(value, uuid.UUID):
                raise FrameError(f"header {header.name!r}: expected a UUID")
            out += value.bytes


def _as_int(value: HeaderValue) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise FrameError(f"expected an integer header value, got {type(value).__name__}")
    return value


def encode_frame(headers: tuple[Header, ...] | list[Header], payload: bytes = b"") -> bytes:
    """Encode one frame. Raises FrameError for values the C library would refuse."""
    if len(headers) > MAX_HEADERS:
        raise FrameError("too many headers")
    block = bytearray()
    for header in headers:
        _encode_header(header, block)
    total = PRELUDE_LENGTH + len(block) + len(payload) + TRAILER_LENGTH
    if total > MAX_MESSAGE_SIZE:
        raise FrameError(f"frame of {total} bytes exceeds the {MAX_MESSAGE_SIZE}-byte limit")
    prelude = _PRELUDE.pack(total, len(block), 0)[:8]
    prelude += _U32.pack(_crc(prelude))
    body = prelude + bytes(block) + payload
    return body + _U32.pack(_crc(body))


def decode_prelude(prelude: bytes) -> tuple[int, int]:
    """Validate a 12-byte prelude; return (total_length, headers_length)."""
    if len(prelude) != PRELUDE_LENGTH:
        raise FrameError("short prelude")
    total, headers_length, prelude_crc = _PRELUDE.unpack(prelude)
    if _crc(prelude[:8]) != prelude_crc:
        raise FrameError("prelude CRC mismatch")
    if total > MAX_MESSAGE_SIZE:
        raise FrameError(f"frame of {total} bytes exceeds the {MAX_MESSAGE_SIZE}-byte limit")
    if total < PRELUDE_LENGTH + TRAILER_LENGTH + headers_length:
        raise FrameError("frame length smaller than its headers")
    return total, headers_length


def decode_frame(data: bytes) -> Frame:
    """Decode exactly one complete frame (prelude included)."""
    total, headers_length = decode_prelude(data[:PRELUDE_LENGTH])
    if len(data) != total:
        raise FrameError(f"frame is {len(data)} bytes, prelude says {total}")
    (message_crc,) = _U32.unpack_from(data, total - TRAILER_LENGTH)
    if _crc(memoryview(data)[: total - TRAILER_LENGTH]) != message_crc:
        raise FrameError("message CRC mismatch")
    header_end = PRELUDE_LENGTH + headers_length
    headers = tuple(_decode_headers(memoryview(data)[PRELUDE_LENGTH:header_end]))
    return Frame(headers=headers, payload=bytes(data[header_end : total - TRAILER_LENGTH]))


def _decode_headers(block: memoryview) -> Iterator[Header]:
    pos = 0
    count = 0
    try:
        while pos < len(block):
            count += 1
            if count > MAX_HEADERS:
                raise FrameError("too many headers")
            name_length = block[pos]
            pos += 1
            name = bytes(block[pos : pos + name_length]).decode()
            pos += name_length
            kind = HeaderType(block[pos])
            pos += 1
            value, pos = _decode_value(kind, block, pos)
            yield Header(name, kind, value)
    except (IndexError, struct.error, ValueError, UnicodeDecodeError) as exc:
        raise FrameError(f"malformed header block: {exc}") from exc


def _decode_value(kind: HeaderType, block: memoryview, pos: int) -> tuple[HeaderValue, int]:
    match kind:
        case HeaderType.BOOL_TRUE:
            return True, pos
        case HeaderType.BOOL_FALSE:
            return False, pos
        case HeaderType.BYTE:
            return struct.unpack_from(">b", block, pos)[0], pos + 1
        case HeaderType.INT16:
            return struct.unpack_from(">h", block, pos)[0], pos + 2
        case HeaderType.INT32:
            return struct.unpack_from(">i", block, pos)[0], pos + 4
        case HeaderType.INT64 | HeaderType.TIMESTAMP:
            return struct.unpack_from(">q", block, pos)[0], pos + 8
        case HeaderType.BYTE_BUF | HeaderType.STRING:
            (length,) = struct.unpack_from(">H", block, pos)
            pos += 2
            raw = bytes(block[pos : pos + length])
            if len(raw) != length:
                raise FrameError("header value runs past the header block")
            return (raw.decode() if kind is HeaderType.STRING else raw), pos + length
        case HeaderType.UUID:
            raw = bytes(block[pos : pos + 16])
            if len(raw) != 16:  # noqa: PLR2004 - a UUID is 16 bytes
                raise FrameError("truncated UUID header")
            return uuid.UUID(bytes=raw), pos + 16
