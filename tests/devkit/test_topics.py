"""Topic validation and matching: MQTT rules for IoT Core, and the nucleus's own routing rules."""

from __future__ import annotations

import re
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from device_agent.devkit.topics import (
    SubscriptionIndex,
    TopicStyle,
    is_wildcard_filter,
    topic_matches,
    validate_topic_filter,
    validate_topic_name,
)

NUCLEUS = TopicStyle.NUCLEUS
MQTT = TopicStyle.MQTT


# ---- independent references ------------------------------------------------------------------------------


def mqtt_reference(topic_filter: str, topic: str) -> bool:
    """MQTT 3.1.1 section 4.7 as a regex, built without the module's level walk."""
    if topic_filter == "#":
        return True
    tail = ""
    if topic_filter.endswith("/#"):
        topic_filter, tail = topic_filter[:-2], "(?:/.*)?"
    body = "/".join("[^/]*" if level == "+" else re.escape(level) for level in topic_filter.split("/"))
    return re.fullmatch(body + tail, topic, flags=re.DOTALL) is not None


def java_split(text: str) -> list[str]:
    """Java's String.split("/"): trailing empty strings removed, but "" stays [""]."""
    parts = text.split("/")
    if text == "":
        return parts
    while parts and parts[-1] == "":
        parts.pop()
    return parts


class SubscriptionTriePort:
    """A direct port of the nucleus's SubscriptionTrie.add/get (pubsub/SubscriptionTrie.java)."""

    def __init__(self) -> None:
        self.children: dict[str, SubscriptionTriePort] = {}
        self.callbacks: set[int] = set()

    def add(self, topic: str, cb: int) -> None:
        current = self
        for level in java_split(topic):
            current = current.children.setdefault(level, SubscriptionTriePort())
        current.callbacks.add(cb)

    def _add_matching_paths(self, level: str, result: set[int], paths: list[SubscriptionTriePort]) -> None:
        for key in (level, "+", "#"):
            child = self.children.get(key)
            if child is not None and child not in paths:
                paths.append(child)
                if key == "#":
                    result.update(child.callbacks)

    def get(self, topic: str) -> set[int]:
        levels = java_split(topic)
        if not levels:
            return set()  # Java: ArrayIndexOutOfBoundsException, so nothing is delivered
        result: set[int] = set()
        paths: list[SubscriptionTriePort] = []
        self._add_matching_paths(levels[0], result, paths)
        for level in levels[1:]:
            if not paths:
                break
            new_paths: list[SubscriptionTriePort] = []
            for path in paths:
                path._add_matching_paths(level, result, new_paths)
            paths = new_paths
        for path in paths:
            result.update(path.callbacks)
        return result


def nucleus_reference(topic_filter: str, topic: str) -> bool:
    trie = SubscriptionTriePort()
    trie.add(topic_filter, 1)
    return 1 in trie.get(topic)


# ---- validation ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "topic_filter", ["a", "a/b", "+", "#", "a/+", "+/+", "a/#", "+/#", "/", "a//b", "$aws/#"]
)
def test_valid_filters(topic_filter: str) -> None:
    validate_topic_filter(topic_filter)


