"""The demo stands on two districts: 鹿城区 and 瓯海区 are registered and seeded each on its
own, each has a regulator who sees their district only, and each district's report builds."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
import pytest

from hub.cli.demo import DEMO_PASSWORD, ensure_demo_accounts, facility_account_homes
from hub.cli.demo_history import ensure_history
from hub.cli.simulate import register_district
from hub.runtime import run_hub
from hub.settings import Settings
from simulators import District, build_demo_district
from tests.fix_api import asgi_on
from tests.fix_hub import connect_db, rows

pytestmark = [pytest.mark.db, pytest.mark.mqtt, pytest.mark.slow]

# Small enough to seed in a few seconds, large enough for two homes of each district.
FACILITIES = 5


def _previous_month() -> str:
    """Last calendar month in the report's time zone: wholly inside the seeded 30 days' reach."""
    local = datetime.now(UTC).astimezone(ZoneInfo("Asia/Shanghai"))
    return f"{local.replace(day=1) - timedelta(days=1):%Y-%m}"


def _pdf_text(content: bytes) -> str:
    return subprocess.run(
        ["pdftotext", "-", "-"],  # noqa: S607 - poppler from PATH, as the report tests read it
        input=content,
        capture_output=True,
        check=True,
    ).stdout.decode()


@pytest.fixture
async def demo_district(hub_settings: Settings, tmp_path: Path) -> District:
    """The demo's district registered, with its accounts and its month, as `carehub demo`
    prepares them."""
    district = build_demo_district(FACILITIES)
    await register_district(hub_settings, district, tmp_path / "district")
    await ensure_demo_accounts(hub_settings, district)
    await ensure_history(hub_settings, district)
    return district


async def test_each_district_has_its_month_and_a_second_start_writes_nothing(
    demo_district: District, hub_settings: Settings
) -> None:
    """seeded_history holds one row per district whose counts are that district's rows."""
    async with await connect_db(hub_settings) as db:
        seeded = await rows(
            db, "SELECT district, readings, alerts FROM seeded_history ORDER BY district"
        )
        by_district = await rows(
            db,
            "SELECT f.district,"
            " (SELECT count(*) FROM readings r JOIN facilities g ON g.id = r.facility_id"
            "   WHERE g.district = f.district),"
            " (SELECT count(*) FROM alerts a JOIN facilities g ON g.id = a.facility_id"
            "   WHERE g.district = f.district)"
            " FROM facilities f GROUP BY f.district ORDER BY f.district",
        )
    assert seeded == by_district
    assert {row[0] for row in seeded} == {"鹿城区", "瓯海区"}
    assert all(readings > 0 and alerts > 0 for _, readings, alerts in seeded)

    again = await ensure_history(hub_settings, demo_district)
    assert not again.written
    assert again.history.readings == sum(row[1] for row in seeded)
    assert "nothing written now" in again.summary()


async def test_each_regulator_sees_only_their_district_and_the_admin_both(
    demo_district: District, hub_settings: Settings
) -> None:
    """regulator: 鹿城区's homes, KPIs and report; regulator-oh: 瓯海区's; admin: every home."""
    month = _previous_month()
    expected = {
        name: {f.id for f in demo_district.part(name).facilities} for name in ("鹿城区", "瓯海区")
    }
    async with run_hub(hub_settings) as hub:
        await hub.wait_connected(15)
        transport = httpx.ASGITransport(app=asgi_on(hub))
        async with httpx.AsyncClient(
            transport=transport, base_url="http://hub.test/api/v1", timeout=60
        ) as client:
            # Each district has a manager to sign in as: 瓯海区's is its first home's.
            oh_home = facility_account_homes(demo_district)[-1]
            assert oh_home.district == "瓯海区"
            tokens = {}
            for username in ("admin", "regulator", "regulator-oh", f"manager-{oh_home.id}"):
                signed = await client.post(
                    "/auth/login", json={"username": username, "password": DEMO_PASSWORD}
                )
                assert signed.status_code == 200, signed.text
                tokens[username] = {"Authorization": f"Bearer {signed.json()['token']}"}

            async def facilities(who: str) -> set[str]:
                listed = await client.get("/facilities", headers=tokens[who], params={"limit": 500})
                assert listed.status_code == 200, listed.text
                return {item["id"] for item in listed.json()["items"]}

            assert await facilities("regulator") == expected["鹿城区"]
            assert await facilities("regulator-oh") == expected["瓯海区"]
            assert await facilities("admin") == expected["鹿城区"] | expected["瓯海区"]
            assert await facilities(f"manager-{oh_home.id}") == {oh_home.id}

            for who, own, other in (
                ("regulator", "鹿城区", "瓯海区"),
                ("regulator-oh", "瓯海区", "鹿城区"),
            ):
                kpis = await client.get("/kpis", headers=tokens[who])
                assert kpis.status_code == 200, kpis.text
                assert kpis.json()["high_alerts"] > 0
                # The other district is not theirs: as if it did not exist.
                refused = await client.get("/kpis", headers=tokens[who], params={"district": other})
                assert refused.status_code == 404, refused.text
                one_of_theirs = sorted(expected[other])[0]
                hidden = await client.get(f"/facilities/{one_of_theirs}", headers=tokens[who])
                assert hidden.status_code == 404, hidden.text
                # The month's report of their own district builds.
                report = await client.get(
                    "/reports/monthly", headers=tokens[who], params={"month": month}
                )
                assert report.status_code == 200, report.text
                assert report.content.startswith(b"%PDF-")
                if shutil.which("pdftotext") is not None:
                    text = await asyncio.to_thread(_pdf_text, report.content)
                    assert own in text
                    for facility_id in expected[own]:
                        assert (
                            facility_id in text or demo_district.facility(facility_id).name in text
                        )
                    assert other not in text
            # The admin picks either district.
            for name in ("鹿城区", "瓯海区"):
                kpis = await client.get("/kpis", headers=tokens["admin"], params={"district": name})
                assert kpis.status_code == 200, kpis.text
                assert kpis.json()["high_alerts"] > 0
