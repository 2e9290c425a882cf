"""The served OpenAPI document tells the truth: schemathesis, all checks, every operation."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import UTC, datetime

import pytest
import schemathesis
from hypothesis import strategies as st
from schemathesis.core.result import Ok
from schemathesis.engine import events, from_schema

from hub.api.common import cursor_format
from hub.api.models import ID
from hub.api.pagination import encode_cursor
from hub.auth import ACCOUNT_LIMITS, ADDRESS_LIMITS, SignInGuard
from hub.models import AlertDecision
from hub.notify import add_webhook
from tests.fix_api import PASSWORD, Api, asgi_on
from tests.fix_hub import FACILITY, connect_db
from tests.fix_live import serve_running

pytestmark = [pytest.mark.mqtt, pytest.mark.db]

# Enough cases per operation to reach each parameter's edges, few enough for two shared cores.
MAX_EXAMPLES = 30
# A fixed seed, derandomized and with no example database: each run sends the same cases.
SEED = 20261202
# A failure's curl line, cut: a generated query can be kilobytes long.
SAMPLE_MAX = 400
_INT64 = st.integers(-(2**63), 2**63 - 1)
# A cursor is a `next` some list handed out: these are what the hub hands out.
CURSORS: dict[str, st.SearchStrategy[str]] = {
    cursor_format("text"): st.from_regex(ID, fullmatch=True).map(
        lambda key: encode_cursor("text", key)
    ),
    cursor_format("int"): _INT64.map(lambda key: encode_cursor("int", key)),
    cursor_format("time_id"): st.tuples(st.datetimes(timezones=st.just(UTC)), _INT64).map(
        lambda key: encode_cursor("time_id", key)
    ),
}
# Rules between parameters, or about what is stored, that OpenAPI 3.1 cannot write down:
# each of these operations documents its 400 in prose, and a schema-valid request may meet
# it. For them only, a schema-valid request may get that 400 (schemathesis' default
# statuses for a schema-valid request, and 400); every other check still runs on them.
ACCEPTED_WITH_A_RULE = ["2xx", "3xx", "400", "401", "403", "404", "409", "429", "5xx"]
RULES_BEYOND_THE_SCHEMA = {
    "GET /api/v1/kpis": "facility or district, not both; from before to",
    "GET /api/v1/kpis.csv": "facility or district, not both; from before to",
    "GET /api/v1/reports/monthly": "facility or district, not both; YYYY-MM of a month begun",
    "GET /api/v1/devices/{device_id}/readings": "from before to; at most 100,000 buckets",
    "POST /api/v1/facilities/{facility_id}/webhooks": "an http(s) URL with a host; no wecom secret",
    "PUT /api/v1/facilities/{facility_id}/rules": "the alert kind's own parameters and ranges",
    "POST /api/v1/alerts/{alert_id}/snooze": "an alert about a zone",
}


async def seed_objects(api: Api) -> None:
    """Something for every list and detail route to return: an alert, a webhook, a refusal."""
    change = await api.hub.alerts.raise_alert(
        AlertDecision(
            kind="fall",
            priority="high",
            latched=True,
            facility_id=FACILITY,
            zone_id="room-101",
            device_id="fs-1",
            subject="fs-1",
            at=datetime.now(UTC),
        )
    )
    assert change is not None
    async with await connect_db(api.hub.settings) as conn:
        await add_webhook(conn, FACILITY, "https://example.invalid/hook", "json")
        await conn.execute(
            "INSERT INTO dead_letters (received_at, topic, reason, detail, facility_id,"
            " device_id, payload, payload_size)"
            " VALUES (now(), 'carehub/v1/f-sun/x-1/event', 'unknown_device', 'not registered',"
            " %s, 'x-1', '{}'::bytea, 2)",
            (FACILITY,),
        )


def run_schemathesis(base_url: str) -> tuple[int, int, list[str]]:
    """(operations, cases, unique failures) of a run with all checks against the served document."""
    for name, strategy in CURSORS.items():
        schemathesis.openapi.format(name, strategy)
    config = schemathesis.Config.from_dict(
        {
            "seed": SEED,
            "base-url": base_url,
            "workers": 1,
            "generation": {
                "max-examples": MAX_EXAMPLES,
                "deterministic": True,
                "database": "none",
            },
            # Signed in as admin; a 401 (after POST /auth/logout revoked it) signs in again.
            "auth": {
                "dynamic": {
                    "openapi": {
                        "HTTPBearer": {
                            "path": "/api/v1/auth/login",
                            "payload": {"username": "admin", "password": PASSWORD},
                            "extract_selector": "/token",
                        }
                    }
                }
            },
            "operations": [
                {
                    "include-name": name,
                    "checks": {
                        "positive_data_acceptance": {"expected-statuses": ACCEPTED_WITH_A_RULE}
                    },
                }
                for name in RULES_BEYOND_THE_SCHEMA
            ],
        }
    )
    config.projects.override.checks.update(included_check_names=["all"])
    schema = schemathesis.openapi.from_url(f"{base_url}/api/v1/openapi.json", config=config)
    failures: dict[str, str] = {}
    labels: set[str] = set()
    for result in schema.get_all_operations():
        if isinstance(result, Ok):
            labels.add(result.ok().label)
        else:
            failures[f"schema {len(failures)}"] = f"an invalid operation: {result.err()}"
    stale = sorted(set(RULES_BEYOND_THE_SCHEMA) - labels)
    assert not stale, f"rules for operations the document does not have: {stale}"
    cases = 0
    for event in from_schema(schema).execute():
        if isinstance(event, events.ScenarioFinished) and event.is_test_scenario:
            cases += len(event.recorder.cases)
            for checks in event.recorder.checks.values():
                for check in checks:
                    if check.failure_info is None:
                        continue
                    failure = check.failure_info.failure
                    key = f"{failure.operation} [{check.name}] {failure.title}"
                    sample = check.failure_info.code_sample[:SAMPLE_MAX]
                    failures.setdefault(key, f"{key}\n    {failure.message}\n    {sample}")
        elif isinstance(event, events.NonFatalError):
            failures.setdefault(event.label, f"{event.label}: error {event.value!r}")
        elif isinstance(event, events.FatalError):
            failures.setdefault("fatal", f"schemathesis stopped: {event.exception!r}")
    return len(labels), cases, sorted(failures.values())


@pytest.mark.timeout(600)
async def test_every_operation_passes_every_schemathesis_check(api: Api) -> None:
    """Every operation of /api/v1/openapi.json answers only what the document says it does."""
    await seed_objects(api)
    # The fuzzer tries wrong passwords on the very account it signs in with, and from the
    # same address: under the real limits it would lock itself out (which is
    # test_sign_in_limits.py's to check). Here only the document is under test.
    far = 1_000_000
    api.hub.sign_in = SignInGuard(
        account=dataclasses.replace(ACCOUNT_LIMITS, free_failures=far, lock_failures=far),
        address=dataclasses.replace(ADDRESS_LIMITS, free_failures=far, lock_failures=far),
    )
    async with serve_running(api.hub, asgi_on(api.hub)) as server:
        base_url = f"http://127.0.0.1:{server.port}"
        operations, cases, failures = await asyncio.to_thread(run_schemathesis, base_url)
    assert operations >= 28, f"only {operations} operations in the document"
    assert cases > operations, f"only {cases} cases generated for {operations} operations"
    assert not failures, f"{len(failures)} unique failures:\n\n" + "\n\n".join(failures)
