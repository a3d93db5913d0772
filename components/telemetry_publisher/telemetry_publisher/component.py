"""com.deviceagent.TelemetryPublisher: sample on an aligned schedule, publish, spool what cannot go.

Three tasks run under the component (`run`): sampling on the schedule, the spool's drain, and following
the IoT Core connection status. Their pieces are in this package (`payload`, `spool`, `sink`, `budget`,
`sequence`) and in `device_agent.metrics`; this module only wires them to the nucleus and the store.

State, and where it lives:
- the spool: the store's `telemetry-spool` namespace (a queue);
- counter baselines (written after every sample, so a restart neither spikes nor drops a value) and the
  day's and month's usage (at most once a minute): keys of the store's `telemetry` namespace;
- the sequence reservation: a private file in the work folder, because numbering must go on while the
  store is unavailable (a number is not private data).

When the store is unavailable, samples wait in a bounded memory buffer (and messages say so); baselines
are then not saved, so a restart in that window starts its counters afresh (one sample without deltas,
never a spike).
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
    InvalidInputError,
    NotAuthorizedError,
    OperationNotSupportedError,
    StorageError,
)
from device_agent.ipc import Qos
from device_agent.ipc_types import IotCoreConnectionStatus
from device_agent.metrics import Baseline, Sampler, Schedule
from device_agent.refusals import Destination, Refusals
from device_agent.store_client import StoreClient
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
STORE_TIMEOUT = 5.0
FINAL_SAVE_SECONDS = 1.5


class TelemetryPublisher(Component[TelemetryConfig]):
    name: ClassVar[str] = NAME
    config_model = TelemetryConfig

    def __init__(self) -> None:
        self.state_dir = Path(os.environ.get(STATE_DIRECTORY_ENV, "state")).absolute()
        self.group_bytes: dict[str, int] = {}
        self.decision: Decision | None = None
        self.baseline_saved = True
        self.state_due = asyncio.Event()

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
        self.sequence = await self._sequence()
        self.usage = Usage()
        baseline = await self._load_state()
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
                tasks.create_task(self.spool.run(), name="telemetry.drain")
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
        self.decision = None  # decided afresh at the next tick, with the new interval and groups

    # ---- state -----------------------------------------------------------------------------------------

    async def _sequence(self) -> SequenceAllocator:
        """The sequence allocator; a corrupt reservation file is set aside, and numbering jumps past anything
        used before (to the current time in milliseconds), so a number is never used twice."""
        path = self.state_dir / SEQUENCE_FILE
        sequence = SequenceAllocator(FileState(path))
        try:
            await sequence.start()
        except (IntegrityError, StorageError) as error:
            if isinstance(error, StorageError) and error.errno == errno.ENOSPC:
                raise
            moved = path.with_name(f"{path.name}.corrupt-{int(time.time())}")
            with contextlib.suppress(OSError):
                path.replace(moved)
            floor = int(time.time() * 1000)
            logger.warning("telemetry.sequence_reset", extra={"reason": str(error), "floor": floor})
            await FileState(path).save(encode_reservation(floor))
            sequence = SequenceAllocator(FileState(path))
            await sequence.start()
        return sequence

    async def _load_state(self) -> Baseline | None:
        """Usage and baselines from the store; without the store, start afresh (and say so)."""
        try:
            await self.usage.load(StoredValue(self.state, "usage"))
            data = await self.state.get_or_none("baseline")
        except DeviceAgentError as error:
            logger.warning("telemetry.state_not_loaded", extra={"error": type(error).__name__})
            return None
        if data is None:
            return None
        try:
            return Baseline.from_bytes(data)
        except InvalidInputError:
            logger.warning("telemetry.baseline_unreadable")
            return None

    # ---- sampling ----------------------------------------------------------------------------------------

    async def _sample_forever(self, ctx: Context[TelemetryConfig]) -> None:
        async for tick in self.schedule.ticks():
            if tick.skipped:
                logger.info("telemetry.ticks_skipped", extra={"skipped": tick.skipped})
            await self._sample_once(ctx)

    async def _sample_once(self, ctx: Context[TelemetryConfig]) -> None:
        config = ctx.config
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
        if decision.interval_seconds != self.schedule.interval:
            self.schedule.set_interval(decision.interval_seconds)
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
        """Persist the latest baseline (and usage) after each sample, beside the sampling, never in its way:
        a store that does not answer costs this task its timeout, not the schedule a sample."""
        while True:
            await self.state_due.wait()
            self.state_due.clear()
            await self._save_state()

    async def _save_state(self) -> None:
        baseline = self.sampler.baseline
        try:
            if baseline is not None:
                await self.state.put("baseline", baseline.to_bytes())
            await self.usage.save_if_due(StoredValue(self.state, "usage"))
        except DeviceAgentError as error:
            if self.baseline_saved:
                logger.warning("telemetry.state_not_saved", extra={"error": type(error).__name__})
            self.baseline_saved = False
        else:
            self.baseline_saved = True

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

    async def _follow_connection(self, ctx: Context[TelemetryConfig]) -> None:
        def on_status(status: IotCoreConnectionStatus) -> None:
            self.spool.set_connected(status.connected)

        try:
            await ctx.ipc.subscribe_to_connection_status(on_status)
        except OperationNotSupportedError:
            logger.info("telemetry.no_connection_status")  # publish results decide instead
        except DeviceAgentError as error:
            logger.warning("telemetry.connection_status_unavailable", extra={"error": type(error).__name__})


class _Stopping(Exception):  # noqa: N818 - control flow: ends the task group when the component stops
    pass
