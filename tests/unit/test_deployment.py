"""docker-compose.yml, the broker configs and the README agree with the settings the hub reads.

The file has two profiles: `site` (Mosquitto 2, one hub) and `city` (a two-node EMQX 5
cluster, two hubs on one shared subscription); both store in TimescaleDB.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from hub.settings import Settings, load_settings

ROOT = Path(__file__).resolve().parents[2]
PREFIX = "CAREHUB_"
# Variables compose substitutes from .env: secrets, not hub settings.
COMPOSE_SECRETS = {"CAREHUB_DB_PASSWORD", "CAREHUB_MQTT_PASSWORD", "CAREHUB_EMQX_COOKIE"}
# Settings a site must decide on; the compose file has to state them, not inherit defaults.
REQUIRED = {"mqtt_url", "database_url", "http_host", "http_port", "topic_root", "spool_dir"}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text("utf-8"))
    return loaded


# The hub processes of each profile.
SITE_HUBS = ("hub",)
CITY_HUBS = ("city-hub-1", "city-hub-2")
# A city of 1,000,000 devices, one heartbeat a minute each (docs/scale.md).
CITY_RATE = 1_000_000 / 60


def _env(compose: dict[str, Any], service: str) -> dict[str, str]:
    environment = compose["services"][service]["environment"]
    assert isinstance(environment, dict), f"{service}: environment must be a mapping"
    return {str(key): str(value) for key, value in environment.items()}


@pytest.fixture(scope="module", params=SITE_HUBS + CITY_HUBS)
def hub_env(request: pytest.FixtureRequest, compose: dict[str, Any]) -> dict[str, str]:
    """The environment of each hub process, site and city alike."""
    return _env(compose, str(request.param))


def _substituted(value: str) -> str:
    """The value with ${VAR...} replaced as compose would, by a stand-in secret."""
    return re.sub(r"\$\{[A-Z_]+(?::?[-?][^}]*)?\}", "s3cret", value)


def test_every_compose_variable_is_a_setting_the_hub_reads(hub_env: dict[str, str]) -> None:
    fields = set(Settings.model_fields)
    for name in hub_env:
        assert name.startswith(PREFIX), f"{name}: hub variables are CAREHUB_*"
        assert name[len(PREFIX) :].lower() in fields, f"{name} is not a hub setting"


def test_the_compose_file_states_every_setting_a_site_must_decide(hub_env: dict[str, str]) -> None:
    stated = {name[len(PREFIX) :].lower() for name in hub_env}
    assert stated >= REQUIRED, f"missing: {sorted(REQUIRED - stated)}"


def test_the_compose_values_are_valid_settings(hub_env: dict[str, str]) -> None:
    values = {name[len(PREFIX) :].lower(): _substituted(value) for name, value in hub_env.items()}
    settings = load_settings(**values)
    assert settings.http_host == "0.0.0.0"  # noqa: S104 - a container must listen beyond itself
    assert settings.mqtt_protocol == 5


def test_the_site_hub_reaches_the_services_compose_defines(compose: dict[str, Any]) -> None:
    services = compose["services"]
    hub_env = _env(compose, "hub")
    mqtt = urlsplit(_substituted(hub_env["CAREHUB_MQTT_URL"]))
    database = urlsplit(_substituted(hub_env["CAREHUB_DATABASE_URL"]))
    assert mqtt.hostname in services and "eclipse-mosquitto:2" in services[mqtt.hostname]["image"]
    assert database.hostname in services
    assert services[database.hostname]["image"].startswith("timescale/timescaledb:")
    db_env = services[database.hostname]["environment"]
    assert database.path.lstrip("/") == db_env["POSTGRES_DB"]
    assert database.username == db_env["POSTGRES_USER"]
    assert set(services["hub"]["depends_on"]) == {mqtt.hostname, database.hostname}


@pytest.mark.parametrize("service", SITE_HUBS + CITY_HUBS)
def test_the_spool_is_on_a_volume_of_its_own(compose: dict[str, Any], service: str) -> None:
    volumes = {
        str(volume).split(":")[1]: str(volume).split(":")[0]
        for volume in compose["services"][service]["volumes"]
    }
    spool = _env(compose, service)["CAREHUB_SPOOL_DIR"]
    assert spool in volumes
    others = {
        str(volume).split(":")[0]
        for name in SITE_HUBS + CITY_HUBS
        if name != service
        for volume in compose["services"][name]["volumes"]
    }
    assert volumes[spool] not in others, "two hubs would replay each other's spool"
    assert volumes[spool] in compose["volumes"], "a named volume outlives the container"


def test_only_known_secrets_are_substituted(compose: dict[str, Any]) -> None:
    text = (ROOT / "docker-compose.yml").read_text("utf-8")
    substituted = set(re.findall(r"\$\{([A-Z_]+)", text))
    assert substituted <= COMPOSE_SECRETS
    example = (ROOT / "deploy" / "env.example").read_text("utf-8")
    assert {line.split("=")[0] for line in example.splitlines() if "=" in line} == COMPOSE_SECRETS


def test_the_mosquitto_config_compose_mounts_exists_and_keeps_sessions(
    compose: dict[str, Any],
) -> None:
    mounts = compose["services"]["mosquitto"]["volumes"]
    config = next(str(m).split(":")[0] for m in mounts if "mosquitto.conf" in str(m))
    text = (ROOT / config).read_text("utf-8")
    directives = dict(
        line.split(None, 1) for line in text.splitlines() if line and not line.startswith("#")
    )
    assert directives["persistence"] == "true"
    assert int(directives["max_queued_messages"]) >= 100_000
    assert int(directives["message_size_limit"]) > 16 * 1024


def test_the_readme_documents_every_setting() -> None:
    readme = (ROOT / "README.md").read_text("utf-8")
    documented = set(re.findall(r"`(CAREHUB_[A-Z_]+)`", readme))
    expected = {PREFIX + name.upper() for name in Settings.model_fields}
    assert expected <= documented, f"undocumented: {sorted(expected - documented)}"


# -- the city profile ------------------------------------------------------------------


def _profile(compose: dict[str, Any], name: str) -> set[str]:
    return {s for s, spec in compose["services"].items() if name in spec.get("profiles", ())}


def test_each_profile_starts_its_own_broker_and_hubs_and_both_share_timescaledb(
    compose: dict[str, Any],
) -> None:
    """`--profile site` never starts EMQX, `--profile city` never the site's Mosquitto."""
    services = compose["services"]
    assert all(spec.get("profiles") for spec in services.values()), "a service outside profiles"
    assert _profile(compose, "site") == {"timescaledb", "mosquitto", *SITE_HUBS}
    assert _profile(compose, "city") == {"timescaledb", "emqx1", "emqx2", *CITY_HUBS}


