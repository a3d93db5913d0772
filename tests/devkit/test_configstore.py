"""The configuration store against the nucleus's Topics / UpdateConfiguration / deployment semantics."""

from __future__ import annotations

import contextlib
import json
import logging
import stat
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from device_agent.devkit.configstore import (
    MAX_DEPTH,
    MAX_NODES,
    ConfigStore,
    ConfigStoreCorruptError,
    StaleConfigUpdateError,
)
from device_agent.devkit.errors import (
    ConfigKeyNotFoundError,
    ConfigStoreError,
    InvalidUpdateError,
    StaleUpdateError,
)

T0 = 1_700_000_000.0  # a deployment time, epoch seconds


def make(config: dict[str, Any], *, name: str = "com.example.C", ts: float = T0) -> ConfigStore:
    store = ConfigStore()
    store.apply(name, config, timestamp=ts, now=ts)
    return store


def recorder(store: ConfigStore, path: list[str], name: str = "com.example.C") -> list[tuple[str, ...]]:
    events: list[tuple[str, ...]] = []
    store.subscribe(name, path, events.append)
    return events


# ---- reading -----------------------------------------------------------------------------------------------


def test_keys_are_case_insensitive_and_keep_their_first_spelling():
    store = make({"Network": {"Port": 80}})
    assert store.get("com.example.C", ["network", "PORT"]) == 80
    store.update_from_ipc("com.example.C", ["NETWORK"], {"port": 81}, T0 + 1)
    assert store.get("com.example.C", []) == {"Network": {"Port": 81}}


def test_component_names_are_case_insensitive_like_the_services_topics():
    store = make({"a": 1}, name="com.example.Sensor")
    assert store.get("COM.EXAMPLE.SENSOR", ["a"]) == 1
    assert store.components() == ["com.example.Sensor"]


def test_get_leaf_branch_and_whole():
    store = make({"a": {"b": [1, {"c": 2}], "d": None}})
    assert store.get("com.example.C", ["a", "b"]) == [1, {"c": 2}]
    assert store.get("com.example.C", ["a", "d"]) is None
    assert store.get("com.example.C", ["a"]) == {"b": [1, {"c": 2}], "d": None}
    assert store.get("com.example.C", []) == {"a": {"b": [1, {"c": 2}], "d": None}}


def test_get_returns_a_copy():
    store = make({"a": {"b": [1]}})
    got = store.get("com.example.C", ["a"])
    got["b"].append(2)
    got["x"] = 1
    assert store.get("com.example.C", ["a"]) == {"b": [1]}


@pytest.mark.parametrize(
    ("component", "path"),
    [("com.example.Nope", []), ("com.example.C", ["missing"]), ("com.example.C", ["a", "b", "c"])],
)
def test_missing_component_or_path_is_key_not_found(component, path):
    store = make({"a": {"b": 1}})
    with pytest.raises(ConfigKeyNotFoundError) as info:
        store.get(component, path)
    assert str(info.value) == "Key not found"


def test_get_for_ipc_wraps_a_leaf_with_its_stored_name_and_hides_underscore_keys():
    store = make({"Leaf": 5, "_hidden": 1, "tree": {"_x": 1, "b": 2, "A": 3}})
    assert store.get_for_ipc("com.example.C", ["leaf"]) == {"Leaf": 5}
    assert store.get_for_ipc("com.example.C", ["_hidden"]) == {"_hidden": 1}
    whole = store.get_for_ipc("com.example.C", [])
    assert whole == {"Leaf": 5, "tree": {"A": 3, "b": 2}}
    assert list(whole["tree"]) == ["A", "b"]  # TreeMap(CASE_INSENSITIVE_ORDER)
    assert store.get("com.example.C", ["tree"]) == {"_x": 1, "b": 2, "A": 3}


# ---- UpdateConfiguration -----------------------------------------------------------------------------------


