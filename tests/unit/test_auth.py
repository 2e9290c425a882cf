"""Principals' scope and permissions, and the checks on a new account: pure parts of hub.auth."""

from __future__ import annotations

import pytest

from hub.auth import ACTIONS, PERMISSIONS, Principal, check_new_user, token_digest
from hub.errors import AuthError

ADMIN = Principal("root", "admin", None, None, "管理员")
REGULATOR = Principal("wang", "regulator", None, "鹿城区", "王")
MANAGER = Principal("li", "manager", "f-sun", None, "李")
STAFF = Principal("zhao", "staff", "f-sun", None, "赵")


def test_admin_sees_every_facility_and_may_do_everything() -> None:
    """An admin's scope and permissions have no limit."""
    assert ADMIN.sees_facility("anything", None)
    assert all(ADMIN.may(action) for action in ACTIONS)


def test_a_regulator_sees_their_district_only_and_reads_and_comments() -> None:
    """Regulators watch a district: read, comment, KPIs; they do not act on alerts."""
    assert REGULATOR.sees_facility("f-sun", "鹿城区")
    assert not REGULATOR.sees_facility("f-star", "瓯海区")
    assert not REGULATOR.sees_facility("f-nowhere", None)
    assert {a for a in ACTIONS if REGULATOR.may(a)} == {"read", "comment", "kpis", "report"}


def test_staff_and_managers_see_their_facility_only() -> None:
    """Whatever the district, a facility account sees its own facility and no other."""
    for principal in (MANAGER, STAFF):
        assert principal.sees_facility("f-sun", "鹿城区")
        assert principal.sees_facility("f-sun", None)
        assert not principal.sees_facility("f-moon", "鹿城区")


def test_staff_acknowledge_attend_and_resolve_and_managers_also_configure() -> None:
    """SPEC §7: staff act on alerts; managers also snooze, configure rules and webhooks, and
    set up their facility's devices (credentials, placement)."""
    assert {a for a in ACTIONS if STAFF.may(a)} == {"read", "comment", "ack", "attend", "resolve"}
    assert {a for a in ACTIONS if MANAGER.may(a)} - {a for a in ACTIONS if STAFF.may(a)} == {
        "snooze",
        "kpis",
        "report",
        "configure",
        "devices",
    }
    assert not MANAGER.may("registry")
    assert set(PERMISSIONS) == {"admin", "regulator", "manager", "staff"}


def test_scope_params_restrict_to_one_facility_or_district() -> None:
    """The SQL scope parameters carry exactly the caller's facility or district."""
    assert ADMIN.scope_params() == {
        "scope_all": True,
        "scope_district": None,
        "scope_facility": None,
    }
    assert REGULATOR.scope_params()["scope_district"] == "鹿城区"
    assert STAFF.scope_params() == {
        "scope_all": False,
        "scope_district": None,
        "scope_facility": "f-sun",
    }


def test_a_principal_is_frozen() -> None:
    """Nobody widens a caller's scope after sign-in."""
    with pytest.raises(AttributeError):
        STAFF.facility_id = "f-moon"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("username", "role", "facility", "district", "password", "field"),
    [
        ("bad name", "staff", "f-sun", None, "long enough", "username"),
        ("", "staff", "f-sun", None, "long enough", "username"),
        ("ok", "boss", None, None, "long enough", "role"),
        ("ok", "staff", None, None, "long enough", "facility"),
        ("ok", "manager", "f-sun", "鹿城区", "long enough", "district"),
        ("ok", "regulator", None, None, "long enough", "district"),
        ("ok", "regulator", None, "  ", "long enough", "district"),
        ("ok", "regulator", "f-sun", "鹿城区", "long enough", "facility"),
        ("ok", "admin", "f-sun", None, "long enough", "role"),
        ("ok", "admin", None, None, "short", "password"),
        ("ok", "admin", None, None, "", "password"),
        ("ok", "admin", None, None, "x" * 2000, "password"),
    ],
)
def test_a_new_account_with_bad_input_names_the_field(
    username: str, role: str, facility: str | None, district: str | None, password: str, field: str
) -> None:
    """Each refusal says which input is wrong."""
    with pytest.raises(AuthError) as caught:
        check_new_user(
            username,
            role,
            facility_id=facility,
            district=district,
            display_name="",
            password=password,
        )
    assert caught.value.code == "invalid"
    assert caught.value.field == field


def test_a_good_account_passes_and_tokens_hash_to_hex() -> None:
    """A valid staff account passes; a token's digest is 64 hex characters."""
    check_new_user(
        "zhao.li@f-sun",
        "staff",
        facility_id="f-sun",
        district=None,
        display_name="赵丽",
        password="12345678",  # noqa: S106 - a test value
    )
    digest = token_digest("abc")
    assert len(digest) == 64 and int(digest, 16) >= 0
