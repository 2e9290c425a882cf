"""Frozen hub settings, read once from CAREHUB_* environment variables."""

from __future__ import annotations

import re
import zoneinfo
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

import devices.mqtt
from devices.mqtt import MqttTarget
from hub.errors import SettingsError

_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_TOPIC_ROOT = re.compile(r"^[A-Za-z0-9_-]{1,64}(/[A-Za-z0-9_-]{1,64})*$")
# What a name setting must look like, and what to tell someone whose value does not.
_NAME_RULES = {
    "database_schema": (_IDENTIFIER, "must be a lower-case SQL identifier ([a-z_][a-z0-9_]*)"),
    "topic_root": (_TOPIC_ROOT, "must be topic levels of [A-Za-z0-9_-], without wildcards"),
}


class Settings(BaseSettings):
    """Everything the hub reads from its environment; see the README's settings table."""

    # populate_by_name: a field with environment aliases (tile_url) still takes its own
    # name as a keyword, as every other setting does.
    model_config = SettingsConfigDict(
        env_prefix="CAREHUB_", frozen=True, extra="ignore", populate_by_name=True
    )

    mqtt_url: str = "mqtt://127.0.0.1:1883"
    # A stable client id is what makes the broker keep our session (and our unacknowledged
    # messages) across a restart; two hub processes must use different ids.
    mqtt_client_id: str = "carehub-hub"
    # When set, subscribe as `$share/{group}/...` so several hubs split the stream.
    mqtt_shared_group: str | None = None
    # 5 lets the hub announce a large Receive Maximum: with manual acks after commit, a
    # 3.1.1 broker's default in-flight window (20 at Mosquitto) would cap ingest at a few
    # hundred msgs/s. 3.1.1 remains for brokers that speak nothing else (amqtt).
    mqtt_protocol: Literal[311, 5] = 5
    # MQTT 5's largest window: messages in flight to us wait in the broker's memory, not in
    # its session queue (Mosquitto's holds 1,000 by default), so at 20,000 msgs/s the hub
    # may fall 3 s behind, not 0.8 s, before a default broker drops anything.
    mqtt_receive_maximum: int = Field(default=65535, ge=1, le=65535)
    mqtt_session_expiry_s: int = Field(default=86400, ge=0)
    mqtt_keepalive_s: int = Field(default=30, ge=5, le=3600)
    # Mosquitto's dynamic-security admin account (`carehub broker setup mosquitto` prints
    # it): when set, the hub keeps the broker's device accounts in step with its own.
    mqtt_admin_url: str | None = None
    # The bearer token EMQX sends to the hub's authentication and authorization endpoints
    # (README "EMQX 5"); unset, those endpoints are off.
    emqx_hook_token: str | None = Field(default=None, min_length=16)

    database_url: str = "postgresql://postgres@127.0.0.1:5432/carehub"
    database_schema: str = "carehub"
    database_pool_max: int = Field(default=8, ge=2, le=100)
    # auto: use TimescaleDB when the extension is available; off: never; on: fail without it.
    timescaledb: Literal["auto", "on", "off"] = "auto"
    retention_days: int = Field(default=400, ge=1)
    compress_after_days: int = Field(default=7, ge=1)

    http_host: str = "127.0.0.1"
    http_port: int = Field(default=8080, ge=0, le=65535)

    topic_root: str = "carehub"

    # A batch is written when it holds batch_max messages or is batch_interval_ms old,
    # whichever comes first; short enough that a QoS 1 ack is never held for long.
    batch_max: int = Field(default=2000, ge=1, le=100_000)
    batch_interval_ms: int = Field(default=25, ge=1, le=10_000)
    # Batches written at once, each on its own connection (acks still go out in order):
    # with one, the hub sits idle through every commit's round trips.
    batch_writers: int = Field(default=2, ge=1, le=8)
    # Where batches go, fsynced, while the database is unreachable (SPEC §8).
    spool_dir: Path = Path(".carehub/spool")

    log_level: str = "INFO"

    # -- accounts (hub/auth.py) -----------------------------------------------------------
    # An API token is good for this long after sign-in (default 12 h: one care shift).
    token_ttl_s: int = Field(default=43200, ge=60, le=31 * 86400)
    # Map tiles for the dashboards ({z}/{x}/{y} template); None: the dashboards' default.
    # CAREHUB_MAP_TILE_URL is the name the README gives; CAREHUB_TILE_URL works too.
    tile_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("CAREHUB_MAP_TILE_URL", "CAREHUB_TILE_URL"),
    )

    # -- dashboards (hub/api/dashboards.py) ----------------------------------------------
    # The built pages (`npm run build` in dashboards/); None: the repository's
    # dashboards/dist next to the hub package.
    dashboard_dir: Path | None = None

    # -- live websocket (hub/api/live.py) -------------------------------------------------
    # Messages queued per client before it counts as lagging and is disconnected (4008).
    # The messages are shared by all clients, so a queue costs a pointer per message: room
    # for a burst (every facility's status after an outage) is cheap.
    live_client_queue: int = Field(default=10_000, ge=100, le=1_000_000)

    # -- staff notifications (hub/notify/) ------------------------------------------------
    # One POST to a webhook may take this long; a dead endpoint costs at most this per try.
    notify_timeout_s: float = Field(default=5.0, gt=0, le=60)
    # Tries per notice before it is marked failed (backoff 1, 2, 4 ... s, at most 300 s).
    notify_max_attempts: int = Field(default=8, ge=1, le=30)

    # -- floods (hub/rules.py FloodRule) --------------------------------------------------
    # More than this many alerts raised at a facility within the window: its medium and
    # low alerts are grouped, on the screen and in the notifications alike (SPEC §4).
    # CAREHUB_NOTIFY_FLOOD_* are the names earlier READMEs gave; they still work.
    flood_threshold: int = Field(
        default=10,
        ge=1,
        validation_alias=AliasChoices("CAREHUB_FLOOD_THRESHOLD", "CAREHUB_NOTIFY_FLOOD_THRESHOLD"),
    )
    flood_window_s: int = Field(
        default=600,
        ge=10,
        le=86400,
        validation_alias=AliasChoices("CAREHUB_FLOOD_WINDOW_S", "CAREHUB_NOTIFY_FLOOD_WINDOW_S"),
    )

    # -- the monthly supervision report (hub/reports/) ----------------------------------
    # Where its months begin and end, and the zone its times are printed in.
    report_timezone: str = "Asia/Shanghai"

    @field_validator("report_timezone")
    @classmethod
    def _timezone_is_known(cls, value: str) -> str:
        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"not a known time zone: {value!r} (for example Asia/Shanghai)"
            ) from None
        return value

    @field_validator("mqtt_protocol", mode="before")
    @classmethod
    def _protocol_from_text(cls, value: object) -> object:
        # From the environment it arrives as text; a Literal of ints does not coerce it.
        if isinstance(value, str) and value.strip() in {"311", "5"}:
            return int(value)
        return value

    @field_validator("database_schema", "topic_root")
    @classmethod
    def _name_is_well_formed(cls, value: str, info: ValidationInfo) -> str:
        pattern, rule = _NAME_RULES[info.field_name or ""]
        if not pattern.match(value):
            raise ValueError(rule)
        return value

    @field_validator("mqtt_url", "mqtt_admin_url")
    @classmethod
    def _mqtt_url_parses(cls, value: str | None) -> str | None:
        if value is not None:
            parse_mqtt_url(value)
        return value

    @property
    def mqtt(self) -> MqttTarget:
        """The broker address parsed from `mqtt_url`."""
        return parse_mqtt_url(self.mqtt_url)

    @property
    def mqtt_admin(self) -> MqttTarget | None:
        """The dynamic-security admin account parsed from `mqtt_admin_url`, if set."""
        return parse_mqtt_url(self.mqtt_admin_url) if self.mqtt_admin_url else None


def parse_mqtt_url(url: str) -> MqttTarget:
    """Parse `mqtt://user:pass@host:port` (or `mqtts://`) into its parts; SettingsError if bad."""
    try:
        return devices.mqtt.parse_mqtt_url(url)
    except ValueError as exc:
        raise SettingsError(str(exc)) from exc


def load_settings(**overrides: object) -> Settings:
    """Read the settings from the environment, with explicit overrides on top."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValueError as exc:
        raise SettingsError(str(exc)) from exc
