"""What each MQTT account may do (SPEC §7), in one place for every broker the hub serves.

A device publishes only `{root}/v1/{facility}/{device}/event|telemetry|status` and
subscribes only to its own `ack` and `rejected`; the hub reads every device topic under
its root (shared or not) and `$SYS`, and publishes the replies. The embedded broker asks
a `Grant` on every PUBLISH and SUBSCRIBE, Mosquitto's dynamic security gets it as a role,
and EMQX as the `acl` list of its authentication answer.
"""

from __future__ import annotations

from dataclasses import dataclass

from devices import topics

_SHARED = f"{topics.SHARED_PREFIX}/"
# What the hub reads to see the broker's drop counter (hub/ingest.py).
SYS_FILTER = "$SYS/#"


@dataclass(frozen=True, slots=True)
class Grant:
    """An account's rights: the topics it may publish to and the filters it may subscribe."""

    account: str
    publish: tuple[str, ...]
    subscribe: tuple[str, ...]
    # The device's own topics, or (for the hub) None.
    device_id: str | None = None

    def may_publish(self, topic_name: str) -> bool:
        """True when a PUBLISH on `topic_name` is within this grant."""
        return any(matches(granted, topic_name) for granted in self.publish)

    def may_subscribe(self, topic_filter: str) -> bool:
        """True when every topic `topic_filter` can match is within this grant.

        Only the hub shares a subscription with its peers; a device subscribes plainly.
        """
        wanted = unshared(topic_filter) if self.device_id is None else topic_filter
        return wanted is not None and any(covers(granted, wanted) for granted in self.subscribe)


def device_grant(root: str, facility_id: str, device_id: str) -> Grant:
    """What one device may do: its own three channels out, its own two replies in."""
    return Grant(
        account=device_id,
        publish=tuple(
            topics.topic(root, facility_id, device_id, channel)
            for channel in topics.DEVICE_CHANNELS
        ),
        subscribe=tuple(
            topics.topic(root, facility_id, device_id, channel) for channel in topics.REPLY_CHANNELS
        ),
        device_id=device_id,
    )


def hub_grant(account: str, root: str | None) -> Grant:
    """What the hub's own account may do under `root`; under every root when None.

    None is for a broker shared by hubs of many topic roots (the test suite's).
    """
    everything = "#" if root is None else f"{topics.prefix(root)}#"
    return Grant(account=account, publish=(everything,), subscribe=(everything, SYS_FILTER))


def unshared(topic_filter: str) -> str | None:
    """The filter without its `$share/{group}/` prefix; None for a malformed shared one."""
    if not topic_filter.startswith(_SHARED):
        return topic_filter
    _, group, rest = [*topic_filter.split("/", 2), "", ""][:3]
    return rest if group and rest else None


def matches(topic_filter: str, topic_name: str) -> bool:
    """MQTT topic matching: does `topic_name` match `topic_filter` (with + and #)?"""
    if topic_name.startswith("$") and not topic_filter.startswith("$"):
        return False  # MQTT 4.7.2: wildcards at the first level never match $ topics
    wanted = topic_filter.split("/")
    levels = topic_name.split("/")
    for index, level in enumerate(wanted):
        if level == "#":
            return True
        if index >= len(levels) or (level not in ("+", levels[index])):
            return False
    return len(levels) == len(wanted)


def covers(granted: str, requested: str) -> bool:
    """True when every topic matching `requested` also matches `granted`."""
    if requested.startswith("$") != granted.startswith("$") and not granted.startswith("$"):
        return False
    wide = granted.split("/")
    narrow = requested.split("/")
    for index, level in enumerate(wide):
        if level == "#":
            return True
        if index >= len(narrow):
            return False
        asked = narrow[index]
        if asked == "#" or (level != "+" and (asked == "+" or asked != level)):
            return False
    return len(narrow) == len(wide)
