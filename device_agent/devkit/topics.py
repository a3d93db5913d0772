"""Topic names, topic filters and subscription matching for local pub/sub and the IoT Core bridge.

Two matching styles exist, because the nucleus does not route messages with textbook MQTT rules:

- `TopicStyle.NUCLEUS` mirrors how the nucleus routes a message to subscribers: local pub/sub through
  `builtin/services/pubsub/SubscriptionTrie.java`, and messages from IoT Core to IPC subscribers through
  `mqttclient/MqttTopic.isSupersetOf` (called from `MqttClient`). Both split on `/` with Java's
  `String.split`, which drops trailing empty levels, so `a/` and `a` are the same topic. And `#` needs at
  least one level to consume: `a/#` does **not** match `a` (SubscriptionTrieTest: "multilevel wildcard #
  does not match parent topic"). A `#` that is not the last level matches exactly one level, like `+` (how
  the trie walks it). Any non-empty filter is accepted; `a+` is a literal level. This is the default of
  `SubscriptionIndex`.
- `TopicStyle.MQTT` is the MQTT 3.1.1/5 rule that AWS IoT Core applies between clients: `+` is one level
  (possibly empty), `#` is the rest including zero levels (`a/#` matches `a`), levels are kept as written.
  This is the default of `topic_matches`, which answers "would a cloud-side subscriber see this publish".

Neither style treats `$`-prefixed topics specially: the nucleus lets `#` and `+` match `$foo/bar`
(SubscriptionTrieTest), and we mirror that rather than the MQTT spec's first-level `$` rule.
"""

from __future__ import annotations

import enum
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

SEPARATOR = "/"
SINGLE_LEVEL = "+"
MULTI_LEVEL = "#"
GLOB = "*"

T = TypeVar("T", bound=Hashable)


class TopicStyle(enum.Enum):
    NUCLEUS = "nucleus"
    MQTT = "mqtt"


def validate_topic_filter(topic_filter: str) -> None:
    """Raise ValueError unless `topic_filter` is a well-formed MQTT filter.

    Rules: not empty; `+` and `#` only as a whole level; `#` only as the last level. The nucleus's local
    pub/sub accepts any non-empty filter (`PubSubIPCEventStreamAgent.validateSubTopic`): this is stricter.
    """
    if not topic_filter:
        raise ValueError("topic filter must not be empty")
    levels = topic_filter.split(SEPARATOR)
    last = len(levels) - 1
    for index, level in enumerate(levels):
        if MULTI_LEVEL in level:
            if level != MULTI_LEVEL:
                raise ValueError(f"'#' must fill a whole level in topic filter {topic_filter!r}")
            if index != last:
                raise ValueError(f"'#' must be the last level of topic filter {topic_filter!r}")
        if SINGLE_LEVEL in level and level != SINGLE_LEVEL:
            raise ValueError(f"'+' must fill a whole level in topic filter {topic_filter!r}")


def validate_topic_name(topic: str, *, iot_core: bool = False) -> None:
    """Raise ValueError unless `topic` is a topic one may publish to.

    Local pub/sub refuses `+`, `#` and `*` (`PubSubIPCEventStreamAgent.publishToTopic`); IoT Core refuses only
    `+` and `#` (`mqttclient/IotCoreTopicValidator`), so pass `iot_core=True` there.
    """
    if not topic:
        raise ValueError("topic must not be empty")
    forbidden = (SINGLE_LEVEL, MULTI_LEVEL) if iot_core else (SINGLE_LEVEL, MULTI_LEVEL, GLOB)
    found = [char for char in forbidden if char in topic]
    if found:
        raise ValueError(f"topic {topic!r} must not contain the wildcard character(s) {' '.join(found)}")


def is_wildcard_filter(topic_filter: str) -> bool:
    """True when some level is exactly `+` or `#`; anything else is matched literally."""
    return any(level in (SINGLE_LEVEL, MULTI_LEVEL) for level in topic_filter.split(SEPARATOR))


def split_levels(topic: str, style: TopicStyle) -> tuple[str, ...]:
    """Levels of a topic or filter; NUCLEUS style reproduces Java's `String.split("/")`."""
    levels = topic.split(SEPARATOR)
    if style is TopicStyle.MQTT or topic == "":
        return tuple(levels)  # Java also keeps the single empty level of ""
    while levels and levels[-1] == "":
        levels.pop()
    return tuple(levels)


def topic_matches(topic_filter: str, topic: str, *, style: TopicStyle = TopicStyle.MQTT) -> bool:
    """Whether a subscription to `topic_filter` receives a publish to `topic`."""
    return _levels_match(split_levels(topic_filter, style), split_levels(topic, style), style)


