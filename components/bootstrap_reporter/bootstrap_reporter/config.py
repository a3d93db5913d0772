"""The bootstrap reporter's configuration: every key with its default and limits (docs/bootstrap.md).

The recipe's DefaultConfiguration is `defaults_document(BootstrapConfig)`. Every key is live.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from device_agent.config import setting
from device_agent.errors import ConfigurationError
from device_agent.facts.redaction import Redactor

DEFAULT_TOPIC: Final = "dt/device-agent/{thing}/bootstrap"
DEFAULT_VERDICT_TOPIC: Final = "cmd/device-agent/{thing}/verdict"
DAY: Final = 86400.0
MIN_SALT_CHARS: Final = 16
MAX_TOPIC_BYTES: Final = 256
_PLACEHOLDER = re.compile(r"\{[^}]*\}")


@dataclass(frozen=True, kw_only=True)
class RedactConfig:
    mac_addresses: bool = setting(default=False, doc="Replace MAC addresses by hmac-sha256 pseudonyms.")
    serial: bool = setting(default=False, doc="Replace the serial number by its pseudonym.")
    hardware_uuid: bool = setting(default=False, doc="Replace the hardware UUID by its pseudonym.")


@dataclass(frozen=True, kw_only=True)
class RetryConfig:
    initial_seconds: float = setting(5.0, minimum=0.1, maximum=3600.0, doc="First resend's ceiling.")
    max_seconds: float = setting(300.0, minimum=0.1, maximum=DAY, doc="Cap of the resend backoff.")
    pending_seconds: float = setting(
        900.0, minimum=0.1, maximum=DAY, doc="Resend interval after a `pending` verdict."
    )
    refresh_after_seconds: float = setting(
        1800.0,
        minimum=1.0,
        maximum=DAY,
        doc="A report still without a final verdict this long after it was made is made anew (new id and "
        "time), so a verifier that refuses old reports (maxReportAgeSeconds) never judges a stale one.",
    )


@dataclass(frozen=True, kw_only=True)
class CollectorsConfig:
    directory: str = setting("", max_length=4096, doc="Drop-in collectors' directory; empty: none.")
    timeout_seconds: float = setting(5.0, minimum=0.1, maximum=120.0, doc="Each collector's time limit.")
    max_output_bytes: int = setting(4096, minimum=16, maximum=65536, doc="Largest output of a collector.")


@dataclass(frozen=True, kw_only=True)
class ComponentsConfig:
    settle_seconds: float = setting(
        65.0,
        minimum=0.0,
        maximum=3600.0,
        doc="How long to listen to the suite's heartbeats before the first report.",
    )


@dataclass(frozen=True, kw_only=True)
class BootstrapConfig:
    topic: str = setting(DEFAULT_TOPIC, max_length=MAX_TOPIC_BYTES, doc="Report topic; {thing}: thing name.")
    verdict_topic: str = setting(
        DEFAULT_VERDICT_TOPIC, max_length=MAX_TOPIC_BYTES, doc="Verdict topic; {thing}: thing name."
    )
    certificate_path: str = setting(
        "", max_length=4096, doc="The device certificate (PEM or DER, public); empty: reported unavailable."
    )
    collect_interval_seconds: float = setting(
        300.0, minimum=0.5, maximum=DAY, doc="How often facts are collected again (a change re-reports)."
    )
    report_interval_seconds: float = setting(
        DAY, minimum=1.0, maximum=365 * DAY, doc="Re-report this long after the last report, to re-verify."
    )
    fleet_salt: str = setting(
        "", max_length=256, secret=True, doc="HMAC key of redaction (at least 16 characters when used)."
    )
    redact: RedactConfig = RedactConfig()
    retry: RetryConfig = RetryConfig()
    collectors: CollectorsConfig = CollectorsConfig()
    components: ComponentsConfig = ComponentsConfig()
    erase_on_reject: bool = setting(
        default=False, doc="On rejection, ask the store to crypto-erase everything."
    )
    heartbeat_interval_seconds: float = setting(30.0, minimum=1.0, maximum=3600.0, doc="Heartbeat interval.")

    def validate(self) -> None:
        _check_topic(("topic",), self.topic)
        _check_topic(("verdictTopic",), self.verdict_topic)
        for key, path in (
            (("certificatePath",), self.certificate_path),
            (
                ("collectors", "directory"),
                self.collectors.directory,
            ),
        ):
            if path and not path.startswith("/"):
                raise ConfigurationError(key, "an absolute path, or empty")
        if self.retry.max_seconds < self.retry.initial_seconds:
            raise ConfigurationError(("retry", "maxSeconds"), "at least retry.initialSeconds")
        if self.redaction_fields() and len(self.fleet_salt) < MIN_SALT_CHARS:
            raise ConfigurationError(("fleetSalt",), f"at least {MIN_SALT_CHARS} characters when redacting")

    def redaction_fields(self) -> frozenset[str]:
        chosen = {
            "macAddresses": self.redact.mac_addresses,
            "serial": self.redact.serial,
            "hardwareUuid": self.redact.hardware_uuid,
        }
        return frozenset(name for name, on in chosen.items() if on)

    def redactor(self) -> Redactor | None:
        fields = self.redaction_fields()
        return Redactor(self.fleet_salt.encode("utf-8"), fields) if fields else None


def thing_topic(template: str, thing: str) -> str:
    return template.replace("{thing}", thing)


def _check_topic(key: tuple[str], topic: str) -> None:
    if not topic or any(c in topic for c in "+#\x00") or topic.startswith("$"):
        raise ConfigurationError(key, "a topic name without wildcards (+ or #), outside `$` topics")
    if any(p != "{thing}" for p in _PLACEHOLDER.findall(topic)) or topic.count("{") != topic.count("}"):
        raise ConfigurationError(key, "no placeholder but {thing}")
    if len(topic.replace("{thing}", "x" * 128).encode()) > MAX_TOPIC_BYTES:
        raise ConfigurationError(key, f"at most {MAX_TOPIC_BYTES} bytes with a 128-character thing name")
