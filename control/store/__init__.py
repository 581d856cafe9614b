"""The control plane's storage: one narrow async interface, two back-ends.

``await open_store(url)`` picks the back-end from the URL and brings the schema up to date:

- ``sqlite:///PATH`` (SQLAlchemy's convention: ``sqlite:///rel.db``, ``sqlite:////abs/x.db``) and
  ``sqlite:///:memory:``: embedded SQLite in WAL mode, one writer connection behind a lock and one
  reader. For one control-plane process (``clickacall up``, small deployments).
- ``postgresql://...`` (or ``postgres://``): an asyncpg pool. Several control-plane processes may
  share one database; everything they must agree on is in it (calls' compare-and-set, LISTEN/NOTIFY).

Tenant isolation is structural: tenant-owned rows are keyed by ``(tenant_id, id)``, every lookup by
id takes the tenant id, and records passed in carry their own ``tenant_id`` which every statement
filters on. Another tenant's row is indistinguishable from a missing one.

Errors a person can cause come out as :class:`NotFound`, :class:`Conflict` or :class:`Invalid`,
never as a driver exception; a failed write changes nothing.

Migrations are numbered SQL files in ``migrations/<back-end>/NNNN_name.sql``; pending ones are
applied in order, in one transaction, recorded in ``schema_migrations``. They run on open and by
hand with ``await migrate(url)``.
"""

from __future__ import annotations

import abc
import asyncio
import json
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, NamedTuple, TypeVar

from control.models import (
    MAX_RETENTION_MONTHS,
    PERSONAL_CALL_FIELDS,
    ApiKey,
    AuditEntry,
    Call,
    CallStatus,
    Link,
    Media,
    OpeningHours,
    Purge,
    RelayNode,
    Role,
    SessionToken,
    Staff,
    Tenant,
)
from control.quality import AllocationQuality, CallStats, Flow, Leg, Usage, call_stats

__all__ = [
    "CallLogPage",
    "CallPage",
    "Conflict",
    "Invalid",
    "NotFound",
    "Store",
    "StoreError",
    "Subscription",
    "migrate",
    "open_store",
]

log = logging.getLogger("clickacall.control.store")
T = TypeVar("T")

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
MAX_PAGE = 1000
MAX_CHANNEL_BYTES = 63  # PostgreSQL's identifier limit; enforced on both back-ends
MAX_PAYLOAD_BYTES = 7999  # PostgreSQL's NOTIFY payload limit
SUBSCRIPTION_BACKLOG = 1024
MAX_SIGNALS = 1000  # signalling messages one call may hold
MAX_SIGNAL_BYTES = 65536  # one signalling message (an SDP with many codecs stays well below)
MAX_SUBJECT_CALLS = 100_000  # calls one data-subject look-up may return


class StoreError(Exception):
    """Base of every error the store raises on purpose."""


class NotFound(StoreError, LookupError):
    """No such record, or it belongs to another tenant (the two are indistinguishable)."""


class Conflict(StoreError):
    """The record would duplicate a unique value (an id, a public id, a key hash)."""


class Invalid(StoreError, ValueError):
    """A value the store cannot accept (bad cursor, out-of-range setting, oversized payload)."""


class CallPage(NamedTuple):
    calls: list[Call]
    next_cursor: str | None  # pass back as ``cursor=`` for the next page; None: no more


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
    """What the control plane may ask of its database. All methods are coroutines.

    Tenant-scoped methods take ``tenant_id`` (or a record carrying it) and touch only that
    tenant's rows. ``update_*`` raise :class:`NotFound`; ``delete_*``/``revoke_*`` return
    whether something changed.
    """

    backend: str  # "sqlite" or "postgres"

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

    # staff declines
    @abc.abstractmethod
    async def decline_call(
        self, tenant_id: str, call_id: str, staff_id: str, at: float
    ) -> list[str]:
        """Record that ``staff_id`` declined the call (again is harmless); returns every
        staff id that has declined it so far, first decline first."""

    @abc.abstractmethod
    async def list_declines(self, tenant_id: str, call_id: str) -> list[str]: ...

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
        limit: int = MAX_SUBJECT_CALLS,
    ) -> list[Call]:
        """The tenant's calls with this ``visitor_ref``, this id or this ``visitor_key``
        (exactly one of the three), oldest first."""

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
        """Remove the personal fields of these calls and their signalling messages (which
        carry addresses); the calls stay, anonymous. Returns how many matched."""

    @abc.abstractmethod
    async def delete_calls(self, tenant_id: str, call_ids: list[str]) -> int:
        """Delete these calls and every row hanging off them; how many calls went."""

    @abc.abstractmethod
    async def append_audit(self, entry: AuditEntry) -> None:
        """Append to the audit log (``entry.seq`` is ignored: the store numbers entries)."""

    @abc.abstractmethod
    async def list_audit(
        self, tenant_id: str, after: int = 0, limit: int = 100
    ) -> list[AuditEntry]:
        """The tenant's audit entries with seq > ``after``, oldest first."""

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


# --- URLs and migrations -------------------------------------------------------------------


def parse_url(url: str) -> tuple[str, str]:
    """("sqlite", path) or ("postgres", dsn)."""
    if url.startswith("sqlite:///"):
        path = url.removeprefix("sqlite:///").split("?", 1)[0]
        if not path:
            raise Invalid(f"no database path in {url!r}")
        return "sqlite", path
    if url.startswith(("postgresql://", "postgres://")):
        return "postgres", url
    raise Invalid(f"unsupported database URL {url!r}: use sqlite:///PATH or postgresql://...")


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str


