"""`carehub demo`: the whole product on one machine, with nothing installed beforehand.

One process tree: an in-process MQTT broker (amqtt), an embedded PostgreSQL (pgserver,
over a unix socket), the hub with its HTTP server, and a simulated district publishing
over real MQTT connections. Ports are chosen free, so a Mosquitto or PostgreSQL the
machine already runs is never touched. Ctrl-C (or SIGTERM) stops everything in order.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import socket
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from hub.cli.commands import Subcommands
from hub.cli.simulate import simulator_broker
from hub.errors import AuthError, HubError
from hub.settings import Settings

if TYPE_CHECKING:
    # Only named in signatures: the stack itself is imported when the demo runs, so that
    # every other command (and `carehub --help`) starts without the web server and the
    # embedded services.
    import httpx
    import uvicorn

    from hub.acl import Grant
    from hub.cli.demo_history import HistoryOutcome
    from hub.credentials import DeviceAuthority
    from hub.embedded.broker import EmbeddedBroker
    from hub.embedded.postgres import EmbeddedPostgres
    from simulators import District, Facility

logger = logging.getLogger(__name__)

READY_TIMEOUT_S = 60.0
# Each stage gets this long to stop in order before it is abandoned, so Ctrl-C always ends
# the demo: simulators say goodbye (one MQTT timeout), the hub drains its last batch.
SIMULATORS_STOP_S = 15.0
HUB_STOP_S = 20.0
HUB_FORCE_STOP_S = 5.0
# The simulated staff's requests go to the hub on this machine.
STAFF_TIMEOUT_S = 10.0
# Demo accounts: everyone shares one known password (this is a demo on one machine).
DEMO_PASSWORD = "carehub-demo"  # noqa: S105 - printed in the banner on purpose
# Facilities of the first district that get a demo manager and a demo staff account; each
# other district's first facility gets them too: every district has a manager to sign in as.
DEMO_FACILITY_ACCOUNTS = 3
# A facility loses power about this often (real seconds, on average): its devices all drop
# at once, the flood the screen collapses into one line.
FLOOD_MEAN_S = 20 * 60.0


def duty_accounts(district: District) -> list[tuple[str, str, str | None, str | None, str]]:
    """The simulated staff on duty at each facility, who answer its alerts through the API."""
    from simulators.response import duty_username

    return [
        (duty_username(f.id), "staff", f.id, None, f"{f.name} 值班护理员")
        for f in district.facilities
    ]


def regulator_accounts(district: District) -> list[tuple[str, str]]:
    """A regulator of each district the demo covers: (username, district).

    The first district's is `regulator`, as it always was; each other's is named after its
    facilities' id prefix (`regulator-oh` for 瓯海区).
    """
    from simulators import district_prefix

    names = district.districts
    return [
        ("regulator" if index == 0 else f"regulator-{district_prefix(name)}", name)
        for index, name in enumerate(names)
    ]


def facility_account_homes(district: District) -> list[Facility]:
    """The facilities with a demo manager and staff account, the first district's first."""
    names = district.districts
    homes = [f for f in district.facilities if f.district == names[0]][:DEMO_FACILITY_ACCOUNTS]
    for name in names[1:]:
        homes += [f for f in district.facilities if f.district == name][:1]
    return homes


