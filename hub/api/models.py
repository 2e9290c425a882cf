"""The API's bodies and answers (docs/api.md), as pydantic models for validation and OpenAPI."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema
from pydantic.config import JsonDict

from hub.alerts import NOTE_MAX
from hub.models import AuditStep
from hub.storage.registry import PendingDevice, UnplacedDevice
from hub.wire import Alert, Device, Facility, StaffDisposition, Zone

Bucket = Literal["1m", "5m", "1h", "1d"]
AlertStateFilter = Literal["open", "active", "acknowledged", "attended", "resolved"]
WebhookFormat = Literal["json", "wecom", "dingtalk"]
# Ids of the registry (SPEC §3); anything else cannot name a facility or device.
ID = r"^[A-Za-z0-9_-]{1,64}$"


_Item = TypeVar("_Item")


class Page(BaseModel, Generic[_Item]):
    """A page of a list (docs/api.md Lists): its items, and the cursor of the next page."""

    items: list[_Item]
    next: str | None


class Body(BaseModel):
    """A request body: unknown fields are refused, so a typo is not silently ignored."""

    model_config = ConfigDict(extra="forbid")


# -- sign-in -------------------------------------------------------------------------------


class LoginIn(Body):
    """Name and password."""

    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=1024)


class Me(BaseModel):
    """The signed-in account."""

    username: str
    role: Literal["admin", "regulator", "manager", "staff"]
    facility_id: str | None
    district: str | None
    display_name: str


class LoginOut(BaseModel):
    """A new token (shown once), when it expires, and whose it is."""

    token: str
    expires_at: datetime
    user: Me


# -- facilities, zones, devices ------------------------------------------------------------


class FacilityDetail(Facility):
    """A facility with its zones and how many devices of each type it has."""

    zones: list[Zone]
    devices_by_type: dict[str, int]


class FacilityList(Page[Facility]):
    """A page of facilities."""


class DeviceList(Page[Device]):
    """A page of devices."""


class ReadingPoint(BaseModel):
    """One bucket of a device's telemetry; fields its type does not measure are null."""

    t: datetime
    count_avg: float | None
    count_max: int | None
    staff_avg: float | None
    staff_max: int | None
    battery_min: float | None
    presence_share: float | None
    n: int | None


class Readings(BaseModel):
    """A device's telemetry history, per bucket."""

    device_id: str
    bucket: Bucket
    points: list[ReadingPoint]


# -- alerts --------------------------------------------------------------------------------


class AlertDetail(Alert):
    """An alert with its whole trail."""

    audit: list[AuditStep]


class AlertList(Page[Alert]):
    """A page of alerts, newest first."""


# Said in the document, checked by the alert store (a 400): PostgreSQL text holds no NUL.
NO_NUL: JsonDict = {"pattern": r"^[^\u0000]*$"}


class NoteIn(Body):
    """An optional note for acknowledging or attending."""

    note: str = Field(default="", max_length=NOTE_MAX, json_schema_extra=NO_NUL)


# Said in the document, checked by the alert store (a 400): not only white space, no NUL.
NOT_BLANK: JsonDict = {"pattern": r"^[^\u0000]*[^\s\u0000][^\u0000]*$"}


class CommentIn(Body):
    """A comment for the alert's trail."""

    note: str = Field(min_length=1, max_length=NOTE_MAX, json_schema_extra=NOT_BLANK)


class ResolveIn(Body):
    """How the alert ended, and a note (`self_resolved` is the system's, not a choice)."""

    disposition: StaffDisposition
    note: str = Field(default="", max_length=NOTE_MAX, json_schema_extra=NO_NUL)


class SnoozeIn(Body):
    """Shelve the alert's zone for a while, with a reason."""

    minutes: int = Field(ge=1, le=7 * 24 * 60)
    reason: str = Field(min_length=1, max_length=NOTE_MAX, json_schema_extra=NOT_BLANK)


# -- rules, webhooks, registry, config -----------------------------------------------------


class RuleOverrideOut(BaseModel):
    """One stored override."""

    zone_id: str | None
    kind: str
    params: dict[str, float]
    updated_at: datetime
    updated_by: str


class Rules(BaseModel):
    """A facility's rule parameters: the catalogue defaults, the overrides, and in force."""

    facility_id: str
    defaults: dict[str, dict[str, float]]
    overrides: list[RuleOverrideOut]
    in_force: dict[str, dict[str, float]]