def load_migrations(backend: str) -> list[Migration]:
    found: dict[int, Migration] = {}
    for path in sorted((MIGRATIONS_DIR / backend).glob("*.sql")):
        m = re.fullmatch(r"(\d{4})_(\w+)\.sql", path.name)
        if m is None:
            raise StoreError(f"badly named migration {path}")
        version = int(m.group(1))
        if version in found:
            raise StoreError(f"two migrations numbered {version} for {backend}")
        found[version] = Migration(version, m.group(2), path.read_text())
    return [found[v] for v in sorted(found)]


def pending(migrations: list[Migration], applied: set[int], backend: str) -> list[Migration]:
    known = {m.version for m in migrations}
    if applied - known:
        raise StoreError(
            f"the {backend} database has schema version {max(applied)}, newer than this code "
            f"knows ({max(known, default=0)}); upgrade Clickacall"
        )
    return [m for m in migrations if m.version not in applied]


async def open_store(url: str) -> Store:
    """Open the store behind ``url`` and apply pending migrations."""
    backend, target = parse_url(url)
    if backend == "sqlite":
        from control.store.sqlite import SqliteStore

        return await SqliteStore.open(target)
    from control.store.postgres import PostgresStore

    return await PostgresStore.open(target)


async def migrate(url: str) -> list[int]:
    """Apply pending migrations to the database behind ``url``; returns the versions applied."""
    backend, target = parse_url(url)
    if backend == "sqlite":
        from control.store.sqlite import migrate_path

        return await migrate_path(target)
    from control.store.postgres import migrate_dsn

    return await migrate_dsn(target)


# --- the shared SQL implementation ---------------------------------------------------------

Row = Any  # sqlite3.Row or asyncpg.Record: both index by column name


def _js(value: object) -> str:
    return json.dumps(value, separators=(",", ":"))


def _jl(text: Any) -> Any:
    return json.loads(text) if isinstance(text, str | bytes) else text


def _opt_float(v: float | None) -> float | None:
    return None if v is None else float(v)


def _hours_out(hours: OpeningHours | None) -> str | None:
    if hours is None:
        return None
    return _js({"timezone": hours.timezone, "windows": [list(w) for w in hours.windows]})


def _hours_in(text: Any) -> OpeningHours | None:
    data = _jl(text)
    if data is None:
        return None
    windows = [(int(d), int(s), int(e)) for d, s, e in data["windows"]]
    return OpeningHours(timezone=str(data["timezone"]), windows=windows)


def _record(
    make: Callable[..., T], fields: tuple[str, ...], **decode: Callable[[Any], Any]
) -> Callable[[Row], T]:
    """A row decoder: ``make(**{field: decode.get(field, as-is)(row[field])})``.

    Drivers return floats for REAL/double columns; JSON, enums and SQLite's 0/1 need a decoder.
    Every model field is read from its column, so a new model field needs a migration.
    """

    def build(r: Row) -> T:
        return make(**{f: decode[f](r[f]) if f in decode else r[f] for f in fields})

    return build


def _jlist(text: Any) -> list[Any]:
    return list(_jl(text))


def _slots(cls: Any) -> tuple[str, ...]:
    return tuple(cls.__slots__)


def _opt(conv: Callable[[Any], Any]) -> Callable[[Any], Any]:
    return lambda v: None if v is None else conv(v)


_tenant = _record(Tenant, _slots(Tenant), allowed_regions=_jlist)
_key = _record(ApiKey, _slots(ApiKey), key_hash=bytes)
_staff = _record(Staff, _slots(Staff), groups=_jlist, active=bool)
_link = _record(
    Link,
    _slots(Link),
    media=lambda v: [Media(m) for m in _jl(v)],
    ring_staff=_jlist,
    ring_groups=_jlist,
    hours=_hours_in,
    active=bool,
)
_call = _record(Call, _slots(Call), status=CallStatus)
_token = _record(SessionToken, _slots(SessionToken), role=_opt(Role))
_node = _record(RelayNode, _slots(RelayNode), urls=_jlist, draining=bool)

# privacy
_audit = _record(AuditEntry, _slots(AuditEntry), details=lambda v: dict(_jl(v)), seq=int)
_purge = _record(Purge, _slots(Purge), calls=int, audit_entries=int, seq=int)
_TABLE_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_ID_CHUNK = 500  # ids per ``IN (...)`` list


def _columns(r: Row) -> list[str]:
    """A row's column names (iterating a row gives its values)."""
    return list(r.keys())


def _plain(value: Any) -> Any:
    """A column value as JSON can carry it (bytes as hex)."""
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).hex()
    return str(value)


_CALL_MUTABLE = [
    "status",
    "answered_at",
    "ended_at",
    "answered_by",
    "end_reason",
    "relay_node",
    "relay_region",
    "visitor_prefix",
    "visitor_browser",
    "visitor_os",
    "visitor_ref",
    "visitor_key",
]


def _call_mutable(c: Call) -> list[Any]:
    return [
        str(c.status),
        _opt_float(c.answered_at),
        _opt_float(c.ended_at),
        c.answered_by,
        c.end_reason,
        c.relay_node,
        c.relay_region,
        c.visitor_prefix,
        c.visitor_browser,
        c.visitor_os,
        c.visitor_ref,
        c.visitor_key,
    ]


def _encode_cursor(call: Call) -> str:
    return f"{float(call.created_at)!r}~{call.id}"


def _decode_cursor(cursor: str) -> tuple[float, str]:
    ts, sep, call_id = cursor.partition("~")
    try:
        if not sep or not call_id:
            raise ValueError(cursor)
        return float(ts), call_id
    except ValueError:
        raise Invalid("malformed page cursor") from None