def test_merge_is_nested_and_keeps_unnamed_keys_and_replaces_lists():
    store = make({"a": {"b": 1, "c": [1, 2, 3]}, "z": True})
    changed = store.update_from_ipc("com.example.C", [], {"a": {"c": [9], "d": {"e": "x"}}}, T0 + 1)
    assert store.get("com.example.C", []) == {"a": {"b": 1, "c": [9], "d": {"e": "x"}}, "z": True}
    assert changed == [("a", "c"), ("a", "d", "e")]


def test_equal_value_is_no_change_but_moves_the_modtime():
    store = make({"a": 1})
    assert store.update_from_ipc("com.example.C", [], {"a": 1}, T0 + 10) == []
    assert store.modtime("com.example.C", ["a"]) == T0 + 10


def test_values_compare_with_their_json_type():
    store = make({"a": 1})
    assert store.update_from_ipc("com.example.C", [], {"a": 1.0}, T0 + 1) == [("a",)]
    assert store.update_from_ipc("com.example.C", [], {"a": True}, T0 + 2) == [("a",)]
    assert store.get("com.example.C", ["a"]) is True


def test_older_timestamp_is_refused_and_equal_is_applied():
    store = make({"a": 1})
    with pytest.raises(StaleUpdateError, match="older than"):
        store.update_from_ipc("com.example.C", [], {"a": 2}, T0 - 1)
    assert store.get("com.example.C", ["a"]) == 1
    assert store.update_from_ipc("com.example.C", [], {"a": 3}, T0) == [("a",)]
    assert store.get("com.example.C", ["a"]) == 3


def test_timestamps_are_kept_per_leaf_and_the_check_is_on_the_node_at_key_path():
    store = make({"a": {"x": 1}, "b": {"y": 1}})
    store.update_from_ipc("com.example.C", ["a"], {"x": 2}, T0 + 100)
    # b's leaves are older than T0+50: an update under b alone is fine.
    assert store.update_from_ipc("com.example.C", ["b"], {"y": 2}, T0 + 50) == [("b", "y")]
    # At the root the newest leaf (a.x at T0+100) decides: the nucleus merges the leaves that are not newer,
    # then raises FailedUpdateConditionCheckError.
    events = recorder(store, [])
    with pytest.raises(StaleConfigUpdateError) as info:
        store.update_from_ipc("com.example.C", [], {"a": {"x": 3}, "b": {"y": 3}}, T0 + 60)
    assert info.value.changed == [("b", "y")]
    assert events == [("b", "y")]
    assert store.get("com.example.C", []) == {"a": {"x": 2}, "b": {"y": 3}}


def test_new_key_path_is_created_and_merged_at_the_current_time():
    store = make({"a": 1})
    changed = store.update_from_ipc("com.example.C", ["new", "deep"], {"k": "v"}, 5.0, now=T0 + 7)
    assert changed == [("new", "deep", "k")]
    assert store.modtime("com.example.C", ["new", "deep", "k"]) == T0 + 7


def test_key_path_at_a_leaf_turns_it_into_a_container():
    store = make({"a": 1})
    changed = store.update_from_ipc("com.example.C", ["a"], {"b": 2}, T0 + 1)
    assert store.get("com.example.C", []) == {"a": {"b": 2}}
    assert changed == [("a",), ("a", "b")]


def test_key_path_through_a_leaf_is_refused_without_change():
    store = make({"a": 1})
    with pytest.raises(InvalidUpdateError, match="already a leaf"):
        store.update_from_ipc("com.example.C", ["a", "b"], {"c": 1}, T0 + 1)
    assert store.get("com.example.C", []) == {"a": 1}


def test_type_changes_ignore_timestamps_like_updatechild():
    store = make({"a": {"b": 1}, "c": 1})
    store.update_from_ipc("com.example.C", [], {"a": {"b": 2}, "c": 2}, T0 + 100)
    # Both nodes are newer than the request, yet a leaf that becomes a container (or the reverse) is replaced
    # outright; the root was newer than the request, so it is still reported stale, after the merge.
    with pytest.raises(StaleConfigUpdateError) as info:
        store.update_from_ipc("com.example.C", [], {"a": 5, "c": {"d": 1}}, T0 + 10)
    assert info.value.changed == [("a", "b"), ("a",), ("c",), ("c", "d")]
    assert store.get("com.example.C", []) == {"a": 5, "c": {"d": 1}}


