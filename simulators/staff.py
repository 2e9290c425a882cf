"""The district's simulated staff: they answer open alerts through the hub's HTTP API.

A watcher account (a regulator or an admin) lists the open alerts every second; for each
new one the facility's staff member on duty signs in as themself and takes it over,
goes there and resolves it, after delays drawn from simulators/response.py: exactly what
a nurse does in the staff console, so the hub, the screens and the device's `ack` topic
hear every step, and the KPIs count real take-overs. Someone who takes an alert over in
the console first wins: the simulated colleague hears 409 and leaves it.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, Final

import httpx

from simulators.behaviour import SHANGHAI
from simulators.response import Response, plan_response

logger = logging.getLogger(__name__)

API: Final = "/api/v1"
# How often the watcher lists open alerts; a take-over is seconds away, so a second is fine.
POLL_S: Final = 1.0
# An unreachable hub (restarting, a database outage) is asked again after this long.
RETRY_S: Final = 3.0
PAGE: Final = 500


class StaffDesk:
    """The simulated staff of a district, acting through the API as their own accounts."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        *,
        watcher: tuple[str, str],
        staff: Mapping[str, tuple[str, str]],
        seed: int = 7,
        poll_s: float = POLL_S,
        planner: Callable[[str, random.Random], Response] = plan_response,
    ) -> None:
        # `staff`: facility id -> (username, password) of whoever is on duty there;
        # `planner`: how they answer an alert of a kind (simulators/response.py).
        self.client = client
        self.watcher = watcher
        self.staff = dict(staff)
        self.rng = random.Random(f"carehub-staff:{seed}")
        self.poll_s = poll_s
        self.planner = planner
        self._tokens: dict[str, str] = {}
        self._handled: set[str] = set()
        self._busy: set[str] = set()
        # What the staff did, alert id -> actions taken, for the demo's log and tests.
        self.actions: dict[str, list[str]] = {}

    async def run(self) -> None:
        """Answer alerts until cancelled; an unreachable hub is retried, never fatal."""
        async with asyncio.TaskGroup() as tasks:
            while True:
                try:
                    alerts = await self._open_alerts()
                except httpx.HTTPError as exc:
                    logger.warning("staff cannot list open alerts: %s; retrying", exc)
                    await asyncio.sleep(RETRY_S)
                    continue
                open_ids = {alert["id"] for alert in alerts}
                for alert in alerts:
                    if alert["id"] in self._handled or alert["facility_id"] not in self.staff:
                        continue
                    self._handled.add(alert["id"])
                    self._busy.add(alert["id"])
                    plan = self.planner(alert["kind"], self.rng)
                    tasks.create_task(self._answer(alert, plan), name=f"answer {alert['id']}")
                # Forget what has closed, so the set stays as small as what is open.
                self._handled &= open_ids | self._busy
                await asyncio.sleep(self.poll_s)

    async def _token(self, username: str, password: str, *, fresh: bool = False) -> str:
        if fresh or username not in self._tokens:
            response = await self.client.post(
                f"{API}/auth/login", json={"username": username, "password": password}
            )
            if response.status_code != 200:
                raise httpx.HTTPStatusError(
                    f"{username} cannot sign in: {response.status_code} {response.text}",
                    request=response.request,
                    response=response,
                )
            self._tokens[username] = response.json()["token"]
        return self._tokens[username]

    async def _call(
        self, account: tuple[str, str], method: str, path: str, body: Any = None
    ) -> httpx.Response:
        """One request as `account`, signing in again once if its token has lapsed."""
        for fresh in (False, True):
            token = await self._token(*account, fresh=fresh)
            response = await self.client.request(
                method,
                f"{API}{path}",
                json=body,
                headers={"Authorization": f"Bearer {token}"},
            )
            if response.status_code != 401:
                return response
        return response

    async def _open_alerts(self) -> list[dict[str, Any]]:
        """The newest open alerts (a page is more than a district's worst flood)."""
        response = await self._call(self.watcher, "GET", f"/alerts?state=open&limit={PAGE}")
        response.raise_for_status()
        items: list[dict[str, Any]] = response.json()["items"]
        return items

    async def _resolution(
        self, account: tuple[str, str], alert: dict[str, Any], plan: Response
    ) -> dict[str, Any]:
        """The disposition and note; a press cancelled at the button is nearly always a mistake."""
        current = await self._call(account, "GET", f"/alerts/{alert['id']}")
        if current.status_code == 200 and current.json().get("cleared_at"):
            plan = plan_response(alert["kind"], self.rng, cancelled=True)
        return {"disposition": plan.disposition, "note": plan.note}

    async def _answer(self, alert: dict[str, Any], plan: Response) -> None:
        alert_id = alert["id"]
        account = self.staff[alert["facility_id"]]
        raised = datetime.fromisoformat(alert["raised_at"])
        steps = [(plan.ack_after_s, "ack"), (plan.attend_after_s, "attend")]
        if plan.disposition is not None:
            steps.append((plan.resolve_after_s, "resolve"))
        try:
            for after_s, action in steps:
                if after_s is None:
                    continue
                # Timed from when it was raised, so an alert found late is not answered later.
                elapsed = (datetime.now(SHANGHAI) - raised).total_seconds()
                await asyncio.sleep(max(0.0, after_s - elapsed))
                body = await self._resolution(account, alert, plan) if action == "resolve" else None
                response = await self._call(account, "POST", f"/alerts/{alert_id}/{action}", body)
                if response.status_code == 409:
                    # Someone got there first (a person at the console), or it ended by itself.
                    logger.debug("alert %s: %s refused: %s", alert_id, action, response.text)
                    return
                if response.status_code != 200:
                    logger.warning(
                        "alert %s: %s answered %s: %s",
                        alert_id,
                        action,
                        response.status_code,
                        response.text,
                    )
                    return
                self.actions.setdefault(alert_id, []).append(action)
                logger.info(
                    "staff %s: %s alert %s (%s)", account[0], action, alert_id, alert["kind"]
                )
        except httpx.HTTPError as exc:
            logger.warning("alert %s: the staff's request failed: %s", alert_id, exc)
        finally:
            self._busy.discard(alert_id)
