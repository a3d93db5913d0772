"""The devkit authorizer's optional decision hook: what the least-privilege e2e tests record."""

from __future__ import annotations

from device_agent.devkit.authz import PUBSUB, Authorizer, Decision

PUBLISH = "aws.greengrass#PublishToTopic"


def test_listeners_see_every_decision_granted_or_refused_and_stop_when_removed():
    authorizer = Authorizer()
    authorizer.set_component_policies(
        "com.example.A", {PUBSUB: {"com.example.A:pubsub:1": {"operations": [PUBLISH], "resources": ["a/*"]}}}
    )
    seen: list[Decision] = []
    authorizer.add_decision_listener(seen.append)
    assert authorizer.is_authorized(
        destination=PUBSUB, principal="com.example.A", operation=PUBLISH, resource="a/1"
    )
    assert not authorizer.is_authorized(
        destination=PUBSUB, principal="com.example.A", operation=PUBLISH, resource="b/1"
    )
    assert seen == [
        Decision(PUBSUB, "com.example.A", PUBLISH, "a/1", allowed=True),
        Decision(PUBSUB, "com.example.A", PUBLISH, "b/1", allowed=False),
    ]
    authorizer.remove_decision_listener(seen.append)
    authorizer.is_authorized(destination=PUBSUB, principal="com.example.A", operation=PUBLISH, resource="a/2")
    assert len(seen) == 2
