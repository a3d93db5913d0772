"""Readings from what the monitor receives or reads: a metrics sample, the board, a certificate, an event.

Each function returns `(check, subject, value)` triples or a check name; none raises for odd input (a
message from another component is data, not a contract the monitor can enforce).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

Reading = tuple[str, str | None, float]

# Raspberry Pi firmware: bit 0 undervoltage now, bit 2 throttled now (bits 16 and 18: since boot).
THROTTLED_FILE: Final = Path("/sys/devices/platform/soc/soc:firmware/get_throttled")
_UNDERVOLTAGE_NOW = 1 << 0
_THROTTLED_NOW = 1 << 2
MAX_SUBJECT = 64
CLOCK_NEVER_SET_BEFORE: Final = datetime(2020, 1, 1, tzinfo=UTC)
MAX_CERTIFICATE_BYTES: Final = 64 << 10  # a PEM chain is a few KiB


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def sample_readings(sample: Mapping[str, Any]) -> list[Reading]:
    """cpu, memory, swap, disk space per mount and temperature per sensor from a `metrics-sample/1`."""
    readings: list[Reading] = []
    cpu = sample.get("cpu")
    if isinstance(cpu, Mapping) and (used := _number(cpu.get("usedPct"))) is not None:
        readings.append(("cpu", None, used))
    memory = sample.get("memory")
    if isinstance(memory, Mapping):
        if (used := _number(memory.get("usedPct"))) is not None:
            readings.append(("memory", None, used))
        swap_total = _number(memory.get("swapTotalB"))
        if swap_total and (swap := _number(memory.get("swapUsedPct"))) is not None:
            readings.append(("swap", None, swap))
    disks = sample.get("disk")
    if isinstance(disks, Mapping):
        for mount, disk in disks.items():
            if not isinstance(disk, Mapping) or not isinstance(mount, str):
                continue
            total, free = _number(disk.get("totalB")), _number(disk.get("freeB"))
            if total and free is not None:
                readings.append(("disk_space", mount[:MAX_SUBJECT], 100.0 * free / total))
    sensors = sample.get("temperature")
    if isinstance(sensors, Mapping):
        for sensor, celsius in sensors.items():
            if isinstance(sensor, str) and (value := _number(celsius)) is not None:
                readings.append(("temperature", sensor[:MAX_SUBJECT], value))
    return readings


def inode_readings(mounts: Iterable[str]) -> list[Reading]:
    """Free inodes per mount (statvfs); a file system without an inode count (btrfs reports 0) is skipped."""
    readings: list[Reading] = []
    for mount in mounts:
        try:
            stats = os.statvfs(mount)
        except OSError:
            continue
        if stats.f_files > 0:
            readings.append(("inodes", mount[:MAX_SUBJECT], 100.0 * stats.f_favail / stats.f_files))
    return readings


def board_readings(path: Path = THROTTLED_FILE) -> list[Reading]:
    """Throttling and undervoltage where the board reports them (a Raspberry Pi); none elsewhere."""
    try:
        flags = int(path.read_text(encoding="ascii").strip(), 16)
    except (OSError, ValueError):
        return []
    return [
        ("throttling", None, 1.0 if flags & _THROTTLED_NOW else 0.0),
        ("undervoltage", None, 1.0 if flags & _UNDERVOLTAGE_NOW else 0.0),
    ]


def certificate_days_left(pem: bytes, now: datetime) -> float:
    """Days until the certificate's notAfter (negative once expired). Raises ValueError if not a cert."""
    from cryptography import x509  # noqa: PLC0415 - read once an hour: not worth importing at start

    certificate = x509.load_pem_x509_certificate(pem)
    return (certificate.not_valid_after_utc - now).total_seconds() / 86400.0


def read_certificate(path: Path, now: datetime) -> float | str:
    """Days left on the certificate at `path`, or why it cannot be told (never the file's contents)."""
    try:
        with path.open("rb") as file:
            pem = file.read(MAX_CERTIFICATE_BYTES + 1)
    except OSError as error:
        return f"the certificate file cannot be read: {error.strerror or type(error).__name__}"
    if len(pem) > MAX_CERTIFICATE_BYTES:
        return f"the certificate file is over {MAX_CERTIFICATE_BYTES // 1024} KiB: not a certificate"
    try:
        return certificate_days_left(pem, now)
    except ValueError:
        return "the certificate file holds no PEM certificate that can be parsed"


class ClockWatch:
    """How far the wall clock moved, since the last look, beyond the time that really passed (monotonic)."""

    def __init__(
        self, *, mono: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time
    ) -> None:
        self._mono, self._wall = mono, wall
        self._last = (mono(), wall())

    def jump(self) -> float:
        """Seconds the wall clock jumped (either way) since the last call; 0 when it kept pace."""
        now = (self._mono(), self._wall())
        (mono, wall), self._last = self._last, now
        return abs((now[1] - wall) - (now[0] - mono))


def clock_unset(now: datetime) -> float:
    return 1.0 if now < CLOCK_NEVER_SET_BEFORE else 0.0


def event_check(message: Mapping[str, Any]) -> str | None:
    """The check an `event/1` counts towards, or None for events the monitor does not judge."""
    name = message.get("event")
    category = message.get("category")
    if not isinstance(name, str):
        return None
    if name == "store.integrity_failed" or (category == "integrity" and name != "store.records_dropped"):
        return "integrity"
    if name.startswith("config.") and category == "configuration":
        return "config_rejected"
    if "unauthorized" in name or category == "security":
        return "unauthorized"
    if name == "lifecycle.fatal_error":
        return "unexpected_restart"
    return None
