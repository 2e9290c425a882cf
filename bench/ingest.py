"""`carehub bench ingest`: QoS 1 telemetry at a fixed rate into hub subprocesses; prints figures.

The hub runs as a child process on the configured broker and database, in a schema and
under a topic root of its own (bench.harness), fed by the lean load generator of
bench.load. With `--hubs N`, N hub processes split the stream over one shared
subscription, as a city's do. What reached the database is counted in the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import statistics
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import psutil
import psycopg

from bench import harness
from bench.load import (
    CONNECTIONS,
    BenchDevice,
    StoredReadings,
    TelemetryLoad,
    bench_fleet,
    close_load,
    drain_readings,
    register_fleet,
    stored_readings,
    telemetry_load,
)
from hub.errors import HubError
from hub.settings import Settings

# Targets of SPEC-level capacity planning: one hub process, one district.
TARGET_RATE = 20_000.0
TARGET_RSS_BYTES = 400 * harness.MB
# An offered rate of exactly the target cannot be stored faster than offered; a window
# edge falls inside a batch, so the measured rate jitters by a batch either way.
RATE_TOLERANCE = 0.01
# More hubs than this on one machine measure the scheduler, not the hub.
MAX_HUBS = 16
# --find-max: the ramp's first offered rate, its growth per step, its ceiling, and each
# step's length. A step is held when nothing of it is lost and the hub kept up: it stored
# at least this share of what was offered over the step's steady window.
RAMP_START = 5_000.0
RAMP_GROWTH = 1.2
RAMP_CEILING = 80_000.0
RAMP_STEP_S = 20.0
RAMP_KEPT_UP = 0.97
RAMP_WARMUP_S = 5.0


def run_bench(
    settings: Settings,
    *,
    duration_s: float | None = None,
    devices: int = 10_000,
    rate: float | None = None,
    connections: int = CONNECTIONS,
    hubs: int = 1,
    keep: bool = False,
    find_max: bool = False,
    ceiling: float = RAMP_CEILING,
) -> int:
    """Run one benchmark and print its figures; 0 even when a target is missed.

    `find_max`: instead of one rate, a ramp from `rate` (default 5,000) that grows by a
    fifth every `duration_s` (default 20 s) until a step loses messages or falls behind,
    or the next would pass `ceiling`; it prints the highest rate held.
    """
    if duration_s is None:
        duration_s = RAMP_STEP_S if find_max else 60.0
    if rate is None:
        rate = RAMP_START if find_max else TARGET_RATE
    if duration_s <= 0 or devices < 1 or rate <= 0 or connections < 1 or hubs < 1:
        raise HubError("--duration, --devices, --rate, --connections and --hubs must be positive")
    if hubs > MAX_HUBS:
        raise HubError(f"--hubs {hubs}: at most {MAX_HUBS} hub processes on one machine")
    connections = min(connections, devices)
    if find_max:
        if hubs != 1:
            raise HubError("--find-max ramps one hub process; leave out --hubs")
        return asyncio.run(
            _bench_find_max(
                settings, duration_s, devices, ramp_rates(rate, ceiling), connections, keep=keep
            )
        )
    return asyncio.run(
        _bench_ingest(settings, duration_s, devices, rate, connections, hubs=hubs, keep=keep)
    )


async def _bench_ingest(
    settings: Settings,
    duration_s: float,
    device_count: int,
    rate: float,
    connections: int,
    *,
    hubs: int,
    keep: bool,
) -> int:
    run = harness.BenchRun.new(settings)
    shared = f", shared subscription $share/{run.root}/..." if hubs > 1 else ""
    headline = (
        f"carehub bench ingest: {duration_s:g} s, {device_count} devices over {connections} "
        f"connections, {rate:g} msgs/s offered (QoS 1 telemetry), "
        f"{hubs} hub process{'es' if hubs > 1 else ''}{shared}"
    )
    stage = _fleet_and_hubs(run, headline, device_count, hubs, keep=keep)
    async with stage as (conn, fleet, processes):
        await _load_and_report(
            conn,
            processes,
            run.settings,
            fleet=fleet,
            duration_s=duration_s,
            rate=rate,
            connections=connections,
        )
    return 0


@contextlib.asynccontextmanager
async def _fleet_and_hubs(
    run: harness.BenchRun, headline: str, device_count: int, hubs: int, *, keep: bool
) -> AsyncIterator[
    tuple[psycopg.AsyncConnection[Any], list[BenchDevice], tuple[harness.HubProcess, ...]]
]:
    """Print the run's headline and where it runs; then its schema with the fleet registered,
    and `hubs` hub processes started on it."""
    target = run.settings.mqtt
    print(
        f"{headline}\n  broker {target.host}:{target.port}, schema {run.schema}, "
        f"topic root {run.root}",
        flush=True,
    )
    async with run.database(keep=keep) as conn:
        fleet = bench_fleet(device_count)
        await register_fleet(conn, fleet)
        async with run.hubs(hubs) as processes:
            yield conn, fleet, processes


async def _load_and_report(
    conn: psycopg.AsyncConnection[Any],
    hubs: Sequence[harness.HubProcess],
    settings: Settings,
    *,
    fleet: Sequence[BenchDevice],
    duration_s: float,
    rate: float,
    connections: int,
) -> None:
    load, publishers = telemetry_load(settings, fleet, rate=rate, connections=connections)
    for publisher in publishers:
        await publisher.connect()
    loop = asyncio.get_running_loop()
    meter = harness.CpuMeter()
    samplers = [asyncio.create_task(hub.sample_forever()) for hub in hubs]
    readers = [asyncio.create_task(p.read_acks()) for p in publishers]
    # The steady window is cut on the database's clock, the one stored_at is read from.
    wall_started = await harness.db_now(conn) + timedelta(seconds=0.1)
    started = loop.time() + 0.1
    until = started + duration_s
    try:
        async with asyncio.TaskGroup() as group:
            for publisher in publishers:
                group.create_task(publisher.publish(started, until))
    except* (OSError, TimeoutError, HubError) as failed:
        load.errors.extend(repr(exc) for exc in failed.exceptions)
    stopped = loop.time()
    wall_stopped = await harness.db_now(conn)
    if load.errors:
        unconfirmed = load.sent - load.acked
    else:
        unconfirmed = sum([await publisher.settle() for publisher in publishers])
    meter.stop()
    load_samples = [[s for s in hub.samples if s.at <= time.monotonic()] for hub in hubs]
    rows, drain_s = await drain_readings(conn, load.acked)
    for sampler in samplers:
        sampler.cancel()
    for hub in hubs:
        hub.sample()
    await close_load(publishers, readers, load)
    for sampler in samplers:
        with contextlib.suppress(asyncio.CancelledError):
            await sampler
    counters = [await asyncio.to_thread(hub.metrics) for hub in hubs]

    warmup = min(5.0, duration_s * 0.1)
    window_from = wall_started + timedelta(seconds=warmup)
    window_s = max((wall_stopped - window_from).total_seconds(), 1e-3)
    stored = await stored_readings(conn, window_from, wall_stopped)
    _report(
        load=load,
        unconfirmed=unconfirmed,
        rate=rate,
        elapsed=stopped - started,
        rows=rows,
        drain_s=drain_s,
        stored=stored,
        window=(warmup, warmup + window_s),
        hubs=hubs,
        load_samples=load_samples,
        counters=counters,
        cpu=meter,
    )


def _report(
    *,
    load: TelemetryLoad,
    unconfirmed: int,
    rate: float,
    elapsed: float,
    rows: int,
    drain_s: float,
    stored: StoredReadings,
    window: tuple[float, float],
    hubs: Sequence[harness.HubProcess],
    load_samples: Sequence[list[harness.Sample]],
    counters: Sequence[dict[str, float]],
    cpu: harness.CpuMeter,
) -> None:
    cores = psutil.cpu_count() or 1
    published = load.acked
    lost = published - stored.distinct
    duplicated = stored.rows - stored.distinct
    window_s = window[1] - window[0]
    sustained = stored.window_rows / window_s
    offered = load.sent / elapsed if elapsed > 0 else 0.0
    per_second = stored.per_second
    peak_rss = max(hub.peak_rss() for hub in hubs)

    def ms(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.1f} ms"

    print(
        f"offered      {offered:,.1f} msgs/s for {elapsed:.1f} s: {load.sent:,} sent, "
        f"{published:,} PUBACKed, {unconfirmed:,} unconfirmed"
        + (f", {load.forgone:,.0f} forgone (broker window full)" if load.forgone >= 1 else "")
    )
    print(
        f"stored       {rows:,} rows; sustained {sustained:,.1f} msgs/s over the steady window "
        f"{window[0]:.1f}–{window[1]:.1f} s"
        + (
            f" (per second: min {min(per_second):,}, median {statistics.median(per_second):,.0f}, "
            f"max {max(per_second):,})"
            if per_second
            else ""
        )
    )
    print(f"drain        {drain_s:.1f} s after the last PUBACK")
    print(
        f"latency      publish→commit p50 {ms(stored.p50_ms)}, p99 {ms(stored.p99_ms)}, "
        f"max {ms(stored.max_ms)}"
    )
    for hub, samples, hub_counters in zip(hubs, load_samples, counters, strict=True):
        _report_hub(hub, samples, hub_counters, cores, width=len(hubs))
    print(f"lost         {lost:,}  (PUBACKed − distinct (device_id, seq) stored)")
    print(f"duplicated   {duplicated:,}  (rows − distinct (device_id, seq))")
    if len(hubs) > 1:
        received = [c.get("carehub_messages_received_total", 0.0) for c in counters]
        total = sum(received) or 1.0
        print(
            "split        "
            + ", ".join(
                f"{hub.name} {share / total:.0%}" for hub, share in zip(hubs, received, strict=True)
            )
            + " of the messages received (the broker's shared-subscription strategy)"
        )
    print(
        f"machine      {100 * cpu.machine_busy():.0f} % busy of {cores} cores during the load; "
        f"generator {100 * cpu.own_cpu_s() / max(elapsed, 1e-6):.0f} % of one core"
    )
    for error in load.errors:
        print(f"generator    error: {error}")

    below = " (offered below the target)" if rate < TARGET_RATE else ""
    harness.print_verdict(
        [
            (
                sustained >= TARGET_RATE * (1 - RATE_TOLERANCE),
                f"sustained {sustained:,.0f} ≥ {TARGET_RATE:,.0f} msgs/s"
                f" (±{RATE_TOLERANCE:.0%}){below}",
            ),
            (lost == 0 and unconfirmed == 0 and not load.errors, f"lost {lost:,} = 0"),
            (duplicated == 0, f"duplicated {duplicated:,} = 0"),
            (
                peak_rss <= TARGET_RSS_BYTES,
                f"RSS {peak_rss / harness.MB:.0f} ≤ {TARGET_RSS_BYTES / harness.MB:.0f} MB",
            ),
        ]
    )
    for hub in hubs:
        hub.report_early_exit()


def _report_hub(
    hub: harness.HubProcess,
    samples: list[harness.Sample],
    counters: dict[str, float],
    cores: int,
    *,
    width: int,
) -> None:
    """One hub process's CPU, memory and counters."""
    label = "hub" if width == 1 else hub.name
    cpu_pct = harness.cpu_percent(samples)
    cpu_peak = max(
        (harness.cpu_percent(pair) for pair in itertools.pairwise(samples)),
        default=0.0,
    )
    print(
        f"{label + ' CPU':<13}{cpu_pct:.1f} % of one core on average ({cpu_pct / cores:.1f} % "
        f"of {cores} cores), peak {cpu_peak:.1f} % over {harness.SAMPLE_S:g} s"
    )
    print(
        f"{label + ' RSS':<13}peak {hub.peak_rss() / harness.MB:.1f} MB (VmHWM), "
        f"{(hub.samples[-1].rss if hub.samples else 0) / harness.MB:.1f} MB at the end"
    )
    batches = counters.get("carehub_batches_total", 0.0)
    received = counters.get("carehub_messages_received_total", 0.0)
    print(
        f"{label + ' counters':<12} received {received:,.0f}, batches {batches:,.0f} "
        f"(avg {received / batches if batches else 0:,.0f} msgs), "
        f"rejected {harness.rejected_total(counters):,.0f}, "
        f"spooled {counters.get('carehub_spooled_messages_total', 0.0):,.0f}, "
        f"duplicates {counters.get('carehub_messages_duplicate_total', 0.0):,.0f}"
    )


