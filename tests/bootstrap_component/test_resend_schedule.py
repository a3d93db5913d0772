"""The reporter's resend schedule without a nucleus: capped exponential backoff with full jitter from
retry.initialSeconds up to retry.maxSeconds, never beyond it, and the longer pending interval after a
`pending` verdict. A small fake context stands in for the runtime (only what making a report touches).
End to end, the resends themselves: test_bootstrap_e2e.py."""

from __future__ import annotations

import time
from typing import Any

from bootstrap_reporter.component import BootstrapReporter
from bootstrap_reporter.config import BootstrapConfig
from bootstrap_reporter.verdict import parse_verdict

from device_agent.config import parse_config
from device_agent.refusals import Refusals

SENDS = 200


class FakeContext:
    def __init__(self, config: BootstrapConfig) -> None:
        self.config = config
        self.thing_name = "thermostat-0042"
        self.health: list[tuple[str, str]] = []

    def set_health(self, state: str, detail: str) -> None:
        self.health.append((state, detail))


def reporter_with(retry: dict[str, Any]) -> tuple[BootstrapReporter, FakeContext]:
    config = parse_config(BootstrapConfig, {"retry": retry}).value
    config.validate()
    ctx = FakeContext(config)
    reporter = BootstrapReporter()
    reporter.ctx = ctx  # type: ignore[assignment]
    # As start() makes them (nothing is refused here; the health they feed is not under test).
    reporter.report_refusals = Refusals(ctx, "bootstrap.publish_unauthorized", what="the report")  # type: ignore[arg-type]
    reporter.verdict_refusals = Refusals(ctx, "bootstrap.subscribe_unauthorized", what="verdicts")  # type: ignore[arg-type]
    reporter._new_report(ctx, {"thingName": {"status": "ok", "value": "x"}}, "sha256:" + "a" * 64, "initial")  # type: ignore[arg-type]
    return reporter, ctx


def waits(reporter: BootstrapReporter, config: BootstrapConfig, count: int) -> list[float]:
    """The wait before each of `count` resends, as the loop schedules them after each send."""
    result = []
    for _ in range(count):
        before = time.monotonic()
        reporter._schedule_send(config)
        assert reporter.next_send is not None
        result.append(reporter.next_send - before)
    return result


def test_the_first_send_is_at_once_and_resends_back_off_up_to_the_cap_and_no_further():
    reporter, ctx = reporter_with({"initialSeconds": 5.0, "maxSeconds": 300.0})
    assert reporter.next_send is not None
    assert reporter.next_send <= time.monotonic()  # a new report goes at once
    gaps = waits(reporter, ctx.config, SENDS)
    assert all(0.0 <= gap <= 300.0 + 0.01 for gap in gaps)  # never beyond retry.maxSeconds
    for attempt, gap in enumerate(gaps[:6]):  # full jitter under a ceiling that doubles: 5, 10, 20 ...
        assert gap <= min(300.0, 5.0 * 2**attempt) + 0.01
    late = gaps[10:]  # capped by now: uniform in [0, 300], so some come close to the cap
    assert max(late) > 150.0
    assert sum(late) / len(late) > 100.0


def test_a_small_cap_holds_from_the_first_resend():
    reporter, ctx = reporter_with({"initialSeconds": 0.3, "maxSeconds": 1.0})
    assert all(gap <= 1.0 + 0.01 for gap in waits(reporter, ctx.config, SENDS))


def test_a_new_report_starts_the_backoff_again():
    reporter, ctx = reporter_with({"initialSeconds": 5.0, "maxSeconds": 300.0})
    waits(reporter, ctx.config, 20)  # at the cap by now
    reporter._new_report(ctx, {}, "sha256:" + "b" * 64, "changed")  # type: ignore[arg-type]
    first = waits(reporter, ctx.config, 1)[0]
    assert first <= 5.0 + 0.01


def test_after_pending_resends_come_at_the_pending_interval_with_jitter():
    reporter, ctx = reporter_with({"initialSeconds": 0.3, "maxSeconds": 1.0, "pendingSeconds": 900.0})
    current = reporter.current
    assert current is not None
    pending = parse_verdict(
        {
            "schema": "bootstrap-verdict/1",
            "decisionId": "c" * 32,
            "thing": ctx.thing_name,
            "reportId": current.report_id,
            "factsHash": current.facts_hash,
            "verdict": "pending",
            "reason": "waiting for facts",
            "time": "2026-11-24T20:00:00Z",
        }
    )
    reporter.current = type(current)(report=current.report, reported_at=current.reported_at, verdict=pending)
    gaps = waits(reporter, ctx.config, 50)
    assert all(450.0 - 0.01 <= gap <= 900.0 + 0.01 for gap in gaps)  # half to the whole interval
