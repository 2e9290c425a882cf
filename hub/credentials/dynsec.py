"""Mosquitto 2's dynamic security, kept in step with the hub's device credentials.

`write_site` writes a complete `mosquitto.conf` and its initial security file (an admin
account for the hub, the hub's own account); `MosquittoAccounts` then creates, rotates
and deletes device accounts through `$CONTROL/dynamic-security/v1`, and `sync` reconciles
the broker with the registry. Dynamic security in Mosquitto 2.0 has no `%c` or `%u`
substitution in ACLs, so each device has a role of its own, `carehub-device-{id}`, with
exactly the topics of its grant (hub/acl.py).
"""

from __future__ import annotations

import asyncio
import base64
import getpass
import hashlib
import json
import logging
import secrets
import ssl
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import aiomqtt

from devices import mqtt
from devices.mqtt import MqttTarget
from hub.acl import Grant, device_grant, hub_grant
from hub.credentials import new_secret
from hub.errors import BrokerAdminError, StorageError, raise_if_cancelled
from hub.settings import Settings
from hub.storage.credentials import DeviceAccount, active_accounts
from hub.storage.pool import connect

logger = logging.getLogger(__name__)

CONTROL_TOPIC = "$CONTROL/dynamic-security/v1"
RESPONSE_TOPIC = f"{CONTROL_TOPIC}/response"
ADMIN_ROLE = "carehub-admin"
HUB_ROLE = "carehub-hub"
DEVICE_ROLE_PREFIX = "carehub-device-"
ADMIN_USERNAME = "carehub-admin"
HUB_USERNAME = "carehub-hub"
PLUGIN_PATHS = (
    "/usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so",
    "/usr/lib/aarch64-linux-gnu/mosquitto_dynamic_security.so",
    "/usr/lib/mosquitto_dynamic_security.so",
    "/usr/local/lib/mosquitto_dynamic_security.so",
)
# Mosquitto 2.0's own password hashing (mosquitto_ctrl dynsec init writes the same).
_MOSQUITTO_SALT_BYTES = 12
_MOSQUITTO_ITERATIONS = 101
# Commands per control message: Mosquitto answers a message's commands in one response,
# and a district of thousands of devices must not become one huge packet.
COMMANDS_PER_MESSAGE = 100
ANSWER_TIMEOUT_S = 10.0


def role_name(device_id: str) -> str:
    """The dynamic-security role of one device."""
    return f"{DEVICE_ROLE_PREFIX}{device_id}"


def role_acls(grant: Grant, *, literal: bool) -> list[dict[str, Any]]:
    """A grant as dynamic-security ACLs; `literal` subscriptions for a device's exact topics."""
    subscribe = "subscribeLiteral" if literal else "subscribePattern"
    acls = [{"acltype": "publishClientSend", "topic": t, "allow": True} for t in grant.publish]
    for topic_filter in grant.subscribe:
        acls.append({"acltype": subscribe, "topic": topic_filter, "allow": True})
        acls.append({"acltype": "publishClientReceive", "topic": topic_filter, "allow": True})
    return acls


def _hub_acls(root: str) -> list[dict[str, Any]]:
    grant = hub_grant(HUB_USERNAME, root)
    acls = role_acls(grant, literal=False)
    # The hub may split the stream with other hub processes ($share/{group}/...).
    acls += [
        {"acltype": "subscribePattern", "topic": f"$share/+/{topic_filter}", "allow": True}
        for topic_filter in grant.subscribe
        if not topic_filter.startswith("$")
    ]
    return acls


def mosquitto_password(password: str) -> dict[str, Any]:
    """A password as Mosquitto 2.0 keeps it in its security file (PBKDF2-SHA512)."""
    salt = secrets.token_bytes(_MOSQUITTO_SALT_BYTES)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, _MOSQUITTO_ITERATIONS)
    return {
        "password": base64.b64encode(digest).decode(),
        "salt": base64.b64encode(salt).decode(),
        "iterations": _MOSQUITTO_ITERATIONS,
    }


@dataclass(frozen=True, slots=True)
class SiteBroker:
    """What `write_site` wrote, and the settings that reach it."""

    config: Path
    security_file: Path
    mqtt_url: str
    admin_url: str


def find_plugin() -> str | None:
    """Where this machine's mosquitto_dynamic_security.so is, if anywhere we know."""
    return next((path for path in PLUGIN_PATHS if Path(path).is_file()), None)


