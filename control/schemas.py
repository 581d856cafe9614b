"""Request and response bodies of the control-plane API (pydantic models).

Requests are strict about what strangers may send: bounded lengths and list sizes, known
enums, region names of a fixed shape, STUN/TURN URLs only, opening hours checked by
:func:`control.calls.check_hours`. Anything else is refused with 422 before a handler runs.
Responses are built from the records in :mod:`control.models` with ``from_*`` helpers.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from control.calls import check_hours
from control.models import (
    EU,
    MAX_RETENTION_MONTHS,
    Call,
    CallStatus,
    Link,
    Media,
    OpeningHours,
    Staff,
    Tenant,
)
from control.tokens import (
    DEFAULT_TOKEN_TTL,
    ICE_SCHEMES,
    MAX_RELAY_TTL,
    MAX_TOKEN_TTL,
    MIN_RELAY_TTL,
    MIN_TOKEN_TTL,
)

_PRINTABLE = r"^[^\x00-\x1f\x7f]*$"  # no control characters (NUL breaks PostgreSQL text)
Name = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=200, pattern=_PRINTABLE),
]
Region = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9-]{0,31}$")]
Ident = Annotated[
    str, StringConstraints(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.-]+$")
]
Group = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64, pattern=_PRINTABLE)
]
IceUrl = Annotated[
    str, StringConstraints(min_length=6, max_length=256, pattern=r"^[^\s\x00-\x1f\x7f]+$")
]

MAX_LIST = 100


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --- errors ------------------------------------------------------------------------------


class ErrorBody(BaseModel):
    code: str
    message: str


class ErrorOut(BaseModel):
    error: ErrorBody


# --- tenants and keys --------------------------------------------------------------------


class TenantIn(Strict):
    name: Name
    allowed_regions: list[Region] = Field(default_factory=lambda: [EU], min_length=1, max_length=16)
    retention_months: int = Field(default=MAX_RETENTION_MONTHS, ge=1, le=MAX_RETENTION_MONTHS)

    @field_validator("allowed_regions")
    @classmethod
    def _unique(cls, v: list[str]) -> list[str]:
        return list(dict.fromkeys(v))


class TenantOut(BaseModel):
    id: str
    name: str
    allowed_regions: list[str]
    retention_months: int
    created_at: float

    @classmethod
    def of(cls, t: Tenant) -> TenantOut:
        return cls(
            id=t.id,
            name=t.name,
            allowed_regions=t.allowed_regions,
            retention_months=t.retention_months,
            created_at=t.created_at,
        )


class KeyOut(BaseModel):
    id: str
    key: str  # shown once
    created_at: float


class TenantCreated(BaseModel):
    tenant: TenantOut
    api_key: KeyOut


# --- staff ---------------------------------------------------------------------------------


class StaffIn(Strict):
    name: Name
    groups: list[Group] = Field(default_factory=list, max_length=MAX_LIST)
    active: bool = True


class StaffPatch(Strict):
    name: Name | None = None
    groups: list[Group] | None = Field(default=None, max_length=MAX_LIST)
    active: bool | None = None


class StaffOut(BaseModel):
    id: str
    name: str
    groups: list[str]
    active: bool
    created_at: float

    @classmethod
    def of(cls, s: Staff) -> StaffOut:
        return cls(id=s.id, name=s.name, groups=s.groups, active=s.active, created_at=s.created_at)


class TtlIn(Strict):
    ttl: int = Field(default=DEFAULT_TOKEN_TTL, ge=MIN_TOKEN_TTL, le=MAX_TOKEN_TTL)


class StaffTokenOut(BaseModel):
    token: str
    token_id: str
    expires_at: float


# --- links -----------------------------------------------------------------------------------


class HoursIn(Strict):
    timezone: Annotated[
        str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_+/-]+$")
    ] = "UTC"
    windows: list[tuple[int, int, int]] = Field(default_factory=list, max_length=7 * 24)

    def model(self) -> OpeningHours:
        return OpeningHours(timezone=self.timezone, windows=list(self.windows))

    @field_validator("windows")
    @classmethod
    def _windows(cls, v: list[tuple[int, int, int]]) -> list[tuple[int, int, int]]:
        check_hours(OpeningHours(windows=v))
        return v

    @field_validator("timezone")
    @classmethod
    def _zone(cls, v: str) -> str:
        check_hours(OpeningHours(timezone=v))
        return v


class LinkIn(Strict):
    name: Name
    media: list[Media] = Field(
        default_factory=lambda: [Media.VOICE, Media.VIDEO], min_length=1, max_length=3
    )
    ring_staff: list[Ident] = Field(default_factory=list, max_length=MAX_LIST)
    ring_groups: list[Group] = Field(default_factory=list, max_length=MAX_LIST)
    hours: HoursIn | None = None
    ring_timeout: float | None = Field(default=None, ge=5, le=600)
    active: bool = True


class LinkPatch(Strict):
    name: Name | None = None
    media: list[Media] | None = Field(default=None, min_length=1, max_length=3)
    ring_staff: list[Ident] | None = Field(default=None, max_length=MAX_LIST)
    ring_groups: list[Group] | None = Field(default=None, max_length=MAX_LIST)
    hours: HoursIn | None = None
    always_open: bool = False  # true: drop the opening hours
    ring_timeout: float | None = Field(default=None, ge=5, le=600)
    active: bool | None = None


class HoursOut(BaseModel):
    timezone: str
    windows: list[tuple[int, int, int]]


class LinkOut(BaseModel):
    id: str
    public_id: str
    url: str  # shareable path: /c/{public_id}
    name: str
    media: list[Media]
    ring_staff: list[str]
    ring_groups: list[str]
    hours: HoursOut | None
    ring_timeout: float
    active: bool
    created_at: float

    @classmethod
    def of(cls, k: Link) -> LinkOut:
        hours = None
        if k.hours is not None:
            hours = HoursOut(timezone=k.hours.timezone, windows=list(k.hours.windows))
        return cls(
            id=k.id,
            public_id=k.public_id,
            url=f"/c/{k.public_id}",
            name=k.name,
            media=k.media,
            ring_staff=k.ring_staff,
            ring_groups=k.ring_groups,
            hours=hours,
            ring_timeout=k.ring_timeout,
            active=k.active,
            created_at=k.created_at,
        )


# --- calls -----------------------------------------------------------------------------------


class CallOut(BaseModel):
    id: str
    link_id: str
    status: CallStatus
    created_at: float
    answered_at: float | None
    ended_at: float | None
    answered_by: str | None
    end_reason: str | None
    relay_node: str | None
    relay_region: str | None
    visitor_prefix: str | None
    visitor_browser: str | None
    visitor_os: str | None
    declined_by: list[str] = Field(default_factory=list)  # staff who declined while it rang

    @classmethod
    def of(cls, c: Call, declined_by: list[str] | None = None) -> CallOut:
        return cls(
            declined_by=declined_by or [],
            id=c.id,
            link_id=c.link_id,
            status=c.status,
            created_at=c.created_at,
            answered_at=c.answered_at,
            ended_at=c.ended_at,
            answered_by=c.answered_by,
            end_reason=c.end_reason,
            relay_node=c.relay_node,
            relay_region=c.relay_region,
            visitor_prefix=c.visitor_prefix,
            visitor_browser=c.visitor_browser,
            visitor_os=c.visitor_os,
        )


class CallPageOut(BaseModel):
    calls: list[CallOut]
    next_cursor: str | None


class ClickIn(Strict):
    region_hint: Region | None = None


class ClickOut(BaseModel):
    call_id: str
    token: str  # the visitor session token
    token_id: str  # also the <token-id> of the relay username
    token_expires_at: float
    signal: str  # the WebSocket path for signalling, relative to the API's origin
    iceServers: list[dict[str, Any]]  # noqa: N815 (the WebRTC spelling)
    expires_at: float  # when the relay credentials expire


class AnswerOut(BaseModel):
    call: CallOut
    token: str  # the staff session token for this call
    token_id: str
    token_expires_at: float
    signal: str
    iceServers: list[dict[str, Any]]  # noqa: N815
    expires_at: float


class RingingOut(BaseModel):
    call: CallOut
    link_name: str
    media: list[Media]


# --- credentials, tokens, nodes ---------------------------------------------------------------


class CredentialsIn(Strict):
    ttl: int | None = Field(default=None, ge=MIN_RELAY_TTL, le=MAX_RELAY_TTL)


class CredentialsOut(BaseModel):
    token_id: str
    iceServers: list[dict[str, Any]]  # noqa: N815
    expires_at: float


class RevokedOut(BaseModel):
    id: str
    revoked_at: float


class HeartbeatIn(Strict):
    node_id: Ident
    region: Region
    urls: list[IceUrl] = Field(min_length=1, max_length=16)
    allocations: int = Field(default=0, ge=0, le=10_000_000)
    packet_rate: float = Field(default=0.0, ge=0, le=1e9)
    cpu: float = Field(default=0.0, ge=0, le=1024)
    draining: bool = False
    revocations_since: float = Field(default=0.0, ge=0, le=1e11)

    @field_validator("urls")
    @classmethod
    def _urls(cls, v: list[str]) -> list[str]:
        for url in v:
            scheme, _, rest = url.partition(":")
            if scheme.lower() not in ICE_SCHEMES or not rest or any(c.isspace() for c in url):
                raise ValueError(f"{url!r} is not a stun:/stuns:/turn:/turns: URL")
        return v


class HeartbeatOut(BaseModel):
    now: float
    revoked: list[str]


class NodeOut(BaseModel):
    id: str
    region: str
    urls: list[str]
    allocations: int
    packet_rate: float
    cpu: float
    draining: bool
    healthy: bool  # heartbeats within the control plane's heartbeat timeout
    last_heartbeat: float
    registered_at: float
