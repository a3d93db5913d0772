"""The store's recipe: its defaults are the configuration model's, and it grants exactly the topics used."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from encrypted_store.settings import StoreConfig

from device_agent import store_protocol as protocol
from device_agent.config import defaults_document, describe, parse_config
from device_agent.messages import EVENTS_TOPIC, heartbeat_topic

RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "com.deviceagent.EncryptedStore.yaml"


def load() -> dict[str, Any]:
    recipe: dict[str, Any] = yaml.safe_load(RECIPE.read_text())
    return recipe


def test_default_configuration_is_the_models_defaults():
    defaults = dict(load()["ComponentConfiguration"]["DefaultConfiguration"])
    defaults.pop("accessControl")
    assert defaults == defaults_document(StoreConfig)
    assert parse_config(StoreConfig, defaults).unknown_keys == ()


def test_access_control_grants_exactly_the_stores_topics():
    access = load()["ComponentConfiguration"]["DefaultConfiguration"]["accessControl"]
    assert set(access) == {"aws.greengrass.ipc.pubsub"}  # no secret grant by default: a deployment adds it
    grants: dict[str, set[str]] = {}
    for policy in access["aws.greengrass.ipc.pubsub"].values():
        for operation in policy["operations"]:
            grants.setdefault(operation, set()).update(policy["resources"])
    assert grants == {
        "aws.greengrass#SubscribeToTopic": {protocol.REQUEST_FILTER},
        "aws.greengrass#PublishToTopic": {
            protocol.response_topic("*"),
            protocol.STATS_TOPIC,
            heartbeat_topic("com.deviceagent.EncryptedStore"),
            EVENTS_TOPIC,
        },
    }


def test_run_execs_the_installed_environments_python_without_privilege():
    lifecycle = load()["Manifests"][0]["Lifecycle"]
    assert lifecycle["Run"]["Script"] == 'exec "{work:path}/venv/bin/python" -u -m encrypted_store'
    assert lifecycle["Install"]["RequiresPrivilege"] is False
    assert lifecycle["Run"]["RequiresPrivilege"] is False
    assert lifecycle["Setenv"]["STORE_DIRECTORY"] == "{work:path}/store"


def test_every_configuration_key_is_documented():
    page = (RECIPE.parents[1] / "docs" / "store-component.md").read_text()
    missing = [info.key_path for info in describe(StoreConfig) if f"| `{info.key_path}` |" not in page]
    assert missing == []
