"""The verdict the verifier publishes on `cmd/device-agent/<thing>/verdict`, and how it is published.

The payload follows `docs/schemas/bootstrap-verdict.schema.json`. In AWS it goes out through the `iot-data`
API at QoS 1 with `retain=True`: a device that subscribes after the decision (it was offline, or restarted
between report and verdict) receives the last verdict at once instead of waiting for its next resend, and
the echoed report id and facts hash let it ignore a retained verdict about older facts. AWS IoT keeps one
retained message per topic, so a thing's retained verdict is always its latest.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import Any, Final, Literal, Protocol

from device_agent_cloud.errors import PublishError

SCHEMA: Final = "bootstrap-verdict/1"
MAX_REASON: Final = 512

VerdictName = Literal["approved", "rejected", "pending"]
GroupName = Literal["quarantine", "production"]


def verdict_topic(thing: str) -> str:
    return f"cmd/device-agent/{thing}/verdict"


@dataclass(frozen=True, kw_only=True, slots=True)
class Verdict:
    decision_id: str
    thing: str
    report_id: str
    facts_hash: str
    verdict: VerdictName
    reason: str
    failed_rules: tuple[str, ...]
    group: GroupName | None
    demoted: bool
    reverify_after_seconds: float
    time: dt.datetime

    @property
    def topic(self) -> str:
        return verdict_topic(self.thing)

    def to_json(self) -> dict[str, Any]:
        document: dict[str, Any] = {
            "schema": SCHEMA,
            "decisionId": self.decision_id,
            "thing": self.thing,
            "reportId": self.report_id,
            "factsHash": self.facts_hash,
            "verdict": self.verdict,
            "reason": self.reason[:MAX_REASON],
            "failedRules": list(self.failed_rules[:32]),
            "demoted": self.demoted,
            "reverifyAfterSeconds": self.reverify_after_seconds,
            "time": self.time.astimezone(dt.UTC).isoformat().replace("+00:00", "Z"),
        }
        if self.group is not None:
            document["group"] = self.group
        return document

    def to_payload(self) -> bytes:
        return json.dumps(self.to_json(), separators=(",", ":"), ensure_ascii=False).encode("utf-8")


class VerdictPublisher(Protocol):
    def publish(self, verdict: Verdict) -> None:
        """Deliver the verdict to its thing's verdict topic (QoS 1); `PublishError` if it could not."""
        ...


class IotDataPublisher:
    """Publishes through a boto3 `iot-data` client (the account's data endpoint), QoS 1, retained."""

    def __init__(self, client: Any, *, retain: bool = True) -> None:
        self._client = client
        self.retain = retain

    def __repr__(self) -> str:
        return f"IotDataPublisher(retain={self.retain})"

    def publish(self, verdict: Verdict) -> None:
        from botocore.exceptions import BotoCoreError, ClientError  # noqa: PLC0415 - the cloud extra only

        try:
            self._client.publish(topic=verdict.topic, qos=1, retain=self.retain, payload=verdict.to_payload())
        except ClientError as error:
            code = error.response.get("Error", {}).get("Code", "Unknown")
            raise PublishError(f"publish to {verdict.topic} failed: {code}") from error
        except BotoCoreError as error:
            raise PublishError(f"publish to {verdict.topic} failed: {type(error).__name__}") from error