def _call_page_where(
    alias: str, tenant_id: str, filters: list[tuple[str, object]], cursor: str | None
) -> tuple[str, list[object]]:
    """The WHERE clause (and its arguments) of a page of one tenant's calls, newest first:
    ``filters`` are ``(column op ?, value)`` pairs, applied where the value is not None, and
    ``cursor`` resumes after the last call of the previous page (keyset pagination)."""
    where = [f"{alias}tenant_id = ?"]
    args: list[object] = [tenant_id]
    for cond, value in filters:
        if value is not None:
            where.append(alias + cond)
            args.append(value)
    if cursor is not None:
        ts, last_id = _decode_cursor(cursor)
        where.append(f"({alias}created_at < ? OR ({alias}created_at = ? AND {alias}id < ?))")
        args += [ts, ts, last_id]
    return " AND ".join(where), args


def _check_tenant(t: Tenant) -> None:
    if not 1 <= t.retention_months <= MAX_RETENTION_MONTHS:
        raise Invalid(f"retention_months must be 1-{MAX_RETENTION_MONTHS}")
    if not t.allowed_regions:
        raise Invalid("a tenant needs at least one allowed region")


# --- call logs and quality: row codecs -----------------------------------------------------


class CallLogPage(NamedTuple):
    entries: list[tuple[Call, CallStats | None]]  # a call and its figures (None: no summary yet)
    next_cursor: str | None


def _flow_values(prefix: str, flow: Flow | None) -> dict[str, Any]:
    if flow is None:
        return {f"{prefix}_{k}": None for k in ("packets", "bytes", "lost", "jitter_ms", "mos")}
    return {
        f"{prefix}_packets": int(flow.packets),
        f"{prefix}_bytes": int(flow.bytes),
        f"{prefix}_lost": int(flow.lost),
        f"{prefix}_jitter_ms": float(flow.jitter_ms),
        f"{prefix}_mos": _opt_float(flow.mos),
    }


def _flow(r: Row, prefix: str) -> Flow | None:
    if r[f"{prefix}_packets"] is None:
        return None
    return Flow(
        packets=int(r[f"{prefix}_packets"]),
        bytes=int(r[f"{prefix}_bytes"]),
        lost=int(r[f"{prefix}_lost"]),
        jitter_ms=float(r[f"{prefix}_jitter_ms"] or 0.0),
        mos=_opt(float)(r[f"{prefix}_mos"]),
    )


def _quality_values(q: AllocationQuality) -> dict[str, Any]:
    return {
        "tenant_id": q.tenant_id,
        "call_id": q.call_id,
        "node_id": q.node_id,
        "allocation": q.allocation,
        "token_id": q.token_id,
        "role": str(Role(q.role)),
        "seq": int(q.seq),
        "started_at": float(q.started_at),
        "at": float(q.at),
        "final": bool(q.final),
        **_flow_values("to_peer", q.to_peer),
        **_flow_values("to_client", q.to_client),
        "streams": _js(q.streams),
        "relay_dropped": int(q.relay_dropped),
        "relay_rxq_overflow": int(q.relay_rxq_overflow),
        "relay_delay_us_p99": int(q.relay_delay_us_p99),
    }


def _quality(r: Row) -> AllocationQuality:
    return AllocationQuality(
        tenant_id=r["tenant_id"],
        call_id=r["call_id"],
        node_id=r["node_id"],
        allocation=r["allocation"],
        token_id=r["token_id"],
        role=Role(r["role"]),
        seq=int(r["seq"]),
        started_at=float(r["started_at"]),
        at=float(r["at"]),
        final=bool(r["final"]),
        to_peer=_flow(r, "to_peer"),
        to_client=_flow(r, "to_client"),
        streams=_jlist(r["streams"]),
        relay_dropped=int(r["relay_dropped"]),
        relay_rxq_overflow=int(r["relay_rxq_overflow"]),
        relay_delay_us_p99=int(r["relay_delay_us_p99"]),
    )


_STATS_COLS = (
    "tenant_id",
    "call_id",
    "media",
    "allocations",
    "final",
    "bytes",
    "from_visitor_loss_pct",
    "from_visitor_jitter_ms",
    "from_visitor_mos",
    "to_visitor_loss_pct",
    "to_visitor_jitter_ms",
    "to_visitor_mos",
    "mos",
    "relay_dropped",
    "updated_at",
)
# call_stats columns as s_<name>, so they sit beside a call's own columns in one row
_STATS_SELECT = ", ".join(f"s.{c} AS s_{c}" for c in _STATS_COLS)


def _stats_values(s: CallStats) -> dict[str, Any]:
    legs = {
        f"{name}_{k}": _opt_float(getattr(leg, k))
        for name, leg in (("from_visitor", s.from_visitor), ("to_visitor", s.to_visitor))
        for k in ("loss_pct", "jitter_ms", "mos")
    }
    return {
        "tenant_id": s.tenant_id,
        "call_id": s.call_id,
        "media": _js(s.media),
        "allocations": int(s.allocations),
        "final": bool(s.final),
        "bytes": int(s.bytes),
        **legs,
        "mos": _opt_float(s.mos),
        "relay_dropped": int(s.relay_dropped),
        "updated_at": float(s.updated_at),
    }


def _usage(r: Row) -> Usage:
    return Usage(
        day=int(r["day"]),
        key=r["grp"],
        calls=int(r["calls"]),
        answered=int(r["answered"] or 0),
        seconds=float(r["seconds"] or 0),
        bytes=int(r["bytes"] or 0),
        mos_sum=float(r["mos_sum"] or 0),
        mos_calls=int(r["mos_calls"] or 0),
    )


def _stats(r: Row) -> CallStats | None:
    if r["s_updated_at"] is None:
        return None

    def leg(name: str) -> Leg:
        return Leg(*(_opt(float)(r[f"s_{name}_{k}"]) for k in ("loss_pct", "jitter_ms", "mos")))

    return CallStats(
        tenant_id=r["s_tenant_id"],
        call_id=r["s_call_id"],
        media=_jlist(r["s_media"]),
        allocations=int(r["s_allocations"]),
        final=bool(r["s_final"]),
        bytes=int(r["s_bytes"]),
        from_visitor=leg("from_visitor"),
        to_visitor=leg("to_visitor"),
        mos=_opt(float)(r["s_mos"]),
        relay_dropped=int(r["s_relay_dropped"]),
        updated_at=float(r["s_updated_at"]),
    )


