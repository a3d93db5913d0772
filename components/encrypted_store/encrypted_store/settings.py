"""The store component's configuration; the recipe's DefaultConfiguration is `defaults_document(StoreConfig)`.

Namespaces must be declared: a request for a namespace the configuration does not list is refused with
`unknown_namespace`, so every kind of data a device keeps is named, bounded and visible in one place. The
defaults declare the suite's own namespaces.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from device_agent.config import setting
from device_agent.errors import ConfigurationError
from device_agent.store import NamespacePolicy

NAMESPACE_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}"
DAY = 86400.0


@dataclass(frozen=True, kw_only=True)
class NamespaceSettings:
    max_records: int | None = setting(
        default=None, minimum=1, maximum=100_000_000, doc="Most records kept; null for no limit."
    )
    max_bytes: int | None = setting(
        default=None, minimum=1, maximum=1 << 40, doc="Most value bytes kept; null for no limit."
    )
    overflow: str = setting(
        default="reject",
        choices=("reject", "drop_oldest"),
        doc="When full: refuse the new record (`reject`) or drop the oldest ones (`drop_oldest`).",
    )
    ttl_seconds: float | None = setting(
        default=None, minimum=1.0, maximum=3650 * DAY, doc="Default time-to-live of a record; null: none."
    )

    def policy(self) -> NamespacePolicy:
        return NamespacePolicy(
            max_records=self.max_records,
            max_bytes=self.max_bytes,
            overflow="drop_oldest" if self.overflow == "drop_oldest" else "reject",
            ttl=self.ttl_seconds,
        )


# The suite's own namespaces, sized for a device with little flash (a day of telemetry at 10 s is 8,640).
SUITE_NAMESPACES: Mapping[str, NamespaceSettings] = {
    "telemetry": NamespaceSettings(max_records=1000, max_bytes=1 << 20),
    "telemetry-spool": NamespaceSettings(
        max_records=100_000, max_bytes=64 << 20, overflow="drop_oldest", ttl_seconds=30 * DAY
    ),
    "bootstrap": NamespaceSettings(max_records=100, max_bytes=1 << 20),
    "health": NamespaceSettings(max_records=1000, max_bytes=1 << 20),
}


@dataclass(frozen=True, kw_only=True)
class StoreConfig:
    namespaces: Mapping[str, NamespaceSettings] = setting(
        default=SUITE_NAMESPACES,
        key_pattern=NAMESPACE_PATTERN,
        max_items=256,
        doc="The namespaces this store serves, each with its quotas, overflow policy and time-to-live.",
    )
    key_source: str = setting(
        default="file",
        choices=("file", "secret"),
        doc="Where the key-encryption key comes from: a 0600 key file beside the store, or a Greengrass"
        " secret (GetSecretValue). Read at start: a change takes effect when the component restarts.",
    )
    secret_id: str = setting(
        default="",
        max_length=2048,
        doc="The secret's ARN or name, when keySource is `secret` (its value is never logged).",
    )
    max_value_bytes: int = setting(
        default=65536, minimum=1, maximum=1 << 20, doc="Largest value a request may carry."
    )
    max_read_bytes: int = setting(
        default=262144, minimum=1024, maximum=4 << 20, doc="Largest batch of values one read returns."
    )
    max_queued_requests: int = setting(
        default=256, minimum=1, maximum=100_000, doc="Requests waiting beyond this are answered `busy`."
    )
    maintenance_interval_seconds: float = setting(
        default=60.0,
        minimum=1.0,
        maximum=DAY,
        doc="How often expired records are purged and old keys re-encrypted.",
    )
    rotation_interval_days: float = setting(
        default=90.0, minimum=0.0, maximum=3650.0, doc="Make new data keys this often; 0 never (by age)."
    )
    stats_interval_seconds: float = setting(
        default=300.0, minimum=0.0, maximum=DAY, doc="Publish stats on device-agent/store/stats; 0 never."
    )
    heartbeat_interval_seconds: float = setting(default=30.0, minimum=1.0, maximum=3600.0)

    def validate(self) -> None:
        if self.key_source == "secret" and not self.secret_id:
            raise ConfigurationError(("secretId",), "a secret ARN or name, since keySource is `secret`")

    def policies(self) -> dict[str, NamespacePolicy]:
        return {name: settings.policy() for name, settings in self.namespaces.items()}