class RuleOverrideIn(Body):
    """Override some parameters of one alert kind for the facility or one of its zones."""

    zone_id: str | None = Field(default=None, pattern=ID)
    kind: str = Field(min_length=1, max_length=64)
    params: dict[str, Any] = Field(min_length=1, max_length=32)


class WebhookIn(Body):
    """Where to send a facility's alert notices."""

    url: str = Field(min_length=1, max_length=2000)
    format: WebhookFormat = "json"
    secret: str = Field(default="", max_length=500)


class Webhook(BaseModel):
    """A webhook (its secret is never shown) and how its endpoint is doing."""

    id: str
    facility_id: str
    url: str
    format: WebhookFormat
    has_secret: bool
    enabled: bool
    created_at: datetime
    consecutive_failures: int
    last_error: str | None
    last_success_at: datetime | None
    last_failure_at: datetime | None


class WebhookList(Page[Webhook]):
    """A facility's webhooks."""


class PendingList(Page[PendingDevice]):
    """A page of pending devices."""


class AccessLogEntry(BaseModel):
    """One read of a facility's detail by a regulator (SPEC §7): who, when, what."""

    id: str
    at: datetime
    username: str
    role: str
    route: str = Field(description="the method and path read, e.g. GET /api/v1/facilities/f-1")
    facility_id: str


class AccessLogList(Page[AccessLogEntry]):
    """A page of the access log, newest first."""


class DeadLetter(BaseModel):
    """A refused message and why (its payload as text, at most 16 KiB)."""

    id: str
    received_at: datetime
    topic: str
    reason: str
    detail: str
    facility_id: str | None
    device_id: str | None
    payload: str
    payload_size: int


class DeadLetterList(Page[DeadLetter]):
    """A page of dead letters, newest first."""


# [latitude, longitude]. Written without `prefixItems`: JSON Schema tools that read OpenAPI
# as draft 4 take `prefixItems` for `items` and find the schema invalid.
MapCenter = Annotated[
    tuple[float, float],
    WithJsonSchema(
        {
            "type": "array",
            "items": {"type": "number"},
            "minItems": 2,
            "maxItems": 2,
            "description": "[latitude, longitude] in degrees",
        }
    ),
]


class PublicConfig(BaseModel):
    """What a dashboard needs before sign-in."""

    tile_url: str | None
    map_center: MapCenter
    default_language: str


# -- device credentials and placement -----------------------------------------------------


class CredentialsIn(Body):
    """Issue a device's credentials, or with `rotate` replace those in force."""

    rotate: bool = Field(default=False, strict=True)


class Credentials(BaseModel):
    """A device's MQTT credentials: shown once, never stored by the hub in the clear."""

    device_id: str
    username: str = Field(description="the MQTT username; the client id must be the same")
    password: str


class PlaceIn(Body):
    """The zone of the device's facility to place it in."""

    zone_id: str = Field(pattern=ID)


class UnplacedList(Page[UnplacedDevice]):
    """A page of devices with credentials but no zone, waiting for their manager."""


# -- EMQX HTTP authentication and authorization (README "EMQX 5") --------------------------


class EmqxAuthnIn(BaseModel):
    """What EMQX sends on each CONNECT (the body template of the README's configuration)."""

    username: str | None = Field(default=None, max_length=256)
    password: str | None = Field(default=None, max_length=1024)
    clientid: str | None = Field(default=None, max_length=256)


class EmqxAcl(BaseModel):
    """One rule of an authentication answer's `acl` (EMQX 5.5+ format)."""

    permission: Literal["allow", "deny"]
    action: Literal["publish", "subscribe", "all"]
    topic: str


class EmqxAuthnOut(BaseModel):
    """allow with the account's topics, deny, or ignore (not ours: the next authenticator)."""

    result: Literal["allow", "deny", "ignore"]
    is_superuser: bool = False
    acl: list[EmqxAcl] | None = None


class EmqxAuthzIn(BaseModel):
    """What EMQX sends on each PUBLISH and SUBSCRIBE it authorizes."""

    username: str | None = Field(default=None, max_length=256)
    clientid: str | None = Field(default=None, max_length=256)
    topic: str = Field(max_length=65535)
    action: str = Field(max_length=32, description="publish or subscribe")


class EmqxAuthzOut(BaseModel):
    """allow, deny, or ignore (not ours)."""

    result: Literal["allow", "deny", "ignore"]
