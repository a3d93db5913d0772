"""What the reporter keeps in the encrypted store (namespace `bootstrap`, key `state`): the last report
(so a restart resends the same report id) and the verdict on it.

`reportedAt` is wall-clock time, because it must mean something after a restart; within one run the
reporter schedules on the monotonic clock.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Final

from bootstrap_reporter.verdict import Verdict, parse_verdict
from device_agent.errors import InvalidInputError

STATE_SCHEMA: Final = "bootstrap-state/1"
STATE_KEY: Final = "state"


@dataclass(frozen=True, kw_only=True)
class Reported:
    # The report as published, resent unchanged until a verdict names its id. Its facts may hold a serial:
    # never in a repr.
    report: dict[str, Any] = field(repr=False)
    reported_at: float  # wall clock, seconds since the epoch
    verdict: Verdict | None = None

    @property
    def report_id(self) -> str:
        return str(self.report["reportId"])

    @property
    def facts_hash(self) -> str:
        return str(self.report["factsHash"])

    def to_bytes(self) -> bytes:
        document = {
            "schema": STATE_SCHEMA,
            "report": self.report,
            "reportedAt": self.reported_at,
            "verdict": None if self.verdict is None else self.verdict.to_document(),
        }
        return json.dumps(document, separators=(",", ":")).encode("utf-8")

    @classmethod
    def from_bytes(cls, data: bytes) -> Reported:
        try:
            document = json.loads(data)
        except ValueError:
            raise InvalidInputError("the kept state is not JSON") from None
        if not isinstance(document, dict) or document.get("schema") != STATE_SCHEMA:
            raise InvalidInputError("the kept state has another schema")
        report, reported_at, verdict = (
            document.get("report"),
            document.get("reportedAt"),
            document.get("verdict"),
        )
        if (
            not isinstance(report, dict)
            or not isinstance(report.get("reportId"), str)
            or not isinstance(report.get("factsHash"), str)
            or not isinstance(reported_at, int | float)
        ):
            raise InvalidInputError("the kept state lacks its report")
        return cls(
            report=report,
            reported_at=float(reported_at),
            verdict=None if verdict is None else parse_verdict(verdict),
        )
