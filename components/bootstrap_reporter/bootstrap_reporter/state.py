"""What the reporter keeps in the encrypted store (namespace `bootstrap`, key `state`): the last report
(so a restart resends the same report id), the verdict on it, and the standing verdict: the last final
verdict on an earlier report, which stays in force (the cloud's groups still say it) until the current
report gets a final verdict of its own. A reboot changes `bootId`, so it makes a new report: the device
keeps serving its last verdict meanwhile, across restarts too.

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
    standing: Verdict | None = None  # the last final verdict on an earlier report, until this one has one

    @property
    def in_force(self) -> Verdict | None:
        """The verdict that holds now: this report's if final, else the standing one."""
        if self.verdict is not None and self.verdict.final:
            return self.verdict
        return self.standing

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
            "standing": None if self.standing is None else self.standing.to_document(),
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
        report, reported_at, verdict, standing = (
            document.get("report"),
            document.get("reportedAt"),
            document.get("verdict"),
            document.get("standing"),  # absent in a state kept before it existed
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
            standing=None if standing is None else _final_verdict(parse_verdict(standing)),
        )


def _final_verdict(verdict: Verdict) -> Verdict:
    if not verdict.final:
        raise InvalidInputError("the kept standing verdict is not final")
    return verdict
