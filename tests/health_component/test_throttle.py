"""Throttling from each source the monitor knows, over sysfs trees laid out as the kernel lays them out."""

from __future__ import annotations

from pathlib import Path

from health_monitor.throttle import ThrottleWatch


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def x86(sys_root: Path, cpu: int, core: int, package: int) -> None:
    directory = sys_root / f"devices/system/cpu/cpu{cpu}/thermal_throttle"
    write(directory / "core_throttle_count", f"{core}\n")
    write(directory / "package_throttle_count", f"{package}\n")


def cooling(sys_root: Path, number: int, kind: str, state: int) -> None:
    directory = sys_root / f"class/thermal/cooling_device{number}"
    write(directory / "type", f"{kind}\n")
    write(directory / "cur_state", f"{state}\n")


def test_the_raspberry_pi_firmware_comes_first(tmp_path: Path):
    firmware = tmp_path / "get_throttled"
    write(firmware, "0x50005\n")  # throttled and undervoltage now (and since boot)
    x86(tmp_path / "sys", 0, 0, 0)
    watch = ThrottleWatch(tmp_path / "sys", firmware)
    assert watch.readings() == [("throttling", None, 1.0), ("undervoltage", None, 1.0)]


def test_x86_counters_that_grow_are_throttling_and_the_first_reading_is_the_baseline(tmp_path: Path):
    sys_root = tmp_path / "sys"
    x86(sys_root, 0, core=12, package=40)  # throttled before the monitor started: not now
    x86(sys_root, 1, core=3, package=40)
    watch = ThrottleWatch(sys_root, tmp_path / "no-firmware")
    assert watch.readings() == [("throttling", None, 0.0)]
    assert watch.readings() == [("throttling", None, 0.0)]  # nothing grew
    x86(sys_root, 1, core=4, package=40)
    assert watch.readings() == [("throttling", None, 1.0)]
    assert watch.readings() == [("throttling", None, 0.0)]  # it stopped growing
    (sys_root / "devices/system/cpu/cpu1/thermal_throttle/core_throttle_count").unlink()  # CPU offline
    assert watch.readings() == [("throttling", None, 0.0)]  # a lower sum is not throttling


def test_a_processor_cooling_device_engaged_is_throttling_and_a_fan_is_not(tmp_path: Path):
    sys_root = tmp_path / "sys"
    cooling(sys_root, 0, "pwm-fan", 3)  # a fan spinning is cooling, not slowing the CPU down
    cooling(sys_root, 1, "cpufreq-cpu0", 0)
    cooling(sys_root, 2, "thermal-cpufreq-1", 0)
    watch = ThrottleWatch(sys_root, tmp_path / "no-firmware")
    assert watch.readings() == [("throttling", None, 0.0)]
    cooling(sys_root, 2, "thermal-cpufreq-1", 2)
    assert watch.readings() == [("throttling", None, 1.0)]
    cooling(sys_root, 3, "Processor", 1)  # ACPI processor cooling, on x86 without the counters
    cooling(sys_root, 2, "thermal-cpufreq-1", 0)
    assert watch.readings() == [("throttling", None, 1.0)]


def test_a_device_with_no_source_gives_no_reading_and_odd_files_are_skipped(tmp_path: Path):
    sys_root = tmp_path / "sys"
    assert ThrottleWatch(sys_root, tmp_path / "no-firmware").readings() == []
    cooling(sys_root, 0, "Fan", 1)
    write(sys_root / "class/thermal/cooling_device1/type", "cpufreq-cpu0\n")
    write(sys_root / "class/thermal/cooling_device1/cur_state", "not a number\n")
    write(sys_root / "devices/system/cpu/cpu0/thermal_throttle/core_throttle_count", "garbage")
    assert ThrottleWatch(sys_root, tmp_path / "no-firmware").readings() == []