def write_site(
    directory: Path,
    *,
    port: int = 1883,
    root: str = "carehub",
    plugin: str | None = None,
    bind: str | None = None,
) -> SiteBroker:
    """Write DIR/mosquitto.conf and DIR/dynamic-security.json for a site's broker.

    Refuses to overwrite an existing security file: it holds the site's device accounts.
    """
    if not 1 <= port <= 65535:
        raise BrokerAdminError(f"--port {port} is not a TCP port (1..65535)")
    plugin = plugin or find_plugin()
    if plugin is None:
        raise BrokerAdminError(
            "mosquitto_dynamic_security.so not found (apt-get install mosquitto); "
            "name it with --plugin"
        )
    directory = directory.resolve()
    security = directory / "dynamic-security.json"
    if security.exists():
        raise BrokerAdminError(
            f"{security} exists and holds the site's accounts; choose another --dir"
            " (or remove it to start over: every device then needs new credentials)"
        )
    try:
        (directory / "data").mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BrokerAdminError(f"cannot make {directory / 'data'}: {exc.strerror or exc}") from exc
    admin_password, hub_password = new_secret(), new_secret()
    admin_acls = [
        {"acltype": kind, "topic": f"{CONTROL_TOPIC}/#", "allow": True}
        for kind in ("publishClientSend", "publishClientReceive", "subscribePattern")
    ]
    document = {
        "clients": [
            {
                "username": ADMIN_USERNAME,
                "textName": "carehub: keeps device accounts in step",
                **mosquitto_password(admin_password),
                "roles": [{"rolename": ADMIN_ROLE}],
            },
            {
                "username": HUB_USERNAME,
                "textName": "carehub hub",
                **mosquitto_password(hub_password),
                "roles": [{"rolename": HUB_ROLE}],
            },
        ],
        "roles": [
            {"rolename": ADMIN_ROLE, "acls": admin_acls},
            {"rolename": HUB_ROLE, "acls": _hub_acls(root)},
        ],
        "defaultACLAccess": {
            "publishClientSend": False,
            "publishClientReceive": True,
            "subscribe": False,
            "unsubscribe": True,
        },
    }
    security.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    security.chmod(0o600)
    listener = f"listener {port} {bind}" if bind else f"listener {port}"
    config = directory / "mosquitto.conf"
    config.write_text(
        _CONFIG.format(
            config=config,
            user=getpass.getuser(),
            listener=listener,
            plugin=plugin,
            security=security,
            data=directory / "data",
        ),
        encoding="utf-8",
    )
    host = bind or "127.0.0.1"
    return SiteBroker(
        config=config,
        security_file=security,
        mqtt_url=f"mqtt://{HUB_USERNAME}:{hub_password}@{host}:{port}",
        admin_url=f"mqtt://{ADMIN_USERNAME}:{admin_password}@{host}:{port}",
    )


_CONFIG = """\
# A carehub site broker, written by `carehub broker setup mosquitto`. Run it with
#   mosquitto -c {config}
{listener}
protocol mqtt
# Started as root, Mosquitto switches to this user: the one who owns these files (the
# security file is readable by its owner only).
user {user}

# Every client authenticates: the hub with its own account, each device with the
# credentials `carehub devices credentials` issued it. Nobody connects anonymously.
per_listener_settings false
allow_anonymous false
plugin {plugin}
plugin_opt_config_file {security}

# The hub keeps a persistent session: what arrives while it restarts is queued for it
# and redelivered after it reconnects (it acknowledges only after the database commit).
persistence true
persistence_location {data}/
autosave_interval 60

# Room for a district's burst while the hub is away: the default (1000 per session)
# would drop a district's telemetry within a second or two.
max_queued_messages 200000
max_queued_bytes 0
# MQTT 3.1.1 clients get this many unacknowledged QoS 1 messages at once; the hub speaks
# MQTT 5 and announces its own Receive Maximum, which Mosquitto honours instead.
max_inflight_messages 1000

# Every packet leaves at once: with Nagle's algorithm an ack can wait up to 40 ms
# behind the device's delayed TCP acknowledgement of the packet before it.
set_tcp_nodelay true

# 16 KiB is the contract's payload limit; a little more lets the hub answer `too_large`.
message_size_limit 65536

log_dest stdout
log_type error
log_type warning
log_type notice
connection_messages true
"""


@dataclass
class SyncReport:
    """What `sync` changed at the broker, and what it could not."""

    created_roles: list[str] = field(default_factory=list)
    updated_roles: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    # Devices in force at the hub that the broker has no account for: the hub keeps only
    # hashes, so it cannot recreate them; a rotation issues and pushes a new password.
    missing: list[str] = field(default_factory=list)
    in_step: int = 0