# -- --find-max: the highest rate held -----------------------------------------------------


@dataclass(frozen=True, slots=True)
class RampStep:
    """One step of the ramp: what was offered, what was stored, what was lost."""

    asked: float
    offered: float
    stored: float
    lost: int
    forgone: float
    p99_ms: float | None

    @property
    def held(self) -> bool:
        """Nothing lost, the offer made in full, and the hub kept up with it."""
        return self.lost == 0 and self.forgone < 1 and self.stored >= self.offered * RAMP_KEPT_UP


def ramp_rates(start: float, ceiling: float = RAMP_CEILING) -> list[float]:
    """The offered rates of the ramp: from `start`, a fifth more each step, to the ceiling."""
    rates = [start]
    while rates[-1] * RAMP_GROWTH <= ceiling:
        # Three significant figures: rates that read well at any scale.
        rates.append(float(f"{rates[-1] * RAMP_GROWTH:.3g}"))
    return rates


async def _bench_find_max(
    settings: Settings,
    step_s: float,
    device_count: int,
    rates: Sequence[float],
    connections: int,
    *,
    keep: bool,
) -> int:
    run = harness.BenchRun.new(settings)
    headline = (
        f"carehub bench ingest --find-max: {device_count} devices over {connections} "
        f"connections, QoS 1 telemetry offered at {rates[0]:,.0f} msgs/s, then a fifth more "
        f"every {step_s:g} s until a step loses a message or falls behind"
    )
    stage = _fleet_and_hubs(run, headline, device_count, 1, keep=keep)
    async with stage as (conn, fleet, (hub,)):
        steps = await _ramp(
            conn,
            hub,
            run.settings,
            fleet=fleet,
            rates=rates,
            step_s=step_s,
            connections=connections,
        )
        _report_ramp(steps, hub)
    return 0


