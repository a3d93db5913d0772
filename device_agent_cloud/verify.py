"""The verifier: a report in; the registry, the audit trail and a verdict out.

    report ─ parse (refuse) ─ registry.describe ─ rules.evaluate ─ audit.append ─ group moves ─ Verdict

Outcomes and moves (group names are configuration):

- approved: out of quarantine, into production;
- rejected: into (or kept in) quarantine; a device that was in production is demoted, and the verdict
  says so;
- pending: no move. A device waits where it is: pending grants nothing a quarantined device lacks, and a
  production device is not demoted for a fact it could not read this time (the policy can make that a
  rejection with `whenFactUnavailable: "reject"`).

Idempotent: moves are made only when membership differs from the target, and the decision id is derived
from the thing, report id, facts hash and outcome, so the same report processed twice yields the same
decision id and no second move (the second verdict reports `demoted: false`, since the thing was already
in quarantine). The audit record is appended before any move: a decision that cannot be recorded is not
acted on. Refused reports (malformed, hostile, unknown thing) get no verdict, only an audit record.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from device_agent_cloud.audit import AuditRecord, AuditSink, Outcome
from device_agent_cloud.errors import InvalidReportError, ThingNotFoundError
from device_agent_cloud.policy import Policy
from device_agent_cloud.registry import Registry, ThingRecord
from device_agent_cloud.report import Report, parse_report, thing_from_topic
from device_agent_cloud.rules import evaluate
from device_agent_cloud.verdicts import GroupName, Verdict

logger = logging.getLogger(__name__)

DEFAULT_IDENTITY: Final = "device-agent-verifier"


@dataclass(frozen=True, kw_only=True, slots=True)
class Groups:
    quarantine: str = "device-agent-quarantine"
    production: str = "device-agent-production"


@dataclass(frozen=True, kw_only=True, slots=True)
class Decision:
    outcome: Outcome
    thing: str | None
    reason: str
    failed_rules: tuple[str, ...] = ()
    verdict: Verdict | None = None  # None when the report was refused
    audit: AuditRecord | None = field(default=None, repr=False)

    def to_json(self) -> dict[str, object]:
        """A summary for a Lambda result or a command line: no facts, only what the audit says."""
        return {
            "outcome": self.outcome,
            "thing": self.thing,
            "reason": self.reason,
            "failedRules": list(self.failed_rules),
            "verdict": self.verdict.to_json() if self.verdict is not None else None,
        }


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class Verifier:
    def __init__(
        self,
        *,
        policy: Policy,
        registry: Registry,
        audit: AuditSink,
        groups: Groups | None = None,
        identity: str = DEFAULT_IDENTITY,
        clock: Callable[[], dt.datetime] = _utc_now,
        principal_required: bool = True,
    ) -> None:
        """`principal_required`: a report must come with the certificate of its connection (the Lambda's
        IoT rule gives it). Only a transport that cannot know it turns this off: the local service, whose
        broker does not tell a subscriber who published (docs/verifier.md)."""
        self.policy = policy
        self.registry = registry
        self.audit = audit
        self.groups = groups or Groups()
        self.identity = identity
        self._clock = clock
        self.principal_required = principal_required

    def __repr__(self) -> str:
        return f"Verifier(identity={self.identity!r}, registry={self.registry!r}, audit={self.audit!r})"

    def handle(self, payload: bytes, *, topic: str | None = None, principal: str | None = None) -> Decision:
        """Decide on one raw report. `topic` (when known) must name the same thing as the body.

        Raises `RegistryError` or `AuditError` when the decision could not be made or recorded (the caller
        retries: the same report gives the same decision); everything wrong with the report itself is a
        refused `Decision`.
        """
        now = self._clock()
        topic_thing: str | None = None
        try:
            if topic is not None:
                topic_thing = thing_from_topic(topic)
            report = parse_report(payload, topic_thing=topic_thing)
        except InvalidReportError as error:
            return self._refuse(now, topic_thing, None, f"report refused: {error}")
        try:
            thing = self.registry.describe(report.thing)
        except ThingNotFoundError:
            return self._refuse(now, report.thing, report, "report refused: the thing is not in the registry")
        return self.decide(report, thing, now=now, principal=principal)

    def decide(
        self, report: Report, thing: ThingRecord, *, now: dt.datetime, principal: str | None = None
    ) -> Decision:
        rules = self.policy.rules_for(thing.thing_type)
        evaluation = evaluate(
            report, rules, thing, now=now, principal=principal, principal_required=self.principal_required
        )
        quarantine, production = self.groups.quarantine, self.groups.production
        before = thing.groups
        if evaluation.outcome == "approved":
            after = (before - {quarantine}) | {production}
        elif evaluation.outcome == "rejected":
            after = (before - {production}) | {quarantine}
        else:
            after = before
        demoted = evaluation.outcome == "rejected" and production in before
        group: GroupName | None = (
            "production" if production in after else "quarantine" if quarantine in after else None
        )
        reason = evaluation.reason + (" (demoted from production)" if demoted else "")
        decision_id = _decision_id(report, evaluation.outcome, evaluation.failed_rules)
        record = AuditRecord(
            record_id=uuid.uuid4().hex,
            time=now,
            verifier=self.identity,
            decision=evaluation.outcome,
            thing=report.thing,
            thing_type=thing.thing_type,
            rules=rules.name,
            report_id=report.report_id,
            facts_hash=report.facts_hash,
            decision_id=decision_id,
            failed_rules=evaluation.failed_rules,
            reason=reason,
            demoted=demoted,
            groups_before=_ours(before, self.groups),
            groups_after=_ours(after, self.groups),
        )
        self.audit.append(record)
        # Add before remove: a failure in between leaves the thing in both groups or as it was, never in none.
        for added in sorted(after - before):
            self.registry.add_to_group(report.thing, added)
        for removed in sorted(before - after):
            self.registry.remove_from_group(report.thing, removed)
        logger.log(
            logging.INFO if evaluation.outcome == "approved" else logging.WARNING,
            "verifier.%s thing=%s report=%s rules=%s failed=%s demoted=%s",
            evaluation.outcome,
            report.thing,
            report.report_id,
            rules.name,
            ",".join(evaluation.failed_rules) or "-",
            demoted,
        )
        verdict = Verdict(
            decision_id=decision_id,
            thing=report.thing,
            report_id=report.report_id,
            facts_hash=report.facts_hash,
            verdict=evaluation.outcome,
            reason=reason,
            failed_rules=evaluation.failed_rules,
            group=group,
            demoted=demoted,
            reverify_after_seconds=rules.reverify_interval_seconds,
            time=now,
        )
        return Decision(
            outcome=evaluation.outcome,
            thing=report.thing,
            reason=reason,
            failed_rules=evaluation.failed_rules,
            verdict=verdict,
            audit=record,
        )

    def _refuse(self, now: dt.datetime, thing: str | None, report: Report | None, reason: str) -> Decision:
        record = AuditRecord(
            record_id=uuid.uuid4().hex,
            time=now,
            verifier=self.identity,
            decision="refused",
            thing=thing,
            thing_type=None,
            rules=None,
            report_id=report.report_id if report is not None else None,
            facts_hash=report.facts_hash if report is not None else None,
            decision_id=None,
            failed_rules=(),
            reason=reason,
            demoted=False,
            groups_before=(),
            groups_after=(),
        )
        self.audit.append(record)
        logger.warning("verifier.report_refused thing=%s reason=%s", thing or "-", reason)
        return Decision(outcome="refused", thing=thing, reason=reason, audit=record)


def _ours(groups: frozenset[str], names: Groups) -> tuple[str, ...]:
    return tuple(sorted(groups & {names.quarantine, names.production}))


def _decision_id(report: Report, outcome: str, failed: tuple[str, ...]) -> str:
    basis = "\n".join([report.thing, report.report_id, report.facts_hash, outcome, ",".join(failed)])
    return hashlib.sha256(basis.encode("utf-8")).hexdigest()[:32]
