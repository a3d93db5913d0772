"""Where raw readings come from: a typed seam over psutil, so the sampler's logic runs on a fake in tests.

`PsutilSource` imports psutil on first use (a component that never samples never pays for it) and turns
psutil's errors into the standard library's, so the sampler classifies failures without knowing psutil:

    psutil.AccessDenied    -> PermissionError
    psutil.NoSuchProcess   -> ProcessLookupError (a process that ended between two reads)
    a function the platform lacks -> NotImplementedError

Counters are read with `nowrap=False`: psutil's own wrap correction keeps state per process, which would make
a counter read after a restart disagree with a baseline read before it. `device_agent.metrics.counters`
handles wraps and resets instead, the same way before and after a restart.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, Final, Protocol, TypeVar

T = TypeVar("T")

_BOOT_ID = Path("/proc/sys/kernel/random/boot_id")
_BLOCK_DEVICES = Path("/sys/block")
# Whole-disk names that are not physical storage, or that stack on other disks (counting them would count
# the same I/O twice): loop and RAM disks, zram swap, device-mapper and md RAID, optical drives.
_VIRTUAL_DISK_PREFIXES = ("loop", "ram", "zram", "dm-", "md", "sr", "fd")


@dataclasses.dataclass(frozen=True, slots=True)
class CpuTimes:
    """Seconds the CPUs spent, summed over CPUs: all states, idle (including iowait), and iowait alone."""

    total: float
    idle: float
    iowait: float


@dataclasses.dataclass(frozen=True, slots=True)
class Memory:
    total: int
    available: int
    swap_total: int
    swap_used: int


@dataclasses.dataclass(frozen=True, slots=True)
class DiskUsage:
    total: int
    used: int
    free: int  # available to unprivileged users (what an application can still write)


@dataclasses.dataclass(frozen=True, slots=True)
class DiskCounters:
    read_bytes: int
    write_bytes: int
    reads: int
    writes: int
    busy_ms: int | None  # milliseconds the device had I/O in flight (Linux), None elsewhere


@dataclasses.dataclass(frozen=True, slots=True)
class NetCounters:
    bytes_sent: int
    bytes_recv: int
    packets_sent: int
    packets_recv: int
    errin: int
    errout: int
    dropin: int
    dropout: int


@dataclasses.dataclass(frozen=True, slots=True)
class Temperature:
    label: str
    celsius: float


@dataclasses.dataclass(frozen=True, slots=True)
class ProcessInfo:
    """What a process matcher looks at. The command line stays on the device: it is never published."""

    pid: int
    create_time: float
    name: str
    cmdline: str = dataclasses.field(repr=False)


@dataclasses.dataclass(frozen=True, slots=True)
class ProcessStats:
    cpu_seconds: float  # user + system
    rss: int
    pss: int | None  # None when not readable (another user's process, or no smaps on this kernel)
    threads: int
    fds: int | None  # None when not readable


class Source(Protocol):
    """The readings the sampler needs; every method may raise OSError, PermissionError or
    NotImplementedError, and the sampler reports that in the sample instead of failing."""

    def cpu_count(self) -> int: ...
    def cpu_times(self) -> CpuTimes: ...
    def load_average(self) -> tuple[float, float, float]: ...
    def cpu_mhz(self) -> float | None: ...
    def memory(self) -> Memory: ...
    def disk_usage(self, mount: str) -> DiskUsage: ...
    def disk_devices(self) -> list[str]: ...
    def disk_counters(self) -> Mapping[str, DiskCounters]: ...
    def net_counters(self) -> Mapping[str, NetCounters]: ...
    def temperatures(self) -> Mapping[str, list[Temperature]]: ...
    def boot_id(self) -> str: ...
    def boot_time(self) -> float: ...
    def process_count(self) -> int: ...
    def processes(self) -> Iterator[ProcessInfo]: ...
    def process_stats(self, pid: int, create_time: float) -> ProcessStats: ...
    def nucleus_socket(self, pid: int) -> str | None: ...


# Set by the nucleus for every component it starts; one per nucleus, so it tells devices on one machine apart.
# When the absolute path is too long for a Unix socket (108 bytes) the nucleus sets `../../ipc.socket`, the
# same on every device: relative to the component's working directory (<root>/work/<component>), as the IPC
# client connects to it. So it is compared resolved.
NUCLEUS_SOCKET_ENV: Final = "AWS_GG_NUCLEUS_DOMAIN_SOCKET_FILEPATH_FOR_COMPONENT"


def resolve_socket(value: str, cwd: Callable[[], str]) -> str:
    """The socket path `value` names, made absolute against `cwd()` (read only when needed)."""
    path = Path(value)
    return os.path.normpath(path if path.is_absolute() else Path(cwd()) / path)


@functools.cache
def _psutil() -> Any:
    import psutil  # noqa: PLC0415  (lazy: only a component that samples loads it)

    return psutil


def _translated(call: Callable[[], T]) -> T:
    """Run a psutil call with its errors turned into the standard library's."""
    psutil = _psutil()
    try:
        return call()
    except psutil.AccessDenied as error:
        raise PermissionError("access denied") from error
    except psutil.NoSuchProcess as error:
        raise ProcessLookupError("process ended") from error
    except AttributeError as error:  # psutil lacks the function on this platform
        raise NotImplementedError("not supported on this platform") from error


