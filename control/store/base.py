"""The store's interface: what the control plane may ask of its database, and what it gets back.

:class:`Store` is the contract both back-ends meet (``control/store/sql.py`` writes it once in
portable SQL). Errors a person can cause come out as :class:`NotFound`, :class:`Conflict` or
:class:`Invalid`, never as a driver exception; a failed write changes nothing. Notifications
arrive through a :class:`Subscription`.
"""

from __future__ import annotations

import abc
import asyncio
import logging
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from types import TracebackType
from typing import Any, Literal, NamedTuple

from control.models import (
    ApiKey,
    AuditEntry,
    Call,
    CallStatus,
    Delivery,
    Hook,
    Invitation,
    Link,
    Purge,
    RelayNode,
    Role,
    SessionToken,
    Staff,
    Tenant,
    WebSession,
)
from control.quality import AllocationQuality, CallStats, Usage

log = logging.getLogger("clickacall.control.store")

MAX_CHANNEL_BYTES = 63  # PostgreSQL's identifier limit; enforced on both back-ends
MAX_PAYLOAD_BYTES = 7999  # PostgreSQL's NOTIFY payload limit
SUBSCRIPTION_BACKLOG = 1024
MAX_SIGNALS = 1000  # signalling messages one call may hold
MAX_SIGNAL_BYTES = 65536  # one signalling message (an SDP with many codecs stays well below)
MAX_SUBJECT_CALLS = 100_000  # calls one data-subject look-up may return
MAX_CALLBACKS = 1000  # open callback requests one look-up returns
# staff fields only their own paths write (sign-in, console, lifecycle), never update_staff
STAFF_STATE = (
    "email",
    "password_hash",
    "password_changed_at",
    "presence",
    "wrapup_until",
    "missed_rings",
    "seen_at",
    "totp_secret",
    "totp_pending",
)
MAX_RECOVERY_CODES = 20  # recovery codes one member may hold


class StoreError(Exception):
    """Base of every error the store raises on purpose."""


class NotFound(StoreError, LookupError):
    """No such record, or it belongs to another tenant (the two are indistinguishable)."""


class Conflict(StoreError):
    """The record would duplicate a unique value (an id, a public id, a key hash)."""


class Invalid(StoreError, ValueError):
    """A value the store cannot accept (bad cursor, out-of-range setting, oversized payload)."""


class Busy(StoreError):
    """The database is locked by another connection past the busy timeout (SQLite's
    ``SQLITE_BUSY``/``SQLITE_LOCKED``): nothing was done, and trying again later may work."""


StatementOp = Literal["read", "write"]
StatementObserver = Callable[[StatementOp, float, bool], None]
"""``observer(op, seconds, failed)``: one database statement ran, a read or a write, for that
long; ``failed`` if it raised (a cancelled one included). See :meth:`Store.observe_statements`."""


class Ringing(NamedTuple):
    """Calls ringing now (within their link's ring timeout) on one link and in its tenant,
    and when the first of each stops ringing at the latest (None when none rings)."""

    link: int
    tenant: int
    link_frees: float | None
    tenant_frees: float | None


class CallPage(NamedTuple):
    calls: list[Call]
    next_cursor: str | None  # pass back as ``cursor=`` for the next page; None: no more


class CallLogPage(NamedTuple):
    entries: list[tuple[Call, CallStats | None]]  # a call and its figures (None: no summary yet)
    next_cursor: str | None


# --- notifications -------------------------------------------------------------------------


