"""The store's request/response protocol over local pub/sub (schemas in docs/schemas/store-*.schema.json).

A client publishes a request on `device-agent/store/<namespace>/request` and the store answers on
`device-agent/store/<namespace>/response` with the request's `id`. The namespace is in the topic, so the
nucleus's authorization (each client's recipe grants only its own namespace's two topics) decides who may
touch which data; nothing in the payload can name another namespace. Values travel as base64.

The store side parses requests with `parse_request`, which names the field that is wrong; both sides build
and read responses with the helpers here, so the two cannot drift. This module is small and imports no
cryptography: every component that uses the store loads it.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import enum
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any, Final

from device_agent.errors import InvalidInputError

REQUEST_SCHEMA: Final = "store-request/1"
RESPONSE_SCHEMA: Final = "store-response/1"
STATS_SCHEMA: Final = "store-stats/1"
TOPIC_PREFIX: Final = "device-agent/store/"
REQUEST_FILTER: Final = "device-agent/store/+/request"
STATS_TOPIC: Final = "device-agent/store/stats"
#: Not a namespace (those start with a letter or digit): whole-store operations, for whoever is granted it.
ADMIN_NAMESPACE: Final = "_admin"

_NAMESPACE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
MAX_KEY_CHARS: Final = 512
MAX_BATCH_VALUES: Final = 1000
MAX_READ_RECORDS: Final = 1000


class Op(enum.StrEnum):
    PUT = "put"
    GET = "get"
    DELETE = "delete"
    KEYS = "keys"
    APPEND = "append"
    READ = "read"
    ACK = "ack"
    STATS = "stats"
    WIPE = "wipe"


#: What the admin topic accepts (the whole store); everything else is per namespace.
ADMIN_OPS: Final = frozenset({Op.STATS, Op.WIPE})


class ErrorCode(enum.StrEnum):
    """Why a request failed; each maps to one exception of `device_agent.errors` on the client side."""

    INVALID_REQUEST = "invalid_request"  # InvalidInputError: fix the request, never retry
    UNKNOWN_NAMESPACE = "unknown_namespace"  # InvalidInputError: the store's configuration lacks it
    NOT_FOUND = "not_found"  # NotFoundError
    QUOTA_EXCEEDED = "quota_exceeded"  # QuotaExceededError: the namespace is full and rejects new records
    INTEGRITY = "integrity"  # IntegrityError: the record failed authentication and was set aside
    BUSY = "busy"  # UnavailableError: too many requests waiting; retry with backoff
    UNAVAILABLE = "unavailable"  # UnavailableError: the store cannot serve now (storage failing, no key)
    INTERNAL = "internal"  # UnavailableError: a bug; reported by the store with details in its log


def request_topic(namespace: str) -> str:
    return f"{TOPIC_PREFIX}{namespace}/request"


def response_topic(namespace: str) -> str:
    return f"{TOPIC_PREFIX}{namespace}/response"


def namespace_of(topic: str | None) -> str | None:
    """The namespace of a request topic, or None if the topic is not one (or names no valid namespace)."""
    if topic is None or not topic.startswith(TOPIC_PREFIX) or not topic.endswith("/request"):
        return None
    middle = topic[len(TOPIC_PREFIX) : -len("/request")]
    if middle == ADMIN_NAMESPACE or _NAMESPACE.fullmatch(middle):
        return middle
    return None


def check_namespace(namespace: str) -> str:
    if not _NAMESPACE.fullmatch(namespace):
        raise InvalidInputError(
            "a store namespace is 1-64 characters of letters, digits, '.', '_' or '-', starting with a"
            " letter or digit"
        )
    return namespace


def encode_value(value: bytes) -> str:
    return base64.b64encode(value).decode("ascii")


def decode_value(text: object, field: str) -> bytes:
    if not isinstance(text, str):
        raise InvalidInputError(f"{field}: expected a base64 string")
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise InvalidInputError(f"{field}: not valid base64") from None


@dataclasses.dataclass(frozen=True, kw_only=True)
class Request:
    """A parsed, checked request. Which fields are set depends on `op` (see `parse_request`)."""

    id: str
    op: Op
    key: str | None = None
    value: bytes | None = dataclasses.field(default=None, repr=False)
    values: tuple[bytes, ...] = dataclasses.field(default=(), repr=False)
    ttl: float | None = None
    max_records: int = 100
    max_bytes: int = 256 * 1024
    up_to: int | None = None


def request_id_of(payload: object) -> str | None:
    """The request's id if it has a usable one (a request without one cannot be answered)."""
    if isinstance(payload, Mapping):
        value = payload.get("id")
        if isinstance(value, str) and _REQUEST_ID.fullmatch(value):
            return value
    return None


