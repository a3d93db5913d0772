"""The async client of `com.deviceagent.EncryptedStore`: one namespace, over local pub/sub.

    async with StoreClient(ctx.ipc, "telemetry") as store:
        await store.put("baseline", b"...")
        seqs = await store.append([b"sample-1", b"sample-2"])
        for entry in await store.read_batch(max_records=50):
            ...
        await store.ack(seqs[-1])

Every call waits at most `timeout` seconds and raises the library's errors: `UnavailableError` when the
store does not answer (not deployed, not running yet, restarting) or says it is busy, so callers fall
back and retry with backoff; `NotAuthorizedError` when this component's recipe does not grant the
namespace's topics; `NotFoundError`, `QuotaExceededError`, `IntegrityError` and `InvalidInputError` as the
store answers. An unanswered request is resent with the same id until the timeout (a store that is starting
misses what was published before it subscribed); the store answers a repeat from its replay cache, so
nothing is done twice. A call that timed out may still have been carried out: `append` is the one call that
is not idempotent, so a caller that retries it accepts a possible duplicate (at-least-once), unless it
passes the same `request_id` again.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import logging
import os
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any, Self

from device_agent import store_protocol as protocol
from device_agent.errors import (
    IntegrityError,
    InvalidInputError,
    NotFoundError,
    QuotaExceededError,
    UnavailableError,
)
from device_agent.ipc import IpcSession, Subscription
from device_agent.ipc_types import LocalMessage

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 5.0
# Resend an unanswered request after 0.25 s, then 0.5, 1, 2, 2... until the call's timeout.
RESEND_FIRST_SECONDS = 0.25
RESEND_MAX_SECONDS = 2.0


@dataclasses.dataclass(frozen=True)
class QueueEntry:
    seq: int
    value: bytes = dataclasses.field(repr=False)


@dataclasses.dataclass(frozen=True)
class NamespaceUsage:
    """What the store says of one namespace: usage, its policy, and counters since the store started."""

    records: int
    value_bytes: int
    dropped_records: int
    dropped_bytes: int
    rejected: int
    expired: int
    integrity_failures: int
    max_records: int | None
    max_bytes: int | None
    overflow: str


_ERRORS: Mapping[protocol.ErrorCode, type[Exception]] = {
    protocol.ErrorCode.INVALID_REQUEST: InvalidInputError,
    protocol.ErrorCode.UNKNOWN_NAMESPACE: InvalidInputError,
    protocol.ErrorCode.NOT_FOUND: NotFoundError,
    protocol.ErrorCode.QUOTA_EXCEEDED: QuotaExceededError,
    protocol.ErrorCode.INTEGRITY: IntegrityError,
}


class StoreClient:
    """A namespace of the encrypted store. Open with `async with` (or `open()`/`close()`)."""

    def __init__(self, ipc: IpcSession, namespace: str, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        self._ipc = ipc
        self.namespace = protocol.check_namespace(namespace)
        self.timeout = timeout
        self._request_topic = protocol.request_topic(namespace)
        self._prefix = os.urandom(4).hex()  # not `secrets`: it maps OpenSSL (3.6 MiB) for the same urandom
        self._ids = itertools.count(1)
        self._pending: dict[str, asyncio.Future[protocol.Response]] = {}
        self._subscription: Subscription[LocalMessage] | None = None
        self._opening = asyncio.Lock()

    def __repr__(self) -> str:
        return f"StoreClient({self.namespace!r})"

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        await self.close()

    async def open(self) -> None:
        """Subscribe to the namespace's responses (idempotent; requests open the client when needed)."""
        async with self._opening:
            if self._subscription is None:
                self._subscription = await self._ipc.subscribe(
                    protocol.response_topic(self.namespace), self._on_response
                )

    async def close(self) -> None:
        subscription, self._subscription = self._subscription, None
        if subscription is not None:
            await subscription.close()
        # The calls still waiting fail as unavailable: a CancelledError would read, to their callers, as if
        # their own tasks had been cancelled.
        for future in self._pending.values():
            if not future.done():
                future.set_exception(UnavailableError(f"the store client of {self.namespace} was closed"))
        self._pending.clear()

    # ---- keyed records -------------------------------------------------------------------------------

    async def put(self, key: str, value: bytes, *, ttl: float | None = None) -> None:
        """Store `value` under `key`; durable on the device when this returns."""
        await self._call(protocol.Op.PUT, key=key, value=protocol.encode_value(value), ttlSeconds=ttl)

    async def get(self, key: str) -> bytes:
        """The value under `key`; `NotFoundError` if there is none (or it expired)."""
        result = await self._call(protocol.Op.GET, key=key)
        return protocol.decode_value(result.get("value"), "value")

    async def get_or_none(self, key: str) -> bytes | None:
        try:
            return await self.get(key)
        except NotFoundError:
            return None

    async def delete(self, key: str) -> bool:
        result = await self._call(protocol.Op.DELETE, key=key)
        return bool(result.get("deleted"))

    async def keys(self) -> list[str]:
        result = await self._call(protocol.Op.KEYS)
        keys = result.get("keys")
        return [k for k in keys if isinstance(k, str)] if isinstance(keys, list) else []

    # ---- queue ---------------------------------------------------------------------------------------

    async def append(
        self, values: Sequence[bytes], *, ttl: float | None = None, request_id: str | None = None
    ) -> list[int]:
        """Append values to the namespace's queue in one transaction; their sequence numbers, in order."""
        encoded = [protocol.encode_value(v) for v in values]
        result = await self._call(protocol.Op.APPEND, request_id=request_id, values=encoded, ttlSeconds=ttl)
        seqs = result.get("seqs")
        if not isinstance(seqs, list) or len(seqs) != len(values):
            raise UnavailableError("the store's answer to append does not list one sequence number per value")
        return [int(s) for s in seqs]

    async def read_batch(self, *, max_records: int = 100, max_bytes: int = 256 * 1024) -> list[QueueEntry]:
        """The oldest entries (never fewer than one if the queue has any), within both limits."""
        result = await self._call(protocol.Op.READ, maxRecords=max_records, maxBytes=max_bytes)
        records = result.get("records")
        if not isinstance(records, list):
            return []
        return [
            QueueEntry(int(item["seq"]), protocol.decode_value(item.get("value"), "value"))
            for item in records
            if isinstance(item, Mapping) and isinstance(item.get("seq"), int)
        ]

    async def ack(self, up_to_seq: int) -> int:
        """Remove the queue entries up to and including `up_to_seq`; how many went."""
        result = await self._call(protocol.Op.ACK, upTo=up_to_seq)
        return int(result.get("removed", 0))

    # ---- namespace -----------------------------------------------------------------------------------

    async def stats(self) -> NamespaceUsage:
        result = await self._call(protocol.Op.STATS)

        def number(name: str) -> int:
            value = result.get(name, 0)
            return value if isinstance(value, int) else 0

        def limit(name: str) -> int | None:
            value = result.get(name)
            return value if isinstance(value, int) else None

        return NamespaceUsage(
            records=number("records"),
            value_bytes=number("valueBytes"),
            dropped_records=number("droppedRecords"),
            dropped_bytes=number("droppedBytes"),
            rejected=number("rejected"),
            expired=number("expired"),
            integrity_failures=number("integrityFailures"),
            max_records=limit("maxRecords"),
            max_bytes=limit("maxBytes"),
            overflow=str(result.get("overflow", "")),
        )

    async def wipe(self) -> None:
        """Crypto-erase the namespace: its data key goes, so no copy of its records can be read again."""
        await self._call(protocol.Op.WIPE)

    # ---- transport -----------------------------------------------------------------------------------

    async def _call(
        self, op: protocol.Op, *, request_id: str | None = None, **fields: Any
    ) -> Mapping[str, Any]:
        if self._subscription is None:
            await self.open()
        request_id = request_id or f"{self._prefix}-{next(self._ids)}"
        future: asyncio.Future[protocol.Response] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        document = protocol.request_document(request_id, op, **fields)
        try:
            async with asyncio.timeout(self.timeout):
                response = await self._send_until_answered(document, future)
        except TimeoutError:
            raise UnavailableError(
                f"the store did not answer a {op.value} request for namespace {self.namespace} within"
                f" {self.timeout:g} s (is com.deviceagent.EncryptedStore running?)"
            ) from None
        finally:
            self._pending.pop(request_id, None)
        if response.ok:
            return response.result
        code = response.code or protocol.ErrorCode.INTERNAL
        error = _ERRORS.get(code, UnavailableError)
        raise error(f"store {op.value} on namespace {self.namespace}: {code.value}: {response.message}")

    async def _send_until_answered(
        self, document: dict[str, Any], future: asyncio.Future[protocol.Response]
    ) -> protocol.Response:
        """Publish, and publish the same request again while no answer comes (the caller bounds the wait).

        Local pub/sub keeps nothing for a subscriber that is not there yet: a request sent while the store
        starts or restarts is simply lost. Resending the same id is safe, because the store answers a
        request it has already carried out from its replay cache.
        """
        wait = RESEND_FIRST_SECONDS
        while True:
            await self._ipc.publish(self._request_topic, document)
            done, _ = await asyncio.wait({future}, timeout=wait)
            if done:
                return future.result()
            wait = min(wait * 2, RESEND_MAX_SECONDS)

    def _on_response(self, message: LocalMessage) -> None:
        response = protocol.parse_response(message.payload)
        if response is None:
            return
        future = self._pending.get(response.id)
        if future is not None and not future.done():
            future.set_result(response)
