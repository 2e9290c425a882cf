"""SPEC §7: a regulator's reads of a facility's detail are logged, and admins can list them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tests.fix_api import Api
from tests.fix_hub import FACILITY, OTHER_FACILITY, connect_db

pytestmark = [pytest.mark.mqtt, pytest.mark.db]


async def test_each_regulator_read_of_facility_detail_is_listed_for_admins(api: Api) -> None:
    """The facility, one of its devices and its readings, read by a regulator: one row each,
    newest first, with who, what and when; other roles' reads and lists leave none."""
    started = datetime.now(UTC) - timedelta(seconds=1)
    reads = [
        f"/facilities/{FACILITY}",
        "/devices/oc-1",
        "/devices/oc-1/readings?bucket=1h",
        f"/facilities/{OTHER_FACILITY}",
    ]
    for path in reads:
        response = await api.request("GET", path, "regulator")
        assert response.status_code == 200, (path, response.text)
    for who in ("admin", "manager", "staff"):
        assert (await api.request("GET", f"/facilities/{FACILITY}", who)).status_code == 200
        assert (await api.request("GET", "/devices/oc-1", who)).status_code == 200
    # Lists and things out of scope are no facility's detail read.
    assert (await api.request("GET", "/facilities", "regulator")).status_code == 200
    assert (await api.request("GET", "/devices", "regulator")).status_code == 200
    assert (await api.request("GET", "/devices/eb-far", "regulator")).status_code == 404

    response = await api.request("GET", "/access-log", "admin")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["next"] is None
    items = body["items"]
    assert [(item["route"], item["facility_id"]) for item in items] == [
        (f"GET /api/v1/facilities/{OTHER_FACILITY}", OTHER_FACILITY),
        ("GET /api/v1/devices/oc-1/readings", FACILITY),
        ("GET /api/v1/devices/oc-1", FACILITY),
        (f"GET /api/v1/facilities/{FACILITY}", FACILITY),
    ]
    for item in items:
        assert (item["username"], item["role"]) == ("regulator", "regulator")
        at = datetime.fromisoformat(item["at"])
        assert started <= at <= datetime.now(UTC)
        assert isinstance(item["id"], str)

    one = await api.request("GET", "/access-log", "admin", params={"facility": OTHER_FACILITY})
    assert [item["facility_id"] for item in one.json()["items"]] == [OTHER_FACILITY]
    nobody = await api.request("GET", "/access-log", "admin", params={"user": "manager"})
    assert nobody.json() == {"items": [], "next": None}


async def test_the_access_log_pages_back_through_every_row(api: Api) -> None:
    """Pages of two, newest first, reach every row once; the cursor is the list's own."""
    async with await connect_db(api.hub.settings) as conn:
        for n in range(5):
            await conn.execute(
                "INSERT INTO access_log (username, role, route, facility_id)"
                " VALUES ('regulator', 'regulator', %s, %s)",
                (f"GET /api/v1/facilities/f-{n}", f"f-{n}"),
            )
    seen: list[str] = []
    cursor: str | None = None
    for _ in range(5):
        params = {"limit": "2", **({"cursor": cursor} if cursor else {})}
        page = (await api.request("GET", "/access-log", "admin", params=params)).json()
        seen += [item["facility_id"] for item in page["items"]]
        cursor = page["next"]
        if cursor is None:
            break
    assert seen == [f"f-{n}" for n in reversed(range(5))]


@pytest.mark.parametrize(
    ("params", "status", "field"),
    [
        ({"facility": "f sun"}, 422, "query.facility"),
        ({"facility": "x" * 65}, 422, "query.facility"),
        ({"facility": "'; DROP TABLE access_log; --"}, 422, "query.facility"),
        ({"user": "a\u0000b"}, 422, "query.user"),
        ({"user": "卫健委"}, 422, "query.user"),
        ({"limit": "0"}, 422, "query.limit"),
        ({"limit": "501"}, 422, "query.limit"),
        ({"cursor": "not-a-cursor"}, 400, "query.cursor"),
        ({"cursor": "A" * 600}, 422, "query.cursor"),
    ],
)
async def test_hostile_parameters_get_a_named_refusal(
    api: Api, params: dict[str, str], status: int, field: str
) -> None:
    """Malformed filters, limits and cursors are refused, naming the parameter."""
    response = await api.request("GET", "/access-log", "admin", params=params)
    assert response.status_code == status, response.text
    assert response.json()["field"] == field
