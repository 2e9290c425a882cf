"""docker-compose.yml, the Mosquitto config and the README agree with the settings the hub reads."""

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
COMPOSE_SECRETS = {"CAREHUB_DB_PASSWORD", "CAREHUB_MQTT_PASSWORD"}
# Settings a site must decide on; the compose file has to state them, not inherit defaults.
REQUIRED = {"mqtt_url", "database_url", "http_host", "http_port", "topic_root", "spool_dir"}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text("utf-8"))
    return loaded


@pytest.fixture(scope="module")
def hub_env(compose: dict[str, Any]) -> dict[str, str]:
    environment = compose["services"]["hub"]["environment"]
    assert isinstance(environment, dict), "hub environment must be a mapping"
    return {str(key): str(value) for key, value in environment.items()}


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


def test_the_hub_reaches_the_services_compose_defines(
    compose: dict[str, Any], hub_env: dict[str, str]
) -> None:
    services = compose["services"]
    mqtt = urlsplit(_substituted(hub_env["CAREHUB_MQTT_URL"]))
    database = urlsplit(_substituted(hub_env["CAREHUB_DATABASE_URL"]))
    assert mqtt.hostname in services and "eclipse-mosquitto:2" in services[mqtt.hostname]["image"]
    assert database.hostname in services
    assert services[database.hostname]["image"].startswith("timescale/timescaledb:")
    db_env = services[database.hostname]["environment"]
    assert database.path.lstrip("/") == db_env["POSTGRES_DB"]
    assert database.username == db_env["POSTGRES_USER"]
    assert set(services["hub"]["depends_on"]) == {mqtt.hostname, database.hostname}


def test_the_spool_is_on_a_volume(compose: dict[str, Any], hub_env: dict[str, str]) -> None:
    mounts = [str(volume).split(":")[1] for volume in compose["services"]["hub"]["volumes"]]
    assert hub_env["CAREHUB_SPOOL_DIR"] in mounts


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
