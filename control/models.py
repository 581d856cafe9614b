"""The control plane's records. Plain dataclasses: storage, API and state machines share them.

Identifiers are opaque text (``uuid4().hex`` or a short public id); times are Unix seconds
(float, UTC). Nothing here holds a full visitor IP address: at most its truncated prefix.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

EU = "eu"
MAX_RETENTION_MONTHS = 60


class CallStatus(enum.StrEnum):
    RINGING = "ringing"
    ANSWERED = "answered"
    MISSED = "missed"  # nobody answered within the link's ring timeout
    REJECTED = "rejected"  # staff declined (every rung staff member, or the tenant's rule)
    ABANDONED = "abandoned"  # the visitor left before an answer
    ENDED = "ended"  # answered, then hung up by either side
    FAILED = "failed"  # could not be set up or carried (no relay, media never flowed, ...)


FINAL_STATUSES = frozenset(
    {
        CallStatus.MISSED,
        CallStatus.REJECTED,
        CallStatus.ABANDONED,
        CallStatus.ENDED,
        CallStatus.FAILED,
    }
)


class Role(enum.StrEnum):
    VISITOR = "visitor"
    STAFF = "staff"


class Media(enum.StrEnum):
    VOICE = "voice"
    VIDEO = "video"
    SCREEN = "screen"


CALL_MEDIA = (Media.VIDEO, Media.VOICE)  # what a visitor may choose for a call


class Presence(enum.StrEnum):
    AVAILABLE = "available"
    AWAY = "away"


class Callback(enum.StrEnum):
    OPEN = "open"
    DONE = "done"


@dataclass(slots=True)
class Tenant:
    id: str
    name: str
    allowed_regions: list[str] = field(default_factory=lambda: [EU])
    retention_months: int = MAX_RETENTION_MONTHS
    created_at: float = 0.0
    # the operator's overrides of the click limits (control/settings.py ClickLimits), by
    # field name; a field not named here follows the operator's default
    click_limits: dict[str, float] = field(default_factory=dict)


@dataclass(slots=True)
class ApiKey:
    id: str  # public prefix shown in listings, e.g. "ck_3f9a1c"
    tenant_id: str
    key_hash: bytes  # SHA-256 of the whole secret key; the key itself is shown once
    created_at: float = 0.0
    revoked_at: float | None = None
    name: str | None = None  # what the tenant calls it ("CRM sync"), shown in listings


ADMIN = "admin"  # the role of a business's owners and admins: the dashboard
STAFF = "staff"  # the role of people who answer calls: the console


@dataclass(slots=True)
class Staff:
    id: str
    tenant_id: str
    name: str
    groups: list[str] = field(default_factory=list)
    active: bool = True
    created_at: float = 0.0
    email: str | None = None  # lower-cased; unique across tenants (sign-in names no tenant)
    password_hash: str | None = None  # argon2id (control/accounts.py); None: not invited yet
    password_changed_at: float | None = None
    roles: list[str] = field(default_factory=lambda: ["staff"])
    presence: Presence = Presence.AVAILABLE
    wrapup_until: float | None = None  # after a call: no new ring before this
    missed_rings: int = 0  # rings left unanswered in a row (auto-away at a threshold)
    seen_at: float | None = None  # last console activity
    totp_secret: str | None = None  # two-factor sign-in (base32), once confirmed
    totp_pending: str | None = None  # while enrolling: shown as a QR code, not yet confirmed
    totp_step: int | None = None  # time step of the last code accepted (each is good once)

    @property
    def is_admin(self) -> bool:
        return ADMIN in self.roles

    @property
    def is_staff(self) -> bool:
        return STAFF in self.roles


@dataclass(slots=True)
class OpeningHours:
    """Weekly windows in the link's time zone: weekday 0 = Monday, minutes since midnight."""

    timezone: str = "UTC"
    windows: list[tuple[int, int, int]] = field(default_factory=list)  # (weekday, start, end)


@dataclass(slots=True)
class Link:
    id: str  # internal id
    public_id: str  # what the button and the shareable URL carry
    tenant_id: str
    name: str
    media: list[Media] = field(default_factory=lambda: [Media.VOICE, Media.VIDEO])
    ring_staff: list[str] = field(default_factory=list)  # staff ids
    ring_groups: list[str] = field(default_factory=list)
    hours: OpeningHours | None = None  # None: always open
    ring_timeout: float = 45.0  # seconds before a ringing call is missed
    active: bool = True
    created_at: float = 0.0
    relay_only: bool = True  # signalling passes relay candidates only (False: direct paths too)


@dataclass(slots=True)
class Call:
    id: str
    tenant_id: str
    link_id: str
    status: CallStatus = CallStatus.RINGING
    created_at: float = 0.0
    answered_at: float | None = None
    ended_at: float | None = None
    answered_by: str | None = None  # staff id
    end_reason: str | None = None
    relay_node: str | None = None
    relay_region: str | None = None
    visitor_prefix: str | None = None  # /24 or /48, never the full address
    visitor_browser: str | None = None  # family only, e.g. "Chrome"
    visitor_os: str | None = None  # family only, e.g. "Android"
    visitor_ref: str | None = None  # identifier the tenant captured (email, phone), if any
    visitor_key: str | None = None  # keyed hash of the full IP, salt rotated daily (privacy.py)
    call_ref: str | None = None  # the short reference the visitor sees, "K7Q2-M9XD"
    media: Media | None = None  # what the visitor chose: video or voice
    visitor_check: dict[str, object] | None = None  # the connection check's verdict
    callback_state: Callback | None = None  # a callback request: open, then done
    callback_at: float | None = None  # when it was requested
    callback_done_by: str | None = None  # staff id
    rung: list[str] | None = None  # staff ids the click rang (None: stored before it was kept)


