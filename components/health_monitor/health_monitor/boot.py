"""What the boot id and the clean-stop flag kept from the last run say about how the monitor last stopped.

The monitor keeps `{"boot": <boot id>, "clean": <bool>}` in its state folder: `clean` false while it
runs, true once it stopped on request. At the next start:

- another boot id after a clean stop: the device was shut down and started again on purpose (or by an
  update). A `reboot.detected` note, not counted: a planned reboot is no problem;
- another boot id without a clean stop: the device went down under the monitor (a power cut, a crash, a
  watchdog). A `reboot.detected` note, and the `reboot` check counts it;
- the same boot id without a clean stop: the monitor itself was killed or crashed (`unexpected_restart`);
- nothing kept (the first start): nothing to say.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from device_agent.health_log import Incident, Lifecycle, LifecycleEvent, Record, Severity

CLEAN_REBOOT = "after a clean shutdown (not counted)"
UNCLEAN_REBOOT = "no clean shutdown before it: a power cut, a crash or a watchdog"


@dataclasses.dataclass(frozen=True)
class BootVerdict:
    """The check to count one event towards (None: none), and the record for the log (None: none)."""

    count: str | None = None
    record: Record | None = None


def judge_boot(previous: Mapping[str, Any], boot: str, now: datetime, *, component: str) -> BootVerdict:
    """The verdict on this start, given what the last run kept (`previous`, {} if nothing)."""
    last_boot, clean = previous.get("boot"), previous.get("clean")
    if not isinstance(last_boot, str):
        return BootVerdict()
    if last_boot != boot:
        if clean is True:
            return BootVerdict(
                record=Lifecycle(time=now, event=LifecycleEvent.REBOOT_DETECTED, detail=CLEAN_REBOOT)
            )
        return BootVerdict(
            count="reboot",
            record=Lifecycle(time=now, event=LifecycleEvent.REBOOT_DETECTED, detail=UNCLEAN_REBOOT),
        )
    if clean is True:
        return BootVerdict()
    return BootVerdict(
        count="unexpected_restart",
        record=Incident(
            time=now,
            check="unexpected_restart",
            event="monitor.restarted",
            severity=Severity.WARNING,
            component=component,
            message="the health monitor restarted without stopping first",
        ),
    )
