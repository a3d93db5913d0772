"""The tree every collector reads through, and `collect`: every problem becomes a fact, never an error."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import jsonschema
import pytest

from device_agent.facts.fact import NEEDS_ROOT, Fact, Garbage, Status, Tree, Unreadable, collect
from tests.facts.conftest import denying, write_tree

SCHEMA = json.loads((Path(__file__).parents[2] / "docs/schemas/bootstrap-report.schema.json").read_text())
FACT_SCHEMA = {"$defs": SCHEMA["$defs"], "$ref": "#/$defs/fact"}


@pytest.mark.parametrize(
    "fact",
    [
        Fact.ok(1),
        Fact.ok({"a": [1, None]}, source="proc"),
        Fact.ok(value=False),
        Fact.unavailable("needs root"),
        Fact.error("x" * 1000, source="dmi"),
    ],
)
def test_every_fact_matches_the_schema(fact: Fact):
    jsonschema.validate(fact.to_document(), FACT_SCHEMA)


def test_a_value_never_shows_in_a_repr():
    assert "SERIAL123" not in repr(Fact.ok("SERIAL123"))


def test_a_missing_file_is_unavailable_and_names_the_path_as_on_the_device(tmp_path: Path):
    with pytest.raises(Unreadable, match=r"^/proc/meminfo not present$") as problem:
        Tree(tmp_path).read_text("/proc/meminfo")
    assert str(tmp_path) not in str(problem.value)


def test_a_permission_error_is_unavailable_needs_root(tmp_path: Path):
    tree = write_tree(tmp_path, {"sys/class/dmi/id/product_serial": "S1"})
    tree = dataclasses.replace(tree, reader=denying("product_serial"))
    with pytest.raises(Unreadable, match=f"^{NEEDS_ROOT}$"):
        tree.read_value("/sys/class/dmi/id/product_serial")


def test_a_file_larger_than_the_cap_is_garbage_and_is_not_read_whole(tmp_path: Path):
    tree = write_tree(tmp_path, {"proc/meminfo": "x" * 100_000})
    with pytest.raises(Garbage, match="larger than 1000 bytes"):
        tree.read_text("/proc/meminfo", max_bytes=1000)


def test_binary_garbage_empty_and_control_characters_are_garbage(tmp_path: Path):
    tree = write_tree(tmp_path, {"a": b"\xff\xfe\x00", "b": "\n \x00\n", "c": "ab\x1bc"})
    with pytest.raises(Garbage, match="not UTF-8"):
        tree.read_text("/a")
    with pytest.raises(Garbage, match="empty"):
        tree.read_value("/b")
    with pytest.raises(Garbage, match="control characters"):
        tree.read_value("/c")


def test_a_symlink_loop_is_garbage_and_a_directory_is_no_file(tmp_path: Path):
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    (tmp_path / "dir").mkdir()
    tree = Tree(tmp_path)
    with pytest.raises(Garbage, match="symlink loop"):
        tree.read_text("/loop")
    with pytest.raises(Garbage, match="not a regular file"):
        tree.read_text("/dir")
    assert not tree.exists("/loop/x")
    with pytest.raises(Garbage, match="symlink loop"):
        tree.list_dir("/loop")


def test_a_fifo_does_not_block_the_reader(tmp_path: Path):
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(Garbage, match="not a regular file"):
        Tree(tmp_path).read_text("/fifo")


def test_collect_turns_problems_and_surprises_into_facts():
    def unreadable() -> Fact:
        raise Unreadable("x not present")

    def garbage() -> Fact:
        raise Garbage("x is empty")

    def surprise() -> Fact:
        raise KeyError("SECRET-SERIAL")

    assert collect(unreadable) == Fact(Status.UNAVAILABLE, None, None, "x not present")
    assert collect(garbage).status is Status.ERROR
    fact = collect(surprise)
    assert fact == Fact(Status.ERROR, None, None, "unexpected KeyError")
    assert "SECRET" not in (fact.reason or "")
