"""Store URLs and schema migrations. ``control.store.open_store(url)`` (and ``migrate``) pick
the back-end from the URL (:func:`parse_url`) and bring the schema up to date:

- ``sqlite:///PATH`` (SQLAlchemy's convention: ``sqlite:///rel.db``, ``sqlite:////abs/x.db``) and
  ``sqlite:///:memory:``: embedded SQLite (``control/store/sqlite.py``);
- ``postgresql://...`` (or ``postgres://``): an asyncpg pool (``control/store/postgres.py``).

Migrations are numbered SQL files in ``migrations/<back-end>/NNNN_name.sql``; pending ones are
applied in order, in one transaction, recorded in ``schema_migrations``. They run on open and by
hand with ``await control.store.migrate(url)``. Each back-end runs them its own way (SQLite statement by
statement under ``BEGIN IMMEDIATE``, PostgreSQL under an advisory lock); this module finds them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from control.store.base import Invalid, StoreError

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


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
