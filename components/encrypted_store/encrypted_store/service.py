"""Carries out store requests on the engine and turns every outcome into a response document.

The engine is synchronous (SQLite); every call runs on one dedicated thread, so the event loop never
blocks on an fsync and the engine's connection is only ever used from that thread. Nothing here raises
for a request: a failure becomes an error response with a code the client maps to the library's errors.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import errno
import functools
import logging
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from device_agent import store_protocol as protocol
from device_agent.errors import (
    DeviceAgentError,
    IntegrityError,
    InvalidInputError,
    NotFoundError,
    StorageError,
)
from device_agent.store import KekSource, NamespacePolicy, Store, StoreEvent
from device_agent.store_protocol import ErrorCode, Op, Request

logger = logging.getLogger(__name__)

T = TypeVar("T")
REPLAY_CACHE_SIZE = 1024
Document = dict[str, Any]


class StoreService:
    """The open engine (or the lack of one) behind the component's request loop."""

    def __init__(
        self,
        directory: Path,
        kek: Callable[[], Awaitable[KekSource | None]],
        *,
        policies: Mapping[str, NamespacePolicy],
        max_value_bytes: int,
        on_event: Callable[[StoreEvent], None],
    ) -> None:
        self._directory = directory
        self._kek = kek
        self._kek_source: KekSource | None = None
        self._policies = dict(policies)
        self._max_value_bytes = max_value_bytes
        self._on_event = on_event
        self._store: Store | None = None
        self._thread = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="store")
        # Answers to recent requests, so a client that resends the same id (after a timeout) gets the
        # first answer rather than a second append.
        self._answers: collections.OrderedDict[tuple[str, str], Document] = collections.OrderedDict()
        self.last_open_error: str | None = None

    @property
    def is_open(self) -> bool:
        return self._store is not None and not self._store.closed

    async def _run(self, call: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._thread, call)

    # ---- opening and closing -------------------------------------------------------------------------

    async def open(self) -> bool:
        """Open (or recover) the store; False, with `last_open_error` set, if it cannot be opened now."""
        if self.is_open:
            return True
        try:
            self._kek_source = await self._kek()
            self._store = await self._run(self._open)
        except DeviceAgentError as exc:  # whatever the cause, the store is not open: report, retry later
            self.last_open_error = f"{type(exc).__name__}: {exc}"
            logger.warning("store.open_failed", extra={"error": type(exc).__name__, "reason": str(exc)})
            return False
        self.last_open_error = None
        logger.info("store.opened", extra={"namespaces": len(self._policies)})
        return True

    def _open(self) -> Store:
        return Store.open(
            self._directory,
            kek=self._kek_source,
            policies=self._policies,
            # Undeclared namespaces are refused before the engine sees them; this is belt and braces.
            default_policy=NamespacePolicy(max_records=1, overflow="reject"),
            on_event=self._on_event,
            max_value_bytes=self._max_value_bytes,
        )

    async def close(self) -> None:
        store, self._store = self._store, None
        if store is not None:
            await self._run(store.close)
        self._thread.shutdown(wait=True)

    async def set_policies(self, policies: Mapping[str, NamespacePolicy], max_value_bytes: int) -> None:
        old = self._policies
        self._policies = dict(policies)
        self._max_value_bytes = max_value_bytes
        store = self._store
        if store is None:
            return

        def apply() -> None:
            for name in old.keys() - policies.keys():
                store.set_policy(name, None)
            for name, policy in policies.items():
                store.set_policy(name, policy)

        await self._run(apply)

    # ---- requests ------------------------------------------------------------------------------------

    def cached_answer(self, namespace: str, request_id: str) -> Document | None:
        return self._answers.get((namespace, request_id))

    async def handle(self, namespace: str, request: Request) -> Document:
        """The response document for one parsed request (never raises)."""
        key = (namespace, request.id)
        if (cached := self._answers.get(key)) is not None:
            return cached
        if namespace != protocol.ADMIN_NAMESPACE and namespace not in self._policies:
            return protocol.error_document(
                request.id,
                ErrorCode.UNKNOWN_NAMESPACE,
                f"namespace {namespace} is not in this store's configuration (namespaces)",
            )
        if namespace == protocol.ADMIN_NAMESPACE and request.op not in protocol.ADMIN_OPS:
            return protocol.error_document(
                request.id,
                ErrorCode.INVALID_REQUEST,
                f"op: {request.op.value} is not a whole-store operation",
            )
        store = self._store
        if store is None or store.closed:
            reason = "the store is not open" + (f" ({self.last_open_error})" if self.last_open_error else "")
            return protocol.error_document(request.id, ErrorCode.UNAVAILABLE, reason)
        try:
            result = await self._run(functools.partial(self._execute, store, namespace, request))
        except NotFoundError as exc:
            answer = protocol.error_document(request.id, ErrorCode.NOT_FOUND, str(exc))
        except IntegrityError as exc:
            answer = protocol.error_document(request.id, ErrorCode.INTEGRITY, str(exc))
        except InvalidInputError as exc:
            answer = protocol.error_document(request.id, ErrorCode.INVALID_REQUEST, str(exc))
        except StorageError as exc:
            if exc.errno == errno.EDQUOT:
                answer = protocol.error_document(request.id, ErrorCode.QUOTA_EXCEEDED, str(exc))
            else:
                logger.error("store.storage_failed", extra={"op": request.op.value, "reason": str(exc)})  # noqa: TRY400 - the reason says it all
                answer = protocol.error_document(request.id, ErrorCode.UNAVAILABLE, str(exc))
        except Exception:
            logger.exception("store.request_failed", extra={"op": request.op.value})
            answer = protocol.error_document(request.id, ErrorCode.INTERNAL, "the store failed; see its log")
        else:
            answer = protocol.ok_document(request.id, result)
        self._remember(key, answer)
        return answer

    def _remember(self, key: tuple[str, str], answer: Document) -> None:
        self._answers[key] = answer
        while len(self._answers) > REPLAY_CACHE_SIZE:
            self._answers.popitem(last=False)

    def _execute(self, store: Store, ns: str, request: Request) -> Document:
        match request.op:
            case Op.PUT:
                assert request.key is not None  # noqa: S101 - parse_request sets both for put
                assert request.value is not None  # noqa: S101
                store.put(ns, request.key, request.value, ttl=request.ttl)
                return {}
            case Op.GET:
                assert request.key is not None  # noqa: S101 - parse_request sets it for get and delete
                return {"value": protocol.encode_value(store.get(ns, request.key))}
            case Op.DELETE:
                assert request.key is not None  # noqa: S101 - parse_request sets it for get and delete
                return {"deleted": store.delete(ns, request.key)}
            case Op.KEYS:
                return {"keys": store.keys(ns)}
            case Op.APPEND:
                return {"seqs": store.append_many(ns, request.values, ttl=request.ttl)}
            case Op.READ:
                records = store.read_batch(ns, request.max_records, request.max_bytes)
                return {"records": protocol.encode_records(records)}
            case Op.ACK:
                assert request.up_to is not None  # noqa: S101 - parse_request sets it for ack
                return {"removed": store.ack(ns, request.up_to)}
            case Op.STATS:
                return self._stats(store, ns)
            case Op.WIPE:
                if ns == protocol.ADMIN_NAMESPACE:
                    self._erase_all(store)
                else:
                    store.erase_namespace(ns)
                self._forget_answers(ns)
                return {}

    def _erase_all(self, store: Store) -> None:
        """Crypto-erase everything, then start an empty store under a new key; the component keeps serving."""
        store.erase_all()
        self._store = self._open()

    def _forget_answers(self, namespace: str) -> None:
        for key in [k for k in self._answers if namespace in (k[0], protocol.ADMIN_NAMESPACE)]:
            del self._answers[key]

    def _stats(self, store: Store, ns: str) -> Document:
        stats = store.stats()
        if ns == protocol.ADMIN_NAMESPACE:
            return self.summary(store)
        usage = stats.namespaces.get(ns)
        policy = store.policy(ns)
        document: Document = {
            "records": usage.records if usage else 0,
            "valueBytes": usage.value_bytes if usage else 0,
            "droppedRecords": usage.dropped_records if usage else 0,
            "droppedBytes": usage.dropped_bytes if usage else 0,
            "rejected": usage.rejected if usage else 0,
            "expired": usage.expired if usage else 0,
            "integrityFailures": usage.integrity_failures if usage else 0,
            "maxRecords": policy.max_records,
            "maxBytes": policy.max_bytes,
            "overflow": policy.overflow,
            "ttlSeconds": policy.ttl,
        }
        return document

    def summary(self, store: Store) -> Document:
        """Whole-store figures (for the stats topic and the admin namespace)."""
        stats = store.stats()
        namespaces = {
            name: self._stats(store, name) for name in sorted(set(stats.namespaces) | set(self._policies))
        }
        return {
            "namespaces": namespaces,
            "integrityFailures": stats.integrity_failures,
            "recoveries": stats.recoveries,
            "pendingReencryption": store.pending_reencryption(),
        }

    # ---- maintenance ---------------------------------------------------------------------------------

    async def stats_document(self) -> Document | None:
        store = self._store
        if store is None or store.closed:
            return None
        return await self._run(functools.partial(self.summary, store))

    async def maintain(self, *, rotate: bool, batch_size: int = 256, max_batches: int = 8) -> dict[str, int]:
        """Purge expired records, rotate data keys if due, and re-encrypt a bounded number of batches."""
        store = self._store
        if store is None or store.closed:
            return {}

        def work() -> dict[str, int]:
            done = {"expired": store.purge_expired(), "rotated": 0, "reencrypted": 0}
            if rotate:
                done["rotated"] = len(store.rotate())
            for _ in range(max_batches):
                step = store.reencrypt(batch_size)
                done["reencrypted"] += step.records
                if step.complete:
                    break
            return done

        return await self._run(work)
