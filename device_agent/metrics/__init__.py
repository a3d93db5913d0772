"""Device metrics with psutil, shared by the telemetry publisher and the health monitor.

`Sampler` takes a sample of the configured `Group`s (a compact JSON-able dict, units in key names);
`Baseline` carries counters across samples, restarts and reboots (`counters`); `Schedule` says when to
sample (`schedule`). psutil is imported on the first sample, not on import.
"""

from __future__ import annotations

from device_agent.metrics.counters import Baseline, CounterWindow, GroupBaseline, counter_delta
from device_agent.metrics.groups import ALL_GROUPS, COUNTER_GROUPS, UNIT_SUFFIXES, Group
from device_agent.metrics.processes import DEFAULT_MATCHERS, ProcessMatcher
from device_agent.metrics.sampler import Problem, Sampler, SamplerSettings
from device_agent.metrics.schedule import Schedule, Tick
from device_agent.metrics.source import PsutilSource, Source

__all__ = [
    "ALL_GROUPS",
    "COUNTER_GROUPS",
    "DEFAULT_MATCHERS",
    "UNIT_SUFFIXES",
    "Baseline",
    "CounterWindow",
    "Group",
    "GroupBaseline",
    "Problem",
    "ProcessMatcher",
    "PsutilSource",
    "Sampler",
    "SamplerSettings",
    "Schedule",
    "Source",
    "Tick",
    "counter_delta",
]
