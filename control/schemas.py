"""Request and response bodies of the control-plane API (pydantic models).

Requests are strict about what strangers may send: bounded lengths and list sizes, known
enums, region names of a fixed shape, STUN/TURN URLs only, opening hours checked by
:func:`control.calls.check_hours`. Anything else is refused with 422 before a handler runs.
Responses are built from the records in :mod:`control.models` with ``from_*`` helpers.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from control.calls import check_hours
from control.ids import ID_PATTERN, MAX_ID_LEN
from control.models import (
    EU,
    MAX_RETENTION_MONTHS,
    Call,
    Callback,
    CallStatus,
    Link,
    Media,
    OpeningHours,
    Presence,
    Role,
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
from relay.config import MAX_ICE_URLS, REGION_PATTERN

_PRINTABLE = r"^[^\x00-\x1f\x7f]*$"  # no control characters (NUL breaks PostgreSQL text)
Name = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=200, pattern=_PRINTABLE),
]
Region = Annotated[str, StringConstraints(pattern=rf"^{REGION_PATTERN}$")]
Ident = Annotated[str, StringConstraints(min_length=1, max_length=MAX_ID_LEN, pattern=ID_PATTERN)]
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
    message: str  # for people, English
    field: str | None = None  # the request field it is about, dotted: "hours.timezone"
    reason: str | None = None  # a stable key: pydantic's error type or one of ours
    params: dict[str, str | int | float | bool | None] = Field(default_factory=dict)


class ErrorOut(BaseModel):
    error: ErrorBody


# --- tenants and keys --------------------------------------------------------------------


class TenantIn(Strict):
    name: Name
    allowed_regions: list[Region] = Field(default_factory=lambda: [EU], min_length=1, max_length=16)
    retention_months: int = Field(default=MAX_RETENTION_MONTHS, ge=1, le=MAX_RETENTION_MONTHS)
    # the business's first admin: a staff member with the admin role and this email, who
    # sets a password through the invitation link in the answer (``admin``)
    admin_email: str | None = Field(default=None, max_length=320)
    admin_name: Name | None = None  # default: the email's local part

    @field_validator("allowed_regions")
    @classmethod
    def _unique(cls, v: list[str]) -> list[str]:
        return list(dict.fromkeys(v))


class ClickLimitsIn(Strict):
    """Overrides of the operator's click limits (control/settings.py ClickLimits); a field
    set to null follows the operator's default again, a field left out stays as it is."""

    visitor_burst: int | None = Field(default=None, ge=1, le=1000)
    visitor_interval: float | None = Field(default=None, ge=0.01, le=86400)
    link_burst: int | None = Field(default=None, ge=1, le=100_000)
    link_interval: float | None = Field(default=None, ge=0.001, le=86400)
    ringing_per_link: int | None = Field(default=None, ge=0, le=100_000)  # 0: no cap
    ringing_per_tenant: int | None = Field(default=None, ge=0, le=1_000_000)


class TenantSettingsIn(Strict):
    """What a business's admin may change of its own tenant (the dashboard's Settings); the
    operator's :class:`TenantPatch` adds the rest, with the same rules for these."""

    allowed_regions: list[Region] | None = Field(default=None, min_length=1, max_length=16)
    retention_months: int | None = Field(default=None, ge=1, le=MAX_RETENTION_MONTHS)

    @field_validator("allowed_regions")
    @classmethod
    def _unique(cls, v: list[str] | None) -> list[str] | None:
        return None if v is None else list(dict.fromkeys(v))


class TenantPatch(TenantSettingsIn):
    name: Name | None = None
    click_limits: ClickLimitsIn | None = None


class TenantOut(BaseModel):
    id: str
    name: str
    allowed_regions: list[str]
    retention_months: int
    created_at: float
    click_limits: dict[str, float]  # the operator's overrides for this tenant only

    @classmethod
    def of(cls, t: Tenant) -> TenantOut:
        return cls(
            id=t.id,
            name=t.name,
            allowed_regions=t.allowed_regions,
            retention_months=t.retention_months,
            created_at=t.created_at,
            click_limits=t.click_limits,
        )


class KeyOut(BaseModel):
    id: str
    key: str  # shown once
    created_at: float
    name: str | None = None


class AdminCreated(BaseModel):
    staff_id: str
    email: str
    invitation_url: str  # where the admin sets their password; shown once
    expires_at: float


class TenantCreated(BaseModel):
    tenant: TenantOut
    api_key: KeyOut
    admin: AdminCreated | None = None  # with ``admin_email``


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
    email: str | None  # set by an invitation
    has_password: bool  # the invitation was used: the member can sign in
    roles: list[str]
    presence: Presence
    wrapup_until: float | None
    seen_at: float | None  # last console activity

    @classmethod
    def of(cls, s: Staff) -> StaffOut:
        return cls(
            id=s.id,
            name=s.name,
            groups=s.groups,
            active=s.active,
            created_at=s.created_at,
            email=s.email,
            has_password=s.password_hash is not None,
            roles=s.roles,
            presence=s.presence,
            wrapup_until=s.wrapup_until,
            seen_at=s.seen_at,
        )


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
        _checked(OpeningHours(windows=v))
        return v

    @field_validator("timezone")
    @classmethod
    def _zone(cls, v: str) -> str:
        _checked(OpeningHours(timezone=v))
        return v


