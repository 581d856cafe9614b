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

The modules, from the interface down to the back-ends:

- ``base``: the :class:`Store` interface, its errors, pages, limits and :class:`Subscription`;
- ``rows``: rows to records and records to column values;
- ``migrate``: URLs, migration files, :func:`open_store` and :func:`migrate`;
- ``sqlbase``: the statement primitives a SQL back-end supplies;
- ``calllog``: pages of calls, call quality and usage;
- ``sql``: :class:`SqlStore`, every other record operation;
- ``sqlite``, ``postgres``: the back-ends, with only what differs between them.

This module re-exports the names callers use (``from control.store import Store, NotFound``).
"""

from control.ids import MAX_PAGE
from control.store.base import (
    MAX_CHANNEL_BYTES,
    MAX_PAYLOAD_BYTES,
    MAX_SIGNAL_BYTES,
    MAX_SIGNALS,
    MAX_SUBJECT_CALLS,
    SUBSCRIPTION_BACKLOG,
    Busy,
    CallLogPage,
    CallPage,
    Conflict,
    Invalid,
    NotFound,
    Ringing,
    StatementObserver,
    StatementOp,
    Store,
    StoreError,
    Subscription,
    check_channel,
    log,
)
from control.store.migrate import (
    MIGRATIONS_DIR,
    Migration,
    load_migrations,
    parse_url,
    pending,
)
from control.store.rows import Row
from control.store.sql import SqlStore


# which back-end a URL names, chosen here, above both (each imports control.store.migrate)
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


__all__ = [
    "Busy",
    "MAX_CHANNEL_BYTES",
    "MAX_PAGE",
    "MAX_PAYLOAD_BYTES",
    "MAX_SIGNALS",
    "MAX_SIGNAL_BYTES",
    "MAX_SUBJECT_CALLS",
    "MIGRATIONS_DIR",
    "SUBSCRIPTION_BACKLOG",
    "CallLogPage",
    "CallPage",
    "Ringing",
    "Conflict",
    "Invalid",
    "Migration",
    "NotFound",
    "Row",
    "SqlStore",
    "StatementObserver",
    "StatementOp",
    "Store",
    "StoreError",
    "Subscription",
    "check_channel",
    "load_migrations",
    "log",
    "migrate",
    "open_store",
    "parse_url",
    "pending",
]