async def ensure_demo_accounts(settings: Settings, district: District) -> list[tuple[str, str]]:
    """Demo accounts of every role, made once (kept on restart): (username, what it sees).

    The simulated staff's accounts are made too, but not listed: nobody signs in as them.
    """
    accounts: list[tuple[str, str, str | None, str | None, str]] = [
        ("admin", "admin", None, None, "管理员"),
    ]
    accounts += [
        (username, "regulator", None, name, f"{name} 监管员")
        for username, name in regulator_accounts(district)
    ]
    for facility in facility_account_homes(district):
        accounts.append(
            (f"manager-{facility.id}", "manager", facility.id, None, f"{facility.name} 院长")
        )
        accounts.append(
            (f"staff-{facility.id}", "staff", facility.id, None, f"{facility.name} 护理员")
        )
    from hub.auth import add_user
    from hub.storage.accounts import select_users
    from hub.storage.pool import connect

    async with await connect(settings) as conn:
        existing = {user.username for user in await select_users(conn)}
        for username, role, facility_id, district_name, display_name in [
            *accounts,
            *duty_accounts(district),
        ]:
            if username in existing:  # made by an earlier start; hashing again costs time
                continue
            try:
                await add_user(
                    conn,
                    username,
                    role,
                    DEMO_PASSWORD,
                    facility_id=facility_id,
                    district=district_name,
                    display_name=display_name,
                )
            except AuthError as exc:
                if exc.code != "conflict":  # else made by an earlier start of the demo
                    raise
    return [
        (username, f"{role} of {facility_id or district_name or 'everything'}")
        for username, role, facility_id, district_name, _ in accounts
    ]


def _port_is_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


class _Gate:
    """The embedded broker's gate, answered by the authority once the database is up."""

    def __init__(self) -> None:
        self.authority: DeviceAuthority | None = None

    async def __call__(
        self, username: str | None, password: str | None, client_id: str | None
    ) -> Grant | None:
        if self.authority is None:
            return None  # nobody before the hub's store can answer
        return await self.authority.authenticate(username, password, client_id)


async def _drop(broker: EmbeddedBroker, device_id: str) -> None:
    if await broker.disconnect(device_id):
        logger.info("device %s disconnected: its credentials changed", device_id)


async def _stop_gate(kicks: asyncio.Task[None], authority: DeviceAuthority) -> None:
    kicks.cancel()
    await asyncio.gather(kicks, return_exceptions=True)
    await authority.close()


def _demo_settings(
    settings: Settings,
    broker: EmbeddedBroker,
    postgres: EmbeddedPostgres,
    data_dir: Path,
    hub_password: str,
) -> Settings:
    """The configured settings, pointed at the embedded services, as the hub's account."""
    from hub.embedded.broker import free_port

    port = settings.http_port
    if port == 0 or not _port_is_free(settings.http_host, port):
        port = free_port(settings.http_host)
    return settings.model_copy(
        update={
            "mqtt_url": f"mqtt://carehub-hub:{hub_password}@{broker.url.removeprefix('mqtt://')}",
            # amqtt speaks MQTT 3.1.1 only and has no shared subscriptions.
            "mqtt_protocol": 311,
            "mqtt_shared_group": None,
            "database_url": postgres.url,
            "spool_dir": data_dir / "spool",
            "http_port": port,
        }
    )


async def _wait_until_serving(server: uvicorn.Server, serving: asyncio.Task[None]) -> None:
    async with asyncio.timeout(READY_TIMEOUT_S):
        while not server.started:
            if serving.done():
                serving.result()  # re-raise why it stopped
                raise HubError("the HTTP server stopped before it started")
            await asyncio.sleep(0.05)


def _report_stuck(stage: str, waited_s: float) -> None:
    """Say which stage did not stop in time, with where every task was waiting."""
    print(
        f"carehub demo: {stage} did not stop within {waited_s:g} s; leaving it behind",
        file=sys.stderr,
        flush=True,
    )
    for task in asyncio.all_tasks():
        if not task.done() and task is not asyncio.current_task():
            task.print_stack(limit=8, file=sys.stderr)


async def _stop_simulators(simulation: asyncio.Task[None], what: str = "the simulators") -> None:
    simulation.cancel()
    done, _ = await asyncio.wait({simulation}, timeout=SIMULATORS_STOP_S)
    if not done:
        _report_stuck(what, SIMULATORS_STOP_S)


