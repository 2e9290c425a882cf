"""What each MQTT account may do (hub/acl.py), with hostile topics and filters."""

from __future__ import annotations

import pytest

from hub.acl import covers, device_grant, hub_grant, matches
from hub.credentials import hash_secret, verify_secret

ROOT = "carehub"
DEVICE = device_grant(ROOT, "f-1", "fs-1")
HUB = hub_grant("carehub-hub", ROOT)


def test_a_device_publishes_on_its_three_channels_and_nowhere_else() -> None:
    """Its own event, telemetry and status; not another device's, facility's or channel."""
    for channel in ("event", "telemetry", "status"):
        assert DEVICE.may_publish(f"carehub/v1/f-1/fs-1/{channel}")
    for topic in (
        "carehub/v1/f-1/fs-2/event",
        "carehub/v1/f-2/fs-1/event",
        "carehub/v1/f-1/fs-1/ack",
        "carehub/v1/f-1/fs-1/rejected",
        "carehub/v1/f-1/fs-1/event/extra",
        "carehub/v1/f-1/fs-1",
        "carehub/v2/f-1/fs-1/event",
        "other/v1/f-1/fs-1/event",
        "carehub/v1/f-1/fs-1/+",
        "carehub/v1/f-1/fs-1/#",
        "carehub/v1/+/fs-1/event",
        "#",
        "",
        "/carehub/v1/f-1/fs-1/event",
        "carehub//v1/f-1/fs-1/event",
        "$SYS/broker/load",
        "carehub/v1/f-1/fs-1/event\x00",
    ):
        assert not DEVICE.may_publish(topic), topic


def test_a_device_subscribes_to_its_own_replies_exactly() -> None:
    """ack and rejected, not a wildcard that would also match its own or others' topics."""
    assert DEVICE.may_subscribe("carehub/v1/f-1/fs-1/ack")
    assert DEVICE.may_subscribe("carehub/v1/f-1/fs-1/rejected")
    for topic_filter in (
        "carehub/v1/f-1/fs-1/+",
        "carehub/v1/f-1/fs-1/#",
        "carehub/v1/f-1/+/ack",
        "carehub/v1/#",
        "#",
        "+/+/+/+/+",
        "carehub/v1/f-1/fs-2/ack",
        "$share/g/carehub/v1/f-1/fs-1/ack",
        "$SYS/#",
        "carehub/v1/f-1/fs-1/event",
    ):
        assert not DEVICE.may_subscribe(topic_filter), topic_filter


def test_the_hub_reads_every_device_under_its_root_shared_or_not() -> None:
    """The hub's filters, its replies, and nothing under another root."""
    assert HUB.may_subscribe("carehub/v1/+/+/telemetry")
    assert HUB.may_subscribe("$share/carehub/carehub/v1/+/+/event")
    assert HUB.may_subscribe("$SYS/broker/publish/messages/dropped")
    assert HUB.may_publish("carehub/v1/f-1/fs-1/ack")
    assert not HUB.may_subscribe("#")
    assert not HUB.may_subscribe("other/v1/+/+/event")
    assert not HUB.may_subscribe("$share//carehub/v1/#")
    assert not HUB.may_subscribe("$share/g")
    assert not HUB.may_publish("other/v1/f-1/fs-1/ack")


@pytest.mark.parametrize(
    ("topic_filter", "topic", "expected"),
    [
        ("a/+/c", "a/b/c", True),
        ("a/#", "a", True),
        ("a/#", "a/b/c", True),
        ("+/b", "a/b/c", False),
        ("#", "$SYS/x", False),
        ("$SYS/#", "$SYS/x", True),
    ],
)
def test_topic_matching_follows_mqtt(topic_filter: str, topic: str, expected: bool) -> None:
    """+ is one level, # the rest, and wildcards at the first level never match $ topics."""
    assert matches(topic_filter, topic) is expected


def test_a_wide_filter_covers_narrower_ones_only() -> None:
    """A granted filter covers a requested one only when every topic of it matches."""
    assert covers("a/#", "a/+/c")
    assert covers("a/+/c", "a/b/c")
    assert not covers("a/+/c", "a/#")
    assert not covers("a/b/c", "a/+/c")
    assert not covers("#", "$SYS/#")


def test_a_secret_verifies_against_its_own_hash_only() -> None:
    """Salted: the same secret hashes differently; a wrong or mangled hash never verifies."""
    stored = hash_secret("s3cret-device-password")
    assert stored != hash_secret("s3cret-device-password")
    assert verify_secret("s3cret-device-password", stored)
    for wrong in ("s3cret-device-passwor", "", "s3cret-device-password "):
        assert not verify_secret(wrong, stored)
    for mangled in ("", "pbkdf2_sha256$x$y$z", "md5$1$AA==$AA==", stored + "$", "$$$"):
        assert not verify_secret("s3cret-device-password", mangled)