class Subscription:
    """An async iterator over one channel's payloads; ``await store.listen(ch)`` returns it.

    It is already listening when returned, so nothing notified afterwards is missed. A consumer
    that falls :data:`SUBSCRIPTION_BACKLOG` payloads behind, or whose connection is lost, gets a
    :class:`StoreError` from the iterator and should subscribe again and re-read state.
    """

    def __init__(self, channel: str, on_close: Callable[[Subscription], None]) -> None:
        self.channel = channel
        self._queue: asyncio.Queue[str | StoreError | None] = asyncio.Queue()
        self._on_close = on_close
        self._closed = False

    def deliver(self, payload: str) -> None:
        if self._closed:
            return
        if self._queue.qsize() >= SUBSCRIPTION_BACKLOG:
            log.warning("listener on %r fell behind; ending its subscription", self.channel)
            self.fail(StoreError(f"listener on {self.channel!r} fell behind"))
            return
        self._queue.put_nowait(payload)

    def fail(self, error: StoreError | None) -> None:
        """End the subscription: with ``error`` raised to the consumer, or cleanly on None."""
        if not self._closed:
            self._closed = True
            self._queue.put_nowait(error)
            self._on_close(self)

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> str:
        if self._closed and self._queue.empty():
            raise StopAsyncIteration
        item = await self._queue.get()
        if item is None:
            raise StopAsyncIteration
        if isinstance(item, StoreError):
            raise item
        return item

    async def aclose(self) -> None:
        self.fail(None)

    async def __aenter__(self) -> Subscription:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()


def check_channel(channel: str, payload: str = "") -> None:
    if not channel or len(channel.encode()) > MAX_CHANNEL_BYTES:
        raise Invalid(f"channel name must be 1-{MAX_CHANNEL_BYTES} bytes")
    if len(payload.encode()) > MAX_PAYLOAD_BYTES:
        raise Invalid(f"notification payload is over {MAX_PAYLOAD_BYTES} bytes")


# --- the interface -------------------------------------------------------------------------


