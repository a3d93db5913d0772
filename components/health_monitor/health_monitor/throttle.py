"""Thermal throttling (and undervoltage) from what the board or the kernel reports.

The first of these sources the device has is used:

- The Raspberry Pi firmware's `get_throttled`: throttled now and undervoltage now (`readings.board_readings`).
- The x86 `thermal_throttle` counters (`/sys/devices/system/cpu/cpu*/thermal_throttle/
  {core,package}_throttle_count`): events since boot. Throttled means a counter grew since the last
  reading; the first reading only sets the baseline.
- The kernel's thermal cooling devices that slow the processor down (`/sys/class/thermal/cooling_device*`
  of type `Processor`, `cpufreq-*`, `thermal-cpufreq-*`, `intel_powerclamp` or `thermal-idle-*`; not fans):
  throttled while one of them is engaged (`cur_state` above 0). This is how most ARM boards without
  firmware flags cap the CPU when hot.

A device with none of them gives no reading: the check is not judged there. Undervoltage is only known
where the board reports it (the Raspberry Pi).
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

from health_monitor.readings import THROTTLED_FILE, Reading, board_readings

MAX_CPUS: Final = 256  # counters read per tick at most: two small files per CPU
MAX_COOLING_DEVICES: Final = 64
_CPU_COOLING: Final = ("Processor", "cpufreq-", "thermal-cpufreq-", "intel_powerclamp", "thermal-idle-")


class ThrottleWatch:
    """Throttling readings from the first source the device has (see the module's description)."""

    def __init__(self, sys_root: Path = Path("/sys"), firmware: Path = THROTTLED_FILE) -> None:
        self.sys_root = sys_root
        self.firmware = firmware
        self._counts: int | None = None  # the x86 counters' sum at the last reading

    def readings(self) -> list[Reading]:
        board = board_readings(self.firmware)
        if board:
            return board
        counted = self._counters()
        if counted is not None:
            return [("throttling", None, counted)]
        engaged = self._cooling()
        if engaged is not None:
            return [("throttling", None, engaged)]
        return []

    def _counters(self) -> float | None:
        """1.0 if an x86 throttle counter grew since the last reading, 0.0 if none did, None without any."""
        total, found = 0, False
        cpus = sorted((self.sys_root / "devices/system/cpu").glob("cpu[0-9]*/thermal_throttle"))
        for directory in cpus[:MAX_CPUS]:
            for name in ("core_throttle_count", "package_throttle_count"):
                count = _read_int(directory / name)
                if count is not None:
                    total, found = total + count, True
        if not found:
            return None
        grew = self._counts is not None and total > self._counts
        self._counts = total  # a CPU taken offline lowers the sum: that is not throttling
        return 1.0 if grew else 0.0

    def _cooling(self) -> float | None:
        """1.0 while a processor cooling device is engaged, 0.0 if none is, None without any."""
        found = False
        devices = sorted((self.sys_root / "class/thermal").glob("cooling_device[0-9]*"))
        for device in devices[:MAX_COOLING_DEVICES]:
            try:
                kind = (device / "type").read_text(encoding="ascii", errors="replace").strip()
            except OSError:
                continue
            if not kind.startswith(_CPU_COOLING):
                continue
            state = _read_int(device / "cur_state")
            if state is None:
                continue
            found = True
            if state > 0:
                return 1.0
        return 0.0 if found else None


def _read_int(path: Path) -> int | None:
    try:
        return int(path.read_text(encoding="ascii").strip())
    except (OSError, ValueError):
        return None
