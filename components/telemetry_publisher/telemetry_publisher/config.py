"""The telemetry publisher's configuration: every key with its default and limits (docs/telemetry.md).

The recipe's DefaultConfiguration is `defaults_document(TelemetryConfig)`. Every key is live: a deployment
that changes one is validated (types and limits by the model, cross-key rules by `validate()`) and, if
valid, applied without a restart; an invalid one fails the deployment with the key path.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from device_agent.config import setting
from device_agent.errors import ConfigurationError
from device_agent.metrics import ALL_GROUPS, Group, ProcessMatcher, SamplerSettings
from device_agent.metrics.processes import MATCHER_NAME
from telemetry_publisher.budget import BudgetSettings, Period
from telemetry_publisher.payload import IOT_CORE_MAX_BYTES
from telemetry_publisher.spool import SpoolSettings

DEFAULT_TOPIC: Final = "dt/device-agent/{thing}/telemetry"
DEFAULT_LOCAL_TOPIC: Final = "device-agent/metrics"
DAY: Final = 86400.0
# IoT Core allows 512 KiB/s per connection, shared with the nucleus and the other components: the drain
# may use half.
MAX_DRAIN_BYTES_PER_SECOND: Final = 256 * 1024
MAX_TOPIC_BYTES: Final = 256  # IoT Core's limit on a topic name
MAX_TOPIC_SLASHES: Final = 7  # IoT Core's limit on forward slashes in a topic
MAX_THING_CHARS: Final = 128
_PLACEHOLDER = re.compile(r"\{[^}]*\}")

DEFAULT_PROCESSES: Final[Mapping[str, str]] = {
    "nucleus": "Greengrass.jar",
    "store": "-m encrypted_store",
    "telemetry": "-m telemetry_publisher",
    "health": "-m health_monitor",
    "bootstrap": "-m bootstrap_reporter",
}


@dataclass(frozen=True, kw_only=True)
class SpoolConfig:
    cap_samples: int = setting(
        25920,
        minimum=10,
        maximum=1_000_000,
        doc="Most samples kept in the durable spool; beyond it the oldest are dropped (and counted).",
    )
    memory_samples: int = setting(
        720,
        minimum=10,
        maximum=10_000,
        doc="Most samples kept in memory while the store is unavailable; beyond it the oldest are dropped.",
    )
    drain_messages_per_second: float = setting(
        4.0, minimum=0.1, maximum=20.0, doc="Most backlog messages sent per second once connected."
    )
    max_age_days: float = setting(
        30.0,
        minimum=0.0,
        maximum=3650.0,
        doc="Samples older than this are not sent (counted as expired); 0: never.",
    )


@dataclass(frozen=True, kw_only=True)
class BudgetConfig:
    limit_bytes: int | None = setting(
        None,
        minimum=10_000,
        maximum=10**13,
        doc="Bytes the publisher may send per period (payload plus per-message overhead); null: no budget.",
    )
    period: Period = setting(Period.MONTH, doc="The budget's period, in UTC: `day` or `month`.")
    max_interval_seconds: float = setting(
        600.0, minimum=10.0, maximum=DAY, doc="The longest interval the budget may stretch sampling to."
    )
    keep_groups: tuple[Group, ...] = setting(
        (Group.CPU, Group.MEMORY, Group.SYSTEM),
        max_items=len(ALL_GROUPS),
        doc="Groups the budget never leaves out.",
    )
    overhead_bytes_per_message: int = setting(
        120, minimum=0, maximum=2000, doc="Estimated MQTT, TLS and TCP/IP bytes per message, counted as sent."
    )


@dataclass(frozen=True, kw_only=True)
class TelemetryConfig:
    interval_seconds: float = setting(10.0, minimum=1.0, maximum=3600.0, doc="Seconds between samples.")
    groups: tuple[Group, ...] = setting(
        ALL_GROUPS, max_items=len(ALL_GROUPS), doc="The metric groups to sample."
    )
    mounts: tuple[str, ...] = setting(
        ("/",), pattern=r"/[^\x00-\x1f]{0,255}", max_items=16, doc="Mount points whose usage `disk` reports."
    )
    interfaces: tuple[str, ...] = setting(
        (),
        pattern=r"[^\s/]{1,15}",
        max_items=16,
        doc="Network interfaces to report; empty: all but loopback and virtual ones (up to 16).",
    )
    disk_devices: tuple[str, ...] = setting(
        (),
        pattern=r"[A-Za-z0-9._-]{1,32}",
        max_items=16,
        doc="Disks whose I/O `diskio` sums; empty: every whole physical disk.",
    )
    processes: Mapping[str, str] = setting(
        DEFAULT_PROCESSES,
        key_pattern=MATCHER_NAME.pattern,
        pattern=r"[^\x00-\x1f]{1,256}",
        max_items=16,
        doc="Processes `processes` reports: a name, and a substring of the process's command line.",
    )
    topic: str = setting(
        DEFAULT_TOPIC, max_length=MAX_TOPIC_BYTES, doc="IoT Core topic; `{thing}` is the thing name."
    )
    local_topic: str = setting(
        DEFAULT_LOCAL_TOPIC,
        max_length=MAX_TOPIC_BYTES,
        doc="Local pub/sub topic of the latest sample (for the health monitor); empty: not published.",
    )
    max_message_bytes: int = setting(
        65536,
        minimum=4096,
        maximum=100 * 1024,
        doc="Largest message published (IoT Core's limit is 128 KiB).",
    )
    batch_size: int = setting(100, minimum=1, maximum=500, doc="Most samples in one backlog message.")
    heartbeat_interval_seconds: float = setting(
        30.0, minimum=1.0, maximum=3600.0, doc="Seconds between heartbeats on local pub/sub."
    )
    spool: SpoolConfig = SpoolConfig()
    budget: BudgetConfig = BudgetConfig()

    def validate(self) -> None:
        if len(set(self.groups)) != len(self.groups):
            raise ConfigurationError(("groups",), "each group at most once")
        if len(set(self.budget.keep_groups)) != len(self.budget.keep_groups):
            raise ConfigurationError(("budget", "keepGroups"), "each group at most once")
        if self.budget.max_interval_seconds < self.interval_seconds:
            raise ConfigurationError(
                ("budget", "maxIntervalSeconds"), "at least intervalSeconds (the budget only lengthens it)"
            )
        if self.spool.drain_messages_per_second * self.max_message_bytes > MAX_DRAIN_BYTES_PER_SECOND:
            raise ConfigurationError(
                ("spool", "drainMessagesPerSecond"),
                f"at most {MAX_DRAIN_BYTES_PER_SECOND} bytes per second with maxMessageBytes "
                "(half of IoT Core's per-connection limit)",
            )
        _check_topic(("topic",), self.topic, cloud=True)
        if self.local_topic:
            _check_topic(("localTopic",), self.local_topic, cloud=False)

    def sampler_settings(self) -> SamplerSettings:
        return SamplerSettings(
            groups=frozenset(self.groups),
            mounts=self.mounts,
            interfaces=self.interfaces,
            disk_devices=self.disk_devices,
            processes=tuple(
                ProcessMatcher(name=name, cmdline_contains=text) for name, text in self.processes.items()
            ),
        )

    def spool_settings(self) -> SpoolSettings:
        return SpoolSettings(
            cap=self.spool.cap_samples,
            memory_cap=self.spool.memory_samples,
            batch_size=self.batch_size,
            max_message_bytes=self.max_message_bytes,
            drain_messages_per_second=self.spool.drain_messages_per_second,
            max_age_seconds=self.spool.max_age_days * DAY or None,
        )

    def budget_settings(self) -> BudgetSettings:
        return BudgetSettings(
            limit_bytes=self.budget.limit_bytes,
            period=self.budget.period,
            max_interval_seconds=self.budget.max_interval_seconds,
            keep_groups=frozenset(self.budget.keep_groups),
            overhead_bytes_per_message=self.budget.overhead_bytes_per_message,
        )


def _check_topic(key: tuple[str], topic: str, *, cloud: bool) -> None:
    if not topic or any(c in topic for c in "+#\x00"):
        raise ConfigurationError(key, "a topic name without wildcards (+ or #)")
    if topic.startswith("$"):
        raise ConfigurationError(key, "a topic outside the reserved `$` topics")
    if any(p != "{thing}" for p in _PLACEHOLDER.findall(topic)) or topic.count("{") != topic.count("}"):
        raise ConfigurationError(key, "no placeholder but {thing}")
    if cloud:
        longest = topic.replace("{thing}", "x" * MAX_THING_CHARS)
        if len(longest.encode()) > MAX_TOPIC_BYTES:
            raise ConfigurationError(key, f"at most {MAX_TOPIC_BYTES} bytes with a 128-character thing name")
        if topic.count("/") > MAX_TOPIC_SLASHES:
            raise ConfigurationError(key, f"at most {MAX_TOPIC_SLASHES} slashes (IoT Core's limit)")
    elif "{" in topic:
        raise ConfigurationError(key, "a fixed local topic (no placeholder)")


assert IOT_CORE_MAX_BYTES > 100 * 1024  # noqa: S101  (maxMessageBytes stays well under the limit)
