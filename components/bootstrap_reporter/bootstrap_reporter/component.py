"""com.deviceagent.BootstrapReporter: collect facts, report them, resend until a verdict, keep the verdict.

One loop owns all state (the current report, its verdict, what the store holds); the verdict handler only
queues what arrives and wakes the loop. Each turn the loop:
- applies queued verdicts (those for another thing or another report id, and malformed ones, are logged
  and counted, never acted on);
- collects facts when due, and makes a new report when their hash changed (`changed`), when none exists
  (`initial`), or when the last final verdict is older than the re-verification interval (`periodic`);
- resends the current report while it has no final verdict: capped exponential backoff with full jitter,
  or the longer `retry.pendingSeconds` after a `pending` verdict; after `retry.refreshAfterSeconds`
  without a final verdict, makes it anew (`periodic`), because its `time` ages and a verifier refuses old
  reports;
- saves the report and verdict in the store (`bootstrap` namespace) and retries later if the store is
  away: the reporter works on in memory meanwhile.

A periodic re-report gets a new report id even though the facts hash is the same: it is a new report
(new time and reason), and a verdict on the old id must not be taken as the answer to re-verification.

A new report does not suspend the last final verdict: the cloud's groups still say it until the verifier
decides again, so it stays in force (`Reported.standing`: in the store, the heartbeat's health and
detail) until the new report gets a final verdict of its own. A reboot is the common case: `bootId` is in
the facts hash (docs/bootstrap.md, "Reboots").
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import logging
import os
import random
import time
from pathlib import Path
from typing import Any, ClassVar, Final

from bootstrap_reporter.cli_listing import CliListing
from bootstrap_reporter.config import BootstrapConfig, thing_topic
from bootstrap_reporter.erase import erase_store
from bootstrap_reporter.inventory import HEARTBEAT_FILTER, Inventory
from bootstrap_reporter.state import STATE_KEY, Reported
from bootstrap_reporter.verdict import Decision, Verdict, parse_verdict
from device_agent.component import Component, Context
from device_agent.errors import DeviceAgentError, InvalidInputError, NotAuthorizedError
from device_agent.facts import Fact, Tree, gather
from device_agent.facts.collectors import run_collectors
from device_agent.facts.report import canonical_json, facts_document, facts_hash, shape
from device_agent.ipc import Qos, Subscription
from device_agent.ipc_types import IotCoreMessage
from device_agent.messages import Category, Severity, utc_now
from device_agent.refusals import Destination, Refusals
from device_agent.retry import Backoff
from device_agent.store_client import StoreClient
from device_agent.waiting import sleep_unless

logger = logging.getLogger(__name__)

NAME: Final = "com.deviceagent.BootstrapReporter"
REPORT_SCHEMA: Final = "bootstrap-report/1"
STATE_NAMESPACE: Final = "bootstrap"
STORE_TIMEOUT: Final = 5.0
ERASE_TIMEOUT: Final = 15.0
STORE_BACKOFF: Final = Backoff(initial=1.0, maximum=60.0)
FINAL_SAVE_SECONDS: Final = 1.5
#: With ListComponents the list is whole at once: wait at most this long for the kept state (a store that
#: starts after the reporter), not the heartbeats' settle.
CLI_SETTLE_SECONDS: Final = 20.0
# What the verifier accepts (docs/verifier.md): 64 KiB, nesting 12, 4,096 elements. Beyond a little less,
# the drop-in collectors' output is left out (with a reason) rather than the whole report refused.
MAX_REPORT_BYTES: Final = 60 * 1024
MAX_REPORT_DEPTH: Final = 12
MAX_REPORT_ELEMENTS: Final = 4000
STORE_AWAY: Final = "store unavailable: state kept in memory"
SUBSCRIBE_BACKOFF: Final = Backoff(initial=5.0, maximum=600.0)


@dataclasses.dataclass
class Counters:
    reports: int = 0
    sends: int = 0
    send_failures: int = 0
    verdicts: int = 0
    verdicts_ignored: int = 0
    verdicts_malformed: int = 0


class BootstrapReporter(Component[BootstrapConfig]):
    name: ClassVar[str] = NAME
    config_model = BootstrapConfig

    def __init__(self) -> None:
        self.current: Reported | None = None
        self.counters = Counters()
        self.wake = asyncio.Event()
        self.inbox: collections.deque[IotCoreMessage] = collections.deque(maxlen=64)
        self.store_loaded = False
        self.store_dirty = False
        self.next_store_try = 0.0
        self.store_delays = STORE_BACKOFF.delays()
        self.next_collect = 0.0
        self.next_send: float | None = None
        self.send_delays = Backoff(initial=1.0, maximum=1.0).delays()
        self.verdict_subscription: Subscription[IotCoreMessage] | None = None
        self.next_subscribe: float | None = None  # when to try the verdict subscription again, if refused
        self.subscribe_delays = SUBSCRIBE_BACKOFF.delays()

    # ---- lifecycle -----------------------------------------------------------------------------------

    async def start(self, ctx: Context[BootstrapConfig]) -> None:
        self.ctx = ctx
        self.store = StoreClient(ctx.ipc, STATE_NAMESPACE, timeout=STORE_TIMEOUT)
        self.inventory = Inventory(NAME, self.version)
        self.cli_listing = CliListing()
        # A topic the recipe does not grant is reported (an event at most hourly, DEGRADED), not fatal.
        self.report_refusals = Refusals(ctx, "bootstrap.publish_unauthorized", what="the bootstrap report")
        self.verdict_refusals = Refusals(
            ctx, "bootstrap.subscribe_unauthorized", what="the subscription to verdicts", doing="subscribe to"
        )
        await ctx.ipc.subscribe(HEARTBEAT_FILTER, self.inventory.on_heartbeat)
        ctx.set_health("RUNNING", "collecting facts")
        await self._subscribe_verdicts(ctx.config)

    async def run(self, ctx: Context[BootstrapConfig]) -> None:
        await self._sync_store()
        if await self._settle(ctx):
            return
        while not ctx.stopping.is_set():
            await self._turn(ctx)
            self.wake.clear()
            if self.inbox:
                continue
            await sleep_unless(self._sleep_seconds(), ctx.stopping, self.wake)
        if self.store_dirty:
            with contextlib.suppress(DeviceAgentError, TimeoutError):
                async with asyncio.timeout(FINAL_SAVE_SECONDS):
                    await self._save()

    async def on_config(
        self,
        ctx: Context[BootstrapConfig],  # noqa: ARG002 - the hook's signature
        old: BootstrapConfig,
        new: BootstrapConfig,
    ) -> None:
        if old.verdict_topic != new.verdict_topic:
            await self._subscribe_verdicts(new)
        self.next_collect = 0.0  # collect at once: a changed setting may change a fact
        self.cli_listing.retry_now()  # a deployment may have merged the ListComponents grant
        self.wake.set()

    # ---- the loop ------------------------------------------------------------------------------------

    async def _settle(self, ctx: Context[BootstrapConfig]) -> bool:
        """Listen to the suite's heartbeats a while first, so that a restart sees the same components as the
        run before it (and does not re-report for a list still filling up); meanwhile keep trying to load
        the kept state, so that a store slower to start than the reporter does not cost a needless report.
        Where ListComponents answers, its list is whole at once: the wait ends as soon as the kept state is
        loaded. True if stopping."""
        settle = ctx.config.components.settle_seconds
        logger.info("bootstrap.settling", extra={"seconds": settle})
        end = time.monotonic() + settle
        if settle > 0 and await self.cli_listing.fact(ctx.ipc) is not None:
            end = min(end, time.monotonic() + CLI_SETTLE_SECONDS)
        while (left := end - time.monotonic()) > 0:
            if self.store_loaded and self.cli_listing.listing is not None:
                break
            if not self.store_loaded and time.monotonic() >= self.next_store_try:
                await self._sync_store()
                continue
            wait = left if self.store_loaded else min(left, max(0.0, self.next_store_try - time.monotonic()))
            if await ctx.sleep(wait):
                return True
        return ctx.stopping.is_set()

    async def _turn(self, ctx: Context[BootstrapConfig]) -> None:
        while self.inbox:
            await self._on_verdict_message(ctx, self.inbox.popleft())
        now = time.monotonic()
        if now >= self.next_collect:
            await self._collect(ctx)
            self.next_collect = time.monotonic() + ctx.config.collect_interval_seconds
        elif self._periodic_due(ctx.config):
            await self._collect(ctx)
        if self.next_subscribe is not None and time.monotonic() >= self.next_subscribe:
            await self._subscribe_verdicts(ctx.config)
        if self.next_send is not None and time.monotonic() >= self.next_send:
            await self._send(ctx)
        if (self.store_dirty or not self.store_loaded) and time.monotonic() >= self.next_store_try:
            await self._sync_store()

    def _sleep_seconds(self) -> float:
        now = time.monotonic()
        deadlines = [self.next_collect]
        if self.next_send is not None:
            deadlines.append(self.next_send)
        if self.next_subscribe is not None:
            deadlines.append(self.next_subscribe)
        if self.store_dirty or not self.store_loaded:
            deadlines.append(self.next_store_try)
        periodic = self._periodic_in(self.ctx.config)
        if periodic is not None:
            deadlines.append(now + periodic)
        return max(0.01, min(deadlines) - now)

    # ---- facts and reports ---------------------------------------------------------------------------

    async def _collect(self, ctx: Context[BootstrapConfig]) -> None:
        config = ctx.config
        facts = await asyncio.to_thread(gather, Tree(), os.environ, certificate_path=config.certificate_path)
        facts["components"] = await self.cli_listing.fact(ctx.ipc) or self.inventory.fact()
        if config.collectors.directory:
            facts["extra"] = await run_collectors(
                Path(config.collectors.directory),
                timeout=config.collectors.timeout_seconds,
                max_output_bytes=config.collectors.max_output_bytes,
            )
        redactor = config.redactor()
        if redactor is not None:
            facts = redactor.apply(facts)
        document = facts_document(facts)
        if "extra" in document and _too_big(document):
            document["extra"] = Fact.error("the collectors' output makes the report too large").to_document()
        digest = facts_hash(document)
        current = self.current
        if current is None:
            self._new_report(ctx, document, digest, "initial")
        elif current.facts_hash != digest:
            self._new_report(ctx, document, digest, "changed")
        elif self._periodic_due(config):
            self._new_report(ctx, document, digest, "periodic")
        elif self.next_send is None and not _final(current.verdict):
            self._schedule_send(ctx.config, first=True)  # a restart: resend the kept report, same id

    def _new_report(
        self, ctx: Context[BootstrapConfig], document: dict[str, Any], digest: str, reason: str
    ) -> None:
        report = {
            "schema": REPORT_SCHEMA,
            "reportId": os.urandom(16).hex(),  # not `secrets`: it maps OpenSSL for the same urandom
            "thing": ctx.thing_name,
            "time": utc_now(),
            "reason": reason,
            "factsHash": digest,
            "facts": document,
            "reporter": {"component": NAME, "version": self.version},
        }
        previous = self.current
        standing = None if previous is None else previous.in_force
        self.current = Reported(report=report, reported_at=time.time(), standing=standing)
        self.counters.reports += 1
        self.store_dirty = True
        logger.info(
            "bootstrap.report_made",
            extra={
                "report": report["reportId"],
                "reason": reason,
                "standing": None if standing is None else str(standing.decision),
            },
        )
        self._restore_health()
        self.send_delays = Backoff(
            initial=ctx.config.retry.initial_seconds, maximum=ctx.config.retry.max_seconds
        ).delays()
        self._schedule_send(ctx.config, first=True)

    def _periodic_in(self, config: BootstrapConfig) -> float | None:
        """Seconds until the next `periodic` report: re-verification after a final verdict, or a fresh
        report when the current one has waited `retry.refreshAfterSeconds` without one (its `time` would
        soon be too old for the verifier)."""
        current = self.current
        if current is None:
            return None
        if not _final(current.verdict):
            return current.reported_at + config.retry.refresh_after_seconds - time.time()
        assert current.verdict is not None  # noqa: S101 - final
        interval = config.report_interval_seconds
        if current.verdict.reverify_after_seconds is not None:
            interval = min(interval, max(1.0, current.verdict.reverify_after_seconds))
        return current.reported_at + interval - time.time()

    def _periodic_due(self, config: BootstrapConfig) -> bool:
        remaining = self._periodic_in(config)
        return remaining is not None and remaining <= 0

    # ---- sending -------------------------------------------------------------------------------------

    def _schedule_send(self, config: BootstrapConfig, *, first: bool = False) -> None:
        current = self.current
        if current is None or _final(current.verdict):
            self.next_send = None
        elif first:
            self.next_send = time.monotonic()
        elif current.verdict is not None:  # pending: ask again, less often, with some jitter
            pending = config.retry.pending_seconds
            self.next_send = time.monotonic() + pending * (0.5 + random.random() / 2)  # noqa: S311 - jitter
        else:
            self.next_send = time.monotonic() + next(self.send_delays)

    async def _send(self, ctx: Context[BootstrapConfig]) -> None:
        current = self.current
        if current is None:
            return
        topic = thing_topic(ctx.config.topic, ctx.thing_name)
        self.report_refusals.forget_except({topic})
        try:
            await ctx.ipc.publish_to_iot_core(topic, canonical_json(current.report), qos=Qos.AT_LEAST_ONCE)
        except NotAuthorizedError:
            self.counters.send_failures += 1
            await self.report_refusals.refused(topic, Destination.IOT_CORE)
            self._report_health()
        except DeviceAgentError as error:
            self.counters.send_failures += 1
            logger.warning("bootstrap.report_not_sent", extra={"error": type(error).__name__})
        else:
            if self.report_refusals.detail() is not None:
                self.report_refusals.succeeded(topic)
                self._report_health()
            self.counters.sends += 1
            logger.info(
                "bootstrap.report_sent", extra={"report": current.report_id, "sends": self.counters.sends}
            )
        self._schedule_send(ctx.config)

    # ---- verdicts ------------------------------------------------------------------------------------

    async def _subscribe_verdicts(self, config: BootstrapConfig) -> None:
        old, self.verdict_subscription = self.verdict_subscription, None
        if old is not None:
            with contextlib.suppress(DeviceAgentError):
                await old.close()
        topic = thing_topic(config.verdict_topic, self.ctx.thing_name)
        self.verdict_refusals.forget_except({topic})
        try:
            self.verdict_subscription = await self.ctx.ipc.subscribe_to_iot_core(topic, self._on_message)
        except NotAuthorizedError:
            # Reports still go out; verdicts cannot arrive until a deployment fixes the grant or topic.
            await self.verdict_refusals.refused(topic, Destination.IOT_CORE)
            self.next_subscribe = time.monotonic() + next(self.subscribe_delays)
        else:
            self.next_subscribe = None
            self.subscribe_delays = SUBSCRIBE_BACKOFF.delays()
            self.verdict_refusals.succeeded(topic)
        self._report_health()

    def _report_health(self) -> None:
        """DEGRADED while the nucleus refuses a topic; once that is lifted, the health the verdict gives."""
        detail = self.ctx.health_detail
        if self._refused() is not None or (detail is not None and detail.startswith("not authorized")):
            self._restore_health()

    def _refused(self) -> str | None:
        """What the nucleus refuses now (a topic of the report or of the verdicts), if anything."""
        refused = [r for r in (self.report_refusals.detail(), self.verdict_refusals.detail()) if r]
        return "; ".join(refused) if refused else None

    def _on_message(self, message: IotCoreMessage) -> None:
        if len(self.inbox) == self.inbox.maxlen:
            self.counters.verdicts_ignored += 1
            logger.warning("bootstrap.verdict_dropped", extra={"reason": "too many queued"})
            return
        self.inbox.append(message)
        self.wake.set()

    async def _on_verdict_message(self, ctx: Context[BootstrapConfig], message: IotCoreMessage) -> None:
        try:
            verdict = parse_verdict(message.payload)
        except InvalidInputError as error:
            self.counters.verdicts_malformed += 1
            logger.warning(
                "bootstrap.verdict_malformed",
                extra={"reason": str(error)[:200], "malformed": self.counters.verdicts_malformed},
            )
            return
        current = self.current
        ignored = None
        if verdict.thing != ctx.thing_name:
            ignored = "another thing"
        elif current is None or verdict.report_id != current.report_id:
            ignored = "another report"
        elif verdict.facts_hash != current.facts_hash:
            ignored = "another facts hash"
        elif current.verdict is not None and current.verdict.decision_id == verdict.decision_id:
            return  # the same decision again (QoS 1 delivers at least once)
        if ignored is not None or current is None:
            self.counters.verdicts_ignored += 1
            logger.info(
                "bootstrap.verdict_ignored",
                extra={"reason": ignored, "ignored": self.counters.verdicts_ignored},
            )
            return
        self.counters.verdicts += 1
        # A final verdict of its own replaces the standing one; a pending one leaves it in force.
        standing = None if verdict.final else current.standing
        self.current = dataclasses.replace(current, verdict=verdict, standing=standing)
        self.store_dirty = True
        self.next_store_try = 0.0
        self._schedule_send(ctx.config)
        logger.info(
            "bootstrap.verdict",
            extra={"report": verdict.report_id, "verdict": str(verdict.decision), "demoted": verdict.demoted},
        )
        await self._announce(ctx, verdict)
        if verdict.decision is Decision.REJECTED and ctx.config.erase_on_reject:
            await self._erase(ctx)

    async def _announce(self, ctx: Context[BootstrapConfig], verdict: Verdict) -> None:
        details: dict[str, str | float | bool | None] = {
            "reportId": verdict.report_id,
            "decisionId": verdict.decision_id,
            "verdict": str(verdict.decision),
            "reason": verdict.reason[:256],
            "failedRules": ",".join(verdict.failed_rules)[:256] or None,
            "group": verdict.group,
            "demoted": verdict.demoted,
        }
        if verdict.decision is Decision.REJECTED:
            name = "bootstrap.demoted" if verdict.demoted else "bootstrap.rejected"
            if self._refused() is None:
                ctx.set_health(
                    "DEGRADED", "demoted by the verifier" if verdict.demoted else "rejected by the verifier"
                )
            await ctx.emit_event(
                name,
                category=Category.SECURITY,
                severity=Severity.CRITICAL,
                message=(
                    "The verifier demoted this device: its re-verification failed."
                    if verdict.demoted
                    else "The verifier rejected this device's bootstrap report."
                ),
                **details,
            )
        elif verdict.decision is Decision.APPROVED:
            self._restore_health()  # "approved", unless the nucleus still refuses a topic
            await ctx.emit_event(
                "bootstrap.approved",
                category=Category.SECURITY,
                severity=Severity.INFO,
                message="The verifier approved this device's bootstrap report.",
                **details,
            )
        else:
            self._restore_health()  # pending: the standing verdict, if any, still holds
            await ctx.emit_event(
                "bootstrap.pending",
                category=Category.SECURITY,
                severity=Severity.INFO,
                message="The verifier has not decided yet; the report will be sent again later.",
                **details,
            )

    async def _erase(self, ctx: Context[BootstrapConfig]) -> None:
        try:
            await erase_store(ctx.ipc, timeout=ERASE_TIMEOUT)
        except DeviceAgentError as error:
            logger.error("bootstrap.erase_failed", extra={"error": type(error).__name__})  # noqa: TRY400
            await ctx.emit_event(
                "bootstrap.erase_failed",
                category=Category.SECURITY,
                severity=Severity.CRITICAL,
                message="The device was rejected and eraseOnReject is set, but the store did not erase.",
            )
            return
        logger.warning("bootstrap.store_erased")
        await ctx.emit_event(
            "bootstrap.store_erased",
            category=Category.SECURITY,
            severity=Severity.CRITICAL,
            message="The device was rejected: the encrypted store was crypto-erased (eraseOnReject).",
        )
        self.store_dirty = True  # the verdict goes into the fresh store, so a restart does not forget it

    # ---- the store -----------------------------------------------------------------------------------

    async def _sync_store(self) -> None:
        try:
            if not self.store_loaded:
                await self._load()
            if self.store_dirty:
                await self._save()
        except DeviceAgentError as error:
            delay = next(self.store_delays)
            self.next_store_try = time.monotonic() + delay
            logger.warning(
                "bootstrap.store_unavailable",
                extra={"error": type(error).__name__, "retry_s": round(delay, 1)},
            )
            if self._refused() is None:  # a refusal says more than the store's absence: it stays shown
                self.ctx.set_health(self.ctx.health_state, STORE_AWAY)
        else:
            self.store_delays = STORE_BACKOFF.delays()
            if self.ctx.health_detail == STORE_AWAY:
                self._restore_health()

    async def _load(self) -> None:
        data = await self.store.get_or_none(STATE_KEY)
        self.store_loaded = True
        if data is None:
            return
        try:
            stored = Reported.from_bytes(data)
        except InvalidInputError as error:
            logger.warning("bootstrap.state_unreadable", extra={"reason": str(error)})
            self.store_dirty = self.current is not None
            return
        current = self.current
        if current is None or (
            stored.facts_hash == current.facts_hash and _final(stored.verdict) and not _final(current.verdict)
        ):
            self.current = stored
            logger.info(
                "bootstrap.state_loaded",
                extra={
                    "report": stored.report_id,
                    "verdict": None if stored.verdict is None else str(stored.verdict.decision),
                },
            )
            self._restore_health()
        else:
            # What this run made is newer than what the store kept; but the verdict the store kept still
            # holds until the new report has its own (a store slower than the first collection).
            if current.in_force is None and stored.in_force is not None:
                self.current = dataclasses.replace(current, standing=stored.in_force)
                self._restore_health()
            self.store_dirty = True

    def _restore_health(self) -> None:
        """The heartbeat's health as the verdict in force has it: the current report's if final, else the
        standing one (with what the new report waits for). A topic the nucleus refuses comes first: every
        path that restores the verdict's health (the store back, a verdict, the kept state loaded) must
        leave a refusal DEGRADED until it is lifted."""
        refused = self._refused()
        if refused is not None:
            self.ctx.set_health("DEGRADED", refused)
            return
        current = self.current
        if current is None:
            self.ctx.set_health("RUNNING", "collecting facts")
            return
        verdict, in_force = current.verdict, current.in_force
        if in_force is None:
            self.ctx.set_health(
                "RUNNING", "verification pending" if verdict is not None else "awaiting a verdict"
            )
        elif in_force is verdict:
            if in_force.decision is Decision.REJECTED:
                self.ctx.set_health("DEGRADED", "rejected by the verifier")
            else:
                self.ctx.set_health("RUNNING", str(in_force.decision))
        else:
            new = "a new report is pending" if verdict is not None else "a new report awaits a verdict"
            if in_force.decision is Decision.REJECTED:
                self.ctx.set_health("DEGRADED", f"rejected by the verifier; {new}")
            else:
                self.ctx.set_health("RUNNING", f"{in_force.decision}; {new}")

    async def _save(self) -> None:
        current = self.current
        if current is None:
            self.store_dirty = False
            return
        await self.store.put(STATE_KEY, current.to_bytes())
        if self.current is current:
            self.store_dirty = False


def _too_big(facts: dict[str, Any]) -> bool:
    """Whether the report around these facts could exceed the verifier's limits (the envelope adds about
    400 bytes and two levels: report, facts)."""
    depth, elements = shape(facts)
    return (
        len(canonical_json(facts)) > MAX_REPORT_BYTES
        or depth + 1 > MAX_REPORT_DEPTH
        or elements + 20 > MAX_REPORT_ELEMENTS
    )


def _final(verdict: Verdict | None) -> bool:
    return verdict is not None and verdict.final
