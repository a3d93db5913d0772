"""What reaches the broker, per device, as the fleet's observer identity sees it (read-only by ACL).

It subscribes with a persistent session (the broker persists it across restarts), so nothing a device
publishes while the observer reconnects is missed. Per device it keeps: the latest verdict and its group, when
the last report, telemetry and health summary arrived, the telemetry sequence numbers seen (as ranges, so a
gap is counted however long the fleet runs), and the last health state. Payloads are parsed for those fields
only; nothing of them is logged.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from device_agent.devkit.fleet.mqtt import Received

logger = logging.getLogger(__name__)

SUBSCRIPTIONS = (
    "dt/device-agent/+/telemetry",
    "dt/device-agent/+/health",
    "dt/device-agent/+/bootstrap",
    "cmd/device-agent/+/verdict",
)


@dataclass
class SeqRanges:
    """Disjoint, sorted, inclusive ranges of the sequence numbers seen."""

    ranges: list[list[int]] = field(default_factory=list)

    def add(self, seq: int) -> None:
        if any(low <= seq <= high for low, high in self.ranges):
            return  # a redelivery (delivery is at least once)
        merged: list[list[int]] = []
        for low, high in sorted([*self.ranges, [seq, seq]]):
            if merged and low <= merged[-1][1] + 1:
                merged[-1][1] = max(merged[-1][1], high)
            else:
                merged.append([low, high])
        self.ranges = merged

    @property
    def first(self) -> int | None:
        return self.ranges[0][0] if self.ranges else None

    @property
    def last(self) -> int | None:
        return self.ranges[-1][1] if self.ranges else None

    @property
    def missing(self) -> int:
        return sum(self.ranges[i + 1][0] - self.ranges[i][1] - 1 for i in range(len(self.ranges) - 1))


@dataclass
class Observed:
    verdict: str | None = None
    verdict_reason: str | None = None
    group: str | None = None
    reports: int = 0
    last_report_at: float | None = None
    telemetry_messages: int = 0
    last_telemetry_at: float | None = None
    backfilled: int = 0
    seqs: SeqRanges = field(default_factory=SeqRanges)
    health_messages: int = 0
    last_health_at: float | None = None
    health: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict,
            "verdictReason": self.verdict_reason,
            "verdictGroup": self.group,
            "reports": self.reports,
            "lastReportAt": self.last_report_at,
            "telemetryMessages": self.telemetry_messages,
            "lastTelemetryAt": self.last_telemetry_at,
            "backfilledMessages": self.backfilled,
            "seq": {"first": self.seqs.first, "last": self.seqs.last, "missing": self.seqs.missing},
            "seqRanges": self.seqs.ranges[-20:],
            "healthMessages": self.health_messages,
            "lastHealthAt": self.last_health_at,
            "health": self.health,
        }


class Observer:
    """Turns the observer's messages into `Observed` per thing; `on_verdict` hears every verdict."""

    def __init__(self, on_verdict: Callable[[str, dict[str, Any]], None] | None = None) -> None:
        self.things: dict[str, Observed] = {}
        self._on_verdict = on_verdict

    def __call__(self, message: Received) -> None:
        parts = message.topic.split("/")
        if len(parts) != 4 or parts[1] != "device-agent":  # noqa: PLR2004 - dt|cmd/device-agent/<thing>/<kind>
            return
        kind, thing = (parts[0], parts[3]), parts[2]
        try:
            document = json.loads(message.payload)
        except ValueError:
            logger.warning("fleet.observer_unparsable topic=%s", message.topic)
            return
        if not isinstance(document, dict):
            return
        seen = self.things.setdefault(thing, Observed())
        now = time.time()
        match kind:
            case ("dt", "telemetry"):
                seen.telemetry_messages += 1
                seen.last_telemetry_at = now
                seen.backfilled += 1 if document.get("backfill") else 0
                for sample in document.get("samples") or []:
                    seq = sample.get("seq") if isinstance(sample, dict) else None
                    if isinstance(seq, int):
                        seen.seqs.add(seq)
            case ("dt", "health"):
                seen.health_messages += 1
                seen.last_health_at = now
                overall = document.get("overall")
                seen.health = overall if isinstance(overall, str) else None
            case ("dt", "bootstrap"):
                seen.reports += 1
                seen.last_report_at = now
            case ("cmd", "verdict"):
                seen.verdict = str(document.get("verdict"))
                reason = document.get("reason")
                seen.verdict_reason = reason if isinstance(reason, str) else None
                group = document.get("group")
                seen.group = group if isinstance(group, str) else None
                if self._on_verdict is not None:
                    self._on_verdict(thing, document)