async def _ramp(
    conn: psycopg.AsyncConnection[Any],
    hub: harness.HubProcess,
    settings: Settings,
    *,
    fleet: Sequence[BenchDevice],
    rates: Sequence[float],
    step_s: float,
    connections: int,
) -> list[RampStep]:
    """Offer each rate in turn on the same connections; stop after the first step not held.

    Between steps the load pauses until the hub has stored all that was PUBACKed, so each
    step starts level and its losses are its own.
    """
    load, publishers = telemetry_load(settings, fleet, rate=rates[0], connections=connections)
    for publisher in publishers:
        await publisher.connect()
    readers = [asyncio.create_task(p.read_acks()) for p in publishers]
    sampler = asyncio.create_task(hub.sample_forever())
    loop = asyncio.get_running_loop()
    steps: list[RampStep] = []
    lost_before = 0
    try:
        # A warm-up first, not counted as a step: the hub's first seconds (its pool filling,
        # its caches cold) would otherwise fail the first step at any rate.
        for publisher in publishers:
            publisher.set_rate(rates[0] / 2 * len(publisher.device_ids) / len(fleet))
        started = loop.time()
        async with asyncio.TaskGroup() as group:
            for publisher in publishers:
                group.create_task(publisher.publish(started, started + RAMP_WARMUP_S))
        await drain_readings(conn, load.acked)
        for rate in rates:
            for publisher in publishers:
                publisher.set_rate(rate * len(publisher.device_ids) / len(fleet))
            sent_before, forgone_before = load.sent, load.forgone
            wall_started = await harness.db_now(conn) + timedelta(seconds=0.1)
            started = loop.time() + 0.1
            async with asyncio.TaskGroup() as group:
                for publisher in publishers:
                    group.create_task(publisher.publish(started, started + step_s))
            elapsed = loop.time() - started
            wall_stopped = await harness.db_now(conn)
            unconfirmed = sum([await publisher.settle() for publisher in publishers])
            await drain_readings(conn, load.acked)
            warmup = min(3.0, step_s * 0.15)
            window_from = wall_started + timedelta(seconds=warmup)
            window_s = max((wall_stopped - window_from).total_seconds(), 1e-3)
            stored = await stored_readings(conn, window_from, wall_stopped)
            lost_total = load.acked - stored.distinct + unconfirmed
            step = RampStep(
                asked=rate,
                offered=(load.sent - sent_before) / elapsed,
                stored=stored.window_rows / window_s,
                lost=lost_total - lost_before,
                forgone=load.forgone - forgone_before,
                p99_ms=stored.p99_ms,
            )
            lost_before = lost_total
            steps.append(step)
            print(
                f"step         {rate:>8,.0f} asked  {step.offered:>8,.0f} offered  "
                f"{step.stored:>8,.0f} stored msgs/s  lost {step.lost:,}  "
                f"p99 {_ms(step.p99_ms)}  {'held' if step.held else 'NOT held'}",
                flush=True,
            )
            if not step.held:
                break
    except* (OSError, TimeoutError, HubError) as failed:
        load.errors.extend(repr(exc) for exc in failed.exceptions)
    finally:
        sampler.cancel()
        await close_load(publishers, readers, load)
        with contextlib.suppress(asyncio.CancelledError):
            await sampler
    for error in load.errors:
        print(f"generator    error: {error}")
    return steps


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:,.0f} ms"


def _report_ramp(steps: Sequence[RampStep], hub: harness.HubProcess) -> None:
    held = [step for step in steps if step.held]
    print(f"hub RSS      peak {hub.peak_rss() / harness.MB:.1f} MB (VmHWM)")
    if not held:
        print("find-max     no step held: start lower with --rate")
    else:
        best = held[-1]
        after = steps[len(held)] if len(held) < len(steps) else None
        why = (
            "the ramp's ceiling was reached"
            if after is None
            else f"the next step, {after.asked:,.0f} asked, "
            + (
                f"lost {after.lost:,}"
                if after.lost
                else "fell short of its offer"
                if after.forgone >= 1
                else f"stored only {after.stored:,.0f} msgs/s"
            )
        )
        print(
            f"find-max     highest rate held: {best.stored:,.0f} msgs/s stored of "
            f"{best.offered:,.0f} offered, nothing lost ({why})"
        )
    hub.report_early_exit()