class SqlStore(Store):
    """Every record operation, written once in portable SQL with ``?`` placeholders.

    A back-end supplies the three primitives; each turns driver errors into
    :class:`Conflict` (unique), :class:`NotFound` (the tenant reference) or :class:`Invalid`.
    """

    @abc.abstractmethod
    async def _fetch(self, sql: str, *args: Any) -> list[Row]: ...
    @abc.abstractmethod
    async def _fetchone(self, sql: str, *args: Any) -> Row | None: ...
    @abc.abstractmethod
    async def _execute(self, sql: str, *args: Any, what: str) -> int:
        """Run one write statement; returns the number of rows it touched."""

    # tenants
    async def create_tenant(self, tenant: Tenant) -> None:
        _check_tenant(tenant)
        await self._execute(
            "INSERT INTO tenants (id, name, allowed_regions, retention_months, created_at)"
            " VALUES (?, ?, ?, ?, ?)",
            tenant.id,
            tenant.name,
            _js(tenant.allowed_regions),
            int(tenant.retention_months),
            float(tenant.created_at),
            what="tenant",
        )

    async def get_tenant(self, tenant_id: str) -> Tenant | None:
        r = await self._fetchone("SELECT * FROM tenants WHERE id = ?", tenant_id)
        return None if r is None else _tenant(r)

    async def list_tenants(self) -> list[Tenant]:
        return [
            _tenant(r) for r in await self._fetch("SELECT * FROM tenants ORDER BY created_at, id")
        ]

    async def update_tenant(self, tenant: Tenant) -> None:
        _check_tenant(tenant)
        n = await self._execute(
            "UPDATE tenants SET name = ?, allowed_regions = ?, retention_months = ? WHERE id = ?",
            tenant.name,
            _js(tenant.allowed_regions),
            int(tenant.retention_months),
            tenant.id,
            what="tenant",
        )
        if not n:
            raise NotFound(f"no tenant {tenant.id!r}")

    # api keys
    async def add_api_key(self, key: ApiKey) -> None:
        await self._execute(
            "INSERT INTO api_keys (id, tenant_id, key_hash, created_at, revoked_at)"
            " VALUES (?, ?, ?, ?, ?)",
            key.id,
            key.tenant_id,
            bytes(key.key_hash),
            float(key.created_at),
            _opt_float(key.revoked_at),
            what="api key",
        )

    async def find_api_key(self, key_hash: bytes) -> ApiKey | None:
        r = await self._fetchone(
            "SELECT * FROM api_keys WHERE key_hash = ? AND revoked_at IS NULL", bytes(key_hash)
        )
        return None if r is None else _key(r)

    async def list_api_keys(self, tenant_id: str) -> list[ApiKey]:
        rows = await self._fetch(
            "SELECT * FROM api_keys WHERE tenant_id = ? ORDER BY created_at, id", tenant_id
        )
        return [_key(r) for r in rows]

    async def revoke_api_key(self, tenant_id: str, key_id: str, at: float | None = None) -> bool:
        when = float(at) if at is not None else time.time()
        n = await self._execute(
            "UPDATE api_keys SET revoked_at = ? WHERE tenant_id = ? AND id = ? AND revoked_at IS NULL",
            when,
            tenant_id,
            key_id,
            what="api key",
        )
        return n > 0

    # staff
    async def create_staff(self, staff: Staff) -> None:
        await self._execute(
            "INSERT INTO staff (tenant_id, id, name, groups, active, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            staff.tenant_id,
            staff.id,
            staff.name,
            _js(staff.groups),
            bool(staff.active),
            float(staff.created_at),
            what="staff member",
        )

    async def get_staff(self, tenant_id: str, staff_id: str) -> Staff | None:
        r = await self._fetchone(
            "SELECT * FROM staff WHERE tenant_id = ? AND id = ?", tenant_id, staff_id
        )
        return None if r is None else _staff(r)

    async def list_staff(self, tenant_id: str) -> list[Staff]:
        rows = await self._fetch(
            "SELECT * FROM staff WHERE tenant_id = ? ORDER BY created_at, id", tenant_id
        )
        return [_staff(r) for r in rows]

    async def update_staff(self, staff: Staff) -> None:
        n = await self._execute(
            "UPDATE staff SET name = ?, groups = ?, active = ? WHERE tenant_id = ? AND id = ?",
            staff.name,
            _js(staff.groups),
            bool(staff.active),
            staff.tenant_id,
            staff.id,
            what="staff member",
        )
        if not n:
            raise NotFound(f"no staff member {staff.id!r}")

    async def delete_staff(self, tenant_id: str, staff_id: str) -> bool:
        n = await self._execute(
            "DELETE FROM staff WHERE tenant_id = ? AND id = ?",
            tenant_id,
            staff_id,
            what="staff member",
        )
        return n > 0

    # links
    async def create_link(self, link: Link) -> None:
        await self._execute(
            "INSERT INTO links (tenant_id, id, public_id, name, media, ring_staff, ring_groups,"
            " hours, ring_timeout, active, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            link.tenant_id,
            link.id,
            link.public_id,
            link.name,
            _js([str(m) for m in link.media]),
            _js(link.ring_staff),
            _js(link.ring_groups),
            _hours_out(link.hours),
            float(link.ring_timeout),
            bool(link.active),
            float(link.created_at),
            what="link",
        )

    async def get_link(self, tenant_id: str, link_id: str) -> Link | None:
        r = await self._fetchone(
            "SELECT * FROM links WHERE tenant_id = ? AND id = ?", tenant_id, link_id
        )
        return None if r is None else _link(r)

    async def get_link_by_public_id(self, public_id: str) -> Link | None:
        r = await self._fetchone("SELECT * FROM links WHERE public_id = ?", public_id)
        return None if r is None else _link(r)

    async def list_links(self, tenant_id: str) -> list[Link]:
        rows = await self._fetch(
            "SELECT * FROM links WHERE tenant_id = ? ORDER BY created_at, id", tenant_id
        )
        return [_link(r) for r in rows]

    async def update_link(self, link: Link) -> None:
        n = await self._execute(
            "UPDATE links SET public_id = ?, name = ?, media = ?, ring_staff = ?, ring_groups = ?,"
            " hours = ?, ring_timeout = ?, active = ? WHERE tenant_id = ? AND id = ?",
            link.public_id,
            link.name,
            _js([str(m) for m in link.media]),
            _js(link.ring_staff),
            _js(link.ring_groups),
            _hours_out(link.hours),
            float(link.ring_timeout),
            bool(link.active),
            link.tenant_id,
            link.id,
            what="link",
        )
        if not n:
            raise NotFound(f"no link {link.id!r}")

    async def delete_link(self, tenant_id: str, link_id: str) -> bool:
        n = await self._execute(
            "DELETE FROM links WHERE tenant_id = ? AND id = ?", tenant_id, link_id, what="link"
        )
        return n > 0

    # calls
    async def create_call(self, call: Call) -> None:
        if await self.get_link(call.tenant_id, call.link_id) is None:
            raise NotFound(f"no link {call.link_id!r}")
        cols = ["tenant_id", "id", "link_id", "created_at", *_CALL_MUTABLE]
        await self._execute(
            f"INSERT INTO calls ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
            call.tenant_id,
            call.id,
            call.link_id,
            float(call.created_at),
            *_call_mutable(call),
            what="call",
        )

    async def get_call(self, tenant_id: str, call_id: str) -> Call | None:
        r = await self._fetchone(
            "SELECT * FROM calls WHERE tenant_id = ? AND id = ?", tenant_id, call_id
        )
        return None if r is None else _call(r)

    async def list_calls(
        self,
        tenant_id: str,
        status: CallStatus | None = None,
        since: float | None = None,
        until: float | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> CallPage:
        if not 1 <= limit <= MAX_PAGE:
            raise Invalid(f"limit must be 1-{MAX_PAGE}")
        where, args = _call_page_where(
            "",
            tenant_id,
            [
                ("status = ?", None if status is None else str(CallStatus(status))),
                ("created_at >= ?", _opt_float(since)),
                ("created_at < ?", _opt_float(until)),
            ],
            cursor,
        )
        rows = await self._fetch(
            f"SELECT * FROM calls WHERE {where}"
            f" ORDER BY created_at DESC, id DESC LIMIT {limit + 1}",
            *args,
        )
        calls = [_call(r) for r in rows[:limit]]
        more = len(rows) > limit
        return CallPage(calls, _encode_cursor(calls[-1]) if more else None)

    async def update_call(self, call: Call, expect_status: CallStatus) -> bool:
        # the visitor's personal fields are not written here (see "privacy" in Store)
        values = dict(zip(_CALL_MUTABLE, _call_mutable(call), strict=True))
        cols = [c for c in _CALL_MUTABLE if c not in PERSONAL_CALL_FIELDS]
        sets = ", ".join(f"{c} = ?" for c in cols)
        n = await self._execute(
            f"UPDATE calls SET {sets} WHERE tenant_id = ? AND id = ? AND status = ?",
            *[values[c] for c in cols],
            call.tenant_id,
            call.id,
            str(CallStatus(expect_status)),
            what="call",
        )
        return n > 0

    # tokens
    async def save_token(self, token: SessionToken) -> None:
        await self._execute(
            "INSERT INTO tokens (id, tenant_id, call_id, role, staff_id, issued_at, expires_at,"
            " revoked_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            token.id,
            token.tenant_id,
            token.call_id,
            None if token.role is None else str(token.role),
            token.staff_id,
            float(token.issued_at),
            float(token.expires_at),
            _opt_float(token.revoked_at),
            what="session token",
        )

    async def get_token(self, token_id: str) -> SessionToken | None:
        r = await self._fetchone("SELECT * FROM tokens WHERE id = ?", token_id)
        return None if r is None else _token(r)

    async def revoke_token(self, token_id: str, at: float) -> bool:
        n = await self._execute(
            "UPDATE tokens SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
            float(at),
            token_id,
            what="session token",
        )
        return n > 0

    async def revoked_since(self, ts: float) -> list[tuple[str, float]]:
        rows = await self._fetch(
            "SELECT id, revoked_at FROM tokens WHERE revoked_at IS NOT NULL AND revoked_at >= ?"
            " ORDER BY revoked_at, id",
            float(ts),
        )
        return [(r["id"], float(r["revoked_at"])) for r in rows]

    async def revoke_call_tokens(self, tenant_id: str, call_id: str, at: float) -> int:
        return await self._execute(
            "UPDATE tokens SET revoked_at = ? WHERE tenant_id = ? AND call_id = ?"
            " AND revoked_at IS NULL",
            float(at),
            tenant_id,
            call_id,
            what="session token",
        )

    # staff declines
    async def decline_call(
        self, tenant_id: str, call_id: str, staff_id: str, at: float
    ) -> list[str]:
        await self._execute(
            "INSERT INTO call_declines (tenant_id, call_id, staff_id, at) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (tenant_id, call_id, staff_id) DO NOTHING",
            tenant_id,
            call_id,
            staff_id,
            float(at),
            what="decline",
        )
        return await self.list_declines(tenant_id, call_id)

    async def list_declines(self, tenant_id: str, call_id: str) -> list[str]:
        rows = await self._fetch(
            "SELECT staff_id FROM call_declines WHERE tenant_id = ? AND call_id = ?"
            " ORDER BY at, staff_id",
            tenant_id,
            call_id,
        )
        return [r["staff_id"] for r in rows]

    # signalling
    async def add_signal(
        self, tenant_id: str, call_id: str, sender: Role, body: str, at: float
    ) -> None:
        if len(body.encode()) > MAX_SIGNAL_BYTES:
            raise Invalid(f"a signalling message is limited to {MAX_SIGNAL_BYTES} bytes")
        n = await self._execute(
            "INSERT INTO signals (tenant_id, call_id, sender, body, created_at)"
            " SELECT ?, ?, ?, ?, ? WHERE (SELECT count(*) FROM signals"
            " WHERE tenant_id = ? AND call_id = ?) < ?",
            tenant_id,
            call_id,
            str(Role(sender)),
            body,
            float(at),
            tenant_id,
            call_id,
            MAX_SIGNALS,
            what="signalling message",
        )
        if n == 0:
            raise Invalid(f"a call holds at most {MAX_SIGNALS} signalling messages")

    async def read_signals(
        self, tenant_id: str, call_id: str, sender: Role, after: int
    ) -> list[tuple[int, str]]:
        rows = await self._fetch(
            "SELECT seq, body FROM signals WHERE tenant_id = ? AND call_id = ? AND sender = ?"
            " AND seq > ? ORDER BY seq",
            tenant_id,
            call_id,
            str(Role(sender)),
            int(after),
        )
        return [(int(r["seq"]), str(r["body"])) for r in rows]

    async def delete_signals(self, tenant_id: str, call_id: str) -> int:
        return await self._execute(
            "DELETE FROM signals WHERE tenant_id = ? AND call_id = ?",
            tenant_id,
            call_id,
            what="signalling message",
        )

    async def purge_signals(self, before: float) -> int:
        return await self._execute(
            "DELETE FROM signals WHERE created_at < ?", float(before), what="signalling message"
        )

    # privacy
    _call_tables_cache: list[str] | None = None

    async def _call_tables(self) -> list[str]:
        """Tables whose rows hang off a call: those with ``tenant_id`` and ``call_id``
        columns, found in the schema (so tables later migrations add are purged too)."""
        if self._call_tables_cache is None:
            if self.backend == "sqlite":
                sql = (
                    "SELECT m.name AS name FROM sqlite_master AS m"
                    " JOIN pragma_table_info(m.name) AS p WHERE m.type = 'table'"
                    " AND p.name IN ('tenant_id', 'call_id') GROUP BY m.name"
                    " HAVING count(*) = 2 ORDER BY m.name"
                )
            else:
                sql = (
                    "SELECT table_name AS name FROM information_schema.columns"
                    " WHERE table_schema = current_schema()"
                    " AND column_name IN ('tenant_id', 'call_id') GROUP BY table_name"
                    " HAVING count(*) = 2 ORDER BY table_name"
                )
            names = [str(r["name"]) for r in await self._fetch(sql)]
            bad = [n for n in names if not _TABLE_NAME.match(n)]
            if bad:
                raise StoreError(f"unexpected table name(s) {bad!r}")
            self._call_tables_cache = names
        return self._call_tables_cache

    async def _delete_calls_where(self, tenant_id: str, where: str, *args: Any) -> int:
        """Delete the tenant's calls matching ``where`` (on ``calls``), rows hanging off
        them first. Each statement commits alone: a run cut short leaves calls that the
        next run (or a retried request) deletes, never rows whose call is gone."""
        sub = f"SELECT id FROM calls WHERE tenant_id = ? AND {where}"
        for table in await self._call_tables():
            await self._execute(
                f"DELETE FROM {table} WHERE tenant_id = ? AND call_id IN ({sub})",
                tenant_id,
                tenant_id,
                *args,
                what="call record",
            )
        return await self._execute(
            f"DELETE FROM calls WHERE tenant_id = ? AND {where}", tenant_id, *args, what="call"
        )

    async def _delete_audit(self, tenant_id: str, cutoff: float) -> int:
        """The one DELETE on ``audit_log``, for the retention purge (PostgreSQL overrides
        it to set the session flag its trigger asks for)."""
        return await self._execute(
            "DELETE FROM audit_log WHERE tenant_id = ? AND at < ?",
            tenant_id,
            float(cutoff),
            what="audit entry",
        )

    async def find_subject_calls(
        self,
        tenant_id: str,
        *,
        ref: str | None = None,
        call_id: str | None = None,
        key: str | None = None,
        limit: int = MAX_SUBJECT_CALLS,
    ) -> list[Call]:
        given = [
            (c, v)
            for c, v in (("visitor_ref", ref), ("id", call_id), ("visitor_key", key))
            if v is not None
        ]
        if len(given) != 1:
            raise Invalid("give exactly one of ref, call_id and key")
        if not 1 <= limit <= MAX_SUBJECT_CALLS:
            raise Invalid(f"limit must be 1-{MAX_SUBJECT_CALLS}")
        col, value = given[0]
        rows = await self._fetch(
            f"SELECT * FROM calls WHERE tenant_id = ? AND {col} = ?"
            f" ORDER BY created_at, id LIMIT {int(limit)}",
            tenant_id,
            value,
        )
        return [_call(r) for r in rows]

    async def call_records(self, tenant_id: str, call_id: str) -> dict[str, list[dict[str, Any]]]:
        out: dict[str, list[dict[str, Any]]] = {}
        for table in await self._call_tables():
            if table == "tokens":
                continue
            rows = await self._fetch(
                f"SELECT * FROM {table} WHERE tenant_id = ? AND call_id = ?", tenant_id, call_id
            )
            if rows:
                out[table] = [
                    {k: _plain(r[k]) for k in _columns(r) if k not in ("tenant_id", "call_id")}
                    for r in rows
                ]
        return out

    async def _by_ids(self, sql: str, tenant_id: str, call_ids: list[str], *args: Any) -> int:
        """Run ``sql`` (``... WHERE tenant_id = ? AND id IN ({})``, ``args`` first) over
        ``call_ids`` in chunks; the total of rows touched."""
        n = 0
        ids = list(dict.fromkeys(call_ids))
        for i in range(0, len(ids), _ID_CHUNK):
            chunk = ids[i : i + _ID_CHUNK]
            n += await self._execute(
                sql.format(", ".join("?" * len(chunk))), *args, tenant_id, *chunk, what="call"
            )
        return n

    async def set_call_fields(
        self, tenant_id: str, call_ids: list[str], changes: dict[str, str | None]
    ) -> int:
        unknown = set(changes) - set(PERSONAL_CALL_FIELDS)
        if unknown:
            raise Invalid(f"not a visitor field: {', '.join(sorted(unknown))}")
        if not changes:
            return 0
        cols = sorted(changes)
        sets = ", ".join(f"{c} = ?" for c in cols)
        return await self._by_ids(
            f"UPDATE calls SET {sets} WHERE tenant_id = ? AND id IN ({{}})",
            tenant_id,
            call_ids,
            *[changes[c] for c in cols],
        )

    async def erase_calls(self, tenant_id: str, call_ids: list[str]) -> int:
        n = await self.set_call_fields(tenant_id, call_ids, dict.fromkeys(PERSONAL_CALL_FIELDS))
        for call_id in dict.fromkeys(call_ids):
            await self.delete_signals(tenant_id, call_id)
        return n

    async def delete_calls(self, tenant_id: str, call_ids: list[str]) -> int:
        n = 0
        ids = list(dict.fromkeys(call_ids))
        for i in range(0, len(ids), _ID_CHUNK):
            chunk = ids[i : i + _ID_CHUNK]
            n += await self._delete_calls_where(
                tenant_id, f"id IN ({', '.join('?' * len(chunk))})", *chunk
            )
        return n

    async def append_audit(self, entry: AuditEntry) -> None:
        await self._execute(
            "INSERT INTO audit_log (tenant_id, at, actor, action, subject, details)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            entry.tenant_id,
            float(entry.at),
            entry.actor,
            entry.action,
            entry.subject,
            _js(entry.details),
            what="audit entry",
        )

    async def list_audit(
        self, tenant_id: str, after: int = 0, limit: int = 100
    ) -> list[AuditEntry]:
        if not 1 <= limit <= MAX_PAGE:
            raise Invalid(f"limit must be 1-{MAX_PAGE}")
        rows = await self._fetch(
            f"SELECT * FROM audit_log WHERE tenant_id = ? AND seq > ? ORDER BY seq"
            f" LIMIT {int(limit)}",
            tenant_id,
            int(after),
        )
        return [_audit(r) for r in rows]

    async def purge_tenant(self, tenant_id: str, cutoff: float, at: float) -> Purge | None:
        cutoff = float(cutoff)
        calls = await self._delete_calls_where(tenant_id, "created_at < ?", cutoff)
        await self._execute(
            "DELETE FROM tokens WHERE tenant_id = ? AND expires_at < ?",
            tenant_id,
            cutoff,
            what="session token",
        )
        row = await self._fetchone(
            "SELECT count(*) AS n FROM audit_log WHERE tenant_id = ? AND at < ?", tenant_id, cutoff
        )
        audit = int(row["n"]) if row is not None else 0
        if not calls and not audit:
            return None
        purge = Purge(
            tenant_id=tenant_id, at=float(at), cutoff=cutoff, calls=calls, audit_entries=audit
        )
        # recorded before the audit entries go: SQLite's trigger lets a DELETE through only
        # below the cutoff of a purge on record
        await self._execute(
            "INSERT INTO purges (tenant_id, at, cutoff, calls, audit_entries)"
            " VALUES (?, ?, ?, ?, ?)",
            tenant_id,
            purge.at,
            cutoff,
            calls,
            audit,
            what="purge",
        )
        if audit:
            await self._delete_audit(tenant_id, cutoff)
        return purge

    async def list_purges(self, tenant_id: str) -> list[Purge]:
        rows = await self._fetch("SELECT * FROM purges WHERE tenant_id = ? ORDER BY seq", tenant_id)
        return [_purge(r) for r in rows]

    # relay nodes
    async def upsert_node(self, node: RelayNode) -> None:
        await self._execute(
            "INSERT INTO relay_nodes (id, region, urls, allocations, packet_rate, cpu, draining,"
            " last_heartbeat, registered_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (id) DO UPDATE SET region = excluded.region, urls = excluded.urls,"
            " allocations = excluded.allocations, packet_rate = excluded.packet_rate,"
            " cpu = excluded.cpu, draining = excluded.draining,"
            " last_heartbeat = excluded.last_heartbeat",
            node.id,
            node.region,
            _js(node.urls),
            int(node.allocations),
            float(node.packet_rate),
            float(node.cpu),
            bool(node.draining),
            float(node.last_heartbeat),
            float(node.registered_at),
            what="relay node",
        )

    async def list_nodes(self, region: str | None = None) -> list[RelayNode]:
        if region is None:
            rows = await self._fetch("SELECT * FROM relay_nodes ORDER BY id")
        else:
            rows = await self._fetch(
                "SELECT * FROM relay_nodes WHERE region = ? ORDER BY id", region
            )
        return [_node(r) for r in rows]

    async def get_node(self, node_id: str) -> RelayNode | None:
        r = await self._fetchone("SELECT * FROM relay_nodes WHERE id = ?", node_id)
        return None if r is None else _node(r)

    # call logs and quality
    async def summary_seq(self, node_id: str) -> int:
        r = await self._fetchone("SELECT last_seq FROM node_summaries WHERE node_id = ?", node_id)
        return 0 if r is None else int(r["last_seq"])

    async def claim_summary(self, node_id: str, seq: int, stored: bool, at: float) -> bool:
        n = await self._execute(
            "INSERT INTO node_summaries (node_id, last_seq, stored, dropped, updated_at)"
            " VALUES (?, ?, ?, ?, ?) ON CONFLICT (node_id) DO UPDATE SET"
            " last_seq = excluded.last_seq, stored = node_summaries.stored + excluded.stored,"
            " dropped = node_summaries.dropped + excluded.dropped,"
            " updated_at = excluded.updated_at WHERE node_summaries.last_seq < excluded.last_seq",
            node_id,
            int(seq),
            int(stored),
            int(not stored),
            float(at),
            what="summary",
        )
        return n > 0

    async def save_quality(self, record: AllocationQuality) -> bool:
        values = _quality_values(record)
        cols = list(values)
        keys = {"tenant_id", "call_id", "node_id", "token_id", "allocation"}
        sets = ", ".join(f"{c} = excluded.{c}" for c in cols if c not in keys)
        n = await self._execute(
            f"INSERT INTO call_quality ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})"
            f" ON CONFLICT (node_id, token_id, allocation) DO UPDATE SET {sets}"
            " WHERE call_quality.seq < excluded.seq AND NOT call_quality.final",
            *values.values(),
            what="call",
        )
        return n > 0

    async def list_quality(self, tenant_id: str, call_id: str) -> list[AllocationQuality]:
        rows = await self._fetch(
            "SELECT * FROM call_quality WHERE tenant_id = ? AND call_id = ?"
            " ORDER BY started_at, node_id, allocation",
            tenant_id,
            call_id,
        )
        return [_quality(r) for r in rows]

    async def refresh_call_stats(self, tenant_id: str, call_id: str, at: float) -> CallStats | None:
        stats = call_stats(await self.list_quality(tenant_id, call_id), at)
        if stats is None:
            return None
        values = _stats_values(stats)
        cols = list(values)
        sets = ", ".join(f"{c} = excluded.{c}" for c in cols[2:])
        await self._execute(
            f"INSERT INTO call_stats ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})"
            f" ON CONFLICT (tenant_id, call_id) DO UPDATE SET {sets}",
            *values.values(),
            what="call",
        )
        return stats

    async def get_call_stats(self, tenant_id: str, call_id: str) -> CallStats | None:
        r = await self._fetchone(
            f"SELECT {_STATS_SELECT} FROM call_stats s WHERE s.tenant_id = ? AND s.call_id = ?",
            tenant_id,
            call_id,
        )
        return None if r is None else _stats(r)

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
        if not 1 <= limit <= MAX_PAGE:
            raise Invalid(f"limit must be 1-{MAX_PAGE}")
        where, args = _call_page_where(
            "c.",
            tenant_id,
            [
                ("status = ?", None if status is None else str(CallStatus(status))),
                ("created_at >= ?", _opt_float(since)),
                ("created_at < ?", _opt_float(until)),
                ("link_id = ?", link_id),
                ("answered_by = ?", staff_id),
            ],
            cursor,
        )
        if mos_below is not None:  # a column of the joined call_stats row
            where += " AND s.mos < ?"
            args.append(float(mos_below))
        rows = await self._fetch(
            f"SELECT c.*, {_STATS_SELECT} FROM calls c LEFT JOIN call_stats s"
            " ON s.tenant_id = c.tenant_id AND s.call_id = c.id"
            f" WHERE {where}"
            f" ORDER BY c.created_at DESC, c.id DESC LIMIT {limit + 1}",
            *args,
        )
        entries = [(_call(r), _stats(r)) for r in rows[:limit]]
        more = len(rows) > limit
        return CallLogPage(entries, _encode_cursor(entries[-1][0]) if more else None)

    async def usage(
        self, tenant_id: str, since: float, until: float, by: str | None = None
    ) -> list[Usage]:
        keys = {None: None, "link": "c.link_id", "staff": "c.answered_by"}
        if by not in keys:
            raise Invalid(f"cannot group usage by {by!r}")
        return await self._usage("c.tenant_id = ? AND ", [tenant_id], since, until, keys[by])

    async def regional_usage(self, since: float, until: float) -> list[Usage]:
        return await self._usage("", [], since, until, "c.relay_region")

    async def _usage(
        self, where: str, args: list[object], since: float, until: float, key: str | None
    ) -> list[Usage]:
        # the UTC day of a (non-negative) Unix time; CAST truncates in SQLite, rounds in PG
        day = (
            "CAST(floor(c.created_at / 86400) AS BIGINT)"
            if self.backend == "postgres"
            else "CAST(c.created_at / 86400 AS INTEGER)"
        )
        rows = await self._fetch(
            f"SELECT {day} AS day, {key or 'NULL'} AS grp, count(*) AS calls,"
            " sum(CASE WHEN c.answered_at IS NOT NULL THEN 1 ELSE 0 END) AS answered,"
            " sum(CASE WHEN c.answered_at IS NOT NULL AND c.ended_at IS NOT NULL"
            " THEN c.ended_at - c.answered_at ELSE 0 END) AS seconds,"
            " sum(COALESCE(s.bytes, 0)) AS bytes, sum(COALESCE(s.mos, 0)) AS mos_sum,"
            " count(s.mos) AS mos_calls"
            " FROM calls c LEFT JOIN call_stats s ON s.tenant_id = c.tenant_id AND s.call_id = c.id"
            f" WHERE {where}c.created_at >= ? AND c.created_at < ?"
            f" GROUP BY {day}{', ' + key if key else ''}",
            *args,
            float(since),
            float(until),
        )
        return [_usage(r) for r in rows]