def test_a_merge_keeps_the_stored_spelling_of_an_existing_key():
    store = make({"Mode": 1})
    assert store.apply("com.example.C", {"MODE": 2}, timestamp=T0 + 1) == [("Mode",)]
    assert store.get("com.example.C", []) == {"Mode": 2}


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ([], {"accessControl": {}}),
        ([], {"AccessControl": {"aws.greengrass.ipc.pubsub": {}}}),
        (["accessControl"], {"x": 1}),
        (["ACCESSCONTROL", "aws.greengrass.ipc.pubsub"], {"p": {"operations": ["*"]}}),
    ],
)
def test_access_control_cannot_be_updated_over_ipc(path, value):
    store = make({"accessControl": {"aws.greengrass.ipc.pubsub": {}}})
    with pytest.raises(InvalidUpdateError) as info:
        store.update_from_ipc("com.example.C", path, value, T0 + 1)
    assert str(info.value) == "Config update is not allowed for following fields [accessControl]"
    assert store.get("com.example.C", []) == {"accessControl": {"aws.greengrass.ipc.pubsub": {}}}


def test_access_control_below_the_top_level_is_just_a_key():
    store = make({"a": {}})
    assert store.update_from_ipc("com.example.C", ["a"], {"accessControl": 1}, T0 + 1) == [
        ("a", "accessControl")
    ]


def test_update_of_an_unknown_component_is_refused():
    with pytest.raises(InvalidUpdateError, match="Component config not found"):
        ConfigStore().update_from_ipc("com.example.Nope", [], {"a": 1}, T0)


@pytest.mark.parametrize(
    "value",
    [
        {"a": float("nan")},
        {"a": {1: 2}},
        {"a": (1, 2)},
        {"a": object()},
        [1],
        "text",
    ],
)
def test_non_json_documents_are_refused(value):
    store = make({})
    with pytest.raises(InvalidUpdateError):
        store.update_from_ipc("com.example.C", [], value, T0 + 1)
    assert store.get("com.example.C", []) == {}


@pytest.mark.parametrize("timestamp", [float("inf"), float("nan"), "1", True])
def test_bad_timestamps_are_refused(timestamp):
    store = make({})
    with pytest.raises(InvalidUpdateError, match="timestamp"):
        store.update_from_ipc("com.example.C", [], {"a": 1}, timestamp)


def test_nesting_deeper_than_the_limit_is_refused():
    deep: dict[str, Any] = {}
    node = deep
    for _ in range(MAX_DEPTH):
        node["k"] = {}
        node = node["k"]
    store = make({})
    with pytest.raises(InvalidUpdateError, match="deeper than"):
        store.update_from_ipc("com.example.C", [], deep, T0 + 1)
    ok: dict[str, Any] = {}
    node = ok
    for _ in range(MAX_DEPTH - 2):
        node["k"] = {}
        node = node["k"]
    store.update_from_ipc("com.example.C", [], ok, T0 + 1)


def test_too_many_values_are_refused():
    store = make({})
    with pytest.raises(InvalidUpdateError, match="more than"):
        store.update_from_ipc("com.example.C", [], {"a": [0] * (MAX_NODES + 1)}, T0 + 1)


def test_a_new_container_is_stamped_with_the_wall_clock():
    # createInteriorChild uses System.currentTimeMillis(); the request that creates it is not stale (the check
    # runs before the publish queue updates the parent), the next one with an older timestamp is.
    store = make({"a": 1})
    assert store.update_from_ipc("com.example.C", [], {"cache": {}}, T0 + 1, now=T0 + 500) == []
    assert store.get("com.example.C", ["cache"]) == {}
    with pytest.raises(StaleUpdateError):
        store.update_from_ipc("com.example.C", ["cache"], {"k": 1}, T0 + 2)
    assert store.get("com.example.C", ["cache"]) == {"k": 1}  # merged anyway, as the nucleus does