class DynsecAdmin:
    """A connection as the dynamic-security admin: commands out, their answers back."""

    def __init__(self, target: MqttTarget, *, client_id: str | None = None) -> None:
        self._target = target
        self._client_id = client_id or f"carehub-admin-{uuid.uuid4().hex[:8]}"
        self._client: aiomqtt.Client | None = None
        self._answers: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._reader: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Self:
        client = mqtt.Client(
            self._target.host,
            self._target.port,
            username=self._target.username,
            password=self._target.password,
            identifier=self._client_id,
            tls_context=ssl.create_default_context() if self._target.tls else None,
        )
        try:
            await client.__aenter__()
            await client.subscribe(RESPONSE_TOPIC, qos=1)
        except aiomqtt.MqttError as exc:
            raise BrokerAdminError(
                f"cannot reach the broker's dynamic security as"
                f" {self._target.username!r} at {self._target.host}:{self._target.port}: {exc}"
            ) from exc
        self._client = client
        self._reader = asyncio.create_task(self._read(client))
        return self

    async def __aexit__(self, *_exc_info: object) -> None:
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)
        client, self._client = self._client, None
        if client is not None:
            try:
                await client.__aexit__(None, None, None)
            except aiomqtt.MqttError:
                logger.debug("dynamic-security admin: disconnect failed", exc_info=True)

    async def _read(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            try:
                body = json.loads(bytes(message.payload))
            except ValueError:
                continue
            for answer in body.get("responses", []):
                waiter = self._answers.pop(str(answer.get("correlationData", "")), None)
                if waiter is not None and not waiter.done():
                    waiter.set_result(answer)

    async def run(self, commands: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        """Send commands and return their answers in order (each may carry an `error`)."""
        if self._client is None:
            raise BrokerAdminError("the dynamic-security admin is not connected")
        answers: list[dict[str, Any]] = []
        for start in range(0, len(commands), COMMANDS_PER_MESSAGE):
            batch = []
            waiters = []
            for command in commands[start : start + COMMANDS_PER_MESSAGE]:
                tag = uuid.uuid4().hex
                waiter: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
                self._answers[tag] = waiter
                waiters.append(waiter)
                batch.append({**command, "correlationData": tag})
            try:
                await self._client.publish(
                    CONTROL_TOPIC, json.dumps({"commands": batch}).encode(), qos=1
                )
                async with asyncio.timeout(ANSWER_TIMEOUT_S):
                    answers += [await waiter for waiter in waiters]
            except (aiomqtt.MqttError, TimeoutError) as exc:
                raise BrokerAdminError(
                    f"the broker did not answer {batch[0]['command']}: {exc or 'timeout'}"
                    " (is the account the dynamic-security admin?)"
                ) from exc
        return answers


def _failed(answer: dict[str, Any], *tolerated: str) -> str | None:
    error = answer.get("error")
    if not error or any(word in str(error) for word in tolerated):
        return None
    return str(error)


def _device_commands(root: str, account: DeviceAccount, password: str) -> list[dict[str, Any]]:
    role = role_name(account.device_id)
    acls = role_acls(device_grant(root, account.facility_id, account.device_id), literal=True)
    return [
        {"command": "deleteClient", "username": account.device_id},
        {"command": "deleteRole", "rolename": role},
        {"command": "createRole", "rolename": role, "acls": acls},
        {
            "command": "createClient",
            "username": account.device_id,
            "clientid": account.device_id,
            "password": password,
            "roles": [{"rolename": role}],
        },
    ]


class MosquittoAccounts:
    """Device accounts at a Mosquitto with dynamic security (a credentials.BrokerAccounts)."""

    def __init__(self, target: MqttTarget, root: str) -> None:
        self._target = target
        self._root = root

    async def issued(self, account: DeviceAccount, password: str) -> None:
        """Create (or replace) the device's client and role; a connected device is dropped."""
        async with DynsecAdmin(self._target) as admin:
            answers = await admin.run(_device_commands(self._root, account, password))
        for answer in answers[2:]:
            if error := _failed(answer):
                raise BrokerAdminError(
                    f"the broker refused {answer.get('command')} for {account.device_id}: {error}"
                )

    async def revoked(self, device_id: str) -> None:
        """Delete the device's client (Mosquitto disconnects it) and role."""
        async with DynsecAdmin(self._target) as admin:
            answers = await admin.run(
                [
                    {"command": "deleteClient", "username": device_id},
                    {"command": "deleteRole", "rolename": role_name(device_id)},
                ]
            )
        for answer in answers:
            if error := _failed(answer, "not found"):
                raise BrokerAdminError(f"the broker refused {answer.get('command')}: {error}")

    async def sync(self, accounts: Sequence[DeviceAccount]) -> SyncReport:
        """Make the broker's device clients and roles those of `accounts` (the ones in force)."""
        report = SyncReport()
        wanted = {account.device_id: account for account in accounts}
        async with DynsecAdmin(self._target) as admin:
            listed = await admin.run(
                [
                    {"command": "listClients", "verbose": False, "count": -1},
                    {"command": "listRoles", "verbose": True, "count": -1},
                ]
            )
            for answer in listed:
                if error := _failed(answer):
                    raise BrokerAdminError(f"the broker refused {answer.get('command')}: {error}")
            clients = set(listed[0].get("data", {}).get("clients", []))
            roles = {
                role["rolename"]: role.get("acls", [])
                for role in listed[1].get("data", {}).get("roles", [])
            }
            device_roles = {
                name.removeprefix(DEVICE_ROLE_PREFIX)
                for name in roles
                if name.startswith(DEVICE_ROLE_PREFIX)
            }
            commands: list[dict[str, Any]] = []
            for device_id in sorted(device_roles - wanted.keys()):
                commands += [
                    {"command": "deleteClient", "username": device_id},
                    {"command": "deleteRole", "rolename": role_name(device_id)},
                ]
                report.deleted.append(device_id)
            for device_id, account in sorted(wanted.items()):
                role = role_name(device_id)
                acls = role_acls(
                    device_grant(self._root, account.facility_id, device_id), literal=True
                )
                if role not in roles:
                    commands.append({"command": "createRole", "rolename": role, "acls": acls})
                    report.created_roles.append(device_id)
                elif _acl_set(roles[role]) != _acl_set(acls):
                    commands += [
                        {"command": "deleteRole", "rolename": role},
                        {"command": "createRole", "rolename": role, "acls": acls},
                    ]
                    report.updated_roles.append(device_id)
                if device_id not in clients:
                    report.missing.append(device_id)
                else:
                    if role not in roles or _acl_set(roles[role]) != _acl_set(acls):
                        commands.append(
                            {"command": "addClientRole", "username": device_id, "rolename": role}
                        )
                    report.in_step += 1
            for answer in await admin.run(commands):
                if error := _failed(answer, "not found", "already"):
                    raise BrokerAdminError(f"the broker refused {answer.get('command')}: {error}")
        if report.missing:
            logger.warning(
                "the broker has no account for %d device(s) with credentials (%s); rotate"
                " their credentials to push new ones",
                len(report.missing),
                ", ".join(report.missing[:10]),
            )
        return report


def _acl_set(acls: Sequence[dict[str, Any]]) -> set[tuple[str, str, bool]]:
    return {(acl["acltype"], acl["topic"], bool(acl.get("allow", False))) for acl in acls}


# A sync that failed at start (the broker not up yet) is tried again this often.
SYNC_RETRY_S = 30.0
# A stage runs for the hub's life: the broker's accounts are checked again this often.
RESYNC_S = 300.0


def site_brokers(settings: Settings) -> tuple[MosquittoAccounts, ...]:
    """The brokers with an account store of their own that these settings name."""
    admin = settings.mqtt_admin
    return (MosquittoAccounts(admin, settings.topic_root),) if admin else ()


async def sync_registry(settings: Settings) -> SyncReport | None:
    """Reconcile the configured Mosquitto with the hub's credentials; None without one."""
    brokers = site_brokers(settings)
    if not brokers:
        return None
    async with await connect(settings) as conn:
        accounts = await active_accounts(conn)
    return await brokers[0].sync(accounts)


async def keep_in_step(settings: Settings) -> None:
    """Sync at hub start, retrying until the broker answers, then again every RESYNC_S.

    Issues, rotations and revocations are told to the broker as they happen; the periodic
    pass mends what those could not reach (a broker restored from an old security file, a
    change made while it was down). Without a dynamic-security broker there is nothing to do.
    """
    if not site_brokers(settings):
        await asyncio.Event().wait()
    first = True
    while True:
        try:
            report = await sync_registry(settings)
        except (BrokerAdminError, StorageError) as exc:
            raise_if_cancelled()
            logger.error(
                "broker accounts not in step yet (retrying in %g s): %s", SYNC_RETRY_S, exc
            )
            await asyncio.sleep(SYNC_RETRY_S)
            continue
        changed = report is not None and bool(
            report.created_roles or report.updated_roles or report.deleted
        )
        if report is not None and (first or changed):
            logger.info(
                "broker accounts in step: %d devices, %d roles created, %d updated, %d deleted",
                report.in_step,
                len(report.created_roles),
                len(report.updated_roles),
                len(report.deleted),
            )
        first = False
        await asyncio.sleep(RESYNC_S)