class Store(abc.ABC):
    """What the control plane may ask of its database. All methods are coroutines, except
    :meth:`observe_statements`.

    Tenant-scoped methods take ``tenant_id`` (or a record carrying it) and touch only that
    tenant's rows. ``update_*`` raise :class:`NotFound`; ``delete_*``/``revoke_*`` return
    whether something changed.
    """

    backend: str  # "sqlite" or "postgres"
    _statement_observer: StatementObserver | None = None

    # observation
    def observe_statements(self, observer: StatementObserver | None) -> None:
        """Call ``observer(op, seconds, failed)`` after each database statement this store
        runs from now on: ``op`` is ``"read"`` or ``"write"``, ``seconds`` its latency (a
        failed one's too), ``failed`` whether it raised. It runs on the event loop, so it must
        be quick, and must not raise. One observer at a time: this replaces the one before;
        None stops observing. (For metrics: ``control.metrics.instrument_store``.)"""
        self._statement_observer = observer

    # transactions
    @abc.abstractmethod
    def transaction(self) -> AbstractAsyncContextManager[None]:
        """``async with store.transaction():`` runs this task's statements in between as one
        database transaction: all of them or, when the block raises, none. Other tasks' writes
        wait for it to end; a transaction inside another joins it. Keep it to a few writes
        (no notifications, nothing slow: the database's writer is held)."""

    # tenants (operator-level)
    @abc.abstractmethod
    async def create_tenant(self, tenant: Tenant) -> None: ...
    @abc.abstractmethod
    async def get_tenant(self, tenant_id: str) -> Tenant | None: ...
    @abc.abstractmethod
    async def list_tenants(self) -> list[Tenant]: ...
    @abc.abstractmethod
    async def update_tenant(self, tenant: Tenant) -> None:
        """Name, allowed regions and retention; id and created_at never change."""

    # api keys
    @abc.abstractmethod
    async def add_api_key(self, key: ApiKey) -> None: ...
    @abc.abstractmethod
    async def find_api_key(self, key_hash: bytes) -> ApiKey | None:
        """The non-revoked key with this hash, whichever tenant owns it (authentication)."""

    @abc.abstractmethod
    async def list_api_keys(self, tenant_id: str) -> list[ApiKey]: ...
    @abc.abstractmethod
    async def revoke_api_key(
        self, tenant_id: str, key_id: str, at: float | None = None
    ) -> bool: ...

    # staff
    @abc.abstractmethod
    async def create_staff(self, staff: Staff) -> None: ...
    @abc.abstractmethod
    async def get_staff(self, tenant_id: str, staff_id: str) -> Staff | None: ...
    @abc.abstractmethod
    async def list_staff(self, tenant_id: str) -> list[Staff]: ...
    @abc.abstractmethod
    async def update_staff(self, staff: Staff) -> None: ...
    @abc.abstractmethod
    async def delete_staff(self, tenant_id: str, staff_id: str) -> bool: ...

    @abc.abstractmethod
    async def find_staff_by_email(self, email: str) -> Staff | None:
        """The member with this (lower-cased) email, whichever tenant (sign-in)."""

    @abc.abstractmethod
    async def set_staff_fields(
        self, tenant_id: str, staff_id: str, changes: dict[str, Any]
    ) -> bool:
        """Set :data:`STAFF_STATE` fields of one member; whether it exists. An email another
        member has is a :class:`Conflict`."""

    @abc.abstractmethod
    async def set_staff_access(
        self,
        tenant_id: str,
        staff_id: str,
        *,
        roles: list[str] | None = None,
        active: bool | None = None,
    ) -> bool:
        """Set one member's roles and/or whether they are active (what is not None); whether
        the member exists. If that would leave the tenant with no active member holding the
        admin role, nothing changes and it raises :class:`Conflict`. One transaction that
        first writes the tenant's row, so two admins taking each other's admin role (or
        deactivating each other) at once cannot both succeed."""

    @abc.abstractmethod
    async def miss_rings(self, tenant_id: str, staff_ids: list[str], away_after: int) -> list[str]:
        """Count one more unanswered ring for each member; those now at ``away_after`` or
        more who were available become away. Returns the ids set away."""

    # links
    @abc.abstractmethod
    async def create_link(self, link: Link) -> None: ...
    @abc.abstractmethod
    async def get_link(self, tenant_id: str, link_id: str) -> Link | None: ...
    @abc.abstractmethod
    async def get_link_by_public_id(self, public_id: str) -> Link | None:
        """Public lookup for a visitor's button; the caller checks ``active`` and hours."""

    @abc.abstractmethod
    async def list_links(self, tenant_id: str) -> list[Link]: ...
    @abc.abstractmethod
    async def update_link(self, link: Link) -> None: ...
    @abc.abstractmethod
    async def delete_link(self, tenant_id: str, link_id: str) -> bool:
        """Removes the link; its calls stay (they are the tenant's call log)."""

    # calls
    @abc.abstractmethod
    async def create_call(self, call: Call) -> None:
        """NotFound unless ``call.link_id`` is one of ``call.tenant_id``'s links."""

    @abc.abstractmethod
    async def get_call(self, tenant_id: str, call_id: str) -> Call | None: ...
    @abc.abstractmethod
    async def list_calls(
        self,
        tenant_id: str,
        status: CallStatus | None = None,
        since: float | None = None,
        until: float | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> CallPage:
        """Newest first by (created_at, id); ``since`` inclusive, ``until`` exclusive.

        Pages are keyset-based: calls created while paging never shift or repeat items.
        """

    @abc.abstractmethod
    async def count_ringing(self, tenant_id: str, link_id: str, now: float) -> Ringing:
        """The calls ringing at ``now`` on the link and in the tenant: status ringing and
        created within their link's ring timeout (one not yet settled as missed is not
        counted). One statement."""

    @abc.abstractmethod
    async def lock_ringing(self, tenant_id: str) -> None:
        """Inside a :meth:`transaction`: hold the tenant's ringing lock until it ends, so that
        counting its calls ringing (:meth:`count_ringing`) and creating one are one step for
        concurrent clicks: the ringing caps hold exactly. Other tenants do not wait."""

    @abc.abstractmethod
    async def update_call(self, call: Call, expect_status: CallStatus) -> bool:
        """Write ``call`` only if its stored status is still ``expect_status``.

        One conditional UPDATE, so across processes exactly one of several racing writers
        (e.g. staff answering the same ringing call) wins; the others get False.
        """

    # session tokens (global ids: the relay sees only the token id)
    @abc.abstractmethod
    async def save_token(self, token: SessionToken) -> None: ...
    @abc.abstractmethod
    async def get_token(self, token_id: str) -> SessionToken | None: ...
    @abc.abstractmethod
    async def revoke_token(self, token_id: str, at: float) -> bool: ...
    @abc.abstractmethod
    async def revoked_since(self, ts: float) -> list[tuple[str, float]]:
        """(token id, revoked_at) for revocations at or after ``ts``, oldest first.

        Inclusive, so a poller passing its last seen ``revoked_at`` may see an entry twice but
        never misses one.
        """

    @abc.abstractmethod
    async def revoke_call_tokens(self, tenant_id: str, call_id: str, at: float) -> int:
        """Revoke every live token issued for one call; returns how many were revoked."""

    @abc.abstractmethod
    async def revoke_tokens_of(
        self, tenant_id: str, at: float, *, staff_id: str | None = None, parent: str | None = None
    ) -> list[SessionToken]:
        """Revoke every live token of one staff member, or minted under one web session
        (exactly one of the two); returns them (as they were before)."""

    # the web front: console sessions and invitations
    @abc.abstractmethod
    async def create_web_session(self, session: WebSession) -> None: ...
    @abc.abstractmethod
    async def get_web_session(self, id_hash: str) -> WebSession | None: ...
    @abc.abstractmethod
    async def touch_web_session(self, id_hash: str, at: float) -> bool:
        """Move a live session's ``last_seen`` to ``at``; False if revoked or gone."""

    @abc.abstractmethod
    async def revoke_web_sessions(
        self, tenant_id: str, staff_id: str, at: float, *, id_hash: str | None = None
    ) -> int:
        """Revoke one session of the member (``id_hash``) or all of them; how many."""

    @abc.abstractmethod
    async def list_web_sessions(self, tenant_id: str, staff_id: str) -> list[WebSession]:
        """The member's sessions not yet revoked (expired or idle ones too), oldest first."""

    @abc.abstractmethod
    async def count_web_sessions(self, now: float, idle_since: float) -> int:
        """Sessions live at ``now``: not revoked, not expired, seen since ``idle_since``."""

    @abc.abstractmethod
    async def purge_web(self, now: float, idle_since: float) -> int:
        """Delete sessions that are over (revoked, expired or idle) and invitations that
        expired; how many rows went."""

    # two-factor sign-in
    @abc.abstractmethod
    async def use_totp_step(self, tenant_id: str, staff_id: str, step: int) -> bool:
        """Record that the member's code of time step ``step`` was accepted, if no code of
        that step or a later one was before (one conditional write: a code is good once)."""

    @abc.abstractmethod
    async def replace_recovery_codes(
        self, tenant_id: str, staff_id: str, code_hashes: list[str], at: float
    ) -> None:
        """The member's recovery codes are these (at most :data:`MAX_RECOVERY_CODES`), and
        only these; an empty list removes them all."""

    @abc.abstractmethod
    async def use_recovery_code(
        self, tenant_id: str, staff_id: str, code_hash: str, at: float
    ) -> bool:
        """Mark the member's unused recovery code used; whether this call did."""

    @abc.abstractmethod
    async def count_recovery_codes(self, tenant_id: str, staff_id: str) -> int:
        """How many of the member's recovery codes are still unused."""

    @abc.abstractmethod
    async def replace_invitation(self, invitation: Invitation) -> None:
        """Store a new invitation for the member; one not yet used is replaced."""

    @abc.abstractmethod
    async def get_invitation(self, token_hash: str) -> Invitation | None: ...
    @abc.abstractmethod
    async def use_invitation(self, token_hash: str, at: float) -> bool:
        """Mark it used if it is unused and unexpired at ``at``; whether this call did."""

    # calls: what the visitor adds (their own statements, so no state change undoes them)
    @abc.abstractmethod
    async def set_call_check(
        self, tenant_id: str, call_id: str, check: dict[str, Any], statuses: list[CallStatus]
    ) -> bool:
        """Store the connection check's verdict if the call's status is one of ``statuses``."""

    @abc.abstractmethod
    async def request_callback(
        self, tenant_id: str, call_id: str, visitor_ref: str, at: float, statuses: list[CallStatus]
    ) -> bool:
        """Open a callback request on a call that is in one of ``statuses``, was never
        answered and has none yet, keeping the name and contact as its ``visitor_ref``."""

    @abc.abstractmethod
    async def close_callback(self, tenant_id: str, call_id: str, staff_id: str, at: float) -> bool:
        """Mark an open callback request done by ``staff_id``; False if none is open."""

    @abc.abstractmethod
    async def list_callbacks(self, tenant_id: str, link_ids: list[str]) -> list[Call]:
        """Open callback requests (with a contact left) on these links, oldest first, at
        most :data:`MAX_CALLBACKS`."""

    # staff declines
    @abc.abstractmethod
    async def decline_call(
        self, tenant_id: str, call_id: str, staff_id: str, at: float
    ) -> list[str]:
        """Record that ``staff_id`` declined the call (again is harmless); returns every
        staff id that has declined it so far, first decline first."""

    @abc.abstractmethod
    async def list_declines(self, tenant_id: str, call_id: str) -> list[str]: ...

    @abc.abstractmethod
    async def list_decline_times(self, tenant_id: str, call_id: str) -> list[tuple[str, float]]:
        """(staff id, when) of each decline of the call, first decline first."""

    # signalling messages, kept until the other party reads them and the call ends
    @abc.abstractmethod
    async def add_signal(
        self, tenant_id: str, call_id: str, sender: Role, body: str, at: float
    ) -> None:
        """Append one message; :class:`Invalid` once the call holds :data:`MAX_SIGNALS`."""

    @abc.abstractmethod
    async def read_signals(
        self, tenant_id: str, call_id: str, sender: Role, after: int
    ) -> list[tuple[int, str]]:
        """(seq, body) of ``sender``'s messages with seq > ``after``, in the order sent."""

    @abc.abstractmethod
    async def delete_signals(self, tenant_id: str, call_id: str) -> int: ...
    @abc.abstractmethod
    async def purge_signals(self, before: float) -> int:
        """Delete every message older than ``before`` (calls left hanging)."""

    # privacy
    #
    # A call's visitor fields (PERSONAL_CALL_FIELDS) are written when the call is created and
    # then only here: ``update_call`` leaves them alone, so an erasure is never undone by a
    # state change racing it. "Rows hanging off a call" are those of every table with a
    # ``tenant_id`` and a ``call_id`` column (tokens, declines, signals, quality, ...).
    @abc.abstractmethod
    async def find_subject_calls(
        self,
        tenant_id: str,
        *,
        ref: str | None = None,
        call_id: str | None = None,
        key: str | None = None,
        call_ref: str | None = None,
        limit: int = MAX_SUBJECT_CALLS,
    ) -> list[Call]:
        """The tenant's calls with this ``visitor_ref``, this id, this ``visitor_key`` or this
        ``call_ref`` (exactly one of the four), oldest first."""

    @abc.abstractmethod
    async def call_records(self, tenant_id: str, call_id: str) -> dict[str, list[dict[str, Any]]]:
        """The rows hanging off one call, by table (its session tokens left out)."""

    @abc.abstractmethod
    async def set_call_fields(
        self, tenant_id: str, call_ids: list[str], changes: dict[str, str | None]
    ) -> int:
        """Set visitor fields (PERSONAL_CALL_FIELDS only) of these calls; how many matched."""

    @abc.abstractmethod
    async def erase_calls(self, tenant_id: str, call_ids: list[str]) -> int:
        """Remove the personal fields of these calls, the reference the visitor was shown
        (``call_ref``: it ties the visitor to the call) and their signalling messages (which
        carry addresses); the calls stay, anonymous. Returns how many matched."""

    @abc.abstractmethod
    async def delete_calls(self, tenant_id: str, call_ids: list[str]) -> int:
        """Delete these calls and every row hanging off them; how many calls went."""

    @abc.abstractmethod
    async def append_audit(self, entry: AuditEntry) -> None:
        """Append to the audit log (``entry.seq`` is ignored: the store numbers entries)."""

    @abc.abstractmethod
    async def list_audit(
        self,
        tenant_id: str,
        after: int = 0,
        limit: int = 100,
        subjects: list[str] | None = None,
        *,
        before: int | None = None,
        newest: bool = False,
    ) -> list[AuditEntry]:
        """The tenant's audit entries with seq > ``after`` (and < ``before`` if given), oldest
        first (``newest``: newest first); with ``subjects``, only those whose subject is one
        of them."""

    @abc.abstractmethod
    async def purge_tenant(self, tenant_id: str, cutoff: float, at: float) -> Purge | None:
        """Retention: delete the tenant's calls created before ``cutoff`` with every row
        hanging off them, tokens expired before it, and audit entries written before it.
        Records and returns the purge if anything went; None if nothing did."""

    @abc.abstractmethod
    async def list_purges(self, tenant_id: str) -> list[Purge]: ...

    # relay nodes
    @abc.abstractmethod
    async def upsert_node(self, node: RelayNode) -> None:
        """Register or heartbeat; a re-registering node keeps its first ``registered_at``."""

    @abc.abstractmethod
    async def list_nodes(self, region: str | None = None) -> list[RelayNode]: ...

    # relay nodes' own credentials (enrolment): only their SHA-256 is stored
    @abc.abstractmethod
    async def enrol_node(self, node_id: str, key_hash: str, at: float) -> bool:
        """Bind ``node_id`` to the credential hashing to ``key_hash``; False (nothing
        changed) if the id already has a credential."""

    @abc.abstractmethod
    async def node_credential(self, node_id: str) -> str | None:
        """The hash of the node's credential, None if it has not enrolled."""

    @abc.abstractmethod
    async def node_of_credential(self, key_hash: str) -> str | None:
        """The node id whose credential hashes to ``key_hash``, None if none."""

    @abc.abstractmethod
    async def revoke_node_credential(self, node_id: str) -> bool:
        """Forget the node's credential (it may enrol again); False if it had none."""

    @abc.abstractmethod
    async def get_node(self, node_id: str) -> RelayNode | None: ...

    # call logs and quality
    #
    # Relay summaries (docs/relay-summaries.md) become one AllocationQuality per allocation,
    # folded into one CallStats per call (control/quality.py). Both tables hang off ``calls``
    # (ON DELETE CASCADE): deleting a call deletes its quality records.
    @abc.abstractmethod
    async def summary_seq(self, node_id: str) -> int:
        """The highest summary seq stored for this relay node (0: none yet)."""

    @abc.abstractmethod
    async def claim_summary(self, node_id: str, seq: int, stored: bool, at: float) -> bool:
        """Record summary ``seq`` of the node as done (``stored``, or dropped and counted):
        False if the node's highest seq is already at or above it. One statement, so a
        summary delivered twice, even concurrently, counts once."""

    @abc.abstractmethod
    async def save_quality(self, record: AllocationQuality) -> bool:
        """Keep ``record`` as its allocation's newest summary: it replaces the stored one
        only if its seq is higher and the stored one is not final. NotFound if the call is
        gone. Returns whether anything was written."""

    @abc.abstractmethod
    async def list_quality(self, tenant_id: str, call_id: str) -> list[AllocationQuality]:
        """The call's allocation records, oldest allocation first."""

    @abc.abstractmethod
    async def refresh_call_stats(self, tenant_id: str, call_id: str, at: float) -> CallStats | None:
        """Fold the call's allocation records into its stored per-call figures."""

    @abc.abstractmethod
    async def get_call_stats(self, tenant_id: str, call_id: str) -> CallStats | None: ...
    @abc.abstractmethod
    async def list_call_log(
        self,
        tenant_id: str,
        *,
        status: CallStatus | None = None,
        since: float | None = None,
        until: float | None = None,
        link_id: str | None = None,
        staff_id: str | None = None,
        mos_below: float | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> CallLogPage:
        """Calls with their figures, newest first, keyset-paged like :meth:`list_calls`.
        ``staff_id`` is who answered; ``mos_below`` keeps calls whose worse direction scored
        under it (calls without relay summaries have no score and are left out)."""

    @abc.abstractmethod
    async def usage(
        self, tenant_id: str, since: float, until: float, by: str | None = None
    ) -> list[Usage]:
        """The tenant's calls created in [since, until) per UTC day, and per link
        (``by="link"``), answering staff member (``"staff"``) or not (None)."""

    @abc.abstractmethod
    async def regional_usage(self, since: float, until: float) -> list[Usage]:
        """Every tenant's calls created in [since, until) per UTC day and relay region (for
        the operator's anonymised aggregates: the caller applies the k-anonymity floor)."""

    # webhooks (control/store/hooks.py): a tenant's endpoints and the durable delivery queue
    @abc.abstractmethod
    async def create_hook(self, hook: Hook) -> None: ...
    @abc.abstractmethod
    async def get_hook(self, tenant_id: str, hook_id: str) -> Hook | None: ...
    @abc.abstractmethod
    async def list_hooks(self, tenant_id: str) -> list[Hook]:
        """Oldest first."""

    @abc.abstractmethod
    async def count_hooks(self, tenant_id: str) -> int: ...
    @abc.abstractmethod
    async def update_hook(self, hook: Hook) -> bool:
        """Everything but id, tenant and created_at; False if there is no such endpoint."""

    @abc.abstractmethod
    async def delete_hook(self, tenant_id: str, hook_id: str) -> bool:
        """The endpoint and its deliveries."""

    @abc.abstractmethod
    async def add_deliveries(self, deliveries: list[Delivery]) -> None: ...
    @abc.abstractmethod
    async def count_pending(self, tenant_id: str | None = None) -> int:
        """Deliveries still to make: the tenant's, or every tenant's (None)."""

    @abc.abstractmethod
    async def due_deliveries(self, now: float, limit: int) -> list[Delivery]:
        """Pending deliveries due at ``now``, the longest waiting first."""

    @abc.abstractmethod
    async def next_due(self) -> float | None:
        """When the next pending delivery is due (None: none is pending)."""

    @abc.abstractmethod
    async def claim_delivery(self, d: Delivery, lease_until: float) -> bool:
        """Take a due delivery for one attempt: its next attempt moves to ``lease_until``
        if it is still pending and due when ``d`` was read (one conditional write)."""

    @abc.abstractmethod
    async def finish_attempt(self, d: Delivery) -> bool:
        """Record an attempt's outcome on a delivery still pending."""

    @abc.abstractmethod
    async def get_delivery(self, tenant_id: str, delivery_id: str) -> Delivery | None: ...
    @abc.abstractmethod
    async def list_deliveries(
        self,
        tenant_id: str,
        endpoint_id: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> tuple[list[Delivery], str | None]:
        """Newest first, keyset-paged: (page, cursor of the next page or None)."""

    @abc.abstractmethod
    async def requeue_delivery(self, tenant_id: str, delivery_id: str, now: float) -> bool:
        """Send again: pending from ``now``, same id and payload, a fresh retry window."""

    @abc.abstractmethod
    async def forget_personal_deliveries(self, tenant_id: str, call_ids: list[str]) -> int:
        """Delete the deliveries of these calls whose payload carried visitor details."""

    # cross-process notifications
    @abc.abstractmethod
    async def listen(self, channel: str) -> Subscription:
        """Subscribe to ``channel``; iterate the result for payloads, ``aclose()`` it when done."""

    @abc.abstractmethod
    async def notify(self, channel: str, payload: str) -> None: ...

    @abc.abstractmethod
    async def close(self) -> None: ...

    async def __aenter__(self) -> Store:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()