def test_a_new_null_leaf_is_a_change():
    store = make({})
    assert store.update_from_ipc("com.example.C", [], {"n": None}, T0 + 1) == [("n",)]
    assert store.update_from_ipc("com.example.C", [], {"n": None}, T0 + 2) == []


def test_a_self_referencing_document_is_refused():
    loop: dict[str, Any] = {}
    loop["me"] = loop
    with pytest.raises(InvalidUpdateError):
        make({}).update_from_ipc("com.example.C", [], loop, T0 + 1)


# ---- deployments -------------------------------------------------------------------------------------------


def test_propose_for_a_new_component_is_the_defaults_plus_merge():
    store = ConfigStore()
    proposal = store.propose("com.example.New", defaults={"a": 1, "b": {"c": 2}}, merge={"b": {"d": 3}})
    assert proposal == {"a": 1, "b": {"c": 2, "d": 3}}
    assert store.components() == []


def test_defaults_never_overwrite_a_value_that_was_set():
    store = make({"mode": "fast"})
    proposal = store.propose("com.example.C", defaults={"mode": "slow", "extra": 1}, timestamp=T0 + 1)
    assert proposal == {"mode": "fast", "extra": 1}


def test_reset_runs_before_merge_and_falls_back_to_the_default():
    store = make({"mode": "fast", "port": 1, "custom": "x"})
    proposal = store.propose(
        "com.example.C",
        defaults={"mode": "slow", "port": 80},
        merge={"port": 8080},
        reset=["/mode", "/port", "/custom"],
        timestamp=T0 + 1,
    )
    assert proposal == {"mode": "slow", "port": 8080}


def test_empty_pointer_resets_everything_and_ends_the_list():
    store = make({"a": 1, "b": {"c": 2}, "x": 9})
    proposal = store.propose(
        "com.example.C", defaults={"a": 0}, reset=["", "/does/not/matter"], timestamp=T0 + 1
    )
    assert proposal == {"a": 0}


def test_pointer_escapes_and_case_and_missing_paths():
    store = make({"a/b": 1, "c~d": 2, "E": {"f": 3}, "keep": 4})
    proposal = store.propose(
        "com.example.C", defaults={}, reset=["/a~1b", "/c~0d", "/e/F", "/missing/x", "/keep/under/leaf"]
    )
    assert proposal == {"E": {}, "keep": 4}


def test_pointer_into_a_list_element_is_skipped_as_in_the_nucleus(caplog):
    store = make({"ports": [1, 2], "byid": {"7": "x", "07": "y"}})
    with caplog.at_level(logging.WARNING, logger="device_agent.devkit.configstore"):
        proposal = store.propose("com.example.C", defaults={}, reset=["/ports/0", "/byid/7", "/byid/07"])
    assert proposal == {"ports": [1, 2], "byid": {"7": "x"}}
    assert "list element" in caplog.text


@pytest.mark.parametrize("pointer", ["mode", "/a~2b", "/trailing~", 5])
def test_malformed_pointer_is_refused_naming_it(pointer):
    store = make({"mode": 1})
    with pytest.raises(InvalidUpdateError) as info:
        store.propose("com.example.C", defaults={}, reset=["/ok", pointer])
    assert repr(pointer) in str(info.value)


@pytest.mark.parametrize(
    ("defaults", "merge", "reset"),
    [({"a": float("inf")}, None, None), ({}, {"a": {2: 1}}, None), ({}, None, "/a"), ([], None, None)],
)
def test_propose_refuses_bad_documents(defaults, merge, reset):
    with pytest.raises(InvalidUpdateError):
        make({}).propose("com.example.C", defaults=defaults, merge=merge, reset=reset)


def test_merge_at_deployment_time_keeps_a_leaf_updated_after_it():
    store = make({"a": 1, "b": 1})
    store.update_from_ipc("com.example.C", [], {"a": 2}, T0 + 100)
    proposal = store.propose("com.example.C", defaults={}, merge={"a": 3, "b": 3}, timestamp=T0 + 50)
    assert proposal == {"a": 2, "b": 3}