def _emqx_nodes(compose: dict[str, Any]) -> dict[str, dict[str, str]]:
    services = compose["services"]
    return {
        name: _env(compose, name)
        for name in _profile(compose, "city")
        if str(services[name]["image"]).startswith("emqx/emqx:")
    }


def test_the_city_broker_is_an_emqx_5_cluster_of_two_nodes(compose: dict[str, Any]) -> None:
    """Two EMQX 5 nodes named after their hosts, each seeding both, with a secret cookie."""
    nodes = _emqx_nodes(compose)
    assert len(nodes) == 2
    names = set()
    for service, env in nodes.items():
        spec = compose["services"][service]
        assert re.fullmatch(r"emqx/emqx:5\.\d+\.\d+", spec["image"]), spec["image"]
        # EMQX runs its Erlang node under a long name: emqx@<FQDN>, the container's own.
        host = spec["hostname"]
        assert "." in host
        assert env["EMQX_NODE_NAME"] == f"emqx@{host}"
        names.add(env["EMQX_NODE_NAME"])
        assert env["EMQX_CLUSTER__DISCOVERY_STRATEGY"] == "static"
        assert env["EMQX_NODE__COOKIE"].startswith("${CAREHUB_EMQX_COOKIE:?")
    for env in nodes.values():
        seeds = {s.strip() for s in env["EMQX_CLUSTER__STATIC__SEEDS"].strip("[]").split(",")}
        assert seeds == names