def _checked(hours: OpeningHours) -> None:
    """:func:`check_hours`, its reason kept and its message as a plain ValueError's
    (``Value error, ...``, as the API always said)."""
    try:
        check_hours(hours)
    except PydanticCustomError as e:
        raise PydanticCustomError(e.type, f"Value error, {e}", e.context) from None


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
    relay_only: bool = True  # false: the parties may connect directly (and learn addresses)


class LinkPatch(Strict):
    name: Name | None = None
    media: list[Media] | None = Field(default=None, min_length=1, max_length=3)
    ring_staff: list[Ident] | None = Field(default=None, max_length=MAX_LIST)
    ring_groups: list[Group] | None = Field(default=None, max_length=MAX_LIST)
    hours: HoursIn | None = None
    always_open: bool = False  # true: drop the opening hours
    ring_timeout: float | None = Field(default=None, ge=5, le=600)
    active: bool | None = None
    relay_only: bool | None = None


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
    relay_only: bool

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
            relay_only=k.relay_only,
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
    call_ref: str | None  # the short reference the visitor was shown
    media: Media | None  # what the visitor chose
    visitor_check: dict[str, Any] | None  # the connection check's verdict
    callback_state: Callback | None  # a callback request: open, then done
    callback_at: float | None
    callback_done_by: str | None

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
            call_ref=c.call_ref,
            media=c.media,
            visitor_check=c.visitor_check,
            callback_state=c.callback_state,
            callback_at=c.callback_at,
            callback_done_by=c.callback_done_by,
        )

    @classmethod
    def for_staff(cls, c: Call, declined_by: list[str] | None = None) -> CallOut:
        """The call as a staff member's console or token sees it: without the visitor's
        network prefix (staff see browser, OS and region, never an address; the business's
        API key and its dashboard still see the prefix)."""
        return cls.of(c, declined_by).model_copy(update={"visitor_prefix": None})


class CallPageOut(BaseModel):
    calls: list[CallOut]
    next_cursor: str | None


CallMedia = Literal["video", "voice"]
Lang = Annotated[
    str, StringConstraints(max_length=35, pattern=r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{1,8})*$")
]


class ClickIn(Strict):
    region_hint: Region | None = None
    media: CallMedia | None = None  # one the link offers; default: the first it offers
    lang: Lang | None = None  # the visitor's language (accepted, not stored)


class ClickOut(BaseModel):
    call_id: str
    token: str  # the visitor session token
    token_id: str  # also the <token-id> of the relay username
    token_expires_at: float
    signal: str  # the WebSocket path for signalling, relative to the API's origin
    iceServers: list[dict[str, Any]]  # noqa: N815 (the WebRTC spelling)
    expires_at: float  # when the relay credentials expire
    call_ref: str | None  # the short reference to show the visitor
    relay_only: bool  # use iceTransportPolicy "relay" (signalling drops other candidates)
    ring_timeout: float  # seconds the call rings before it is missed
    media: Media | None  # what the call is: video or voice
    staff_name: str | None = None  # who answered (null until then)


class AnswerOut(BaseModel):
    call: CallOut
    token: str  # the staff session token for this call
    token_id: str
    token_expires_at: float
    signal: str
    iceServers: list[dict[str, Any]]  # noqa: N815
    expires_at: float


class RingingOut(BaseModel):
    """A call ringing a staff member: the call without the visitor's prefix
    (:meth:`CallOut.for_staff`), and the visitor's region as the region map places their
    prefix (None where the map does not know it)."""

    call: CallOut
    link_name: str
    media: list[Media]
    visitor_region: str | None = None

    @classmethod
    def of(cls, c: Call, link: Link, visitor_region: str | None) -> RingingOut:
        return cls(
            call=CallOut.for_staff(c),
            link_name=link.name,
            media=link.media,
            visitor_region=visitor_region,
        )


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
    urls: list[IceUrl] = Field(min_length=1, max_length=MAX_ICE_URLS)
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


class EnrolIn(Strict):
    node_id: Ident


class EnrolOut(BaseModel):
    node_id: str
    credential: str  # shown once: the node keeps it (mode 0600) and sends it from now on
    enrolled_at: float


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
    enrolled: bool = False  # has a credential of its own (the node secret no longer speaks for it)


# --- call logs and quality ----------------------------------------------------------------------

MAX_SUMMARIES = 500  # per request
MAX_STREAMS = 16  # per summary
Count = Annotated[int, Field(ge=0, le=10**15)]  # packets or bytes: a petabyte is plenty
Millis = Annotated[float, Field(ge=0, le=3_600_000, allow_inf_nan=False)]
Seconds = Annotated[float, Field(ge=0, le=1e11, allow_inf_nan=False)]  # Unix time
Mos = Annotated[float, Field(ge=1.0, le=5.0, allow_inf_nan=False)]
Allocation = Annotated[
    str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")
]


