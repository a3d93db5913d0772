"""The boot check: a clean reboot is a note, an unclean one counts, a crash of the monitor is a restart."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from health_monitor.boot import CLEAN_REBOOT, UNCLEAN_REBOOT, judge_boot

from device_agent.health_log import Incident, Lifecycle, LifecycleEvent, encode

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
NAME = "com.deviceagent.HealthMonitor"


def test_a_reboot_after_a_clean_stop_is_only_noted():
    verdict = judge_boot({"boot": "a", "clean": True}, "b", NOW, component=NAME)
    assert verdict.count is None
    assert verdict.record == Lifecycle(time=NOW, event=LifecycleEvent.REBOOT_DETECTED, detail=CLEAN_REBOOT)


@pytest.mark.parametrize(
    "kept", [{"boot": "a", "clean": False}, {"boot": "a"}, {"boot": "a", "clean": "yes"}]
)
def test_a_reboot_without_a_clean_stop_counts(kept: dict[str, object]):
    verdict = judge_boot(kept, "b", NOW, component=NAME)
    assert verdict.count == "reboot"
    assert verdict.record == Lifecycle(time=NOW, event=LifecycleEvent.REBOOT_DETECTED, detail=UNCLEAN_REBOOT)
    assert "power cut" in UNCLEAN_REBOOT


def test_the_same_boot_without_a_clean_stop_is_an_unexpected_restart_of_the_monitor():
    verdict = judge_boot({"boot": "a", "clean": False}, "a", NOW, component=NAME)
    assert verdict.count == "unexpected_restart"
    assert isinstance(verdict.record, Incident)
    assert (verdict.record.event, verdict.record.component) == ("monitor.restarted", NAME)
    encode(verdict.record)  # the log takes it


@pytest.mark.parametrize(
    "kept", [{}, {"boot": "a", "clean": True}, {"boot": None, "clean": False}, {"boot": 7}]
)
def test_a_first_start_or_a_clean_restart_in_the_same_boot_says_nothing(kept: dict[str, object]):
    verdict = judge_boot(kept, "a", NOW, component=NAME)
    assert (verdict.count, verdict.record) == (None, None)
