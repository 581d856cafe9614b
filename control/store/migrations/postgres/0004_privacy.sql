-- Privacy (PostgreSQL): the per-visitor abuse key, retention purges, the data-subject audit log.

-- HMAC-SHA256 of the visitor's full address under a salt that rotates daily and lives only
-- in the process's memory (control/privacy.py): links one visitor's calls within a day.
ALTER TABLE calls ADD COLUMN visitor_key TEXT;
CREATE INDEX calls_visitor_ref ON calls (tenant_id, visitor_ref) WHERE visitor_ref IS NOT NULL;
CREATE INDEX calls_visitor_key ON calls (tenant_id, visitor_key) WHERE visitor_key IS NOT NULL;

-- One row per tenant and retention run that removed something: calls (with every row
-- hanging off them) created before ``cutoff``, and audit entries older than ``cutoff``.
CREATE TABLE purges (
    seq           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id     TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    at            DOUBLE PRECISION NOT NULL,
    cutoff        DOUBLE PRECISION NOT NULL,
    calls         BIGINT NOT NULL,
    audit_entries BIGINT NOT NULL
);
CREATE INDEX purges_tenant ON purges (tenant_id, at);

-- Every access to, change of and erasure of a data subject's records. Append-only: no
-- UPDATE ever; a DELETE only inside a transaction that set clickacall.audit_purge = 'on'
-- (the retention purge does, with SET LOCAL). ``subject`` is the SHA-256 of the identifier
-- the tenant captured, never the identifier itself.
CREATE TABLE audit_log (
    seq       BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    at        DOUBLE PRECISION NOT NULL,
    actor     TEXT NOT NULL,
    action    TEXT NOT NULL,
    subject   TEXT,
    details   JSONB NOT NULL
);
CREATE INDEX audit_log_tenant ON audit_log (tenant_id, seq);
CREATE INDEX audit_log_at ON audit_log (tenant_id, at);

CREATE FUNCTION audit_log_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' AND current_setting('clickacall.audit_purge', true) = 'on' THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION 'audit_log is append-only (only the retention purge deletes)'
        USING ERRCODE = 'insufficient_privilege';
END;
$$;

CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_guard();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_guard();
