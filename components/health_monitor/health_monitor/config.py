"""The health monitor's configuration: thresholds (`checks`), the log (`log`), topics and timings.

The recipe's DefaultConfiguration is `defaults_document(HealthConfig)`. Every key is live: a valid
deployment is applied without a restart (evaluators keep their state, their rules change).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from device_agent.config import setting
from device_agent.errors import ConfigurationError
from health_monitor.restarts import RestartSettings
from health_monitor.settings import DAY, CheckThresholds, LogSettings

DEFAULT_TOPIC: Final = "dt/device-agent/{thing}/health"
DEFAULT_LOCAL_TOPIC: Final = "device-agent/health"
MAX_TOPIC_BYTES: Final = 256  # IoT Core's limit on a topic name


@dataclass(frozen=True, kw_only=True)
class HealthConfig:
    checks: CheckThresholds = CheckThresholds()  # noqa: RUF009 - frozen, so safe to share
    log: LogSettings = LogSettings()  # noqa: RUF009 - frozen, so safe to share
    restart: RestartSettings = RestartSettings()  # noqa: RUF009 - frozen, so safe to share
    topic: str = setting(
        DEFAULT_TOPIC,
        max_length=MAX_TOPIC_BYTES,
        doc="IoT Core topic of the summaries; {thing} is the thing name; the recipe grants the default only.",
    )
    local_topic: str = setting(DEFAULT_LOCAL_TOPIC, max_length=MAX_TOPIC_BYTES, doc="Local summary topic.")
    summary_interval_seconds: float = setting(
        300.0, minimum=1, maximum=DAY, doc="A summary this often even when nothing changed."
    )
    evaluate_interval_seconds: float = setting(
        5.0, minimum=0.1, maximum=600, doc="How often the checks are evaluated (silences, counts, clock)."
    )
    self_sample_after_seconds: float = setting(
        60.0,
        minimum=1,
        maximum=DAY,
        doc="Sample the device itself when no sample arrived on device-agent/metrics for this long.",
    )
    mounts: tuple[str, ...] = setting(("/",), max_items=16, doc="Mounts to check when sampling itself.")
    certificate_path: str = setting(
        "", max_length=4096, doc="The device certificate (PEM, public); empty: the check is off."
    )
    certificate_check_seconds: float = setting(
        3600.0, minimum=1, maximum=DAY, doc="How often the certificate file is read."
    )
    heartbeat_interval_seconds: float = setting(30.0, minimum=0.1, maximum=600, doc="The monitor's own.")

    def validate(self) -> None:
        for key, topic in (("topic", self.topic), ("localTopic", self.local_topic)):
            if not topic or any(c in topic for c in "#+") or topic.startswith("$"):
                raise ConfigurationError((key,), "a topic name without wildcards, not starting with $")
        if self.certificate_path and not self.certificate_path.startswith("/"):
            raise ConfigurationError(("certificatePath",), "an absolute path, or empty")
        if any(not m.startswith("/") for m in self.mounts):
            raise ConfigurationError(("mounts",), "absolute mount points")


def summary_topic(template: str, thing: str) -> str:
    return template.replace("{thing}", thing)