class StreamIn(Strict):
    direction: Literal["to_peer", "to_client"]
    ssrc: int = Field(ge=0, le=0xFFFFFFFF)
    kind: Literal["audio", "video", "screen", "unknown"]
    clock_rate: int = Field(default=0, ge=0, le=1_000_000)
    packets: Count
    bytes: Count
    lost: Count = 0
    reordered: Count = 0
    duplicates: Count = 0
    jitter_ms: Millis = 0.0
    max_gap_ms: Millis = 0.0


class DirectionIn(Strict):
    packets: Count
    bytes: Count
    lost: Count = 0
    jitter_ms: Millis = 0.0
    mos: Mos | None = None


class DirectionsIn(Strict):
    to_peer: DirectionIn | None = None
    to_client: DirectionIn | None = None


class RelayCountersIn(Strict):
    dropped: Count = 0
    rxq_overflow: Count = 0
    delay_us_p99: int = Field(default=0, ge=0, le=60_000_000)


class SummaryIn(Strict):
    seq: int = Field(ge=1, le=2**62)
    token_id: Ident
    allocation: Allocation
    final: bool = False
    started_at: Seconds
    at: Seconds
    streams: list[StreamIn] = Field(default_factory=list, max_length=MAX_STREAMS)
    directions: DirectionsIn = Field(default_factory=DirectionsIn)
    relay: RelayCountersIn = Field(default_factory=RelayCountersIn)

    @model_validator(mode="after")
    def _times(self) -> SummaryIn:
        if self.at < self.started_at:
            raise ValueError("'at' is before 'started_at'")
        return self


class SummariesIn(Strict):
    """What a relay node's agent sends (docs/relay-summaries.md)."""

    node_id: Ident
    summaries: list[SummaryIn] = Field(max_length=MAX_SUMMARIES)

    @field_validator("summaries")
    @classmethod
    def _unique_seqs(cls, v: list[SummaryIn]) -> list[SummaryIn]:
        if len({s.seq for s in v}) != len(v):
            raise ValueError("two summaries share a seq")
        return v


class SummariesOut(BaseModel):
    accepted: int  # the highest seq stored for this node (0: none yet)
    stored: int  # summaries of this request stored now
    replayed: int  # already had (a seq at or below the highest): ignored
    dropped: int  # for tokens the control plane does not know (or of no call): counted, dropped


class LegOut(BaseModel):
    """One direction of a call: the worst over its allocations."""

    loss_pct: float | None
    jitter_ms: float | None
    mos: float | None


class VisitorOut(BaseModel):
    """Coarse facts only: browser and OS family, truncated prefix, mapped region."""

    browser: str | None
    os: str | None
    prefix: str | None
    region: str | None


class CallLogOut(BaseModel):
    id: str
    created_at: float
    answered_at: float | None
    ended_at: float | None
    duration: float | None  # seconds from answer to end
    outcome: CallStatus
    link_id: str
    link_name: str | None  # None once the link is deleted
    staff_id: str | None  # who answered
    staff_name: str | None
    media: list[str]  # kinds the relay saw: audio, video, screen
    relay_region: str | None
    bytes: int  # relayed, both directions
    from_visitor: LegOut
    to_visitor: LegOut
    mos: float | None  # the worse direction
    quality_final: bool  # every allocation sent its final summary
    visitor: VisitorOut


class CallLogPageOut(BaseModel):
    calls: list[CallLogOut]
    next_cursor: str | None


class FlowOut(BaseModel):
    packets: int
    bytes: int
    lost: int
    loss_pct: float | None
    jitter_ms: float
    mos: float | None


class RelayCountersOut(BaseModel):
    dropped: int
    rxq_overflow: int
    delay_us_p99: int


class AllocationOut(BaseModel):
    node_id: str
    allocation: str
    role: Role
    started_at: float
    at: float
    final: bool
    to_peer: FlowOut | None
    to_client: FlowOut | None
    streams: list[dict[str, Any]]
    relay: RelayCountersOut


class CallLogDetailOut(CallLogOut):
    allocations: list[AllocationOut]


class UsageOut(BaseModel):
    start: float  # the period's start, Unix seconds (UTC)
    date: str  # the same as YYYY-MM-DD
    calls: int
    answered: int
    answered_rate: float | None
    minutes: float  # answered duration of the calls that ended
    bytes: int


class AnalyticsRowOut(UsageOut):
    key: str | None  # link or staff id (None: calls nobody answered, when by staff)
    name: str | None


class AnalyticsOut(BaseModel):
    period: str
    by: str
    since: float
    until: float
    buckets: list[AnalyticsRowOut]
    totals: UsageOut


class AggregateOut(UsageOut):
    region: str | None  # the relay region
    mean_mos: float | None  # mean of the calls' worst MOS, over calls with relay summaries


class AggregatesOut(BaseModel):
    period: str
    since: float
    until: float
    k: int  # groups of fewer calls than this are not shown
    groups: list[AggregateOut]
    suppressed: int  # how many groups were left out for having fewer than k calls