def parse_request(payload: object, *, max_value_bytes: int, max_read_bytes: int) -> Request:
    """Check a request document; `InvalidInputError` names the first field that is wrong."""
    if not isinstance(payload, Mapping):
        raise InvalidInputError("a request is a JSON object")
    if payload.get("schema") != REQUEST_SCHEMA:
        raise InvalidInputError(f"schema: expected {REQUEST_SCHEMA!r}")
    request_id = request_id_of(payload)
    if request_id is None:
        raise InvalidInputError("id: expected 1-64 characters of letters, digits, '.', '_', ':' or '-'")
    try:
        op = Op(str(payload.get("op")))
    except ValueError:
        raise InvalidInputError(f"op: expected one of {', '.join(o.value for o in Op)}") from None
    fields: dict[str, Any] = {"id": request_id, "op": op}
    if op in (Op.PUT, Op.GET, Op.DELETE):
        fields["key"] = _key(payload.get("key"))
    if op is Op.PUT:
        fields["value"] = _value(payload.get("value"), "value", max_value_bytes)
    if op is Op.APPEND:
        raw = payload.get("values")
        if not isinstance(raw, list) or not raw or len(raw) > MAX_BATCH_VALUES:
            raise InvalidInputError(f"values: expected a list of 1 to {MAX_BATCH_VALUES} base64 strings")
        fields["values"] = tuple(_value(item, f"values[{i}]", max_value_bytes) for i, item in enumerate(raw))
    if op in (Op.PUT, Op.APPEND):
        fields["ttl"] = _ttl(payload.get("ttlSeconds"))
    if op is Op.READ:
        fields["max_records"] = _count(payload.get("maxRecords", 100), "maxRecords", 1, MAX_READ_RECORDS)
        fields["max_bytes"] = _count(payload.get("maxBytes", max_read_bytes), "maxBytes", 1, max_read_bytes)
    if op is Op.ACK:
        fields["up_to"] = _count(payload.get("upTo"), "upTo", 0, 2**63 - 1)
    return Request(**fields)


def _key(value: object) -> str:
    if not isinstance(value, str) or not value or len(value) > MAX_KEY_CHARS or "\x00" in value:
        raise InvalidInputError(f"key: expected a string of 1 to {MAX_KEY_CHARS} characters, without NUL")
    return value


def _value(text: object, field: str, max_bytes: int) -> bytes:
    value = decode_value(text, field)
    if len(value) > max_bytes:
        raise InvalidInputError(f"{field}: {len(value)} bytes, over this store's limit of {max_bytes}")
    return value


def _ttl(value: object) -> float | None:
    if value is None:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value <= 0
    ):
        raise InvalidInputError("ttlSeconds: expected a positive number of seconds, or null")
    return float(value)


def _count(value: object, field: str, minimum: int, maximum: int) -> int:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
        raise InvalidInputError(f"{field}: expected an integer from {minimum} to {maximum}")
    return value


# ---- documents ----------------------------------------------------------------------------------------


def request_document(request_id: str, op: Op, **fields: Any) -> dict[str, Any]:
    """A request as the client sends it; `fields` use the wire names (key, value, values, ttlSeconds, ...)."""
    document = {"schema": REQUEST_SCHEMA, "id": request_id, "op": op.value}
    document.update({name: value for name, value in fields.items() if value is not None})
    return document


def ok_document(request_id: str, result: Mapping[str, Any] | None = None) -> dict[str, Any]:
    return {"schema": RESPONSE_SCHEMA, "id": request_id, "ok": True, "result": dict(result or {})}


def error_document(request_id: str, code: ErrorCode, message: str) -> dict[str, Any]:
    return {
        "schema": RESPONSE_SCHEMA,
        "id": request_id,
        "ok": False,
        "error": {"code": code.value, "message": message[:512]},
    }


@dataclasses.dataclass(frozen=True)
class Response:
    id: str
    ok: bool
    result: Mapping[str, Any]
    code: ErrorCode | None = None
    message: str = ""


def parse_response(payload: object) -> Response | None:
    """A response, or None when the payload is not one (a client ignores what it cannot read)."""
    if not isinstance(payload, Mapping) or payload.get("schema") != RESPONSE_SCHEMA:
        return None
    request_id = request_id_of(payload)
    ok = payload.get("ok")
    if request_id is None or not isinstance(ok, bool):
        return None
    if ok:
        result = payload.get("result")
        return Response(request_id, ok=True, result=result if isinstance(result, Mapping) else {})
    error = payload.get("error")
    if not isinstance(error, Mapping):
        return Response(
            request_id, ok=False, result={}, code=ErrorCode.INTERNAL, message="malformed error response"
        )
    try:
        code = ErrorCode(str(error.get("code")))
    except ValueError:
        code = ErrorCode.INTERNAL
    message = error.get("message")
    return Response(
        request_id, ok=False, result={}, code=code, message=message if isinstance(message, str) else ""
    )


def encode_records(records: Sequence[tuple[int, bytes]]) -> list[dict[str, Any]]:
    return [{"seq": seq, "value": encode_value(value)} for seq, value in records]
