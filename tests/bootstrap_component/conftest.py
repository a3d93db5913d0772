"""Fixtures: the store and the bootstrap reporter built as they ship, and a small test verifier."""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from device_agent.devkit.testing import VirtualDevice
from tests.conftest import install_built

STORE = "com.deviceagent.EncryptedStore"
REPORTER = "com.deviceagent.BootstrapReporter"
REPORTS = "dt/device-agent/+/bootstrap"
SCHEMAS = Path(__file__).resolve().parents[2] / "docs" / "schemas"

#: Short intervals so that each test takes seconds: resends every second at most, facts every half second,
#: and a settle window long enough to hear the store's first heartbeat.
FAST: dict[str, Any] = {
    "collectIntervalSeconds": 0.5,
    "retry": {"initialSeconds": 0.3, "maxSeconds": 1.0, "pendingSeconds": 1.0},
    "components": {"settleSeconds": 2.0},
    "heartbeatIntervalSeconds": 1.0,
}


def device_config(**reporter: Any) -> dict[str, dict[str, Any]]:
    return {
        REPORTER: {"MERGE": {**FAST, **reporter}},
        STORE: {"MERGE": {"heartbeatIntervalSeconds": 1.0}},
    }


@pytest.fixture
def bootstrap_base(tmp_path: Path, built_suite: Path) -> Path:
    return install_built(built_suite, tmp_path / "base", (STORE, REPORTER))


def validator(name: str) -> jsonschema.Draft202012Validator:
    schema = json.loads((SCHEMAS / name).read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())


async def wait_until(predicate: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.05)


class TestVerifier:
    """The cloud side, as small as a test needs: reads reports from the device's IoT Core log and answers
    verdicts by publishing to the device's IoT Core subscription (the loopback's inject)."""

    __test__ = False  # not a test class

    def __init__(self, device: VirtualDevice) -> None:
        self.device = device
        self.thing = device.nucleus.thing_name
        self.verdict_topic = f"cmd/device-agent/{self.thing}/verdict"

    def reports(self) -> list[dict[str, Any]]:
        return self.device.published_json(REPORTS)

    def sends_of(self, report_id: str) -> int:
        return sum(1 for r in self.reports() if r["reportId"] == report_id)

    async def report(
        self, *, count: int = 1, where: Callable[[dict[str, Any]], bool] | None = None
    ) -> dict[str, Any]:
        """The latest report once `count` reports matching `where` have been published."""

        def matching() -> list[dict[str, Any]]:
            return [r for r in self.reports() if where is None or where(r)]

        await wait_until(lambda: len(matching()) >= count, 30, f"fewer than {count} matching reports")
        return matching()[-1]

    def verdict(self, report: dict[str, Any], verdict: str = "approved", **extra: Any) -> dict[str, Any]:
        document = {
            "schema": "bootstrap-verdict/1",
            "decisionId": secrets.token_hex(16),
            "thing": report["thing"],
            "reportId": report["reportId"],
            "factsHash": report["factsHash"],
            "verdict": verdict,
            "reason": "test verifier" if verdict != "rejected" else "rule failed: serial.allowlist",
            "time": "2026-11-24T20:00:00Z",
            **extra,
        }
        validator("bootstrap-verdict.schema.json").validate(document)
        return document

    def answer(self, report: dict[str, Any], verdict: str = "approved", **extra: Any) -> dict[str, Any]:
        document = self.verdict(report, verdict, **extra)
        self.device.inject(self.verdict_topic, document)
        return document

    def events(self, name: str) -> list[dict[str, Any]]:
        return [
            r.message
            for r in self.device.local_messages("device-agent/events")
            if isinstance(r.message, dict) and r.message.get("event") == name
        ]

    async def event(self, name: str, timeout: float = 20.0) -> dict[str, Any]:
        await wait_until(lambda: self.events(name), timeout, f"no {name} event")
        return self.events(name)[-1]

    def heartbeats(self) -> list[dict[str, Any]]:
        return [r.message for r in self.device.local_messages(f"device-agent/heartbeat/{REPORTER}")]

    def event_time(self, name: str) -> float:
        """When the latest `name` event was seen (the monotonic clock of local records)."""
        return max(
            r.time
            for r in self.device.local_messages("device-agent/events")
            if isinstance(r.message, dict) and r.message.get("event") == name
        )

    def store_saves(self, after: float = 0.0) -> int:
        """Answers of the store to the reporter's successful puts (each one is durable when answered),
        those seen after `after` only."""
        requests = {
            r.message["id"]
            for r in self.device.local_messages("device-agent/store/bootstrap/request")
            if isinstance(r.message, dict) and r.message.get("op") == "put"
        }
        return len(
            {
                r.message["id"]
                for r in self.device.local_messages("device-agent/store/bootstrap/response")
                if isinstance(r.message, dict)
                and r.message.get("id") in requests
                and r.message.get("ok")
                and r.time > after
            }
        )
