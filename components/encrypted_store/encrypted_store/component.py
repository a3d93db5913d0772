"""com.deviceagent.EncryptedStore: the request loop, maintenance, stats and events around the engine.

Requests arrive on `device-agent/store/+/request` (one subscription; the namespace is the topic's middle
level, and the nucleus has already checked that the sender's recipe grants that topic). They wait in a
bounded queue and are carried out one at a time, in arrival order, on the engine's thread; the answer goes
to `device-agent/store/<namespace>/response`. When the queue is full, a request is answered `busy` at once.

The store opens in `start()`. If it cannot (no key yet, storage failing), the component still reports
RUNNING, answers `unavailable`, says DEGRADED in its heartbeat and retries with backoff: it never crash
loops. Corrupt files are the engine's business (set aside, salvaged, reported).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import os
import time
from pathlib import Path
from typing import Any, ClassVar

from device_agent import store_protocol as protocol
from device_agent.component import Component, Context
from device_agent.errors import DeviceAgentError, InvalidInputError, NotAuthorizedError, StorageError
from device_agent.files import atomic_write, read_private
from device_agent.ipc_types import LocalMessage
from device_agent.messages import Category, Severity, utc_now
from device_agent.refusals import Destination, Refusals
from device_agent.retry import Backoff
from device_agent.store import KekSource, SecretKekSource
from encrypted_store.events import EventRelay
from encrypted_store.service import StoreService
from encrypted_store.settings import DAY, StoreConfig

logger = logging.getLogger(__name__)

NAME = "com.deviceagent.EncryptedStore"
STORE_DIRECTORY_ENV = "STORE_DIRECTORY"
ROTATION_STATE = "rotation.json"
# Reopening after a failure: soon at first, then every few minutes (a full disk or a missing secret grant
# is fixed by a person or a deployment, not by hammering).
OPEN_BACKOFF = Backoff(initial=1.0, maximum=300.0)
OPEN_CHECK_SECONDS = 5.0


class EncryptedStore(Component[StoreConfig]):
    name: ClassVar[str] = NAME
    config_model = StoreConfig

    def __init__(self) -> None:
        self.directory = Path(os.environ.get(STORE_DIRECTORY_ENV, "store")).absolute()
        self.requests: asyncio.Queue[tuple[str, protocol.Request]] = asyncio.Queue()
        self.relay = EventRelay()
        self.service: StoreService | None = None
        self.refused = 0
        self.secret_refusals: Refusals | None = None

    # ---- lifecycle -------------------------------------------------------------------------------------

    async def start(self, ctx: Context[StoreConfig]) -> None:
        config = ctx.config
        self.relay.bind(ctx)
        # keySource `secret` without a GetSecretValue grant: an event (at most hourly), an error line and
        # DEGRADED until the secret is read; the store keeps retrying to open (security.md).
        self.secret_refusals = Refusals(
            ctx, "store.secret_unauthorized", what="the key-encryption secret", doing="read the secret"
        )
        self.service = StoreService(
            self.directory,
            lambda: self._kek_source(ctx),
            policies=config.policies(),
            max_value_bytes=config.max_value_bytes,
            on_event=self.relay.from_engine,
        )
        await self.service.open()
        await ctx.ipc.subscribe(protocol.REQUEST_FILTER, self._on_request)

    async def run(self, ctx: Context[StoreConfig]) -> None:
        service = self.service
        assert service is not None  # noqa: S101 - start() ran
        if not service.is_open:  # said here: the runtime reports RUNNING once start() returns
            ctx.set_health("DEGRADED", self._not_open_reason())
        try:
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(self._serve(ctx, service), name="store.serve")
                tasks.create_task(self._keep_open(ctx, service), name="store.keep-open")
                tasks.create_task(self._maintain(ctx, service), name="store.maintain")
                tasks.create_task(self._publish_stats(ctx, service), name="store.stats")
                tasks.create_task(self.relay.run(), name="store.events")
                await ctx.stopping.wait()
                raise _Stopping
        except* _Stopping:
            pass
        finally:
            await service.close()

    async def on_config(self, ctx: Context[StoreConfig], old: StoreConfig, new: StoreConfig) -> None:
        if self.service is not None:
            await self.service.set_policies(new.policies(), new.max_value_bytes)
        if (old.key_source, old.secret_id) != (new.key_source, new.secret_id):
            await ctx.emit_event(
                "store.key_source_pending",
                category=Category.CONFIGURATION,
                severity=Severity.WARNING,
                message="The key source changed; it takes effect when the store restarts.",
            )

    # ---- the key ---------------------------------------------------------------------------------------

    async def _kek_source(self, ctx: Context[StoreConfig]) -> KekSource | None:
        """None: the engine's default, a key file beside the store. Raises while a secret is unavailable."""
        config = ctx.config
        if config.key_source != "secret":
            return None
        refusals = self.secret_refusals
        try:
            secret = await ctx.ipc.get_secret(config.secret_id)
        except NotAuthorizedError:
            if refusals is not None:
                await refusals.refused(config.secret_id, Destination.SECRET_MANAGER)
            raise
        if refusals is not None:
            refusals.succeeded(config.secret_id)
        material = secret.binary if secret.binary is not None else secret.text
        if material is None:
            raise InvalidInputError("the key-encryption secret has no value")
        return SecretKekSource(lambda: material)

    # ---- requests --------------------------------------------------------------------------------------

    async def _on_request(self, message: LocalMessage) -> None:
        namespace = protocol.namespace_of(message.topic)
        if namespace is None:
            return
        service = self.service
        config = self._config
        if service is None or config is None:
            return
        payload = message.payload
        if message.binary:
            try:
                payload = json.loads(payload)
            except (ValueError, UnicodeDecodeError):
                payload = None
        request_id = protocol.request_id_of(payload)
        if request_id is None:
            self.refused += 1
            logger.warning("store.unanswerable_request", extra={"namespace": namespace})
            return
        try:
            request = protocol.parse_request(
                payload, max_value_bytes=config.max_value_bytes, max_read_bytes=config.max_read_bytes
            )
        except InvalidInputError as exc:
            self.refused += 1
            await self._answer(
                namespace, protocol.error_document(request_id, protocol.ErrorCode.INVALID_REQUEST, str(exc))
            )
            return
        if self.requests.qsize() >= config.max_queued_requests:
            cached = service.cached_answer(namespace, request_id)
            await self._answer(
                namespace,
                cached
                or protocol.error_document(request_id, protocol.ErrorCode.BUSY, "too many requests waiting"),
            )
            return
        self.requests.put_nowait((namespace, request))

    async def _serve(self, ctx: Context[StoreConfig], service: StoreService) -> None:
        while True:
            namespace, request = await self.requests.get()
            answer = await service.handle(namespace, request)
            if request.op is protocol.Op.WIPE and answer.get("ok"):
                await ctx.emit_event(
                    "store.erased",
                    category=Category.SECURITY,
                    severity=Severity.WARNING,
                    message="Records were crypto-erased on request.",
                    namespace=namespace,
                )
            await self._answer(namespace, answer)

    async def _answer(self, namespace: str, answer: dict[str, Any]) -> None:
        ctx = self.relay.ctx
        if ctx is None:
            return
        try:
            await ctx.ipc.publish(protocol.response_topic(namespace), answer)
        except DeviceAgentError as exc:
            # The client times out and resends; the replay cache answers it without doing the work twice.
            logger.warning(
                "store.answer_not_sent", extra={"namespace": namespace, "error": type(exc).__name__}
            )

    @property
    def _config(self) -> StoreConfig | None:
        ctx = self.relay.ctx
        return None if ctx is None else ctx.config

    # ---- background work -------------------------------------------------------------------------------

    async def _keep_open(self, ctx: Context[StoreConfig], service: StoreService) -> None:
        delays = OPEN_BACKOFF.delays()
        while True:
            if service.is_open:
                delays = OPEN_BACKOFF.delays()
                if await ctx.sleep(OPEN_CHECK_SECONDS):
                    return
                continue
            if await ctx.sleep(next(delays)):
                return
            if await service.open():
                ctx.set_health("RUNNING")
            else:
                ctx.set_health("DEGRADED", self._not_open_reason())

    def _not_open_reason(self) -> str:
        refused = self.secret_refusals.detail() if self.secret_refusals is not None else None
        return "store not open; retrying" + (f" ({refused})" if refused else "")

    async def _maintain(self, ctx: Context[StoreConfig], service: StoreService) -> None:
        while not await ctx.sleep(ctx.config.maintenance_interval_seconds):
            rotate = self._rotation_due(ctx.config)
            try:
                done = await service.maintain(rotate=rotate)
            except DeviceAgentError as exc:
                logger.warning(
                    "store.maintenance_failed", extra={"error": type(exc).__name__, "reason": str(exc)}
                )
                continue
            if rotate and done:
                self._rotated_now()
                logger.info("store.keys_rotated", extra={"namespaces": done.get("rotated", 0)})
            if done.get("expired") or done.get("reencrypted"):
                logger.info("store.maintained", extra=done)

    def _rotation_due(self, config: StoreConfig) -> bool:
        if config.rotation_interval_days <= 0:
            return False
        path = self.directory / ROTATION_STATE
        try:
            last = float(json.loads(read_private(path))["rotated"])
        except StorageError as error:
            if error.errno != errno.ENOENT:
                logger.warning("store.rotation_state_unreadable", extra={"reason": str(error)})
                return True
            self._rotated_now()  # a new store's keys are new: start the clock now
            return False
        except (ValueError, KeyError, TypeError):
            logger.warning("store.rotation_state_unreadable")
            return True
        return time.time() - last >= config.rotation_interval_days * DAY

    def _rotated_now(self) -> None:
        with contextlib.suppress(DeviceAgentError, OSError):
            atomic_write(self.directory / ROTATION_STATE, json.dumps({"rotated": time.time()}).encode())

    async def _publish_stats(self, ctx: Context[StoreConfig], service: StoreService) -> None:
        while True:
            interval = ctx.config.stats_interval_seconds
            if await ctx.sleep(interval if interval > 0 else 60.0):
                return
            if interval <= 0:
                continue
            document = await service.stats_document()
            if document is None:
                continue
            message = {
                "schema": protocol.STATS_SCHEMA,
                "component": NAME,
                "thing": ctx.thing_name,
                "time": utc_now(),
                **document,
                "refusedRequests": self.refused,
            }
            try:
                await ctx.ipc.publish(protocol.STATS_TOPIC, message)
            except DeviceAgentError as exc:
                logger.warning("store.stats_not_sent", extra={"error": type(exc).__name__})


class _Stopping(Exception):  # noqa: N818 - control flow: ends the task group when the component stops
    pass