def test_propose_drops_underscore_keys_and_apply_removes_them():
    store = make({"a": 1})
    store.update_from_ipc("com.example.C", [], {"_private": 1}, T0 + 1)
    proposal = store.propose("com.example.C", defaults={}, timestamp=T0 + 2)
    assert proposal == {"a": 1}
    assert store.apply("com.example.C", proposal, timestamp=T0 + 2) == [("_private",)]


def test_apply_reports_added_changed_removed_and_type_changes():
    store = make({"same": 1, "changed": 1, "gone": {"x": 1, "y": {}}, "leaf2tree": 1, "tree2leaf": {"a": 1}})
    events = recorder(store, [])
    changed = store.apply(
        "com.example.C",
        {"same": 1, "changed": 2, "added": {"n": None}, "leaf2tree": {"k": 1}, "tree2leaf": 5, "empty": {}},
        timestamp=T0 + 1,
    )
    assert set(changed) == {
        ("changed",),
        ("gone", "x"),
        ("gone", "y"),
        ("added", "n"),
        ("leaf2tree",),
        ("leaf2tree", "k"),
        ("tree2leaf", "a"),
        ("tree2leaf",),
    }
    assert events == changed
    assert store.get("com.example.C", ["tree2leaf"]) == 5


def test_will_change_mirrors_the_validator_test():
    store = make({"a": 1})
    assert store.will_change("com.example.C", {"a": 2}, timestamp=T0 + 1)
    assert not store.will_change("com.example.C", {"a": 1}, timestamp=T0 + 1)
    assert not store.will_change("com.example.C", {"a": 2}, timestamp=T0)
    assert store.will_change("com.example.New", {}, timestamp=T0)


def test_remove_component_forgets_it_and_its_subscriptions():
    store = make({"a": 1})
    events = recorder(store, [])
    store.remove_component("COM.example.c")
    assert store.components() == []
    store.apply("com.example.C", {"a": 2}, timestamp=T0 + 1)
    assert events == []
    store.remove_component("never.there")


# ---- subscriptions -----------------------------------------------------------------------------------------


def test_subscribers_get_one_call_per_changed_leaf_under_their_prefix():
    store = make({"net": {"port": 1, "host": "h"}, "mode": "a"})
    root, net, port, mode = (recorder(store, p) for p in ([], ["NET"], ["net", "port"], ["mode"]))
    store.update_from_ipc("com.example.C", [], {"net": {"port": 2, "host": "h"}, "mode": "a"}, T0 + 1)
    assert root == [("net", "port")]
    assert net == [("net", "port")]
    assert port == [("net", "port")]
    assert mode == []


def test_subscribing_to_a_missing_path_is_not_found():
    store = make({"a": 1})
    with pytest.raises(ConfigKeyNotFoundError, match="Key not found"):
        store.subscribe("com.example.C", ["b"], lambda _p: None)
    with pytest.raises(ConfigKeyNotFoundError):
        store.subscribe("com.example.Nope", [], lambda _p: None)


def test_unsubscribe_is_idempotent_and_stops_calls():
    store = make({"a": 1})
    events: list[tuple[str, ...]] = []
    unsubscribe = store.subscribe("com.example.C", [], events.append)
    assert events == []  # nothing for the subscription itself
    unsubscribe()
    unsubscribe()
    store.update_from_ipc("com.example.C", [], {"a": 2}, T0 + 1)
    assert events == []


def test_a_failing_subscriber_is_logged_and_does_not_stop_others(caplog):
    store = make({"a": 1})

    def boom(_path: tuple[str, ...]) -> None:
        raise RuntimeError("subscriber bug")

    store.subscribe("com.example.C", [], boom)
    events = recorder(store, [])
    with caplog.at_level(logging.ERROR, logger="device_agent.devkit.configstore"):
        assert store.update_from_ipc("com.example.C", [], {"a": 2}, T0 + 1) == [("a",)]
    assert events == [("a",)]
    assert "subscriber bug" in caplog.text
    assert store.get("com.example.C", ["a"]) == 2


