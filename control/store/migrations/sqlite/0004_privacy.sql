-- Privacy (SQLite): the per-visitor abuse key, retention purges, the data-subject audit log.

-- HMAC-SHA256 of the visitor's full address under a salt that rotates daily and lives only
-- in the process's memory (control/privacy.py): links one visitor's calls within a day.
ALTER TABLE calls ADD COLUMN visitor_key TEXT;
CREATE INDEX calls_visitor_ref ON calls (tenant_id, visitor_ref) WHERE visitor_ref IS NOT NULL;
CREATE INDEX calls_visitor_key ON calls (tenant_id, visitor_key) WHERE visitor_key IS NOT NULL;

-- One row per tenant and retention run that removed something: calls (with every row
-- hanging off them) created before ``cutoff``, and audit entries older than ``cutoff``.
CREATE TABLE purges (
    seq           INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id     TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    at            REAL NOT NULL,
    cutoff        REAL NOT NULL,
    calls         INTEGER NOT NULL,
    audit_entries INTEGER NOT NULL
);
CREATE INDEX purges_tenant ON purges (tenant_id, at);

-- Every access to, change of and erasure of a data subject's records. Append-only: no
-- UPDATE ever; a DELETE only of entries older than the cutoff of a purge already recorded
-- for the tenant (the retention purge records itself first). ``subject`` is the SHA-256 of
-- the identifier the tenant captured, never the identifier itself.
CREATE TABLE audit_log (
    seq       INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    at        REAL NOT NULL,
    actor     TEXT NOT NULL,
    action    TEXT NOT NULL,
    subject   TEXT,
    details   TEXT NOT NULL
);
CREATE INDEX audit_log_tenant ON audit_log (tenant_id, seq);
CREATE INDEX audit_log_at ON audit_log (tenant_id, at);

CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'audit_log is append-only');
END;

CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
WHEN NOT EXISTS (
    SELECT 1 FROM purges WHERE purges.tenant_id = OLD.tenant_id AND purges.cutoff > OLD.at
)
BEGIN
    SELECT RAISE(ABORT, 'audit_log is append-only (only the retention purge deletes)');
END;