@pytest.mark.parametrize(
    ("topic_filter", "message"),
    [
        ("", "must not be empty"),
        ("a/#/b", "'#' must be the last level"),
        ("#/a", "'#' must be the last level"),
        ("a#", "'#' must fill a whole level"),
        ("a/b#", "'#' must fill a whole level"),
        ("a+", "'+' must fill a whole level"),
        ("a/+b/c", "'+' must fill a whole level"),
        ("++", "'+' must fill a whole level"),
    ],
)
def test_invalid_filters(topic_filter: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        validate_topic_filter(topic_filter)


@pytest.mark.parametrize("topic", ["a", "a/b", "$aws/things/t/shadow/update", "a//b", "/"])
def test_valid_topic_names(topic: str) -> None:
    validate_topic_name(topic)
    validate_topic_name(topic, iot_core=True)


@pytest.mark.parametrize(("topic", "chars"), [("a/+", "+"), ("a/#", "#"), ("a/*", "*"), ("+#*", "+ # *")])
def test_pubsub_topic_names_refuse_every_wildcard(topic: str, chars: str) -> None:
    with pytest.raises(ValueError, match=re.escape(chars)):
        validate_topic_name(topic)


def test_iot_core_topic_names_allow_star_but_not_mqtt_wildcards() -> None:
    validate_topic_name("a/*", iot_core=True)  # IotCoreTopicValidator only checks + and #
    with pytest.raises(ValueError, match="wildcard"):
        validate_topic_name("a/+", iot_core=True)
    with pytest.raises(ValueError, match="must not be empty"):
        validate_topic_name("", iot_core=True)


def test_is_wildcard_filter_needs_a_whole_level() -> None:
    assert is_wildcard_filter("a/+/b")
    assert is_wildcard_filter("#")
    assert not is_wildcard_filter("a+/b#")


# ---- matching tables -------------------------------------------------------------------------------------

# (filter, topic, MQTT answer, nucleus answer)
MATCH_TABLE = [
    ("a/b", "a/b", True, True),
    ("a/b", "a/c", False, False),
    ("a/+", "a/b", True, True),
    ("a/+", "a/b/c", False, False),
    ("a/+", "a/", True, False),  # Java's split drops the empty last level
    ("a/+/c", "a//c", True, True),
    ("a/#", "a", True, False),  # the nucleus: "# does not match parent topic"
    ("a/#", "a/", True, False),
    ("a/#", "a/b/c", True, True),
    ("a/#", "ab", False, False),
    ("#", "a/b", True, True),
    ("#", "$aws/things/t", True, True),  # no special case for $ topics, as in the nucleus
    ("+", "$foo", True, True),
    ("+", "foo/", False, True),
    ("+", "/foo", False, False),
    ("+/+", "/foo", True, True),
    ("a/", "a", False, True),
    ("+/#", "a", True, False),
    ("+/#", "a/b", True, True),
]


@pytest.mark.parametrize(("topic_filter", "topic", "mqtt", "nucleus"), MATCH_TABLE)
def test_match_table(topic_filter: str, topic: str, mqtt: bool, nucleus: bool) -> None:
    assert topic_matches(topic_filter, topic) is mqtt
    assert topic_matches(topic_filter, topic, style=NUCLEUS) is nucleus
    assert mqtt_reference(topic_filter, topic) is mqtt
    assert nucleus_reference(topic_filter, topic) is nucleus


# The parameterised cases of the nucleus's SubscriptionTrieTest, verbatim.
NUCLEUS_MATCH = [
    ("foo", ["foo"]),
    ("foo/bar", ["foo/bar"]),
    ("#", ["foo", "foo/bar", "foo/bar/baz", "$foo/bar"]),
    ("foo/#", ["foo/bar", "foo/bar/baz", "foo/bar/#", "foo/+"]),
    ("+", ["+", "foo", "foo/", "$foo"]),
    ("foo/+/baz", ["foo/bar/baz"]),
    ("foo/+/baz/#", ["foo//baz/bar", "foo/bar/baz/bat", "foo/bar/baz/bat/#"]),
]
NUCLEUS_NO_MATCH = [
    ("foo", ["fo", "foo/bar", "abc"]),
    ("foo/bar", ["foo", "foo/bar/baz", "fo/bar"]),
    ("foo/#", ["foo", "foo/"]),
    ("+", ["/foo", "foo/bar"]),
    ("foo/+/baz", ["foo", "foo/baz", "foo/bar/bat/baz"]),
]


@pytest.mark.parametrize(("topic_filter", "topics"), NUCLEUS_MATCH)
def test_nucleus_trie_cases_match(topic_filter: str, topics: list[str]) -> None:
    index: SubscriptionIndex[str] = SubscriptionIndex()
    index.add(topic_filter, "cb1")
    index.add(topic_filter, "cb2")
    for topic in topics:
        assert sorted(index.match(topic)) == ["cb1", "cb2"], topic


@pytest.mark.parametrize(("topic_filter", "topics"), NUCLEUS_NO_MATCH)
def test_nucleus_trie_cases_do_not_match(topic_filter: str, topics: list[str]) -> None:
    index: SubscriptionIndex[str] = SubscriptionIndex()
    index.add(topic_filter, "cb1")
    for topic in topics:
        assert index.match(topic) == [], topic


def test_nucleus_style_hash_before_the_end_walks_like_plus() -> None:
    # Local pub/sub accepts any filter; the trie walks a middle "#" as one level.
    assert topic_matches("a/#/c", "a/b/c", style=NUCLEUS)
    assert not topic_matches("a/#/c", "a/b/x/c", style=NUCLEUS)
    assert nucleus_reference("a/#/c", "a/b/c")
    assert not nucleus_reference("a/#/c", "a/b/x/c")


def test_nucleus_style_slash_only_topics_match_nothing() -> None:
    index: SubscriptionIndex[str] = SubscriptionIndex()
    index.add("/", "x")
    index.add("#", "y")
    assert index.match("/") == []
    assert not topic_matches("#", "//", style=NUCLEUS)


# ---- SubscriptionIndex -----------------------------------------------------------------------------------


@dataclass(eq=False)
class Subscriber:
    name: str


def test_index_add_is_idempotent_and_remove_reports() -> None:
    index: SubscriptionIndex[Subscriber] = SubscriptionIndex(style=MQTT)
    sub = Subscriber("s")
    assert index.add("a/+", sub)
    assert not index.add("a/+", sub)
    assert len(index) == 1
    assert index.match("a/b") == [sub]
    assert not index.remove("a/#", sub)
    assert not index.remove("a/+", Subscriber("other"))
    assert index.remove("a/+", sub)
    assert not index.remove("a/+", sub)
    assert len(index) == 0
    assert index.match("a/b") == []
    assert index._root.children == {}  # pruned


def test_index_returns_each_item_once_across_filters() -> None:
    index: SubscriptionIndex[Subscriber] = SubscriptionIndex(style=MQTT)
    one, two = Subscriber("one"), Subscriber("two")
    for topic_filter in ("a/b", "a/+", "a/#", "#", "+/b"):
        index.add(topic_filter, one)
    index.add("a/b", two)
    assert len(index) == 6
    matched = index.match("a/b")
    assert len(matched) == 2
    assert set(matched) == {one, two}
    assert index.match("a") == [one]  # MQTT: a/# and # match the parent


def test_exact_and_wildcard_subscriptions_are_separate() -> None:
    index: SubscriptionIndex[str] = SubscriptionIndex()
    index.add("a/b", "exact")
    index.add("a/+", "wild")
    index.remove("a/b", "exact")
    assert index.match("a/b") == ["wild"]
    assert index._exact == {}


def test_mqtt_index_rejects_invalid_filters_nucleus_index_takes_them_literally() -> None:
    with pytest.raises(ValueError, match="whole level"):
        SubscriptionIndex[str](style=MQTT).add("a+", "x")
    index: SubscriptionIndex[str] = SubscriptionIndex()
    index.add("a+", "x")
    assert index.match("a+") == ["x"]
    assert index.match("ab") == []
    with pytest.raises(ValueError, match="empty"):
        index.add("", "x")
    assert index.style is NUCLEUS


def test_nucleus_index_treats_trailing_slash_as_the_same_topic() -> None:
    index: SubscriptionIndex[str] = SubscriptionIndex()
    index.add("a/b/", "x")
    assert index.match("a/b") == ["x"]
    assert index.remove("a/b", "x")  # the same subscription, as in the nucleus's trie
    assert len(index) == 0


# ---- properties ------------------------------------------------------------------------------------------

levels = st.sampled_from(["a", "b", "", "$x", "ab"])
filter_levels = st.sampled_from(["a", "b", "", "+", "$x"])


@st.composite
def mqtt_filters(draw: st.DrawFn) -> str:
    parts = draw(st.lists(filter_levels, min_size=1, max_size=5))
    if draw(st.booleans()):
        parts.append("#")
    return "/".join(parts) or "a"  # an empty filter is invalid


@st.composite
def any_filters(draw: st.DrawFn) -> str:
    text = draw(st.lists(st.sampled_from(["a", "b", "/", "+", "#", "a+", "$"]), min_size=1, max_size=7))
    return "".join(text)


topics = st.lists(levels, min_size=1, max_size=6).map("/".join)


@given(mqtt_filters(), topics)
def test_mqtt_matching_agrees_with_the_regex_reference(topic_filter: str, topic: str) -> None:
    validate_topic_filter(topic_filter)
    assert topic_matches(topic_filter, topic) is mqtt_reference(topic_filter, topic)


@given(any_filters(), topics)
def test_nucleus_matching_agrees_with_the_trie_port(topic_filter: str, topic: str) -> None:
    assert topic_matches(topic_filter, topic, style=NUCLEUS) is nucleus_reference(topic_filter, topic)


@given(topics)
def test_a_topic_used_as_filter_matches_itself(topic: str) -> None:
    assert topic_matches(topic, topic)
    assert topic_matches(topic, topic, style=NUCLEUS) is bool(java_split(topic))


@settings(max_examples=150)
@given(
    st.lists(st.tuples(mqtt_filters(), st.integers(0, 4), st.booleans()), max_size=25),
    st.lists(topics, min_size=1, max_size=8),
    st.sampled_from([MQTT, NUCLEUS]),
)
def test_index_match_equals_brute_force(
    operations: list[tuple[str, int, bool]], probe_topics: list[str], style: TopicStyle
) -> None:
    index: SubscriptionIndex[int] = SubscriptionIndex(style=style)
    live: set[tuple[str, int]] = set()
    for topic_filter, item, is_add in operations:
        if is_add:
            added = index.add(topic_filter, item)
            if style is MQTT:
                assert added is ((topic_filter, item) not in live)
            live.add((topic_filter, item))
        elif style is MQTT:  # NUCLEUS folds "a/" into "a", so only MQTT keys are the raw strings
            assert index.remove(topic_filter, item) is ((topic_filter, item) in live)
            live.discard((topic_filter, item))
    if style is MQTT:
        assert len(index) == len(live)
    for topic in probe_topics:
        expected = {item for topic_filter, item in live if topic_matches(topic_filter, topic, style=style)}
        matched = index.match(topic)
        assert len(matched) == len(set(matched))
        assert set(matched) == expected


@given(st.lists(any_filters(), min_size=1, max_size=10), topics)
def test_nucleus_index_equals_the_trie_port(filters: list[str], topic: str) -> None:
    index: SubscriptionIndex[int] = SubscriptionIndex()
    port = SubscriptionTriePort()
    for number, topic_filter in enumerate(filters):
        index.add(topic_filter, number)
        port.add(topic_filter, number)
    assert set(index.match(topic)) == port.get(topic)