def _bytes(size: str) -> int:
    number, unit = re.fullmatch(r"(\d+)(KB|MB|GB)?", size).groups()  # type: ignore[union-attr]
    return int(number) * {None: 1, "KB": 1024, "MB": 1024**2, "GB": 1024**3}[unit]


def test_the_city_broker_keeps_a_device_on_one_hub_and_drops_nothing_the_hubs_can_take(
    compose: dict[str, Any],
) -> None:
    """hash_clientid, a session queue above a minute of the city, the hub's whole window."""
    window = Settings.model_fields["mqtt_receive_maximum"].default
    for service, env in _emqx_nodes(compose).items():
        assert env["EMQX_MQTT__SHARED_SUBSCRIPTION_STRATEGY"] == "hash_clientid", service
        # A hub away for a minute (a restart, a node failover) finds its share queued.
        assert int(env["EMQX_MQTT__MAX_MQUEUE_LEN"]) >= CITY_RATE * 60, service
        assert int(env["EMQX_MQTT__MAX_INFLIGHT"]) >= window, service
        assert _bytes(env["EMQX_MQTT__MAX_PACKET_SIZE"]) > 16 * 1024, service


def test_the_two_city_hubs_share_one_group_on_different_nodes(compose: dict[str, Any]) -> None:
    """One shared group, a client id and a port each, each hub on a node of its own."""
    services = compose["services"]
    envs = [_env(compose, hub) for hub in CITY_HUBS]
    assert len({env["CAREHUB_MQTT_SHARED_GROUP"] for env in envs}) == 1
    assert envs[0]["CAREHUB_MQTT_SHARED_GROUP"]
    assert len({env["CAREHUB_MQTT_CLIENT_ID"] for env in envs}) == len(CITY_HUBS)
    brokers = [urlsplit(_substituted(env["CAREHUB_MQTT_URL"])).hostname for env in envs]
    assert set(brokers) == set(_emqx_nodes(compose))
    ports = [port for hub in CITY_HUBS for port in services[hub]["ports"]]
    assert len({str(port).split(":")[0] for port in ports}) == len(CITY_HUBS)
    for hub, broker, env in zip(CITY_HUBS, brokers, envs, strict=True):
        settings = load_settings(
            **{name[len(PREFIX) :].lower(): _substituted(value) for name, value in env.items()}
        )
        assert settings.mqtt_protocol == 5
        database = urlsplit(settings.database_url)
        assert database.hostname in _profile(compose, "city")
        assert services[database.hostname]["image"].startswith("timescale/timescaledb:")
        assert set(services[hub]["depends_on"]) == {broker, database.hostname}


def test_the_city_broker_admits_the_hubs_and_each_device_to_its_own_topics(
    compose: dict[str, Any],
) -> None:
    """The files EMQX reads are mounted; the ACL names the hubs' group and root, then denies."""
    env = _env(compose, CITY_HUBS[0])
    group, root = env["CAREHUB_MQTT_SHARED_GROUP"], env["CAREHUB_TOPIC_ROOT"]
    user = urlsplit(_substituted(env["CAREHUB_MQTT_URL"])).username
    for service, node in _emqx_nodes(compose).items():
        mounts = dict(
            str(volume).split(":")[:2] for volume in compose["services"][service]["volumes"]
        )
        config_dir = next(host for host, inside in mounts.items() if inside.endswith("/carehub"))
        inside = mounts[config_dir]
        assert node["EMQX_AUTHORIZATION__NO_MATCH"] == "deny"
        assert f'"{inside}/acl.conf"' in node["EMQX_AUTHORIZATION__SOURCES"]
        assert f'bootstrap_file = "{inside}/users.csv"' in node["EMQX_AUTHENTICATION"]
        acl = (ROOT / config_dir / "acl.conf").read_text("utf-8")
        rules = [line for line in acl.splitlines() if line.startswith("{")]
        assert f'{{allow, {{username, "{user}"}}, subscribe, ["$share/{group}/{root}/v1/#"' in acl
        assert f'"{root}/v1/+/${{username}}/telemetry"' in acl
        assert rules[-1] == "{deny, all}."
        # users.csv holds passwords: the operator writes it, git never sees it.
    assert "deploy/emqx/users.csv" in (ROOT / ".gitignore").read_text("utf-8").splitlines()