def _staff_on_duty(base: str, district: District) -> tuple[httpx.AsyncClient, asyncio.Task[None]]:
    """Start the simulated staff answering alerts through the hub's API at `base`."""
    import httpx

    from simulators.staff import StaffDesk

    client = httpx.AsyncClient(base_url=base, timeout=STAFF_TIMEOUT_S)
    desk = StaffDesk(
        client,
        watcher=("admin", DEMO_PASSWORD),
        staff={
            facility_id: (username, DEMO_PASSWORD)
            for username, _, facility_id, _, _ in duty_accounts(district)
            if facility_id is not None
        },
    )
    return client, asyncio.create_task(desk.run(), name="carehub-staff")


async def _stop_hub(server: uvicorn.Server, serving: asyncio.Task[None]) -> None:
    server.should_exit = True
    done, _ = await asyncio.wait({serving}, timeout=HUB_STOP_S)
    if done:
        return
    _report_stuck("the hub", HUB_STOP_S)
    server.force_exit = True
    done, _ = await asyncio.wait({serving}, timeout=HUB_FORCE_STOP_S)
    if not done:
        serving.cancel()
        await asyncio.wait({serving}, timeout=HUB_FORCE_STOP_S)


async def run_demo(
    settings: Settings, *, data_dir: Path, facilities: int, time_scale: float
) -> int:
    """Run the demo stack until Ctrl-C or SIGTERM."""
    import uvicorn

    from hub.api.dashboards import dashboard_dir
    from hub.app import SERVER_OPTIONS, create_app
    from hub.credentials import DeviceAuthority, new_secret
    from hub.embedded.broker import EmbeddedBroker
    from hub.embedded.postgres import EmbeddedPostgres
    from simulators import build_demo_district, run_simulation

    if not 0 < facilities <= 999:
        raise HubError("--facilities must be between 1 and 999")
    data_dir = await asyncio.to_thread(lambda: data_dir.expanduser().resolve())
    # pgserver logs every initdb and pg_ctl line at INFO; the demo prints what matters.
    logging.getLogger("pgserver").setLevel(logging.WARNING)
    # The simulated staff poll the API every second; each request is not news.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)

    print(
        f"carehub demo: starting in {data_dir} (first start runs initdb; a few seconds)", flush=True
    )
    postgres = EmbeddedPostgres(data_dir / "pgdata", database="carehub")
    # Authentication on (SPEC §7): the hub has an account of its own, made for this run,
    # and every simulated device its own credentials, checked against the hub's store.
    gate = _Gate()
    hub_password = new_secret()
    async with EmbeddedBroker(gate=gate) as broker, postgres:
        demo = _demo_settings(settings, broker, postgres, data_dir, hub_password)
        authority = DeviceAuthority(demo)
        gate.authority = authority
        district = build_demo_district(facilities, seed=7)
        logins, history, passwords = await _prepare(demo, district, data_dir)
        # A revoked or rotated device is dropped at once (`carehub devices revoke` too).
        kicks = asyncio.create_task(
            authority.watch(lambda device_id: _drop(broker, device_id)), name="carehub-kicks"
        )

        config = uvicorn.Config(
            create_app(demo, own_process=True),
            host=demo.http_host,
            port=demo.http_port,
            log_level="warning",
            lifespan="on",
            **SERVER_OPTIONS,
        )
        server = uvicorn.Server(config)
        # Signals are ours: the stack stops in order, the simulators before the hub.
        server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign,assignment]
        serving = asyncio.create_task(server.serve(), name="carehub-http")
        await _wait_until_serving(server, serving)
        simulation = asyncio.create_task(
            run_simulation(
                district,
                **simulator_broker(demo),
                time_scale=time_scale,
                flood_mean_s=FLOOD_MEAN_S,
                passwords=passwords,
            ),
            name="carehub-simulators",
        )
        base = f"http://{demo.http_host}:{demo.http_port}"
        staff_client, staff = _staff_on_duty(base, district)
        built = await asyncio.to_thread((dashboard_dir(demo) / "index.html").is_file)
        _print_banner(
            demo,
            base=base,
            built=built,
            broker_url=broker.url,
            postgres_url=postgres.url,
            data_dir=data_dir,
            district=district,
            time_scale=time_scale,
            history=history.summary(),
            logins=logins,
        )
        stopped = asyncio.create_task(stop.wait())
        await asyncio.wait(
            {stopped, serving, simulation, staff}, return_when=asyncio.FIRST_COMPLETED
        )
        print("carehub demo: stopping", flush=True)
        await _stop_simulators(simulation)
        await _stop_simulators(staff, "the simulated staff")
        await staff_client.aclose()
        await _stop_hub(server, serving)
        await _stop_gate(kicks, authority)
        stopped.cancel()
        if serving.done() and not serving.cancelled() and serving.exception() is not None:
            serving.result()  # the hub failed on its own: say why, after stopping the rest
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.remove_signal_handler(signum)
    print("carehub demo: stopped", flush=True)
    return 0


