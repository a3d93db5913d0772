"""The metric groups that configuration turns on or off, and the units vocabulary of a sample's keys."""

from __future__ import annotations

import enum
from typing import Final


class Group(enum.StrEnum):
    CPU = "cpu"  # utilisation over the window, load averages, frequency
    MEMORY = "memory"  # memory and swap
    DISK = "disk"  # usage per configured mount point
    DISKIO = "diskio"  # bytes and operations read and written, busiest disk's utilisation
    NETWORK = "network"  # bytes, packets, errors and drops per interface
    TEMPERATURE = "temperature"  # per sensor, where the hardware reports it
    SYSTEM = "system"  # uptime, boot time, process count
    PROCESSES = "processes"  # CPU, memory, threads and fds of the nucleus and the suite's components


ALL_GROUPS: Final = tuple(Group)
#: Groups whose values are deltas of counters, so they have a window (`dtS`) and a baseline.
COUNTER_GROUPS: Final = frozenset({Group.CPU, Group.DISKIO, Group.NETWORK, Group.PROCESSES})

#: A metric key ends with its unit; keys without one of these suffixes are plain counts or ratios.
#: The values of `temperature` are keyed by sensor, so that group's unit is the group's: degrees Celsius.
UNIT_SUFFIXES: Final = {
    "B": "bytes",
    "Bps": "bytes per second",
    "Pct": "percent (0-100; a process's cpuPct is percent of one CPU, so it can exceed 100)",
    "S": "seconds",
    "At": "Unix time, seconds (UTC)",
    "MHz": "megahertz",
    "Ps": "per second",
}