class PsutilSource:
    """The real readings, through psutil. Keeps psutil's Process objects of matched processes between
    samples (psutil checks their identity by creation time, so a reused PID is never mistaken)."""

    def __init__(self) -> None:
        self._processes: dict[tuple[int, float], Any] = {}

    def cpu_count(self) -> int:
        return int(_translated(lambda: _psutil().cpu_count(logical=True)) or 1)

    def cpu_times(self) -> CpuTimes:
        times = _translated(lambda: _psutil().cpu_times(percpu=False))
        fields = times._asdict()
        # On Linux, guest time is already inside user time (and guest_nice inside nice): don't count it twice.
        total = sum(v for k, v in fields.items() if k not in {"guest", "guest_nice"})
        iowait = float(fields.get("iowait", 0.0))
        return CpuTimes(total=float(total), idle=float(fields["idle"]) + iowait, iowait=iowait)

    def load_average(self) -> tuple[float, float, float]:
        one, five, fifteen = _translated(lambda: _psutil().getloadavg())
        return float(one), float(five), float(fifteen)

    def cpu_mhz(self) -> float | None:
        frequency = _translated(lambda: _psutil().cpu_freq(percpu=False))
        if frequency is None or not frequency.current:
            return None
        return float(frequency.current)

    def memory(self) -> Memory:
        virtual = _translated(lambda: _psutil().virtual_memory())
        swap = _translated(lambda: _psutil().swap_memory())
        return Memory(
            total=int(virtual.total),
            available=int(virtual.available),
            swap_total=int(swap.total),
            swap_used=int(swap.used),
        )

    def disk_usage(self, mount: str) -> DiskUsage:
        usage = _translated(lambda: _psutil().disk_usage(mount))
        return DiskUsage(total=int(usage.total), used=int(usage.used), free=int(usage.free))

    def disk_devices(self) -> list[str]:
        """Whole physical disks (Linux: /sys/block without virtual and stacked devices); [] if unknown."""
        with contextlib.suppress(OSError):
            return sorted(
                p.name for p in _BLOCK_DEVICES.iterdir() if not p.name.startswith(_VIRTUAL_DISK_PREFIXES)
            )
        return []

    def disk_counters(self) -> Mapping[str, DiskCounters]:
        counters = _translated(lambda: _psutil().disk_io_counters(perdisk=True, nowrap=False)) or {}
        return {
            name: DiskCounters(
                read_bytes=int(c.read_bytes),
                write_bytes=int(c.write_bytes),
                reads=int(c.read_count),
                writes=int(c.write_count),
                busy_ms=int(c.busy_time) if hasattr(c, "busy_time") else None,
            )
            for name, c in counters.items()
        }

    def net_counters(self) -> Mapping[str, NetCounters]:
        counters = _translated(lambda: _psutil().net_io_counters(pernic=True, nowrap=False)) or {}
        return {
            name: NetCounters(
                bytes_sent=int(c.bytes_sent),
                bytes_recv=int(c.bytes_recv),
                packets_sent=int(c.packets_sent),
                packets_recv=int(c.packets_recv),
                errin=int(c.errin),
                errout=int(c.errout),
                dropin=int(c.dropin),
                dropout=int(c.dropout),
            )
            for name, c in counters.items()
        }

    def temperatures(self) -> Mapping[str, list[Temperature]]:
        psutil = _psutil()
        if not hasattr(psutil, "sensors_temperatures"):
            return {}  # absent hardware support is not an error
        readings = _translated(lambda: psutil.sensors_temperatures(fahrenheit=False))
        return {
            chip: [Temperature(label=str(e.label or ""), celsius=float(e.current)) for e in entries]
            for chip, entries in readings.items()
        }

    def boot_id(self) -> str:
        """The kernel's random ID of this boot where it has one; else the boot time, to the second."""
        with contextlib.suppress(OSError):
            return _BOOT_ID.read_text(encoding="ascii").strip()
        return f"t{round(self.boot_time())}"

    def boot_time(self) -> float:
        return float(_translated(lambda: _psutil().boot_time()))

    def process_count(self) -> int:
        return len(_translated(lambda: _psutil().pids()))

    def processes(self) -> Iterator[ProcessInfo]:
        psutil = _psutil()
        for process in psutil.process_iter(["name", "cmdline", "create_time"]):
            info = process.info
            if info.get("create_time") is None:
                continue  # gone, or not ours to read
            cmdline = info.get("cmdline") or []
            yield ProcessInfo(
                pid=process.pid,
                create_time=float(info["create_time"]),
                name=str(info.get("name") or ""),
                cmdline=" ".join(cmdline),
            )

    def nucleus_socket(self, pid: int) -> str | None:
        """The IPC socket of the nucleus that started `pid` (from its environment, resolved against its
        working directory when relative), or None if unknown."""
        psutil = _psutil()
        try:
            process = psutil.Process(pid)
            value = process.environ().get(NUCLEUS_SOCKET_ENV)
            if not value:
                return None
            return resolve_socket(str(value), lambda: str(process.cwd()))
        except (psutil.Error, OSError):
            return None  # gone, or another user's: unknown

    def process_stats(self, pid: int, create_time: float) -> ProcessStats:
        psutil = _psutil()
        key = (pid, create_time)
        process = self._processes.get(key)
        if process is None:
            process = _translated(lambda: psutil.Process(pid))
            if abs(_translated(process.create_time) - create_time) > 0.01:  # noqa: PLR2004
                raise ProcessLookupError("process ended")  # the PID was reused
            if len(self._processes) > 64:  # noqa: PLR2004  (matched processes are few; never grow unbounded)
                self._processes.clear()
            self._processes[key] = process
        try:
            return _translated(lambda: self._read(process))
        except ProcessLookupError:
            self._processes.pop(key, None)
            raise

    @staticmethod
    def _read(process: Any) -> ProcessStats:
        psutil = _psutil()
        with process.oneshot():
            times = process.cpu_times()
            rss = int(process.memory_info().rss)
            threads = int(process.num_threads())
            pss: int | None = None
            fds: int | None = None
            with contextlib.suppress(psutil.AccessDenied, AttributeError, OSError):
                pss = int(process.memory_full_info().pss)
            with contextlib.suppress(psutil.AccessDenied, AttributeError, OSError):
                fds = int(process.num_fds())
        return ProcessStats(
            cpu_seconds=float(times.user + times.system), rss=rss, pss=pss, threads=threads, fds=fds
        )
