"""Privacy: the per-visitor abuse key, retention, and the audit log's bookkeeping.

- :class:`VisitorKeys`: a visitor's key is HMAC-SHA256 of the tenant's id and the visitor's
  full IP address under a random salt that changes every UTC day and lives only in this
  process's memory. Within a day it links one visitor's calls to one tenant (abuse
  handling; two tenants' keys for one visitor differ); once the day's salt is gone nobody, the
  operator included, can tell which address a key came from or link keys across days. The
  address itself is never stored.
- Retention: :func:`purge_expired` deletes each tenant's calls (with every row hanging off
  them) and audit entries older than its ``retention_months`` (calendar months in UTC, see
  :func:`months_ago`), records each purge that removed something (``purges``, plus an audit
  entry the tenant can read) and counts it. :func:`purge_if_due` runs it at most once an hour;
  the app's housekeeping loop calls it, so it runs at start and hourly after that.
- :func:`audit`: every access to, change of and erasure of a data subject's records goes to
  the append-only ``audit_log`` through it (and is counted). Subjects are HMAC-SHA256 of the
  identifier the tenant captured under a server-side key (:func:`subject_hash`,
  :func:`audit_keys`), never the identifier itself: the control plane can still tell which
  entries concern an identifier someone gives it, but a copy of the database alone does not
  give the identifiers back (an unsalted hash of an email or a phone number falls to a
  dictionary). Entries from before the key (migration 0008) say ``sha256-removed``.

Time always comes from ``app.state.clock``, so tests move it.
"""

from __future__ import annotations

import calendar
import datetime as dt
import hashlib
import hmac
import ipaddress
import logging
import math
import secrets
from collections.abc import Callable

from prometheus_client import Counter
from starlette.applications import Starlette
from starlette.requests import HTTPConnection

from control.metrics import PREFIX, metrics_of
from control.models import MAX_RETENTION_MONTHS, AuditEntry, Purge
from control.settings import ControlSettings
from control.store import Store

log = logging.getLogger("clickacall.control.privacy")

DAY = 86400
SALT_BYTES = 32
KEY_HEX = 32  # a visitor key is the first 128 bits of the HMAC, as hex
PURGE_INTERVAL = 3600.0
RETENTION_ACTOR = "retention"
ACTIONS = (
    "access",
    "set_ref",
    "correct",
    "erase",
    "delete",
    "purge",
    "settings",
    # what an admin did in the dashboard (control/api/dashboard.py: dashboard_audit)
    "staff_invite",
    "staff_deactivate",
    "staff_roles",
    "key_create",
    "key_revoke",
    "totp_on",
    "totp_off",
)


# --- the visitor key ---------------------------------------------------------------------------


class VisitorKeys:
    """Keyed hashes of visitors' addresses; the salt rotates daily and is never stored.

    One salt at a time: the first key asked for on a new UTC day replaces it, so a key from
    an earlier day can never be recomputed. Each process has its own salt, so behind a load
    balancer one visitor's calls on one day link only where they reached the same process.
    """

    def __init__(self, random_bytes: Callable[[int], bytes] = secrets.token_bytes) -> None:
        self._random = random_bytes
        self._day: int | None = None
        self._salt = b""

    def key_for(self, ip: str, now: float, tenant_id: str = "") -> str:
        """The visitor key of ``ip`` on ``now``'s UTC day as ``tenant_id`` sees it (two
        tenants cannot link one visitor through their keys); ValueError if ``ip`` is not an
        address. An IPv4-mapped IPv6 address keys like the IPv4 address it carries."""
        addr = ipaddress.ip_address(ip.strip())
        if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
            addr = addr.ipv4_mapped
        day = math.floor(now / DAY)
        if day != self._day:
            self._day, self._salt = day, self._random(SALT_BYTES)
        msg = tenant_id.encode() + b"\0" + addr.packed
        return hmac.new(self._salt, msg, hashlib.sha256).hexdigest()[:KEY_HEX]


def visitor_keys(app: Starlette) -> VisitorKeys:
    """The app's :class:`VisitorKeys`, made on first use."""
    keys = getattr(app.state, "visitor_keys", None)
    if not isinstance(keys, VisitorKeys):
        keys = app.state.visitor_keys = VisitorKeys()
    return keys


def visitor_key(conn: HTTPConnection, tenant_id: str) -> str | None:
    """The visitor key of the connection's client address for ``tenant_id`` (None if the
    connection has no address)."""
    host = conn.client.host if conn.client else None
    if not host:
        return None
    try:
        return visitor_keys(conn.app).key_for(host, float(conn.app.state.clock()), tenant_id)
    except ValueError:
        return None


AUDIT_KEY_LABEL = b"clickacall audit subjects v1"


def audit_keys(settings: ControlSettings) -> list[bytes]:
    """The keys of audit subjects, the first for new entries, every one for matching:
    ``--audit-key`` if given, else one derived from each token signing key (so keep a
    rotated-out token key listed, or give ``--audit-key``, to match older entries)."""
    if settings.audit_keys:
        return list(settings.audit_keys)
    return [hmac.new(k, AUDIT_KEY_LABEL, hashlib.sha256).digest() for k in settings.token_keys]


