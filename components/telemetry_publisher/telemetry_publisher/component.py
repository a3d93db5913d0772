"""com.deviceagent.TelemetryPublisher: sample on an aligned schedule, publish, spool what cannot go.

Four tasks run under the component (`run`): sampling on the schedule, the spool's drain, following the
IoT Core connection status, and saving the usage. Their pieces are in this package (`payload`, `spool`,
`sink`, `budget`, `sequence`, `baseline_file`) and in `device_agent.metrics`; this module only wires them to
the nucleus and the store.

State, and where it lives:
- the spool: the store's `telemetry-spool` namespace (a queue);
- the day's and month's usage and the loss totals (at most once a minute): the `usage` key of the store's
  `telemetry` namespace;
- the sequence reservation and the counter baseline: private files in the work folder, because numbering
  must go on while the store is unavailable, and a baseline must be current or absent (a stale one makes a
  restart count windows already sent); neither is private data.

When the store is unavailable, samples wait in a bounded memory buffer (and messages say so).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import time
from pathlib import Path
from typing import ClassVar

from device_agent.component import Component, Context
from device_agent.errors import (
    DeviceAgentError,
    IntegrityError,
    NotAuthorizedError,
    OperationNotSupportedError,
    StorageError,
    TimedOutError,
    UnavailableError,
)
from device_agent.ipc import Qos
from device_agent.ipc_types import IotCoreConnectionStatus
from device_agent.metrics import Sampler, Schedule
from device_agent.refusals import Destination, Refusals
from device_agent.retry import Backoff, retry
from device_agent.store_client import StoreClient
from telemetry_publisher.baseline_file import BaselineFile
from telemetry_publisher.budget import Decision, Usage, decide
from telemetry_publisher.config import TelemetryConfig
from telemetry_publisher.local_state import FileState
from telemetry_publisher.payload import (
    Packer,
    Status,
    encode_sample,
    group_sizes,
    local_message,
    telemetry_topic,
)
from telemetry_publisher.sequence import SequenceAllocator, encode_reservation
from telemetry_publisher.sink import MessageSink, current_status
from telemetry_publisher.spool import Spool
from telemetry_publisher.state import StoredValue

logger = logging.getLogger(__name__)

NAME = "com.deviceagent.TelemetryPublisher"
STATE_NAMESPACE = "telemetry"
SPOOL_NAMESPACE = "telemetry-spool"
STATE_DIRECTORY_ENV = "TELEMETRY_STATE_DIRECTORY"
SEQUENCE_FILE = "sequence.json"
BASELINE_FILE = "baseline.json"
STORE_TIMEOUT = 5.0
FINAL_SAVE_SECONDS = 1.5
CONNECTION_STATUS_BACKOFF = Backoff(initial=1.0, maximum=300.0)
STATUS_WAIT_SECONDS = 2.0  # for the first status event after subscribing


class TelemetryPublisher(Component[TelemetryConfig]):
    name: ClassVar[str] = NAME
    config_model = TelemetryConfig

    def __init__(self) -> None:
        self.state_dir = Path(os.environ.get(STATE_DIRECTORY_ENV, "state")).absolute()
        self.group_bytes: dict[str, int] = {}
        self.decision: Decision | None = None
        self.baseline_file = BaselineFile(self.state_dir / BASELINE_FILE)
        self.state_due = asyncio.Event()
        # Set once the nucleus said whether IoT Core is connected (or cannot say): until then a publish
        # "succeeds" into the nucleus's spooler even while offline, which would move the durable backlog
        # into the nucleus's memory.
        self.status_known = asyncio.Event()

    # ---- lifecycle -------------------------------------------------------------------------------------

    async def start(self, ctx: Context[TelemetryConfig]) -> None:
        config = ctx.config
        self.ctx = ctx
        self.ipc = ctx.ipc
        self.refusals = Refusals(ctx, "telemetry.publish_unauthorized", what="telemetry")
        self.topic = telemetry_topic(config.topic, ctx.thing_name)
        self.state = StoreClient(ctx.ipc, STATE_NAMESPACE, timeout=STORE_TIMEOUT)
        self.queue = StoreClient(ctx.ipc, SPOOL_NAMESPACE, timeout=STORE_TIMEOUT)
        await self.state.open()
        await self.queue.open()
        self.usage = Usage()
        used_before = await self._load_usage()
        self.sequence = await self._sequence(used_before)
        baseline = await self.baseline_file.load()
        self.sampler = Sampler(config.sampler_settings(), baseline=baseline)
        self.packer = Packer(
            thing=ctx.thing_name, max_bytes=config.max_message_bytes, max_samples=config.batch_size
        )
        self.sink = MessageSink(self.packer, publish=self._publish, status=self._status, usage=self.usage)
        self.spool = Spool(self.queue, self.sink, config.spool_settings(), ledger=self.usage)
        await self.spool.open()
        self.schedule = Schedule(config.interval_seconds)

    async def run(self, ctx: Context[TelemetryConfig]) -> None:
        try:
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(self._sample_forever(ctx), name="telemetry.sample")
                tasks.create_task(self._drain_forever(), name="telemetry.drain")
                tasks.create_task(self._follow_connection(ctx), name="telemetry.connection")
                tasks.create_task(self._save_state_forever(), name="telemetry.state")
                await ctx.stopping.wait()
                raise _Stopping
        except* _Stopping:
            pass
        finally:
            # The store may be stopping too: a short, bounded last save (at most a minute of counts is lost).
            with contextlib.suppress(DeviceAgentError, TimeoutError):
                async with asyncio.timeout(FINAL_SAVE_SECONDS):
                    await self.usage.save_if_due(StoredValue(self.state, "usage"), force=True)

    async def on_config(
        self, ctx: Context[TelemetryConfig], old: TelemetryConfig, new: TelemetryConfig
    ) -> None:
        self.topic = telemetry_topic(new.topic, ctx.thing_name)
        self.sampler.configure(new.sampler_settings())
        self.spool.configure(new.spool_settings())
        if (old.max_message_bytes, old.batch_size) != (new.max_message_bytes, new.batch_size):
            self.sink.packer = Packer(
                thing=ctx.thing_name, max_bytes=new.max_message_bytes, max_samples=new.batch_size
            )
        # Decided afresh now: a new interval re-plans the tick being waited for (which may be an hour off).
        self.decision = None
        self._decide(new)

    # ---- state -----------------------------------------------------------------------------------------

    async def _sequence(self, used_before: bool | None) -> SequenceAllocator:
        """The sequence allocator. Numbering jumps past anything used before (to the current time in
        milliseconds) when the reservation file is corrupt (it is set aside), or missing on a device that
        has numbered samples before (`used_before`; None: unknown), so a number is never used twice."""
        path = self.state_dir / SEQUENCE_FILE
        sequence = SequenceAllocator(FileState(path))
        try:
            if await FileState(path).load() is None and used_before is not False:
                await self._restart_numbering(path, "missing")
            await sequence.start()
        except (IntegrityError, StorageError) as error:
            if isinstance(error, StorageError) and error.errno == errno.ENOSPC:
                raise
            moved = path.with_name(f"{path.name}.corrupt-{int(time.time())}")
            with contextlib.suppress(OSError):
                path.replace(moved)
            await self._restart_numbering(path, type(error).__name__)
            sequence = SequenceAllocator(FileState(path))
            await sequence.start()
        return sequence

    async def _restart_numbering(self, path: Path, reason: str) -> None:
        floor = int(time.time() * 1000)
        logger.warning("telemetry.sequence_reset", extra={"reason": reason, "floor": floor})
        await FileState(path).save(encode_reservation(floor))

    async def _load_usage(self) -> bool | None:
        """Load the usage; whether this device has sent or spooled samples before (None: the store cannot
        tell, then it is assumed). Without the store the usage starts afresh (and says so)."""
        try:
            saved = await self.usage.load(StoredValue(self.state, "usage"))
            backlog = (await self.queue.stats()).records
        except DeviceAgentError as error:
            logger.warning("telemetry.state_not_loaded", extra={"error": type(error).__name__})
            return None
        return saved or backlog > 0

    # ---- sampling ----------------------------------------------------------------------------------------

    async def _sample_forever(self, ctx: Context[TelemetryConfig]) -> None:
        await self.status_known.wait()
        async for tick in self.schedule.ticks():
            if tick.skipped:
                logger.info("telemetry.ticks_skipped", extra={"skipped": tick.skipped})
            await self._sample_once(ctx)

    def _decide(self, config: TelemetryConfig) -> Decision:
        """The budget's resolution for now; the schedule follows its interval."""
        decision = decide(
            config.budget_settings(),
            interval=config.interval_seconds,
            groups=config.groups,
            usage=self.usage.state,
            now=time.time(),
            group_bytes=self.group_bytes,
        )
        if self.decision is None or decision.degraded != self.decision.degraded:
            logger.info(
                "telemetry.resolution",
                extra={"reason": decision.reason, "interval_s": decision.interval_seconds},
            )
        self.decision = decision
        self.schedule.set_interval(decision.interval_seconds)
        return decision

    async def _sample_once(self, ctx: Context[TelemetryConfig]) -> None:
        config = ctx.config
        decision = self._decide(config)
        sample = self.sampler.sample(decision.groups)
        record = encode_sample(await self.sequence.next(), sample)
        self.group_bytes.update(group_sizes(sample))
        if config.local_topic:
            try:
                await ctx.ipc.publish(config.local_topic, local_message(ctx.thing_name, record))
            except NotAuthorizedError:
                await self.refusals.refused(config.local_topic, Destination.LOCAL)
            except DeviceAgentError as error:
                logger.warning("telemetry.local_not_sent", extra={"error": type(error).__name__})
            else:
                self.refusals.succeeded(config.local_topic)
        await self.spool.submit(record)
        if (baseline := self.sampler.baseline) is not None:
            await self.baseline_file.save(baseline)  # before the next sample; on failure, removed
        self.state_due.set()
        self._update_health(ctx)

    def _update_health(self, ctx: Context[TelemetryConfig]) -> None:
        self.refusals.forget_except({self.topic, ctx.config.local_topic})
        refused = self.refusals.detail()
        if refused is not None:
            ctx.set_health("DEGRADED", refused)
        elif not self.spool.stats.store_available:
            ctx.set_health("DEGRADED", "store unavailable: samples kept in memory")
        else:
            ctx.set_health("RUNNING")

    async def _save_state_forever(self) -> None:
        """Persist the usage (when due) after each sample, beside the sampling, never in its way: a store
        that does not answer costs this task its timeout, not the schedule a sample."""
        usage_saved = True
        while True:
            await self.state_due.wait()
            self.state_due.clear()
            try:
                await self.usage.save_if_due(StoredValue(self.state, "usage"))
            except DeviceAgentError as error:
                if usage_saved:
                    logger.warning("telemetry.state_not_saved", extra={"error": type(error).__name__})
                usage_saved = False
            else:
                usage_saved = True

    # ---- publishing ----------------------------------------------------------------------------------------

    async def _publish(self, payload: bytes) -> None:
        topic = self.topic
        try:
            await self.ipc.publish_to_iot_core(topic, payload, qos=Qos.AT_LEAST_ONCE)
        except NotAuthorizedError:
            # The recipe (or the nucleus's interpolation setting) does not grant the topic: samples are
            # spooled, and an operator must hear of it (an event, the heartbeat), but not once per sample.
            await self.refusals.refused(topic, Destination.IOT_CORE)
            raise
        self.refusals.succeeded(topic)

    def _status(self) -> Status:
        degraded = None if self.decision is None else self.decision.degraded
        return current_status(self.usage, self.spool.stats, degraded)

    async def _drain_forever(self) -> None:
        await self.status_known.wait()
        await self.spool.run()

    async def _follow_connection(self, ctx: Context[TelemetryConfig]) -> None:
        """Subscribe to the IoT Core connection status; until then, and without it, publish results decide.
        A transient failure (the nucleus restarting, a timeout) is retried with capped, jittered backoff;
        once subscribed, the IPC session re-subscribes by itself after every reconnection."""

        def on_status(status: IotCoreConnectionStatus) -> None:
            self.spool.set_connected(status.connected)
            self.status_known.set()

        async def subscribe() -> None:
            try:
                await ctx.ipc.subscribe_to_connection_status(on_status)
            except BaseException:
                self.status_known.set()  # publish results decide meanwhile
                raise
            # The nucleus sends the current status first; one that does not must not hold the drain back.
            asyncio.get_running_loop().call_later(STATUS_WAIT_SECONDS, self.status_known.set)

        try:
            await retry(
                subscribe,
                on=_transient,
                name="telemetry.connection_status",
                backoff=CONNECTION_STATUS_BACKOFF,
            )
        except OperationNotSupportedError:
            logger.info("telemetry.no_connection_status")  # publish results decide instead
        except DeviceAgentError as error:
            logger.warning("telemetry.connection_status_unavailable", extra={"error": type(error).__name__})


def _transient(error: BaseException) -> bool:
    """Worth subscribing again: the nucleus did not answer, not "never" (unsupported, or not authorized)."""
    return isinstance(error, UnavailableError | TimedOutError) and not isinstance(
        error, OperationNotSupportedError
    )


class _Stopping(Exception):  # noqa: N818 - control flow: ends the task group when the component stops
    pass
