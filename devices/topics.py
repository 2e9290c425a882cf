"""The MQTT topics of contract v1 (SPEC §3), built and parsed in one place.

`{root}/v1/{facility_id}/{device_id}/{channel}`: the hub, the simulators, the benches and
the tests all build and read topics through this module, so a vendor's device, our
fixtures and the hub can never disagree on a level.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

CONTRACT_VERSION = "v1"
ID_PATTERN = r"[A-Za-z0-9_-]{1,64}"
# What a device publishes, and what the hub answers it on.
DEVICE_CHANNELS = ("event", "telemetry", "status")
REPLY_CHANNELS = ("ack", "rejected")
SHARED_PREFIX = "$share"

_ID = re.compile(f"^{ID_PATTERN}$")


class TopicError(ValueError):
    """A topic that is not a well-formed device topic; the message says which level."""


@dataclass(frozen=True, slots=True)
class Topic:
    """A device topic: the ids it names and its channel."""

    root: str
    facility_id: str
    device_id: str
    channel: str

    def __str__(self) -> str:
        return topic(self.root, self.facility_id, self.device_id, self.channel)

    def reply(self, channel: str) -> str:
        """The topic on which the device hears `channel` (ack or rejected)."""
        return topic(self.root, self.facility_id, self.device_id, channel)


def prefix(root: str) -> str:
    """What every topic of the contract starts with under `root`."""
    return f"{root}/{CONTRACT_VERSION}/"


def topic(root: str, facility_id: str, device_id: str, channel: str) -> str:
    """The topic a device publishes (or reads) `channel` on."""
    return f"{prefix(root)}{facility_id}/{device_id}/{channel}"


def device_filter(root: str, channel: str, *, shared_group: str | None = None) -> str:
    """The subscription filter for every device's `channel`, shared in a group if given."""
    wildcard = topic(root, "+", "+", channel)
    return f"{SHARED_PREFIX}/{shared_group}/{wildcard}" if shared_group else wildcard


def parse(topic_name: str, root: str) -> Topic:
    """Split a device topic into its ids and channel, or raise TopicError saying why."""
    start = prefix(root)
    if not topic_name.startswith(start):
        raise TopicError(f"topic must start with {start!r}")
    levels = topic_name[len(start) :].split("/")
    if len(levels) != 3:
        raise TopicError("topic must be {root}/v1/{facility_id}/{device_id}/{channel}")
    facility_id, device_id, channel = levels
    if not _ID.match(facility_id):
        raise TopicError(f"facility_id must match {ID_PATTERN}")
    if not _ID.match(device_id):
        raise TopicError(f"device_id must match {ID_PATTERN}")
    if channel not in DEVICE_CHANNELS:
        raise TopicError(f"channel {channel[:32]!r} is not one of event, telemetry, status")
    return Topic(root, facility_id, device_id, channel)


def rejection_topic(topic_name: str, root: str) -> str | None:
    """Where the sender of `topic_name` hears why it was rejected; None when no device can.

    The first two levels after `{root}/v1/` name the sender, as written: a bad channel, an
    extra level, or ids that break the id rule (`bad_topic`) are still answered, so the
    vendor learns what was wrong. Not answered: a topic outside the root, a missing or
    empty level, or a level that is no topic one can publish to (see `_replyable`).
    """
    start = prefix(root)
    if not topic_name.startswith(start):
        return None
    levels = topic_name[len(start) :].split("/")
    if len(levels) < 2 or not (_replyable(levels[0]) and _replyable(levels[1])):
        return None
    return topic(root, levels[0], levels[1], "rejected")


# A malformed id is answered on a level of at most this many characters: four times the
# longest id, enough to show a vendor what their firmware sent, and every reply topic
# stays far below MQTT's 65,535 bytes.
REPLY_LEVEL_MAX = 256
# Never in a topic the hub publishes: wildcards (a PUBLISH may not carry them), U+0000
# (MQTT forbids it), other control characters (brokers may drop the connection over
# them), U+FFFD (a topic that was not UTF-8, lossily decoded: not the sender's topic) and
# the non-characters U+FFFE and U+FFFF.
_UNREPLYABLE = re.compile("[+#\x00-\x1f\x7f-\x9f\ufffd\ufffe\uffff]")


def _replyable(level: str) -> bool:
    """True when `level` is an id, or at least a level the hub can publish a reply on."""
    if _ID.match(level):
        return True
    return 0 < len(level) <= REPLY_LEVEL_MAX and not _UNREPLYABLE.search(level)