def test_a_subscriber_may_unsubscribe_and_update_from_its_callback():
    store = make({"a": 1, "b": 1})
    seen: list[tuple[str, ...]] = []

    def once(path: tuple[str, ...]) -> None:
        seen.append(path)
        unsubscribe()
        store.update_from_ipc("com.example.C", [], {"b": 2}, T0 + 2)

    unsubscribe = store.subscribe("com.example.C", ["a"], once)
    store.update_from_ipc("com.example.C", [], {"a": 2}, T0 + 1)
    assert seen == [("a",)]
    assert store.get("com.example.C", []) == {"a": 2, "b": 2}


# ---- persistence -------------------------------------------------------------------------------------------


def test_save_and_load_round_trip_with_modtimes(tmp_path: Path):
    store = make({"Net": {"port": 1, "tags": ["a", {"b": None}]}, "empty": {}, "_p": 1.5})
    store.update_from_ipc("com.example.C", ["net"], {"port": 2}, T0 + 5)
    target = tmp_path / "config" / "config.json"
    store.save(target)
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert [p.name for p in target.parent.iterdir()] == ["config.json"]  # no temp file left behind
    loaded = ConfigStore.load(target)
    assert loaded.components() == ["com.example.C"]
    assert loaded.get("com.example.C", []) == store.get("com.example.C", [])
    assert loaded.modtime("com.example.C", ["net", "port"]) == T0 + 5
    with pytest.raises(StaleUpdateError):
        loaded.update_from_ipc("com.example.C", ["NET"], {"port": 3}, T0 + 4)


def test_save_replaces_the_previous_file(tmp_path: Path):
    target = tmp_path / "config.json"
    make({"a": 1}).save(target)
    make({"a": 2}).save(target)
    assert ConfigStore.load(target).get("com.example.C", ["a"]) == 2


def test_load_of_a_missing_file_is_an_empty_store(tmp_path: Path):
    assert ConfigStore.load(tmp_path / "absent.json").components() == []


def _leaf(name: str) -> dict[str, Any]:
    return {"name": name, "modtime": 1, "value": 1}


def _file(components: list[Any]) -> bytes:
    return json.dumps({"format": "device-agent.configstore", "version": 1, "components": components}).encode()


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"{not json",
        b"\xff\xfe",
        b"[]",
        b'{"format": "other", "version": 1, "components": []}',
        b'{"format": "device-agent.configstore", "version": 99, "components": []}',
        b'{"format": "device-agent.configstore", "version": 1, "components": [{"name": "c", "modtime": 1}]}',
        _file([{"name": "c", "modtime": True, "children": []}]),
        _file([{"name": "c", "modtime": 1, "value": 3}]),
        _file([{"name": "c", "modtime": 1, "children": [_leaf("a"), _leaf("A")]}]),
        _file([{"name": "c", "modtime": 1, "children": []}, {"name": "C", "modtime": 1, "children": []}]),
        _file(
            [{"name": "c", "modtime": 1, "children": [{"name": "x", "modtime": 1, "value": float("nan")}]}]
        ),
        b"[" * 100_000 + b"]" * 100_000,
    ],
)
def test_a_corrupt_file_is_a_typed_error(tmp_path: Path, content: bytes):
    target = tmp_path / "config.json"
    target.write_bytes(content)
    with pytest.raises(ConfigStoreCorruptError) as info:
        ConfigStore.load(target)
    assert str(target) in str(info.value)


def test_a_too_deep_saved_tree_is_refused(tmp_path: Path):
    node: dict[str, Any] = {"name": "leaf", "modtime": 1, "value": 1}
    for _ in range(MAX_DEPTH + 1):
        node = {"name": "k", "modtime": 1, "children": [node]}
    target = tmp_path / "config.json"
    target.write_text(json.dumps({"format": "device-agent.configstore", "version": 1, "components": [node]}))
    with pytest.raises(ConfigStoreCorruptError, match="deeper"):
        ConfigStore.load(target)


