"""`carehub doctor`'s verdicts on broker and database settings, from their values."""

from __future__ import annotations

from pathlib import Path

import pytest

from hub.doctor import (
    Finding,
    check_database_settings,
    check_jobs,
    check_mosquitto_conf,
    check_workers,
    mosquitto_settings,
)
from hub.storage.health import FailedJob

SITE_CONF = Path(__file__).parents[2] / "deploy" / "mosquitto" / "mosquitto.conf"


def levels(findings: list[Finding]) -> dict[str, str]:
    """The worst level of each finding, keyed by the setting its text starts with."""
    return {f.what.split(":")[0].split(" ")[0]: f.level for f in findings}


def test_mosquittos_defaults_lose_a_restarts_worth_of_messages() -> None:
    """An empty file: no persistence, 1,000 queued a session, 20 in flight."""
    findings = check_mosquitto_conf({}, rate=1000, protocol=311)
    failed = {f.what.split(" ")[0] for f in findings if f.level == "fail"}
    assert failed == {"persistence", "max_queued_messages"}
    assert all(f.advice for f in findings if f.level != "ok")
    assert any(f.what.startswith("max_inflight_messages 20") for f in findings)
    queue = next(f for f in findings if f.what.startswith("max_queued_messages"))
    assert "max_queued_messages 60000" in queue.advice
    assert levels(findings)["set_tcp_nodelay"] == "warn"


def test_nagles_algorithm_is_named_unless_it_is_off() -> None:
    """Mosquitto leaves Nagle on: a device's ack can wait 40 ms for a delayed TCP ack."""
    base = {"persistence": "true", "autosave_interval": "60", "max_queued_messages": "0"}
    for value in ("false", "False", "1"):
        findings = check_mosquitto_conf({**base, "set_tcp_nodelay": value}, 1000, 5)
        nagle = next(f for f in findings if f.what.startswith("set_tcp_nodelay"))
        assert (nagle.level, nagle.advice) == ("warn", "set `set_tcp_nodelay true`")
    findings = check_mosquitto_conf({**base, "set_tcp_nodelay": "true"}, 1000, 5)
    assert [f for f in findings if f.level != "ok"] == []


def test_the_site_file_passes_for_a_site_and_fails_for_a_city() -> None:
    options = mosquitto_settings(SITE_CONF)
    assert options["max_queued_messages"] == "200000"
    site = check_mosquitto_conf(options, rate=1000, protocol=5)
    assert [f for f in site if f.level != "ok"] == []
    city = check_mosquitto_conf(options, rate=16_700, protocol=5)
    assert [f.what.split(" ")[0] for f in city if f.level == "fail"] == ["max_queued_messages"]


def test_include_dir_is_followed_and_the_last_value_wins(tmp_path: Path) -> None:
    (tmp_path / "conf.d").mkdir()
    (tmp_path / "conf.d" / "carehub.conf").write_text("max_queued_messages 0\n")
    main = tmp_path / "mosquitto.conf"
    main.write_text(
        "# a comment\npersistence true\nmax_queued_messages 10\ninclude_dir conf.d\n"
        "allow_anonymous true\n"
    )
    options = mosquitto_settings(main)
    assert options["max_queued_messages"] == "0"
    findings = check_mosquitto_conf(options, rate=1000, protocol=5)
    assert levels(findings)["max_queued_messages"] == "ok"
    assert levels(findings)["allow_anonymous"] == "warn"
    assert levels(findings)["persistence"] == "warn"  # saved every 1800 s by default


@pytest.mark.parametrize("value", ["lots", "-5", "1e6", "١٠٠٠", ""])
def test_a_value_mosquitto_cannot_read_is_a_failure_not_a_crash(value: str) -> None:
    findings = check_mosquitto_conf({"max_queued_messages": value}, rate=1000, protocol=5)
    assert [f.level for f in findings] == ["fail"]
    assert "max_queued_messages" in findings[0].what


def test_asynchronous_commit_fails_because_acks_would_outrun_durability() -> None:
    findings = check_database_settings({"synchronous_commit": "off", "fsync": "on"})
    commit = next(f for f in findings if f.what.startswith("synchronous_commit"))
    assert commit.level == "fail"
    assert "synchronous_commit = on" in commit.advice
    assert check_database_settings({"fsync": "off"})[0].level == "fail"


