"""A fake `Source`: readings the test sets by hand, and failures it injects per method."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping

from device_agent.metrics.source import (
    CpuTimes,
    DiskCounters,
    DiskUsage,
    Memory,
    NetCounters,
    ProcessInfo,
    ProcessStats,
    Temperature,
)


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclasses.dataclass
class FakeSource:
    cpus: int = 4
    cpu: CpuTimes = dataclasses.field(default_factory=lambda: CpuTimes(total=1000.0, idle=800.0, iowait=10.0))
    load: tuple[float, float, float] = (0.5, 0.25, 0.125)
    mhz: float | None = 1500.0
    mem: Memory = dataclasses.field(
        default_factory=lambda: Memory(total=1000, available=250, swap_total=0, swap_used=0)
    )
    usage: dict[str, DiskUsage] = dataclasses.field(
        default_factory=lambda: {"/": DiskUsage(total=100, used=60, free=30)}
    )
    whole_disks: list[str] = dataclasses.field(default_factory=lambda: ["mmcblk0"])
    disks: dict[str, DiskCounters] = dataclasses.field(
        default_factory=lambda: {
            "mmcblk0": DiskCounters(read_bytes=1000, write_bytes=2000, reads=10, writes=20, busy_ms=100),
            "mmcblk0p1": DiskCounters(read_bytes=900, write_bytes=1900, reads=9, writes=19, busy_ms=90),
        }
    )
    nets: dict[str, NetCounters] = dataclasses.field(
        default_factory=lambda: {
            "lo": NetCounters(10**9, 10**9, 10, 10, 0, 0, 0, 0),
            "eth0": NetCounters(5000, 7000, 50, 70, 0, 0, 0, 0),
        }
    )
    sensors: dict[str, list[Temperature]] = dataclasses.field(
        default_factory=lambda: {"cpu_thermal": [Temperature(label="", celsius=48.25)]}
    )
    boot: str = "boot-1"
    booted_at: float = 1_800_000_000.0
    procs: int = 120
    process_table: list[ProcessInfo] = dataclasses.field(default_factory=list)
    process_readings: dict[int, ProcessStats] = dataclasses.field(default_factory=dict)
    nucleus_sockets: dict[int, str] = dataclasses.field(default_factory=dict)
    failures: dict[str, BaseException] = dataclasses.field(default_factory=dict)
    scans: int = 0

    def _check(self, name: str) -> None:
        if name in self.failures:
            raise self.failures[name]

    def cpu_count(self) -> int:
        self._check("cpu_count")
        return self.cpus

    def cpu_times(self) -> CpuTimes:
        self._check("cpu_times")
        return self.cpu

    def load_average(self) -> tuple[float, float, float]:
        self._check("load_average")
        return self.load

    def cpu_mhz(self) -> float | None:
        self._check("cpu_mhz")
        return self.mhz

    def memory(self) -> Memory:
        self._check("memory")
        return self.mem

    def disk_usage(self, mount: str) -> DiskUsage:
        self._check("disk_usage")
        if mount not in self.usage:
            raise FileNotFoundError(mount)
        return self.usage[mount]

    def disk_devices(self) -> list[str]:
        return self.whole_disks

    def disk_counters(self) -> Mapping[str, DiskCounters]:
        self._check("disk_counters")
        return self.disks

    def net_counters(self) -> Mapping[str, NetCounters]:
        self._check("net_counters")
        return self.nets

    def temperatures(self) -> Mapping[str, list[Temperature]]:
        self._check("temperatures")
        return self.sensors

    def boot_id(self) -> str:
        self._check("boot_id")
        return self.boot

    def boot_time(self) -> float:
        self._check("boot_time")
        return self.booted_at

    def process_count(self) -> int:
        self._check("process_count")
        return self.procs

    def processes(self) -> Iterator[ProcessInfo]:
        self._check("processes")
        self.scans += 1
        yield from self.process_table

    def nucleus_socket(self, pid: int) -> str | None:
        return self.nucleus_sockets.get(pid)

    def process_stats(self, pid: int, create_time: float) -> ProcessStats:
        self._check("process_stats")
        if pid not in self.process_readings:
            raise ProcessLookupError(pid)
        return self.process_readings[pid]

    # helpers for tests: counters advance like a running system

    def tick(self, seconds: float, *, busy: float = 0.25) -> None:
        """Advance every counter as `seconds` of activity would."""
        total = self.cpus * seconds
        self.cpu = CpuTimes(
            total=self.cpu.total + total,
            idle=self.cpu.idle + total * (1 - busy),
            iowait=self.cpu.iowait + total * 0.01,
        )
        self.disks = {
            name: dataclasses.replace(
                c,
                read_bytes=c.read_bytes + int(1000 * seconds),
                write_bytes=c.write_bytes + int(4000 * seconds),
                reads=c.reads + int(seconds),
                writes=c.writes + int(2 * seconds),
                busy_ms=None if c.busy_ms is None else c.busy_ms + int(50 * seconds),
            )
            for name, c in self.disks.items()
        }
        self.nets = {
            name: dataclasses.replace(
                c,
                bytes_recv=c.bytes_recv + int(100 * seconds),
                bytes_sent=c.bytes_sent + int(300 * seconds),
                packets_recv=c.packets_recv + int(seconds),
                packets_sent=c.packets_sent + int(3 * seconds),
            )
            for name, c in self.nets.items()
        }
        self.process_readings = {
            pid: dataclasses.replace(r, cpu_seconds=r.cpu_seconds + 0.01 * seconds)
            for pid, r in self.process_readings.items()
        }