@dataclass(slots=True)
class SessionToken:
    """What a signed session token stands for; the signature is not stored."""

    id: str  # also the <token-id> in the relay username "<expiry>:<token-id>"
    tenant_id: str
    call_id: str | None  # None for the raw ICE-credentials endpoint
    role: Role | None
    staff_id: str | None
    issued_at: float
    expires_at: float
    revoked_at: float | None = None
    parent: str | None = None  # the web session (id_hash) a console token was minted under


@dataclass(slots=True)
class WebSession:
    """A signed-in staff console. The cookie carries a secret; only its SHA-256 is kept."""

    id_hash: str
    tenant_id: str
    staff_id: str
    csrf: str  # what state-changing requests must echo (X-CSRF-Token or a csrf form field)
    created_at: float
    last_seen: float  # idle timeout counts from here
    expires_at: float  # absolute end
    revoked_at: float | None = None
    pending: bool = False  # the password was right; the second factor is still to come


@dataclass(slots=True)
class Invitation:
    """Sets a member's first password; its secret is in the link, its SHA-256 here."""

    token_hash: str
    tenant_id: str
    staff_id: str
    email: str
    created_at: float
    expires_at: float
    used_at: float | None = None


@dataclass(slots=True)
class RelayNode:
    id: str
    region: str
    urls: list[str]  # turn: / stun: URLs clients use
    allocations: int = 0
    packet_rate: float = 0.0
    cpu: float = 0.0  # 0..1 of the node's cores
    draining: bool = False
    last_heartbeat: float = 0.0
    registered_at: float = 0.0


# visitor fields of a call that are personal data: what an erasure removes
PERSONAL_CALL_FIELDS = (
    "visitor_ref",
    "visitor_prefix",
    "visitor_browser",
    "visitor_os",
    "visitor_key",
)
# what an erasure removes: the personal fields and the reference the visitor was shown
ERASED_CALL_FIELDS = (*PERSONAL_CALL_FIELDS, "call_ref")


@dataclass(slots=True)
class AuditEntry:
    """One access to, change of or erasure of a data subject's records (append-only)."""

    tenant_id: str
    at: float
    actor: str  # the API key id, "retention" for the purge job, "staff:<id>" for an admin
    action: str  # "access", "set_ref", ..., "purge"; dashboard actions: control/privacy.py
    subject: str | None = None  # SHA-256 (hex) of the identifier the tenant captured
    details: dict[str, object] = field(default_factory=dict)
    seq: int = 0  # assigned by the store


@dataclass(slots=True)
class Purge:
    """One retention run over one tenant that removed something."""

    tenant_id: str
    at: float
    cutoff: float  # calls created and audit entries written before this went
    calls: int = 0
    audit_entries: int = 0
    seq: int = 0  # assigned by the store


# --- webhooks ----------------------------------------------------------------------------------

HOOK_EVENTS = ("ringing", "answered", "missed", "ended", "callback_requested")

# Why a delivery attempt failed (``Delivery.last_error_code``), a closed set, and the params
# each carries (``last_error_params``); docs/webhooks.md lists them for API clients and the
# dashboard's catalogue has a sentence for each (``dash.hooks.error.<code>``).
HOOK_ERRORS = (
    "off",  # the endpoint was switched off after the event was queued
    "refused",  # its URL or address is not allowed (now): reason (a Refused's), its params, detail
    "no_address",  # its host gave no address to try
    "connect",  # no connection could be made: detail
    "timeout",  # no answer within the attempt's time: seconds
    "redirect",  # a 3xx, never followed: status
    "http_status",  # another non-2xx status: status
    "http_error",  # the exchange failed after connecting (TLS, protocol, reset): detail
    "queue_full",  # not sent: the business had --webhook-queue deliveries waiting
)


class DeliveryState(enum.StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"


@dataclass(slots=True)
class Hook:
    """A tenant's HTTPS endpoint for call events (control/webhooks.py)."""

    id: str
    tenant_id: str
    url: str
    events: list[str]  # of HOOK_EVENTS
    secret: str  # signs every delivery (HMAC-SHA256); shown once
    prev_secret: str | None = None  # the secret before a rotation, still signing ...
    prev_until: float | None = None  # ... until then
    include_visitor: bool = False  # payloads carry the visitor's reference and callback contact
    active: bool = True
    created_at: float = 0.0


@dataclass(slots=True)
class Delivery:
    """One event for one endpoint, kept until delivered or given up (the durable queue)."""

    id: str  # the idempotency id the receiver sees; "send again" keeps it
    tenant_id: str
    endpoint_id: str
    event: str
    payload: str  # the JSON body, exactly as sent
    call_id: str | None = None
    personal: bool = False  # the payload carries visitor details
    state: DeliveryState = DeliveryState.PENDING
    attempts: int = 0
    next_attempt_at: float = 0.0
    last_status: int | None = None  # the receiver's HTTP status, last attempt
    last_error: str | None = None  # why the last attempt failed, in English
    # ... and the same for programs: one of HOOK_ERRORS (None before migration 0013, or when
    # the last attempt succeeded) with what its sentence needs (a status, seconds, a detail)
    last_error_code: str | None = None
    last_error_params: dict[str, str | int | float] = field(default_factory=dict)
    created_at: float = 0.0
    queued_at: float = 0.0  # the retry window starts here (creation or "send again")
    done_at: float | None = None
