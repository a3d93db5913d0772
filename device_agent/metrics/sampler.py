"""One sample of device metrics: a compact, JSON-able dict, the same for telemetry and the health monitor.

    sampler = Sampler(SamplerSettings(mounts=("/", "/data")), baseline=persisted_or_none)
    sample = sampler.sample()            # {"at": 1795528085.123, "dtS": 10.0, "cpu": {...}, ...}
    persist(sampler.baseline.to_bytes())  # so that the next process continues the counters

The shape (docs/telemetry.md, docs/schemas/metrics-sample.schema.json), with units in key names
(`groups.UNIT_SUFFIXES`) so that no units table travels with the data:

    at           Unix time of the sample (wall clock, ms)
    dtS          the window the counter groups' deltas and rates cover; an object per group when they differ
    cpu          usedPct, iowaitPct, load1, load5, load15, freqMHz
    memory       totalB, availB, usedPct, swapTotalB, swapUsedPct (no swap keys: no swap)
    disk         {mount: {totalB, freeB, usedPct}}
    diskio       readB, writeB, readBps, writeBps, reads, writes, busyPct (the busiest disk)
    network      {interface: {rxB, txB, rxBps, txBps, rxPkt, txPkt, errIn, errOut, dropIn, dropOut}}
    temperature  {sensor: degrees Celsius}
    system       uptimeS, bootAt, procs
    processes    {matcher: {pid | n, cpuPct, rssB, pssB, threads, fds}}
    errors       {group or group:item: permission | missing | unsupported | io | error}

To stay small on the wire: counters are sent as deltas, and as rates only for bytes; error and drop
counters only when not zero; a value that could not be read is absent (and named in `errors`). A failing
group never breaks the others, and keeps its baseline so that its next delta covers the gap.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import time
from collections.abc import Callable, Collection, Iterable, Mapping
from types import MappingProxyType
from typing import Any, Final

from device_agent.metrics.counters import Baseline, CounterWindow, GroupBaseline
from device_agent.metrics.groups import ALL_GROUPS, Group
from device_agent.metrics.processes import (
    DEFAULT_MATCHERS,
    DEFAULT_RESCAN_SECONDS,
    ProcessFinder,
    ProcessMatcher,
)
from device_agent.metrics.source import PsutilSource, Source

logger = logging.getLogger(__name__)

# Plausible maxima per second, far above any device's, only to refuse absurd deltas (counters.py, rule 4).
NET_BYTES_PER_SECOND: Final = 12.5e9  # 100 Gbit/s
NET_PACKETS_PER_SECOND: Final = 200e6
DISK_BYTES_PER_SECOND: Final = 20e9
DISK_OPS_PER_SECOND: Final = 10e6
BUSY_MS_PER_SECOND: Final = 1100.0  # at most 1000 ms per second, with room for rounding in the kernel
CPU_SLACK: Final = 1.1  # CPU seconds per second are at most the CPU count

MAX_INTERFACES: Final = 16
MAX_SENSORS: Final = 16
# Interfaces left out unless named in the allow-list: loopback, and what containers and VMs create by
# the dozen (their traffic is also counted on the physical interface).
_VIRTUAL_INTERFACE_PREFIXES: Final = ("lo", "veth", "docker", "br-", "virbr", "ifb", "cni", "flannel")


class Problem:
    """What `errors` says of a group or item that could not be read. Never a message: no path, no value."""

    PERMISSION = "permission"
    MISSING = "missing"
    UNSUPPORTED = "unsupported"
    IO = "io"
    ERROR = "error"


def classify(error: BaseException) -> str:
    if isinstance(error, PermissionError):
        return Problem.PERMISSION
    if isinstance(error, FileNotFoundError | ProcessLookupError):
        return Problem.MISSING
    if isinstance(error, NotImplementedError):
        return Problem.UNSUPPORTED
    if isinstance(error, OSError):
        return Problem.IO
    return Problem.ERROR


@dataclasses.dataclass(frozen=True, kw_only=True)
class SamplerSettings:
    """What to sample. Empty `interfaces` means every interface but loopback and virtual ones; empty
    `disk_devices` every whole physical disk."""

    groups: frozenset[Group] = frozenset(ALL_GROUPS)
    mounts: tuple[str, ...] = ("/",)
    interfaces: tuple[str, ...] = ()
    disk_devices: tuple[str, ...] = ()
    processes: tuple[ProcessMatcher, ...] = DEFAULT_MATCHERS
    process_rescan_seconds: float = DEFAULT_RESCAN_SECONDS


@dataclasses.dataclass
class _Pass:
    """One sample in the making: the shared monotonic time, the previous baseline, what is collected."""

    mono: float
    previous: Mapping[str, GroupBaseline]
    errors: dict[str, str] = dataclasses.field(default_factory=dict)
    windows: dict[str, float] = dataclasses.field(default_factory=dict)
    baselines: dict[str, GroupBaseline] = dataclasses.field(default_factory=dict)

    def window(self, group: Group) -> CounterWindow:
        return CounterWindow(self.previous.get(group), self.mono)

    def close(self, group: Group, window: CounterWindow) -> None:
        self.baselines[group] = window.finish()
        if window.elapsed is not None:
            self.windows[group] = round(window.elapsed, 3)

    def part(self, key: str, read: Callable[[], Any], *, optional: bool = False) -> Any:
        """Read one item; on failure name it in `errors` (unless optional and unsupported) and return None."""
        try:
            return read()
        except Exception as error:  # noqa: BLE001  (one item's failure must not break its group)
            problem = classify(error)
            if not (optional and problem == Problem.UNSUPPORTED):
                self.errors[key] = problem
            return None


class Sampler:
    """Samples the configured groups. Not thread-safe; one sampler per component."""

    def __init__(
        self,
        settings: SamplerSettings | None = None,
        *,
        baseline: Baseline | None = None,
        source: Source | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self._source: Source = source if source is not None else PsutilSource()
        self._clock, self._wall = clock, wall
        self._baseline = baseline
        self._settings = SamplerSettings()
        self._finder = ProcessFinder(())
        self._cpu_count: int | None = None
        self.configure(settings or SamplerSettings())

    @property
    def settings(self) -> SamplerSettings:
        return self._settings

    @property
    def baseline(self) -> Baseline | None:
        """The counters of the last sample (or the one given at start): persist `baseline.to_bytes()`."""
        return self._baseline

    def configure(self, settings: SamplerSettings) -> None:
        """Apply new settings (a live configuration update); baselines of groups still on are kept."""
        if settings.processes != self._finder.matchers or (
            settings.process_rescan_seconds != self._finder.rescan_seconds
        ):
            self._finder = ProcessFinder(settings.processes, rescan_seconds=settings.process_rescan_seconds)
        self._settings = settings

    def sample(self, groups: Collection[Group] | None = None) -> dict[str, Any]:
        """One sample of `groups` (default: the configured ones; a budget may ask for fewer)."""
        wanted = self._settings.groups if groups is None else self._settings.groups & frozenset(groups)
        mono, wall = self._clock(), self._wall()
        boot = self._boot_identity()
        previous = self._baseline.groups if self._baseline and self._baseline.boot == boot else {}
        run = _Pass(mono=mono, previous=previous)
        sample: dict[str, Any] = {"at": round(wall, 3)}
        values: dict[str, Any] = {}
        for group in ALL_GROUPS:
            if group not in wanted:
                continue
            try:
                value = self._read(group, run, wall)
            except Exception as error:  # noqa: BLE001  (a failing group never breaks the others)
                run.errors[group] = classify(error)
                continue
            if value is not None:
                values[group] = value
        if run.windows:
            windows = set(run.windows.values())
            sample["dtS"] = windows.pop() if len(windows) == 1 else dict(run.windows)
        sample.update(values)
        if run.errors:
            sample["errors"] = run.errors
        self._baseline = self._next_baseline(boot, previous, run)
        return sample

    # ---- baselines ---------------------------------------------------------------------------------------

    def _boot_identity(self) -> str:
        try:
            return self._source.boot_id()
        except Exception:  # noqa: BLE001  (without a boot identity, counters still work within this process)
            return ""

    def _next_baseline(self, boot: str, previous: Mapping[str, GroupBaseline], run: _Pass) -> Baseline:
        # A group that failed or was skipped keeps its old baseline: its next delta covers the gap.
        kept = {
            name: group
            for name, group in previous.items()
            if name in self._settings.groups and name not in run.baselines
        }
        return Baseline(boot=boot, groups=MappingProxyType({**kept, **run.baselines}))

    # ---- groups ------------------------------------------------------------------------------------------

    def _read(self, group: Group, run: _Pass, wall: float) -> Any:
        match group:
            case Group.CPU:
                return self._cpu(run)
            case Group.MEMORY:
                return self._memory()
            case Group.DISK:
                return self._disk(run)
            case Group.DISKIO:
                return self._diskio(run)
            case Group.NETWORK:
                return self._network(run)
            case Group.TEMPERATURE:
                return self._temperature()
            case Group.SYSTEM:
                return self._system(run, wall)
            case Group.PROCESSES:
                return self._processes(run)
        raise AssertionError(group)  # pragma: no cover

    def _cpus(self) -> int:
        if self._cpu_count is None:
            try:
                self._cpu_count = max(1, self._source.cpu_count())
            except Exception:  # noqa: BLE001  (a guess too high only loosens the plausibility ceiling)
                self._cpu_count = 64
        return self._cpu_count

    def _cpu(self, run: _Pass) -> dict[str, Any]:
        out: dict[str, Any] = {}
        times = run.part("cpu", self._source.cpu_times)
        if times is not None:
            window = run.window(Group.CPU)
            ceiling = self._cpus() * CPU_SLACK
            total = window.delta("total", times.total, max_rate=ceiling)
            idle = window.delta("idle", times.idle, max_rate=ceiling)
            iowait = window.delta("iowait", times.iowait, max_rate=ceiling)
            run.close(Group.CPU, window)
            if total and idle is not None:
                out["usedPct"] = _percent(total - idle, total)
                if iowait is not None:
                    out["iowaitPct"] = _percent(iowait, total)
        load = run.part("cpu:load", self._source.load_average, optional=True)
        if load is not None:
            out["load1"], out["load5"], out["load15"] = (round(v, 2) for v in load)
        mhz = run.part("cpu:freq", self._source.cpu_mhz, optional=True)
        if mhz:
            out["freqMHz"] = round(mhz)
        return out

    def _memory(self) -> dict[str, Any]:
        memory = self._source.memory()
        out: dict[str, Any] = {
            "totalB": memory.total,
            "availB": memory.available,
            "usedPct": _percent(memory.total - memory.available, memory.total),
        }
        if memory.swap_total > 0:
            out["swapTotalB"] = memory.swap_total
            out["swapUsedPct"] = _percent(memory.swap_used, memory.swap_total)
        return out

    def _disk(self, run: _Pass) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for mount in self._settings.mounts:
            usage = run.part(f"disk:{mount}", functools.partial(self._source.disk_usage, mount))
            if usage is not None:
                out[mount] = {
                    "totalB": usage.total,
                    "freeB": usage.free,
                    "usedPct": _percent(usage.used, usage.used + usage.free),
                }
        return out

    def _diskio(self, run: _Pass) -> dict[str, Any]:
        counters = self._source.disk_counters()
        devices = self._settings.disk_devices or tuple(self._source.disk_devices()) or tuple(counters)
        window = run.window(Group.DISKIO)
        sums = {"readB": 0, "writeB": 0, "reads": 0, "writes": 0}
        busiest: float | None = None
        measured = False
        for device in sorted(devices):
            c = counters.get(device)
            if c is None:
                if self._settings.disk_devices:
                    run.errors[f"diskio:{device}"] = Problem.MISSING
                continue
            deltas = {
                "readB": window.delta(f"{device}.rB", c.read_bytes, max_rate=DISK_BYTES_PER_SECOND),
                "writeB": window.delta(f"{device}.wB", c.write_bytes, max_rate=DISK_BYTES_PER_SECOND),
                "reads": window.delta(f"{device}.r", c.reads, max_rate=DISK_OPS_PER_SECOND),
                "writes": window.delta(f"{device}.w", c.writes, max_rate=DISK_OPS_PER_SECOND),
            }
            if c.busy_ms is not None:
                busy = window.rate(window.delta(f"{device}.busy", c.busy_ms, max_rate=BUSY_MS_PER_SECOND))
                if busy is not None:
                    busiest = max(busiest or 0.0, min(100.0, busy / 10.0))  # ms per s → percent
            for key, delta in deltas.items():
                if delta is not None:
                    sums[key] += int(delta)
                    measured = True
        run.close(Group.DISKIO, window)
        if not measured or window.elapsed is None:
            return {}
        out: dict[str, Any] = {
            "readB": sums["readB"],
            "writeB": sums["writeB"],
            "readBps": round(sums["readB"] / window.elapsed),
            "writeBps": round(sums["writeB"] / window.elapsed),
            "reads": sums["reads"],
            "writes": sums["writes"],
        }
        if busiest is not None:
            out["busyPct"] = round(busiest, 1)
        return out

    def _interfaces(self, available: Iterable[str]) -> list[str]:
        if self._settings.interfaces:
            return list(self._settings.interfaces)
        names = sorted(n for n in available if not n.startswith(_VIRTUAL_INTERFACE_PREFIXES))
        return names[:MAX_INTERFACES]

    def _network(self, run: _Pass) -> dict[str, Any]:
        counters = self._source.net_counters()
        window = run.window(Group.NETWORK)
        out: dict[str, Any] = {}
        for name in self._interfaces(counters):
            c = counters.get(name)
            if c is None:
                run.errors[f"network:{name}"] = Problem.MISSING
                continue

            def delta(key: str, value: int, rate: float, name: str = name) -> int | None:
                found = window.delta(f"{name}.{key}", value, max_rate=rate)
                return None if found is None else int(found)

            rx = delta("rx", c.bytes_recv, NET_BYTES_PER_SECOND)
            tx = delta("tx", c.bytes_sent, NET_BYTES_PER_SECOND)
            values: dict[str, int | None] = {
                "rxB": rx,
                "txB": tx,
                "rxBps": _rounded(window.rate(rx)),
                "txBps": _rounded(window.rate(tx)),
                "rxPkt": delta("rxp", c.packets_recv, NET_PACKETS_PER_SECOND),
                "txPkt": delta("txp", c.packets_sent, NET_PACKETS_PER_SECOND),
            }
            for key, value in (
                ("errIn", c.errin),
                ("errOut", c.errout),
                ("dropIn", c.dropin),
                ("dropOut", c.dropout),
            ):
                found = delta(key, value, NET_PACKETS_PER_SECOND)
                values[key] = found or None  # only when not zero
            interface = {key: value for key, value in values.items() if value is not None}
            if interface:
                out[name] = interface
        run.close(Group.NETWORK, window)
        return out

    def _temperature(self) -> dict[str, float] | None:
        try:
            readings = self._source.temperatures()
        except NotImplementedError:
            return None  # no sensors on this platform: absent, and not an error
        out: dict[str, float] = {}
        for chip in sorted(readings):
            entries = readings[chip]
            for index, entry in enumerate(entries):
                if not math.isfinite(entry.celsius):
                    continue
                key = chip if len(entries) == 1 else f"{chip}.{entry.label or index}"
                out[key[:64]] = round(entry.celsius, 1)
        if not out:
            return None
        return dict(list(out.items())[:MAX_SENSORS])

    def _system(self, run: _Pass, wall: float) -> dict[str, Any]:
        out: dict[str, Any] = {}
        boot = run.part("system:boot", self._source.boot_time)
        if boot is not None:
            out["uptimeS"] = max(0, round(wall - boot))
            out["bootAt"] = round(boot)
        procs = run.part("system:procs", self._source.process_count)
        if procs is not None:
            out["procs"] = procs
        return out

    def _processes(self, run: _Pass) -> dict[str, Any]:
        found = self._finder.find(self._source, run.mono)
        window = run.window(Group.PROCESSES)
        ceiling = self._cpus() * CPU_SLACK
        out: dict[str, Any] = {}
        for name, refs in found.items():
            totals: dict[str, Any] = {"cpuS": 0.0, "rssB": 0, "pssB": 0, "threads": 0, "fds": 0}
            seen, cpu_known, pss_known, fds_known = 0, True, True, True
            for ref in refs:
                try:
                    stats = self._source.process_stats(ref.pid, ref.create_time)
                except ProcessLookupError:
                    self._finder.forget()  # it ended: find its successor at the next sample
                    continue
                except Exception as error:  # noqa: BLE001  (one process's failure is reported, not fatal)
                    run.errors[f"processes:{name}"] = classify(error)
                    continue
                seen += 1
                cpu = window.delta(
                    f"{name}:{ref.pid}:{ref.create_time:.2f}", stats.cpu_seconds, max_rate=ceiling
                )
                cpu_known = cpu_known and cpu is not None
                totals["cpuS"] += cpu or 0.0
                totals["rssB"] += stats.rss
                totals["threads"] += stats.threads
                pss_known = pss_known and stats.pss is not None
                totals["pssB"] += stats.pss or 0
                fds_known = fds_known and stats.fds is not None
                totals["fds"] += stats.fds or 0
            if not seen:
                continue
            entry: dict[str, Any] = {"pid": refs[0].pid} if len(refs) == 1 else {"n": seen}
            if cpu_known and window.elapsed:
                entry["cpuPct"] = round(100.0 * totals["cpuS"] / window.elapsed, 2)
            entry["rssB"] = totals["rssB"]
            if pss_known:
                entry["pssB"] = totals["pssB"]
            entry["threads"] = totals["threads"]
            if fds_known:
                entry["fds"] = totals["fds"]
            out[name] = entry
        run.close(Group.PROCESSES, window)
        return out


def _percent(part: float, whole: float) -> float:
    if whole <= 0:
        return 0.0
    return round(min(100.0, max(0.0, 100.0 * part / whole)), 1)


def _rounded(value: float | None) -> int | None:
    return None if value is None else round(value)
