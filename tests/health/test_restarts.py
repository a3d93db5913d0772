"""The restart planner: off by default, named components only, cooldown, hourly cap, giving up."""

from __future__ import annotations

import pytest
from health_monitor.config import HealthConfig
from health_monitor.restarts import HOUR, RestartPlanner, RestartSettings

from device_agent.config import InvalidConfigurationError, parse_config

PROBE = "com.test.Probe"
OTHER = "com.test.Other"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def planner(**settings: object) -> tuple[RestartPlanner, Clock]:
    clock = Clock()
    options = {"enabled": True, "components": (PROBE, OTHER), "cooldown_seconds": 600.0, **settings}
    return RestartPlanner(RestartSettings(**options), clock=clock), clock  # type: ignore[arg-type]


def test_off_by_default_and_says_so():
    assert RestartSettings().enabled is False
    decision = RestartPlanner(RestartSettings()).decide("com.deviceagent.EncryptedStore")
    assert not decision.allowed
    assert "restart.enabled" in decision.reason


def test_only_named_components():
    restarts, _ = planner()
    assert restarts.decide(PROBE).allowed
    refused = restarts.decide("com.test.Unlisted")
    assert not refused.allowed
    assert "restart.components" in refused.reason


def test_one_restart_per_component_per_cooldown():
    restarts, clock = planner()
    restarts.requested(PROBE)
    clock.now += 599
    assert not restarts.decide(PROBE).allowed
    assert "cooldown" in restarts.decide(PROBE).reason
    assert restarts.decide(OTHER).allowed  # the cooldown is per component
    clock.now += 1
    assert restarts.decide(PROBE).allowed


def test_the_hourly_cap_covers_the_whole_device():
    names = [f"com.test.C{i}" for i in range(4)]
    restarts, clock = planner(components=tuple(names), max_per_hour=3)
    for name in names[:3]:
        assert restarts.decide(name).allowed
        restarts.requested(name)
        clock.now += 60
    refused = restarts.decide(names[3])
    assert not refused.allowed
    assert "maxPerHour" in refused.reason
    clock.now += HOUR - 3 * 60 + 60  # the first of the three has left the hour
    assert restarts.decide(names[3]).allowed


def test_gives_up_after_restarts_that_do_not_cure_until_the_component_recovers():
    restarts, clock = planner(max_attempts=2)
    for _ in range(2):
        assert restarts.decide(PROBE).allowed
        restarts.requested(PROBE)
        clock.now += 601
    refused = restarts.decide(PROBE)
    assert not refused.allowed
    assert "gave up after 2" in refused.reason
    restarts.recovered(PROBE)
    assert restarts.decide(PROBE).allowed


def test_a_device_that_cannot_restart_stays_off_until_the_configuration_changes():
    restarts, _ = planner()
    restarts.unsupported = "no aws.greengrass.Cli"
    assert restarts.decide(PROBE) == restarts.decide(OTHER)
    assert not restarts.decide(PROBE).allowed
    restarts.configure(restarts.settings)  # the same configuration again: still off
    assert "aws.greengrass.Cli" in restarts.decide(PROBE).reason
    restarts.configure(RestartSettings(enabled=True, components=(PROBE,), cooldown_seconds=900.0))
    assert restarts.decide(PROBE).allowed


@pytest.mark.parametrize(
    ("document", "key"),
    [
        ({"restart": {"components": ["com.test.ok", "bad name"]}}, ("restart", "components", 1)),
        ({"restart": {"cooldownSeconds": 5}}, ("restart", "cooldownSeconds")),
        ({"restart": {"maxPerHour": 0}}, ("restart", "maxPerHour")),
        ({"restart": {"enabled": "yes"}}, ("restart", "enabled")),
    ],
)
def test_bad_restart_settings_name_the_key(document, key):
    with pytest.raises(InvalidConfigurationError) as caught:
        parse_config(HealthConfig, document)
    assert tuple(caught.value.key_path) == key
