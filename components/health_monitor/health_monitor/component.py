"""com.deviceagent.HealthMonitor: judge the device's health, keep the health log, publish summaries.

Inputs (handlers only record what arrived; one loop does the judging and the writing):
- `device-agent/metrics`: the telemetry publisher's latest sample (cpu, memory, swap, disk, temperature);
  when none arrives for `selfSampleAfterSeconds`, the monitor samples the device itself;
- `device-agent/heartbeat/+`: each sibling's silence, counted in its own `intervalSeconds`; a heartbeat
  sequence that starts again without a stop in between is an unexpected restart;
- `device-agent/events`: integrity, configuration and security events, counted and logged as incidents;
- `device-agent/store/stats`: how many seconds the store's next stats are overdue; its stats carry no
  interval, so the expected one is the gap between its last two (judged from the second one on);
- SubscribeToIoTCoreConnectionStatus: seconds offline, and seconds since the last summary published while
  connected. Where the nucleus lacks it, a summary the nucleus takes at QoS 0 stands for "connected" (the
  nucleus drops QoS 0 while offline; the summary then goes again at QoS 1, kept until the link is back);
- the certificate file, the wall clock against the monotonic one, the boot id and the board's flags.

State changes and incidents go to the health log durably, snapshots every `log.snapshotIntervalSeconds`
(and after each rotation); a summary goes to IoT Core and the local topic at every change and every
`summaryIntervalSeconds`. Whenever it opens the log, the monitor keeps a copy of `device-health` beside it
(technician_tool.py). Messages from other components are data: a malformed one is counted and noted,
never fatal.

The monitor's own state: the runtime reports RUNNING with UpdateState once `start()` returns and ERRORED
on a fatal error. A health log that cannot be written is not fatal (restarting would not free a disk):
the heartbeat says DEGRADED with the reason, and summaries keep flowing; it says RUNNING again once a
write succeeds. A device that is CRITICAL does not make the monitor DEGRADED: the monitor is working.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import itertools
import json
import logging
import math
import os
import time
from pathlib import Path
from typing import ClassVar, Final

from device_agent.component import Component, Context
from device_agent.errors import (
    DeviceAgentError,
    InvalidInputError,
    NotAuthorizedError,
    NotFoundError,
    OperationNotSupportedError,
    StorageError,
)
from device_agent.files import atomic_write, ensure_private_dir, read_private
from device_agent.health_log import (
    HealthLogWriter,
    Incident,
    Lifecycle,
    LifecycleEvent,
    Record,
    Severity,
    Snapshot,
    State,
    StateChange,
    fit_snapshot,
    is_component_name,
    is_event_name,
    utc_now,
)
from device_agent.ipc_types import IotCoreConnectionStatus, LocalMessage, Qos
from device_agent.messages import Category
from device_agent.messages import Severity as EventSeverity
from device_agent.metrics import Group, Sampler, SamplerSettings
from device_agent.metrics.source import PsutilSource
from device_agent.refusals import Destination, Refusals
from health_monitor.backlog import Backlog
from health_monitor.boot import judge_boot
from health_monitor.config import HealthConfig, summary_topic
from health_monitor.monitor import Monitor
from health_monitor.readings import (
    ClockWatch,
    clock_unset,
    event_check,
    inode_readings,
    read_certificate,
    sample_readings,
)
from health_monitor.restarts import RestartPlanner
from health_monitor.sharing import share_work_folder
from health_monitor.summary import summary
from health_monitor.technician_tool import install_tool
from health_monitor.throttle import ThrottleWatch

logger = logging.getLogger(__name__)

NAME: Final = "com.deviceagent.HealthMonitor"
LOG_DIRECTORY_ENV: Final = "HEALTH_LOG_DIRECTORY"
STATE_DIRECTORY_ENV: Final = "HEALTH_STATE_DIRECTORY"
STATE_FILE: Final = "monitor.json"
METRICS_TOPIC: Final = "device-agent/metrics"
HEARTBEATS_TOPIC: Final = "device-agent/heartbeat/+"
EVENTS_TOPIC: Final = "device-agent/events"
STORE_STATS_TOPIC: Final = "device-agent/store/stats"
PUBLISH_TIMEOUT: Final = 5.0
RESTART_TIMEOUT: Final = 10.0  # the nucleus answers at once: the restart happens after
REJECTS_NOTE_SECONDS: Final = 60.0  # at most one `events.rejected` note a minute, however many arrive
_SEVERITIES: Final = {s.value: s for s in Severity}
# What the monitor samples itself while the publisher's samples are not arriving: what its checks judge.
SELF_SAMPLED: Final = frozenset({Group.CPU, Group.MEMORY, Group.DISK, Group.TEMPERATURE})
MAX_MOUNTS: Final = 16


@dataclasses.dataclass
class _Beat:
    last: float
    interval: float
    sequence: int


class HealthMonitor(Component[HealthConfig]):
    name: ClassVar[str] = NAME
    config_model = HealthConfig

    def __init__(self) -> None:
        self.log_dir = Path(os.environ.get(LOG_DIRECTORY_ENV, "health")).absolute()
        self.state_dir = Path(os.environ.get(STATE_DIRECTORY_ENV, "state")).absolute()
        self.pending: list[Record] = []
        self.backlog = Backlog()  # what the log could not take yet
        self.throttle = ThrottleWatch()
        self.beats: dict[str, _Beat] = {}
        self.last_sample: float | None = None
        self.sample_mounts: tuple[str, ...] = ()  # the mounts in the publisher's samples: inodes too
        self.last_stats: float | None = None
        self.stats_gap: float | None = None
        self.connected: bool | None = None
        self.offline_since: float | None = None
        self.last_connected_publish: float | None = None
        # None until known. Without the operation, a summary the nucleus takes at QoS 0 is the evidence of
        # a connection (a nucleus drops QoS 0 while offline), and last_publish counts from the start.
        self.status_supported: bool | None = None
        self.started = time.monotonic()
        self.certificate_read: float | None = None
        self.certificate_problem: str | None = None  # why the certificate could not be read, last time
        self.log_problem: str | None = None
        self.sequence = 0
        self.snapshot_checks: set[tuple[str, str | None]] = set()
        self.snapshot_due = False  # the log rotated and the new file has no snapshot yet
        self.restarting: set[str] = set()  # asked to restart: its heartbeats starting again are expected
        self.rejected: collections.Counter[str] = collections.Counter()  # malformed messages, by reason
        self.rejects_noted = -math.inf
        self.trimmed_note: str | None = None  # what the last trimmed snapshot left out

    # ---- lifecycle -------------------------------------------------------------------------------------

    async def start(self, ctx: Context[HealthConfig]) -> None:
        self.ctx = ctx
        self.wake = asyncio.Event()
        self.write_lock = asyncio.Lock()
        self.monitor = Monitor(ctx.config.checks)
        self.restarts = RestartPlanner(ctx.config.restart)
        self.refusals = Refusals(ctx, "health.publish_unauthorized", what="health summaries")
        self.writer = self._new_writer(ctx.config)
        self.sampler = Sampler(SamplerSettings(groups=SELF_SAMPLED))
        self.clock_watch = ClockWatch()
        await self._write(
            [
                Lifecycle(
                    time=utc_now(), event=LifecycleEvent.MONITOR_STARTED, detail=f"version {self.version}"
                )
            ]
        )
        await self._check_boot()
        ipc = ctx.ipc
        await ipc.subscribe(METRICS_TOPIC, self._on_metrics)
        await ipc.subscribe(HEARTBEATS_TOPIC, self._on_heartbeat)
        await ipc.subscribe(EVENTS_TOPIC, self._on_event)
        await ipc.subscribe(STORE_STATS_TOPIC, self._on_store_stats)
        try:
            await ipc.subscribe_to_connection_status(self._on_connection)
        except OperationNotSupportedError:
            logger.info("health.no_connection_status")
            self.status_supported = False
        else:
            self.status_supported = True

    def _new_writer(self, config: HealthConfig) -> HealthLogWriter:
        return HealthLogWriter(
            self.log_dir,
            max_file_bytes=config.log.max_file_bytes,
            max_files=config.log.max_files,
            group=config.log.technician_group or None,
        )

    async def run(self, ctx: Context[HealthConfig]) -> None:
        try:
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(self._judge_forever(ctx), name="health.judge")
                tasks.create_task(self._sample_when_quiet(ctx), name="health.self-sample")
                await ctx.stopping.wait()
                raise _Stopping
        except* _Stopping:
            pass
        finally:
            # The clean-stop flag first: a nucleus slow to answer while the device shuts down must not make
            # a clean stop look like a crash (and the next boot like a power cut).
            self._save_state(clean=True)
            with contextlib.suppress(DeviceAgentError, TimeoutError):
                async with asyncio.timeout(2.0):
                    last = [
                        *self._rejects_note(math.inf),
                        Lifecycle(time=utc_now(), event=LifecycleEvent.MONITOR_STOPPED),
                    ]
                    await self._write(last)
                    await self._publish_summary(ctx, "stop")
            await asyncio.to_thread(self.writer.close)

    async def on_config(
        self,
        ctx: Context[HealthConfig],  # noqa: ARG002 - the runtime's signature
        old: HealthConfig,
        new: HealthConfig,
    ) -> None:
        self.monitor.configure(new.checks)
        self.restarts.configure(new.restart)
        if old.log != new.log:
            async with self.write_lock:
                await asyncio.to_thread(self.writer.close)
                self.writer = self._new_writer(new)
        self.certificate_read = None  # the path may have changed: read it at the next tick
        self.wake.set()

    # ---- boot and restarts -----------------------------------------------------------------------------

    async def _check_boot(self) -> None:
        try:
            boot = await asyncio.to_thread(PsutilSource().boot_id)
        except Exception:  # noqa: BLE001 - no boot id: the reboot check stays off
            logger.warning("health.no_boot_id")
            return
        previous: object = {}
        with contextlib.suppress(DeviceAgentError, ValueError, OSError):
            previous = json.loads(read_private(self.state_dir / STATE_FILE, max_bytes=4096))
        self.boot = boot
        verdict = judge_boot(previous if isinstance(previous, dict) else {}, boot, utc_now(), component=NAME)
        if verdict.count is not None:
            self.monitor.count_event(verdict.count)
        if verdict.record is not None:
            self.pending.append(verdict.record)
        self._save_state(clean=False)

    def _save_state(self, *, clean: bool) -> None:
        boot = getattr(self, "boot", None)
        if boot is None:
            return
        try:
            ensure_private_dir(self.state_dir)
            atomic_write(self.state_dir / STATE_FILE, json.dumps({"boot": boot, "clean": clean}).encode())
        except DeviceAgentError as exc:
            logger.warning("health.state_not_saved", extra={"error": type(exc).__name__})

    # ---- inputs ----------------------------------------------------------------------------------------

    def _observe(self, check: str, value: float, subject: str | None = None) -> None:
        changes = self.monitor.observe(check, value, subject)
        if changes:
            self.pending.extend(changes)
            self.wake.set()

    def _on_metrics(self, message: LocalMessage) -> None:
        payload = message.payload
        sample = payload.get("sample") if isinstance(payload, dict) else None
        if not isinstance(sample, dict):
            return
        self.last_sample = time.monotonic()
        disks = sample.get("disk")
        if isinstance(disks, dict):
            mounts = (m for m in disks if isinstance(m, str) and m.startswith("/"))
            self.sample_mounts = tuple(itertools.islice(mounts, MAX_MOUNTS))
        for check, subject, value in sample_readings(sample):
            self._observe(check, value, subject)

    def _on_heartbeat(self, message: LocalMessage) -> None:
        payload = message.payload
        if not isinstance(payload, dict):
            return
        component, interval, sequence = (
            payload.get("component"),
            payload.get("intervalSeconds"),
            payload.get("sequence"),
        )
        if not isinstance(component, str) or component == NAME:
            return
        if not is_component_name(component):
            self._reject("a heartbeat without a valid component name")
            return
        if payload.get("state") == "STOPPING":  # stopping on purpose: not a silence to judge
            self.beats.pop(component, None)
            self.monitor.forget("heartbeat", component)
            return
        if not isinstance(interval, int | float) or interval <= 0 or not isinstance(sequence, int):
            return
        previous = self.beats.get(component)
        if previous is not None and sequence <= previous.sequence and component in self.restarting:
            self.restarting.discard(component)  # the monitor asked for this one
        elif previous is not None and sequence <= previous.sequence:
            self.monitor.count_event("unexpected_restart")
            self.pending.append(
                Incident(
                    time=utc_now(),
                    check="unexpected_restart",
                    event="component.restarted",
                    severity=Severity.WARNING,
                    component=component,
                    message="restarted without stopping first (its heartbeats began again at 1)",
                )
            )
        self.beats[component] = _Beat(last=time.monotonic(), interval=float(interval), sequence=sequence)
        self._observe("heartbeat", 0.0, component)

    def _on_event(self, message: LocalMessage) -> None:
        payload = message.payload
        if not isinstance(payload, dict) or payload.get("component") == NAME:
            return
        check = event_check(payload)
        if check is None or not self.monitor.enabled(check):
            return
        name = payload.get("event")
        if not is_event_name(name):  # nothing in it can be trusted to say what happened: not judged
            self._reject("an event without a valid event name")
            return
        self.monitor.count_event(check)
        component = payload.get("component")
        text = payload.get("message")
        self.pending.append(
            Incident(
                time=utc_now(),
                check=check,
                event=str(name),
                severity=_SEVERITIES.get(str(payload.get("severity")), Severity.WARNING),
                # A name the log cannot hold is left out; the event itself still counts.
                component=component if is_component_name(component) else None,
                message=text if isinstance(text, str) else "",
            )
        )
        self.wake.set()

    def _reject(self, reason: str) -> None:
        """Count a malformed message; `_rejects_note` reports the count in the log, at most once a minute."""
        self.rejected[reason] += 1
        self.wake.set()

    def _rejects_note(self, now: float) -> list[Record]:
        if not self.rejected or now - self.rejects_noted < REJECTS_NOTE_SECONDS:
            return []
        self.rejects_noted = now
        total = sum(self.rejected.values())
        reasons = "; ".join(f"{count} x {reason}" for reason, count in sorted(self.rejected.items()))
        self.rejected.clear()
        logger.warning("health.messages_rejected", extra={"count": total})
        detail = f"{total} malformed messages ignored ({reasons})"
        return [Lifecycle(time=utc_now(), event=LifecycleEvent.EVENTS_REJECTED, detail=detail)]

    def _on_store_stats(self, _message: LocalMessage) -> None:
        now = time.monotonic()
        if self.last_stats is not None:
            self.stats_gap = now - self.last_stats
            self._observe("store", 0.0)
        self.last_stats = now

    def _on_connection(self, status: IotCoreConnectionStatus) -> None:
        now = time.monotonic()
        self.connected = status.connected
        if status.connected:
            self.offline_since = None
        elif self.offline_since is None:
            self.offline_since = now
        self.wake.set()

    # ---- the loop --------------------------------------------------------------------------------------

    async def _judge_forever(self, ctx: Context[HealthConfig]) -> None:
        now = time.monotonic()
        next_summary, next_snapshot = now, now
        reason = "start"
        while not ctx.stopping.is_set():
            config = ctx.config
            await self._read_the_device(config)
            self.pending.extend(self.monitor.tick())
            changed = any(isinstance(r, StateChange | Incident) for r in self.pending)
            records, self.pending = self.pending, []
            now = time.monotonic()
            records += self._rejects_note(now)
            # A check seen for the first time is in no snapshot yet, and its first reading is no state
            # change: snapshot now, so the log (and device-health) shows it without waiting an interval.
            checks = set(self.monitor.evaluators)
            if now >= next_snapshot or checks != self.snapshot_checks or self.snapshot_due:
                self.snapshot_checks = checks
                records += self._snapshot(config)
                next_snapshot = now + config.log.snapshot_interval_seconds
            restarts = await self._restart_the_stale(ctx, records)
            if records or restarts:
                await self._write(records + restarts)
            if changed or now >= next_summary:
                await self._publish_summary(ctx, "change" if changed else reason)
                next_summary = now + config.summary_interval_seconds
                reason = "periodic"
            self.wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), timeout=config.evaluate_interval_seconds)

    async def _restart_the_stale(self, ctx: Context[HealthConfig], records: list[Record]) -> list[Record]:
        """Ask the nucleus to restart each sibling whose heartbeat just turned CRITICAL, within limits."""
        decisions: list[Record] = []
        for record in records:
            if not isinstance(record, StateChange) or record.check != "heartbeat" or record.subject is None:
                continue
            if record.new is State.OK:
                self.restarts.recovered(record.subject)
            elif record.new is State.CRITICAL and ctx.config.restart.enabled:
                decisions.append(await self._restart(ctx, record.subject))
        return decisions

    async def _restart(self, ctx: Context[HealthConfig], component: str) -> Incident:
        decision = self.restarts.decide(component)
        if not decision.allowed:
            return _restart_incident(component, "component.restart_skipped", decision.reason)
        self.restarts.requested(component)
        try:
            accepted = await ctx.ipc.restart_component(component, timeout=RESTART_TIMEOUT)
        except OperationNotSupportedError:
            self.restarts.unsupported = "the nucleus cannot restart components (no aws.greengrass.Cli)"
            return _restart_incident(component, "component.restart_failed", self.restarts.unsupported)
        except NotAuthorizedError:
            why = "the recipe does not grant RestartComponent on this component"
            return _restart_incident(component, "component.restart_failed", why)
        except NotFoundError:
            why = "the nucleus has no such component"
            return _restart_incident(component, "component.restart_failed", why)
        except DeviceAgentError as exc:
            return _restart_incident(component, "component.restart_failed", type(exc).__name__)
        if not accepted:
            return _restart_incident(component, "component.restart_failed", "the nucleus refused the restart")
        self.restarting.add(component)
        logger.warning("health.restarted_stale_component", extra={"component": component})
        await ctx.emit_event(
            "health.component_restarted",
            category=Category.HEALTH,
            severity=EventSeverity.WARNING,
            message="A component whose heartbeat stopped was restarted.",
            target=component,
        )
        return _restart_incident(component, "component.restart_requested", decision.reason)

    async def _read_the_device(self, config: HealthConfig) -> None:
        now = time.monotonic()
        for component, beat in self.beats.items():
            self._observe("heartbeat", (now - beat.last) / beat.interval, component)
        if self.connected is not None:
            offline = 0.0 if self.offline_since is None else now - self.offline_since
            self._observe("cloud_connection", offline)
        if self.last_connected_publish is not None:
            self._observe("last_publish", now - self.last_connected_publish)
        elif self.status_supported is False:  # no status to wait for: count from the start
            self._observe("last_publish", now - self.started)
        if self.last_stats is not None and self.stats_gap is not None:
            self._observe("store", max(0.0, now - self.last_stats - self.stats_gap))
        self._observe("clock_jump", self.clock_watch.jump())
        self._observe("clock_unset", clock_unset(utc_now()))
        # Inodes are not in the publisher's samples: statvfs (cheap enough for every tick) of the mounts
        # configured here and of those the publisher samples.
        mounts = dict.fromkeys((*config.mounts, *self.sample_mounts))
        for check, subject, value in (*inode_readings(mounts), *self.throttle.readings()):
            self._observe(check, value, subject)
        if config.certificate_path and (
            self.certificate_read is None or now - self.certificate_read >= config.certificate_check_seconds
        ):
            self.certificate_read = now
            await self._read_certificate(config.certificate_path)

    async def _read_certificate(self, path: str) -> None:
        days = await asyncio.to_thread(read_certificate, Path(path), utc_now())
        if not isinstance(days, str):
            self.certificate_problem = None
            self._observe("certificate", days)
            return
        # UNKNOWN at once, and an incident with the reason when it first appears or changes.
        self.pending.extend(self.monitor.unknown("certificate", days))
        if days != self.certificate_problem and self.monitor.enabled("certificate"):
            self.certificate_problem = days
            logger.warning("health.certificate_unreadable", extra={"reason": days})
            self.pending.append(
                Incident(
                    time=utc_now(),
                    check="certificate",
                    event="certificate.unreadable",
                    severity=Severity.WARNING,
                    message=days,
                )
            )

    async def _sample_when_quiet(self, ctx: Context[HealthConfig]) -> None:
        """Sample the device only while the telemetry publisher's samples are not arriving."""
        started = time.monotonic()
        while not await ctx.sleep(ctx.config.self_sample_after_seconds):
            quiet_since = self.last_sample if self.last_sample is not None else started
            if time.monotonic() - quiet_since < ctx.config.self_sample_after_seconds:
                continue
            mounts = ctx.config.mounts
            if self.sampler.settings.mounts != mounts:
                self.sampler.configure(dataclasses.replace(self.sampler.settings, mounts=mounts))
            sample = await asyncio.to_thread(self.sampler.sample)
            for check, subject, value in sample_readings(sample):
                self._observe(check, value, subject)

    def _snapshot(self, config: HealthConfig) -> list[Record]:
        """The snapshot, cut to fit one log line; a note says what was left out when that changes."""
        snapshot, left_out = fit_snapshot(
            Snapshot(
                time=utc_now(),
                overall=self.monitor.overall(),
                interval_seconds=config.log.snapshot_interval_seconds,
                checks=self.monitor.statuses(),
            )
        )
        if not left_out:
            self.trimmed_note = None
            return [snapshot]
        counts = collections.Counter(f"{status.check} {status.state.value}" for status in left_out)
        detail = f"{len(left_out)} of {len(left_out) + len(snapshot.checks)} checks left out: " + ", ".join(
            f"{count} x {what}" for what, count in counts.most_common()
        )
        if detail == self.trimmed_note:
            return [snapshot]
        self.trimmed_note = detail
        logger.warning("health.snapshot_trimmed", extra={"left_out": len(left_out)})
        return [snapshot, Lifecycle(time=utc_now(), event=LifecycleEvent.SNAPSHOT_TRIMMED, detail=detail)]

    # ---- outputs ---------------------------------------------------------------------------------------

    async def _write(self, records: list[Record]) -> None:
        async with self.write_lock:
            # What waited while the log could not be written goes first.
            unwritten = collections.deque([*self.backlog.take(utc_now()), *records])
            try:
                await asyncio.to_thread(self._append_all, unwritten)
            except StorageError as exc:
                problem = f"the health log cannot be written ({type(exc).__name__})"
                if self.log_problem is None:
                    logger.warning("health.log_not_written", extra={"reason": str(exc)})
                self.backlog.restore(unwritten, failed_at=utc_now(), reason=type(exc).__name__)
                self.log_problem = problem
                self._report_health()
                return
            self.backlog.written()
        if self.log_problem is not None:
            self.log_problem = None
            self._report_health()

    def _append_all(self, records: collections.deque[Record]) -> None:
        """Append `records` in order, each taken off the queue once written (or refused): a write that
        fails leaves there what it did not write."""
        opening = not self.writer.is_open
        self.writer.open()  # at once if open; else the folder, modes and bound first
        if opening:
            problem = share_work_folder(self.log_dir, self.writer.shared_gid)
            if problem is not None:
                logger.warning("health.log_not_reachable_by_group", extra={"reason": problem})
            problem = install_tool(self.log_dir, self.writer.shared_gid)
            if problem is not None:
                logger.warning("health.tool_not_installed", extra={"reason": problem})
        while records:
            record = records[0]
            rotations = self.writer.rotations
            try:
                self.writer.append(record)
            except InvalidInputError:  # a record the log refuses is a bug here: lose it, not the others
                # Its message may quote what a peer sent: the kind of record is enough to find the bug.
                logger.error("health.record_refused", extra={"kind": type(record).__name__})  # noqa: TRY400
                records.popleft()
                continue
            records.popleft()
            # A flood of incidents can rotate the last snapshot out of the log, leaving device-health no
            # states to show: after a rotation, the new file gets a snapshot at the next tick. A snapshot
            # written after the rotation (it rotates before the line that would not fit) is one already.
            if isinstance(record, Snapshot):
                self.snapshot_due = False
            elif self.writer.rotations != rotations:
                self.snapshot_due = True

    async def _publish_summary(self, ctx: Context[HealthConfig], reason: str) -> None:
        config = ctx.config
        self.sequence += 1
        body = summary(
            thing=ctx.thing_name,
            component=NAME,
            version=self.version,
            time=utc_now(),
            sequence=self.sequence,
            reason=reason,
            overall=self.monitor.overall(),
            interval_seconds=config.summary_interval_seconds,
            checks=self.monitor.statuses(),
        )
        cloud_topic = summary_topic(config.topic, ctx.thing_name)
        self.refusals.forget_except({config.local_topic, cloud_topic})
        try:
            await ctx.ipc.publish(config.local_topic, body, timeout=PUBLISH_TIMEOUT)
        except NotAuthorizedError:
            await self.refusals.refused(config.local_topic, Destination.LOCAL)
        except DeviceAgentError as exc:
            logger.warning("health.local_summary_not_sent", extra={"error": type(exc).__name__})
        else:
            self.refusals.succeeded(config.local_topic)
        try:
            reached = await self._send_to_cloud(ctx, cloud_topic, json.dumps(body))
        except NotAuthorizedError:
            await self.refusals.refused(cloud_topic, Destination.IOT_CORE)
            self._report_health()
            return
        except DeviceAgentError as exc:
            logger.warning("health.summary_not_sent", extra={"error": type(exc).__name__})
            self._report_health()
            return
        self.refusals.succeeded(cloud_topic)
        self._report_health()
        if reached:
            self.last_connected_publish = time.monotonic()

    async def _send_to_cloud(self, ctx: Context[HealthConfig], topic: str, payload: str) -> bool:
        """Publish a summary; True if that shows the cloud connection was up just now."""
        if self.status_supported is False:
            try:
                await ctx.ipc.publish_to_iot_core(
                    topic, payload, qos=Qos.AT_MOST_ONCE, timeout=PUBLISH_TIMEOUT
                )
            except NotAuthorizedError:
                raise
            except DeviceAgentError:
                pass  # offline, most likely: the nucleus drops QoS 0 then, and keeps QoS 1 for later
            else:
                return True
        await ctx.ipc.publish_to_iot_core(topic, payload, timeout=PUBLISH_TIMEOUT)
        return bool(self.connected)

    def _report_health(self) -> None:
        """DEGRADED while the log cannot be written or a summary topic is refused; RUNNING otherwise."""
        reasons = [r for r in (self.log_problem, self.refusals.detail()) if r is not None]
        if reasons:
            self.ctx.set_health("DEGRADED", "; ".join(reasons))
        else:
            self.ctx.set_health("RUNNING")


def _restart_incident(component: str, event: str, reason: str) -> Incident:
    severity = Severity.WARNING if event == "component.restart_requested" else Severity.INFO
    return Incident(
        time=utc_now(), check="heartbeat", event=event, severity=severity, component=component, message=reason
    )


class _Stopping(Exception):  # noqa: N818 - a signal, not an error
    """Raised inside the task group to end it when the component stops."""