async def _prepare(
    demo: Settings, district: District, data_dir: Path
) -> tuple[list[tuple[str, str]], HistoryOutcome, dict[str, str]]:
    """Register the district, its accounts, its month of history and its devices' credentials."""
    from hub.cli.demo_history import ensure_history
    from hub.cli.simulate import issue_district_credentials, register_district

    await register_district(demo, district, data_dir / "district")
    logins = await ensure_demo_accounts(demo, district)
    print("carehub demo: the district's month of history (written on the first start)", flush=True)
    history = await ensure_history(demo, district)
    passwords = await issue_district_credentials(demo, district)
    return logins, history, passwords


def _per_district(district: District) -> str:
    """How many facilities stand in each district: `12 in 鹿城区, 8 in 瓯海区`."""
    return ", ".join(
        f"{len(district.part(name).facilities)} in {name}" for name in district.districts
    )


def _print_banner(
    demo: Settings,
    *,
    base: str,
    built: bool,
    broker_url: str,
    postgres_url: str,
    data_dir: Path,
    district: District,
    time_scale: float,
    history: str,
    logins: Sequence[tuple[str, str]],
) -> None:
    """Where everything of the running demo is, and how to sign in."""
    dashboards_note = "" if built else "  (not built yet: run `make setup`)"
    print(
        "\n".join(
            [
                "carehub demo is running:",
                f"  regulator screen {base}/{dashboards_note}",
                f"  staff console    {base}/console/",
                f"  HTTP API         {base}/api/v1/docs",
                f"  health           {base}/readyz   metrics {base}/metrics",
                f"  MQTT broker      {broker_url}  "
                f"(MQTT 3.1.1, topics {demo.topic_root}/v1/...; authentication on:"
                " `carehub devices credentials ID` issues a device's)",
                f"  PostgreSQL       {postgres_url}",
                f"  data             {data_dir}",
                f"  simulated        {len(district.facilities)} facilities "
                f"({_per_district(district)}), "
                f"{len(district.devices)} devices (time x{time_scale:g}), "
                "staff on duty answering through the API",
                f"  history          {history}",
                f"  demo logins      (password for all: {DEMO_PASSWORD})",
                *(f"    {name:22} {what}" for name, what in logins),
                "Press Ctrl-C to stop.",
            ]
        ),
        flush=True,
    )


def _cmd_demo(settings: Settings, args: argparse.Namespace) -> int:
    return asyncio.run(
        run_demo(
            settings, data_dir=args.data_dir, facilities=args.facilities, time_scale=args.time_scale
        )
    )


def add_demo_command(sub: Subcommands) -> None:
    """Register `carehub demo` on the subcommands."""
    demo = sub.add_parser("demo", help="embedded broker + PostgreSQL + hub + simulated district")
    demo.add_argument(
        "--data-dir",
        type=Path,
        default=Path(".carehub"),
        help="where the embedded database and spool live (default ./.carehub)",
    )
    demo.add_argument("--facilities", type=int, default=20)
    demo.add_argument(
        "--time-scale",
        type=float,
        default=30.0,
        help="simulated seconds per real second for heartbeats (default 30)",
    )
    demo.set_defaults(handler=_cmd_demo)