def _levels_match(filter_levels: tuple[str, ...], topic_levels: tuple[str, ...], style: TopicStyle) -> bool:
    if not filter_levels or not topic_levels:
        # Only NUCLEUS style gets here: "/" splits to nothing, and the nucleus never routes to or from it.
        return False
    last = len(filter_levels) - 1
    for index, level in enumerate(filter_levels):
        if level == MULTI_LEVEL and index == last:
            # MQTT: the rest, zero levels included. NUCLEUS: at least one level must be left.
            return style is TopicStyle.MQTT or index < len(topic_levels)
        if index >= len(topic_levels):
            return False
        # A `#` before the last level walks like `+` in the nucleus's trie (MQTT filters never have one).
        if level not in (SINGLE_LEVEL, MULTI_LEVEL) and level != topic_levels[index]:
            return False
    return len(filter_levels) == len(topic_levels)


@dataclass(eq=False, slots=True)
class _Node(Generic[T]):
    children: dict[str, _Node[T]] = field(default_factory=dict)
    items: dict[T, None] = field(default_factory=dict)  # an insertion-ordered set

    def is_empty(self) -> bool:
        return not self.children and not self.items


class SubscriptionIndex(Generic[T]):
    """Subscribers by topic filter. Exact filters sit in a dict, wildcard filters in a level trie.

    `add` is idempotent per (filter, item), as the nucleus's callback sets are. `match` returns each matching
    item once, even when several of its filters match.
    """

    def __init__(self, *, style: TopicStyle = TopicStyle.NUCLEUS) -> None:
        self._style = style
        self._exact: dict[tuple[str, ...], dict[T, None]] = {}
        self._root: _Node[T] = _Node()
        self._count = 0

    @property
    def style(self) -> TopicStyle:
        return self._style

    def __len__(self) -> int:
        return self._count

    def add(self, topic_filter: str, item: T) -> bool:
        """Subscribe `item`; returns False if it was already subscribed to that filter."""
        if self._style is TopicStyle.MQTT:
            validate_topic_filter(topic_filter)
        elif not topic_filter:
            raise ValueError("topic filter must not be empty")
        levels = split_levels(topic_filter, self._style)
        if is_wildcard_filter(topic_filter):
            node = self._root
            for level in levels:
                node = node.children.setdefault(level, _Node())
            items = node.items
        else:
            items = self._exact.setdefault(levels, {})
        if item in items:
            return False
        items[item] = None
        self._count += 1
        return True

    def remove(self, topic_filter: str, item: T) -> bool:
        """Unsubscribe `item`; returns False if it was not subscribed to that filter."""
        levels = split_levels(topic_filter, self._style)
        if not is_wildcard_filter(topic_filter):
            items = self._exact.get(levels)
            if items is None or item not in items:
                return False
            del items[item]
            if not items:
                del self._exact[levels]
            self._count -= 1
            return True
        removed = _remove_from_trie(self._root, levels, item)
        if removed:
            self._count -= 1
        return removed

    def match(self, topic: str) -> list[T]:
        """Every item subscribed to a filter that matches `topic`, each once."""
        levels = split_levels(topic, self._style)
        if not levels:
            return []  # NUCLEUS style: "/" has no levels and the nucleus routes nothing there
        found: dict[T, None] = dict.fromkeys(self._exact.get(levels, ()))
        if self._root.children:
            self._collect(self._root, levels, 0, found)
        return list(found)

    def _collect(self, node: _Node[T], levels: tuple[str, ...], index: int, found: dict[T, None]) -> None:
        if index == len(levels):
            found.update(node.items)
            parent_hash = node.children.get(MULTI_LEVEL)
            if parent_hash is not None and self._style is TopicStyle.MQTT:
                found.update(parent_hash.items)  # MQTT: `a/#` also matches `a`
            return
        level = levels[index]
        literal = node.children.get(level)
        if literal is not None and level not in (SINGLE_LEVEL, MULTI_LEVEL):  # else walked just below
            self._collect(literal, levels, index + 1, found)
        plus = node.children.get(SINGLE_LEVEL)
        if plus is not None:
            self._collect(plus, levels, index + 1, found)
        hash_node = node.children.get(MULTI_LEVEL)
        if hash_node is not None:
            found.update(hash_node.items)  # `#` as the last level takes this level and all below
            if self._style is TopicStyle.NUCLEUS:
                # The nucleus's trie keeps walking through a `#` that is not last, as if it were `+`.
                self._collect(hash_node, levels, index + 1, found)


def _remove_from_trie(node: _Node[T], levels: tuple[str, ...], item: T) -> bool:
    """Remove `item` at the end of `levels`, pruning nodes left empty."""
    if not levels:
        if item not in node.items:
            return False
        del node.items[item]
        return True
    child = node.children.get(levels[0])
    if child is None or not _remove_from_trie(child, levels[1:], item):
        return False
    if child.is_empty():
        del node.children[levels[0]]
    return True