def test_small_or_bunched_checkpoints_are_a_warning() -> None:
    good = {
        "max_wal_size": "4096",
        "checkpoint_timeout": "900",
        "checkpoint_completion_target": "0.9",
    }
    assert {f.level for f in check_database_settings(good)} == {"ok"}
    small = {**good, "max_wal_size": "256"}
    checkpoints = [f for f in check_database_settings(small) if f.what.startswith("checkpoints")]
    assert [f.level for f in checkpoints] == ["warn"]


def test_timescaledbs_false_job_failures_are_told_apart_from_real_ones() -> None:
    portal = FailedJob(
        1000,
        "policy_compression",
        "s.readings",
        12,
        'cannot drop portal "" while it is being set up',
    )
    real = FailedJob(1001, "policy_retention", "s.events", 3, "permission denied for table events")
    findings = check_jobs("2.28.3", [portal, real], "15.20")
    assert [f.level for f in findings] == ["warn", "fail"]
    assert "known fault of TimescaleDB 2.28.3 on PostgreSQL 15.20" in findings[0].what
    assert "is_compressed" in findings[0].advice  # where to see that compression happened
    assert "permission denied" in findings[1].what
    assert check_jobs(None, [], "15.20")[0].level == "ok"
    assert check_jobs("2.28.3", [], "15.20")[0].level == "ok"


def test_timescaledbs_own_telemetry_failing_offline_is_a_warning_not_a_failure() -> None:
    """A site server without internet fails TimescaleDB's usage report; the hub's data is fine."""
    telemetry = FailedJob(1, "policy_telemetry", None, 2, None)
    findings = check_jobs("2.28.3", [telemetry], "15.20", {"timescaledb.telemetry_level": "basic"})
    assert [f.level for f in findings] == ["warn"]
    assert "telemetry_level = off" in findings[0].advice
    # Telemetry off: the scheduler never runs the job again, its old failure is history.
    quiet = check_jobs("2.28.3", [telemetry], "15.20", {"timescaledb.telemetry_level": "off"})
    assert [(f.level, f.what) for f in quiet] == [("ok", "2.28.3: no background job failing")]


def test_a_job_without_a_free_worker_points_at_the_worker_pool() -> None:
    """'failed to start' is a starved pool, and the pool's own finding says how big to make it."""
    starved = FailedJob(
        1003,
        "policy_refresh_continuous_aggregate",
        "s.occupancy_5m",
        1,
        'failed to start job Job 1003 ("Refresh Continuous Aggregate Policy [1003]") failed to'
        " start",
    )
    pool = {
        "max_worker_processes": "8",
        "timescaledb.max_background_workers": "16",
        "max_parallel_workers": "8",
    }
    findings = check_jobs("2.28.3", [starved], "15.20", pool)
    assert [f.level for f in findings] == ["warn", "warn"]
    assert findings[0].what.startswith("max_worker_processes 8 is below")
    assert "max_worker_processes = 24" in findings[0].advice
    assert "no background worker was free" in findings[1].what


@pytest.mark.parametrize(
    ("pool", "level"),
    [("24", "ok"), ("32", "ok"), ("23", "warn")],
)
def test_the_worker_pool_must_hold_background_and_parallel_workers(pool: str, level: str) -> None:
    settings = {
        "max_worker_processes": pool,
        "timescaledb.max_background_workers": "16",
        "max_parallel_workers": "8",
    }
    assert [f.level for f in check_workers(settings)] == [level]
    # Values the server did not report (an older TimescaleDB) give no verdict rather than a guess.
    assert check_workers({"max_worker_processes": pool}) == []


def test_a_failure_whose_error_this_role_cannot_read_is_a_warning_saying_so() -> None:
    """job_errors hides other owners' errors: doctor says it cannot judge, not that it failed."""
    hidden = FailedJob(3, "policy_job_stat_history_retention", None, 2, None, error_visible=False)
    silent = FailedJob(1000, "policy_compression", "s.readings", 1, None)
    findings = check_jobs("2.28.3", [hidden, silent], "15.20")
    assert [f.level for f in findings] == ["warn", "fail"]
    assert "hidden from this role" in findings[0].what
    assert "database's owner" in findings[0].advice
    assert "no error recorded" in findings[1].what