def test_save_failure_is_a_store_error(tmp_path: Path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    with pytest.raises(ConfigStoreError, match="cannot save"):
        make({"a": 1}).save(blocker / "config.json")


# ---- properties --------------------------------------------------------------------------------------------

# Few, case-varying keys so that merges collide, change case and change types often.
keys = st.sampled_from(["a", "A", "b", "B", "c", "_u", "x/y", "t~", "0"])
scalars = (
    st.none()
    | st.booleans()
    | st.integers(-5, 5)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=3)
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(keys, inner, max_size=3),
    max_leaves=12,
)
documents = st.dictionaries(keys, values, max_size=4)
paths = st.lists(keys, max_size=3)
pointers = st.one_of(
    st.just(""),
    st.lists(keys, min_size=1, max_size=3).map(
        lambda ks: "".join("/" + k.replace("~", "~0").replace("/", "~1") for k in ks)
    ),
    st.text(max_size=4),
)

PROPERTY_SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY_SETTINGS
@given(
    initial=documents,
    updates=st.lists(st.tuples(paths, documents, st.integers(-3, 3)), max_size=6),
)
def test_random_updates_raise_only_typed_errors(initial, updates):
    store = make(initial)
    for path, value, offset in updates:
        with contextlib.suppress(ConfigStoreError):
            store.update_from_ipc("com.example.C", path, value, T0 + offset, now=T0 + 10)
        whole = store.get("com.example.C", [])
        assert isinstance(whole, dict)
        json.dumps(whole, allow_nan=False)


@PROPERTY_SETTINGS
@given(
    initial=documents,
    ipc=documents,
    defaults=documents,
    merge=st.none() | documents,
    reset=st.none() | st.lists(pointers, max_size=3),
)
def test_apply_of_a_proposal_gives_the_proposal(initial, ipc, defaults, merge, reset):
    store = make(initial)
    with contextlib.suppress(ConfigStoreError):
        store.update_from_ipc("com.example.C", [], ipc, T0 + 1)
    try:
        proposal = store.propose(
            "com.example.C", defaults=defaults, merge=merge, reset=reset, timestamp=T0 + 2
        )
    except InvalidUpdateError:
        return  # a malformed pointer
    before = store.get("com.example.C", [])
    events = recorder(store, [])
    changed = store.apply("com.example.C", proposal, timestamp=T0 + 2)
    # An existing key keeps its stored spelling (Topics.createLeafChild), so compare keys case-folded.
    assert _fold_keys(store.get("com.example.C", [])) == _fold_keys(proposal)
    assert events == changed
    assert len(set(changed)) == len(changed)
    if _strict(before) == _strict(proposal):
        assert changed == []
    # Applying the same proposal again changes nothing.
    assert store.apply("com.example.C", proposal, timestamp=T0 + 3) == []


def _fold_keys(doc: Any) -> Any:
    """Keys of the configuration tree folded; values (lists and the maps inside them) compared as they are."""
    if isinstance(doc, dict):
        return {k.lower(): _fold_keys(v) for k, v in doc.items()}
    return doc


def _strict(doc: Any) -> str:
    """Equality that tells 1, 1.0 and True apart, as the store (like Java) does and Python's == does not."""
    return json.dumps(doc, sort_keys=True)


@PROPERTY_SETTINGS
@given(doc=documents, path=paths)
def test_save_load_round_trip_property(tmp_path_factory, doc, path):
    store = make(doc)
    with contextlib.suppress(ConfigStoreError):
        store.update_from_ipc("com.example.C", path, {"k": [1, {"v": None}]}, T0 + 1)
    target = tmp_path_factory.mktemp("store") / "config.json"
    store.save(target)
    loaded = ConfigStore.load(target)
    assert loaded.get("com.example.C", []) == store.get("com.example.C", [])
    assert loaded.get_for_ipc("com.example.C", []) == store.get_for_ipc("com.example.C", [])