def subject_hash(ref: str, key: bytes) -> str:
    """What the audit log keeps of a data subject's identifier: HMAC-SHA256 under ``key``."""
    return hmac.new(key, ref.encode(), hashlib.sha256).hexdigest()


# --- metrics -----------------------------------------------------------------------------------


class PrivacyMetrics:
    def __init__(self, app: Starlette) -> None:
        r = metrics_of(app).registry
        self.purges = Counter(
            f"{PREFIX}_retention_purges", "Retention purge runs completed", registry=r
        )
        self.purged_calls = Counter(
            f"{PREFIX}_retention_purged_calls", "Calls deleted by the retention purge", registry=r
        )
        self.purged_audit = Counter(
            f"{PREFIX}_retention_purged_audit_entries",
            "Audit log entries deleted by the retention purge",
            registry=r,
        )
        self.audit_entries = Counter(
            f"{PREFIX}_audit_entries",
            "Audit log entries written, by action",
            ["action"],
            registry=r,
        )
        for action in ACTIONS:
            self.audit_entries.labels(action=action)


def privacy_metrics(app: Starlette) -> PrivacyMetrics:
    m = getattr(app.state, "privacy_metrics", None)
    if not isinstance(m, PrivacyMetrics):
        m = app.state.privacy_metrics = PrivacyMetrics(app)
    return m


async def audit(app: Starlette, store: Store, entry: AuditEntry) -> None:
    """Append ``entry`` to the audit log and count it."""
    await store.append_audit(entry)
    privacy_metrics(app).audit_entries.labels(
        action=entry.action if entry.action in ACTIONS else "other"
    ).inc()


# --- retention ---------------------------------------------------------------------------------


def months_ago(now: float, months: int) -> float:
    """``now`` minus ``months`` calendar months in UTC; a day the earlier month lacks becomes
    its last (31 March minus one month is 28 or 29 February)."""
    t = dt.datetime.fromtimestamp(now, dt.UTC)
    year, month0 = divmod(t.year * 12 + t.month - 1 - months, 12)
    month = month0 + 1
    day = min(t.day, calendar.monthrange(year, month)[1])
    return t.replace(year=year, month=month, day=day).timestamp()


def kept_until(created_at: float, months: int) -> float:
    """Until when a ``months`` retention keeps a call created at ``created_at``: the moment
    after which ``months_ago(now, months) > created_at``, so the hourly purge deletes it at its
    first run after this. The same day and time ``months`` later, or, when that month is too
    short for the day (31 January + 1 month), the first moment of the month after it."""
    t = dt.datetime.fromtimestamp(created_at, dt.UTC)
    year, month0 = divmod(t.year * 12 + t.month - 1 + months, 12)
    if t.day <= calendar.monthrange(year, month0 + 1)[1]:
        return t.replace(year=year, month=month0 + 1).timestamp()
    year, month0 = divmod(year * 12 + month0 + 1, 12)
    return dt.datetime(year, month0 + 1, 1, tzinfo=dt.UTC).timestamp()


async def purge_expired(store: Store, now: float, app: Starlette | None = None) -> list[Purge]:
    """One retention run over every tenant; the purges that removed something."""
    done: list[Purge] = []
    for tenant in await store.list_tenants():
        months = max(1, min(tenant.retention_months, MAX_RETENTION_MONTHS))
        try:
            async with store.transaction():  # the purge and its audit entry, or neither
                purge = await store.purge_tenant(tenant.id, months_ago(now, months), now)
                if purge is None:
                    continue
                entry = AuditEntry(
                    tenant_id=tenant.id,
                    at=now,
                    actor=RETENTION_ACTOR,
                    action="purge",
                    details={
                        "cutoff": purge.cutoff,
                        "retention_months": months,
                        "calls": purge.calls,
                        "audit_entries": purge.audit_entries,
                    },
                )
                if app is not None:
                    await audit(app, store, entry)
                else:
                    await store.append_audit(entry)
        except Exception as e:  # one tenant's failure must not keep the others' data
            log.warning("retention purge of tenant %s failed: %s", tenant.id, e)
            continue
        done.append(purge)
        log.info(
            "retention: tenant %s, %d call(s) and %d audit entr(ies) before %s deleted",
            tenant.id,
            purge.calls,
            purge.audit_entries,
            dt.datetime.fromtimestamp(purge.cutoff, dt.UTC).isoformat(),
        )
    return done


async def purge_if_due(app: Starlette, store: Store) -> list[Purge] | None:
    """Run :func:`purge_expired` if none ran in the last :data:`PURGE_INTERVAL` (by the app's
    clock); None if not due. A failed run is retried at the next call."""
    now = float(app.state.clock())
    last: float | None = getattr(app.state, "retention_last_run", None)
    if last is not None and 0 <= now - last < PURGE_INTERVAL:
        return None
    purges = await purge_expired(store, now, app)
    app.state.retention_last_run = now
    m = privacy_metrics(app)
    m.purges.inc()
    m.purged_calls.inc(sum(p.calls for p in purges))
    m.purged_audit.inc(sum(p.audit_entries for p in purges))
    return purges
