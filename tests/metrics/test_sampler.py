"""The sampler: groups, units, errors per group, and counters across samples, restarts and reboots."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from device_agent.metrics import (
    ALL_GROUPS,
    UNIT_SUFFIXES,
    Baseline,
    Group,
    ProcessMatcher,
    PsutilSource,
    Sampler,
    SamplerSettings,
)
from device_agent.metrics.source import DiskCounters, NetCounters, ProcessInfo, ProcessStats, Temperature
from tests.metrics.fakes import Clock, FakeSource

SCHEMAS = Path(__file__).resolve().parents[2] / "docs" / "schemas"
WALL = 1_800_000_100.0


def sample_validator() -> jsonschema.Draft202012Validator:
    schema = json.loads((SCHEMAS / "metrics-sample.schema.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    sample_schema = {"$defs": schema["$defs"], "$ref": "#/$defs/sample"}
    return jsonschema.Draft202012Validator(sample_schema)


def make(source: FakeSource, clock: Clock, baseline: Baseline | None = None, **options: object) -> Sampler:
    return Sampler(
        SamplerSettings(**options),  # type: ignore[arg-type]
        baseline=baseline,
        source=source,
        clock=clock,
        wall=lambda: WALL + clock.now,
    )


def test_the_first_sample_has_gauges_and_no_deltas():
    source, clock = FakeSource(), Clock()
    sample = make(source, clock).sample()
    assert sample["at"] == WALL + 1000.0
    assert "dtS" not in sample
    assert sample["cpu"] == {"load1": 0.5, "load5": 0.25, "load15": 0.12, "freqMHz": 1500}
    assert sample["memory"] == {"totalB": 1000, "availB": 250, "usedPct": 75.0}
    assert sample["disk"] == {"/": {"totalB": 100, "freeB": 30, "usedPct": 66.7}}
    assert sample["diskio"] == {}
    assert sample["network"] == {}
    assert sample["temperature"] == {"cpu_thermal": 48.2}
    assert sample["system"] == {"uptimeS": 1100, "bootAt": 1_800_000_000, "procs": 120}
    assert "errors" not in sample


def test_the_second_sample_has_deltas_and_rates_over_its_window():
    source, clock = FakeSource(), Clock()
    sampler = make(source, clock)
    sampler.sample()
    clock.advance(10)
    source.tick(10, busy=0.25)
    sample = sampler.sample()
    assert sample["dtS"] == 10.0
    assert sample["cpu"]["usedPct"] == 25.0
    assert sample["cpu"]["iowaitPct"] == 1.0
    # Only the whole disk counts (mmcblk0p1 is its partition): 1000 B/s read, 4000 B/s written.
    assert sample["diskio"] == {
        "readB": 10000,
        "writeB": 40000,
        "readBps": 1000,
        "writeBps": 4000,
        "reads": 10,
        "writes": 20,
        "busyPct": 5.0,
    }
    # Loopback is left out by default; zero error and drop counters are left out.
    assert sample["network"] == {
        "eth0": {"rxB": 1000, "txB": 3000, "rxBps": 100, "txBps": 300, "rxPkt": 10, "txPkt": 30}
    }


def test_error_and_drop_counters_appear_when_not_zero():
    source, clock = FakeSource(), Clock()
    sampler = make(source, clock)
    sampler.sample()
    clock.advance(10)
    eth0 = source.nets["eth0"]
    source.nets["eth0"] = NetCounters(eth0.bytes_sent, eth0.bytes_recv, 50, 70, 3, 0, 0, 2)
    assert sampler.sample()["network"]["eth0"] == {
        "rxB": 0, "txB": 0, "rxBps": 0, "txBps": 0, "rxPkt": 0, "txPkt": 0, "errIn": 3, "dropOut": 2,
    }  # fmt: skip


def test_keys_carry_their_units():
    """Every metric key ends with a unit suffix, or is a count (no suffix), across every group."""
    source, clock = FakeSource(), Clock()
    source.process_table = [
        ProcessInfo(pid=7, create_time=5.0, name="java", cmdline="java -jar Greengrass.jar")
    ]
    source.process_readings = {7: ProcessStats(cpu_seconds=1.0, rss=100, pss=80, threads=30, fds=90)}
    sampler = make(source, clock)
    sampler.sample()
    clock.advance(10)
    source.tick(10)
    sample = sampler.sample()
    counts = {
        "load1",
        "load5",
        "load15",
        "reads",
        "writes",
        "rxPkt",
        "txPkt",
        "procs",
        "pid",
        "n",
        "threads",
        "fds",
    }
    for name, value in sample.items():
        if name in {"at", "dtS", "temperature", "errors"}:
            continue
        leaves = [v for v in value.values() if isinstance(v, dict)] or [value]
        for leaf in leaves:
            for key in leaf:
                assert key in counts or any(key.endswith(suffix) for suffix in UNIT_SUFFIXES), key


def test_a_sample_is_compact_json_valid_against_its_schema():
    source, clock = FakeSource(), Clock()
    sampler = make(source, clock)
    validator = sample_validator()
    for _ in range(3):
        sample = sampler.sample()
        validator.validate({"seq": 1, **sample})
        clock.advance(10)
        source.tick(10)
    assert len(json.dumps(sample, separators=(",", ":"))) < 700


def test_a_failing_group_is_reported_and_never_breaks_the_others():
    source, clock = (
        FakeSource(failures={"memory": PermissionError(), "net_counters": OSError(5, "EIO")}),
        Clock(),
    )
    sample = make(source, clock).sample()
    assert sample["errors"] == {"memory": "permission", "network": "io"}
    assert set(sample) >= {"cpu", "disk", "diskio", "system", "temperature"}
    assert "memory" not in sample
    assert "network" not in sample


@pytest.mark.parametrize(
    ("error", "problem"),
    [
        (PermissionError(), "permission"),
        (FileNotFoundError(), "missing"),
        (ProcessLookupError(), "missing"),
        (NotImplementedError(), "unsupported"),
        (OSError(), "io"),
        (ValueError("a psutil surprise"), "error"),
    ],
)
def test_errors_are_classified_without_messages(error: BaseException, problem: str):
    source = FakeSource(failures={"memory": error})
    assert make(source, Clock()).sample()["errors"] == {"memory": problem}


def test_a_missing_mount_is_reported_as_an_item_and_the_others_still_come():
    source = FakeSource()
    sample = make(source, Clock(), mounts=("/", "/data")).sample()
    assert sample["disk"] == {"/": {"totalB": 100, "freeB": 30, "usedPct": 66.7}}
    assert sample["errors"] == {"disk:/data": "missing"}


def test_no_temperature_sensors_is_not_an_error():
    source = FakeSource(sensors={})
    sample = make(source, Clock()).sample()
    assert "temperature" not in sample
    assert "errors" not in sample
    source = FakeSource(failures={"temperatures": NotImplementedError()})
    sample = make(source, Clock()).sample()
    assert "temperature" not in sample
    assert "errors" not in sample


def test_unsupported_load_and_frequency_are_quietly_absent():
    source = FakeSource(failures={"load_average": NotImplementedError(), "cpu_mhz": NotImplementedError()})
    sample = make(source, Clock()).sample()
    assert sample["cpu"] == {}
    assert "errors" not in sample


def test_sensors_with_several_readings_are_named_by_label():
    source = FakeSource(
        sensors={
            "coretemp": [Temperature("Package id 0", 55.04), Temperature("", 51.0)],
            "nvme": [Temperature("Composite", float("nan"))],
        }
    )
    assert make(source, Clock()).sample()["temperature"] == {
        "coretemp.Package id 0": 55.0,
        "coretemp.1": 51.0,
    }


def test_swap_is_reported_only_when_there_is_some():
    source = FakeSource()
    source.mem = source.mem.__class__(total=1000, available=500, swap_total=400, swap_used=100)
    assert make(source, Clock()).sample()["memory"] == {
        "totalB": 1000, "availB": 500, "usedPct": 50.0, "swapTotalB": 400, "swapUsedPct": 25.0,
    }  # fmt: skip


def test_groups_can_be_turned_off_and_asked_for_fewer():
    source = FakeSource()
    sampler = make(source, Clock(), groups=frozenset({Group.CPU, Group.MEMORY}))
    assert set(sampler.sample()) == {"at", "cpu", "memory"}
    assert set(sampler.sample(groups=[Group.MEMORY, Group.DISK])) == {"at", "memory"}


def test_an_interface_allow_list_reports_missing_interfaces():
    source, clock = FakeSource(), Clock()
    sampler = make(source, clock, interfaces=("lo", "wwan0"))
    sampler.sample()
    clock.advance(5)
    source.tick(5)
    sample = sampler.sample()
    assert set(sample["network"]) == {"lo"}
    assert sample["errors"] == {"network:wwan0": "missing"}


# ---- counters across restarts and reboots ------------------------------------------------------------


def test_a_restart_with_the_persisted_baseline_continues_without_spike_or_gap():
    source, clock = FakeSource(), Clock()
    first = make(source, clock)
    first.sample()
    clock.advance(10)
    source.tick(10)
    first.sample()
    assert first.baseline is not None
    persisted = first.baseline.to_bytes()
    # The process restarts 25 s later: the first sample covers exactly the time since the persisted one.
    clock.advance(25)
    source.tick(25, busy=0.5)
    second = make(source, clock, baseline=Baseline.from_bytes(persisted))
    sample = second.sample()
    assert sample["dtS"] == 25.0
    assert sample["cpu"]["usedPct"] == 50.0
    assert sample["diskio"]["readB"] == 25000
    assert sample["network"]["eth0"]["txB"] == 7500


def test_after_a_reboot_the_counters_start_fresh_without_a_spike():
    source, clock = FakeSource(), Clock()
    before = make(source, clock)
    before.sample()
    persisted = before.baseline
    # Reboot: new boot ID, the kernel's counters start near zero again, the monotonic clock too.
    rebooted = FakeSource(boot="boot-2")
    sampler = make(rebooted, Clock(now=30.0), baseline=persisted)
    sample = sampler.sample()
    assert "dtS" not in sample
    assert sample["diskio"] == {}
    assert sample["network"] == {}
    assert "usedPct" not in sample["cpu"]
    assert sampler.baseline is not None
    assert sampler.baseline.boot == "boot-2"


def test_a_monotonic_clock_behind_the_baseline_is_a_reboot_even_with_the_same_boot_id():
    source, clock = FakeSource(), Clock(now=5000.0)
    before = make(source, clock)
    before.sample()
    sample = make(FakeSource(), Clock(now=20.0), baseline=before.baseline).sample()
    assert "dtS" not in sample


def test_a_counter_reset_within_a_boot_yields_what_came_after_it():
    source, clock = FakeSource(), Clock()
    sampler = make(source, clock)
    sampler.sample()
    clock.advance(10)
    source.nets["eth0"] = NetCounters(
        bytes_sent=120, bytes_recv=80, packets_sent=2, packets_recv=1, errin=0, errout=0, dropin=0, dropout=0
    )
    eth0 = sampler.sample()["network"]["eth0"]
    assert (eth0["rxB"], eth0["txB"]) == (80, 120)


def test_a_32_bit_counter_wrap_is_counted_across_the_top():
    source, clock = FakeSource(), Clock()
    source.nets = {"eth0": NetCounters(2**32 - 500, 2**32 - 100, 0, 0, 0, 0, 0, 0)}
    sampler = make(source, clock)
    sampler.sample()
    clock.advance(1)
    source.nets = {"eth0": NetCounters(1500, 900, 0, 0, 0, 0, 0, 0)}
    eth0 = sampler.sample()["network"]["eth0"]
    assert (eth0["txB"], eth0["rxB"]) == (2000, 1000)


def test_an_implausible_jump_is_left_out_and_the_counter_starts_over():
    source, clock = FakeSource(), Clock()
    source.disks = {"mmcblk0": DiskCounters(10**15, 0, 0, 0, None)}
    sampler = make(source, clock)
    sampler.sample()
    clock.advance(1)
    source.disks = {"mmcblk0": DiskCounters(5 * 10**14, 100, 1, 1, None)}  # a reset from a huge value
    assert sampler.sample()["diskio"]["readB"] == 0
    clock.advance(1)
    source.disks = {"mmcblk0": DiskCounters(5 * 10**14 + 10, 100, 1, 1, None)}
    assert sampler.sample()["diskio"]["readB"] == 10


def test_a_failed_group_keeps_its_baseline_so_its_next_delta_covers_the_gap():
    source, clock = FakeSource(), Clock()
    sampler = make(source, clock)
    sampler.sample()
    clock.advance(10)
    source.tick(10)
    source.failures["net_counters"] = PermissionError()
    assert sampler.sample()["errors"] == {"network": "permission"}
    clock.advance(10)
    source.tick(10)
    del source.failures["net_counters"]
    sample = sampler.sample()
    assert sample["dtS"] == {"cpu": 10.0, "diskio": 10.0, "network": 20.0, "processes": 10.0}
    assert sample["network"]["eth0"]["rxB"] == 2000


def test_a_group_skipped_by_the_budget_keeps_its_baseline():
    source, clock = FakeSource(), Clock()
    sampler = make(source, clock)
    sampler.sample()
    for _ in range(3):
        clock.advance(10)
        source.tick(10)
        sampler.sample(groups=[Group.CPU])
    clock.advance(10)
    source.tick(10)
    assert sampler.sample()["network"]["eth0"]["rxB"] == 4000


def test_a_missing_boot_identity_still_gives_deltas_within_the_process():
    source, clock = FakeSource(failures={"boot_id": OSError()}), Clock()
    sampler = make(source, clock)
    sampler.sample()
    clock.advance(10)
    source.tick(10)
    assert sampler.sample()["dtS"] == 10.0


@settings(max_examples=50, deadline=None)
@given(
    steps=st.lists(
        st.tuples(st.floats(min_value=0.5, max_value=120), st.integers(min_value=0, max_value=2**31 - 1)),
        min_size=1,
        max_size=20,
    ),
    restart_at=st.integers(min_value=0, max_value=20),
)
def test_deltas_sum_to_the_total_increase_across_a_restart(steps: list[tuple[float, int]], restart_at: int):
    """Whatever the timing and a restart in between, received bytes are counted exactly once."""
    source, clock = FakeSource(), Clock()
    source.nets = {"eth0": NetCounters(0, 2**32 - 1000, 0, 0, 0, 0, 0, 0)}
    sampler = make(source, clock, groups=frozenset({Group.NETWORK}))
    sampler.sample()
    total = 0
    received = 0
    for index, (seconds, grown) in enumerate(steps):
        if index == restart_at and sampler.baseline is not None:
            sampler = make(
                source,
                clock,
                Baseline.from_bytes(sampler.baseline.to_bytes()),
                groups=frozenset({Group.NETWORK}),
            )
        clock.advance(seconds)
        eth0 = source.nets["eth0"]
        source.nets = {"eth0": NetCounters(0, (eth0.bytes_recv + grown) % 2**32, 0, 0, 0, 0, 0, 0)}
        total += grown
        received += sampler.sample()["network"]["eth0"]["rxB"]
    assert received == total


# ---- processes ---------------------------------------------------------------------------------------


def nucleus_and_store(source: FakeSource) -> None:
    source.process_table = [
        ProcessInfo(
            pid=10, create_time=1.0, name="java", cmdline="java -Dx=y -jar /gg/lib/Greengrass.jar --start"
        ),
        ProcessInfo(pid=20, create_time=2.0, name="python3", cmdline="python3 -u -m encrypted_store"),
        ProcessInfo(pid=30, create_time=3.0, name="bash", cmdline="bash"),
    ]
    source.process_readings = {
        10: ProcessStats(cpu_seconds=100.0, rss=300_000_000, pss=None, threads=60, fds=None),
        20: ProcessStats(cpu_seconds=2.0, rss=30_000_000, pss=20_000_000, threads=3, fds=12),
        30: ProcessStats(cpu_seconds=0.0, rss=1, pss=1, threads=1, fds=1),
    }


def test_processes_report_the_nucleus_and_the_components_by_matcher_name():
    source, clock = FakeSource(), Clock()
    nucleus_and_store(source)
    sampler = make(source, clock, groups=frozenset({Group.PROCESSES}))
    first = sampler.sample()["processes"]
    assert first == {
        "nucleus": {"pid": 10, "rssB": 300_000_000, "threads": 60},  # pss and fds unreadable: left out
        "store": {"pid": 20, "rssB": 30_000_000, "pssB": 20_000_000, "threads": 3, "fds": 12},
    }
    clock.advance(10)
    source.tick(10)  # 0.01 CPU seconds per second each: 1 % of one CPU
    second = sampler.sample()["processes"]
    assert second["nucleus"]["cpuPct"] == 1.0
    assert second["store"]["cpuPct"] == 1.0


def test_processes_are_rescanned_only_when_due_or_when_one_ended():
    source, clock = FakeSource(), Clock()
    nucleus_and_store(source)
    sampler = make(source, clock, groups=frozenset({Group.PROCESSES}), process_rescan_seconds=60.0)
    for _ in range(5):
        sampler.sample()
        clock.advance(10)
    assert source.scans == 1
    clock.advance(20)  # 70 s after the first scan
    sampler.sample()
    assert source.scans == 2
    # The store restarts under a new PID: the next sample misses it, the one after finds the new one.
    del source.process_readings[20]
    assert "store" not in sampler.sample()["processes"]
    source.process_table[1] = ProcessInfo(
        pid=21, create_time=9.0, name="python3", cmdline="python3 -u -m encrypted_store"
    )
    source.process_readings[21] = ProcessStats(cpu_seconds=0.5, rss=1000, pss=900, threads=3, fds=10)
    assert sampler.sample()["processes"]["store"]["pid"] == 21
    assert source.scans == 3


def test_a_matcher_with_several_processes_reports_their_sum_and_count():
    source = FakeSource()
    source.process_table = [
        ProcessInfo(pid=1, create_time=1.0, name="sh", cmdline="sh -c python3 -m health_monitor"),
        ProcessInfo(pid=2, create_time=1.0, name="python3", cmdline="python3 -m health_monitor"),
    ]
    source.process_readings = {
        1: ProcessStats(cpu_seconds=0.0, rss=10, pss=5, threads=1, fds=3),
        2: ProcessStats(cpu_seconds=0.0, rss=20, pss=15, threads=2, fds=4),
    }
    sample = make(source, Clock(), groups=frozenset({Group.PROCESSES})).sample()
    assert sample["processes"] == {"health": {"n": 2, "rssB": 30, "pssB": 20, "threads": 3, "fds": 7}}


def test_a_process_name_matcher_needs_both_criteria():
    java = ProcessInfo(pid=1, create_time=1.0, name="java", cmdline="java -jar Greengrass.jar")
    assert ProcessMatcher(name="n", process_name="java", cmdline_contains="Greengrass.jar").matches(java)
    assert not ProcessMatcher(name="n", process_name="python3", cmdline_contains="Greengrass.jar").matches(
        java
    )


def test_a_process_the_source_may_not_read_is_reported():
    source = FakeSource()
    nucleus_and_store(source)
    source.failures["process_stats"] = PermissionError()
    sample = make(source, Clock(), groups=frozenset({Group.PROCESSES})).sample()
    assert sample["processes"] == {}
    assert sample["errors"] == {"processes:nucleus": "permission", "processes:store": "permission"}


def test_live_settings_keep_the_baselines_of_groups_still_on():
    source, clock = FakeSource(), Clock()
    sampler = make(source, clock)
    sampler.sample()
    sampler.configure(SamplerSettings(groups=frozenset({Group.NETWORK})))
    assert sampler.baseline is not None
    clock.advance(10)
    source.tick(10)
    assert sampler.sample()["network"]["eth0"]["rxB"] == 1000
    assert sampler.baseline is not None
    assert set(sampler.baseline.groups) == {"network"}


# ---- the real source ---------------------------------------------------------------------------------


def test_importing_the_metrics_package_does_not_import_psutil():
    code = "import sys, device_agent.metrics; print('psutil' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


def test_the_real_source_samples_this_machine():
    me = ProcessMatcher(name="pytest", cmdline_contains="pytest")
    sampler = Sampler(SamplerSettings(processes=(me,)), source=PsutilSource())
    sampler.sample()
    sample = sampler.sample()
    sample_validator().validate({"seq": 1, **sample})
    for group in (Group.CPU, Group.MEMORY, Group.DISK, Group.SYSTEM):
        assert group in sample, sample.get("errors")
    assert sample["memory"]["totalB"] > 0
    assert sample["processes"]["pytest"]["rssB"] > 0
    assert sampler.baseline is not None
    assert set(sampler.baseline.groups) <= {g.value for g in ALL_GROUPS}
