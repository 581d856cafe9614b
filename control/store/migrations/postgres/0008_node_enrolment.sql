-- Node enrolment and keyed audit subjects (PostgreSQL).

-- A relay node's own credential (control/api/nodes.py): the shared node secret lets an id
-- without a row here enrol once; from then on only this credential speaks for the id. Only
-- the SHA-256 of the credential is kept (it is 256 random bits: the hash cannot be reversed).
-- The operator deletes the row to revoke it, and the node enrols again.
CREATE TABLE node_credentials (
    node_id     TEXT PRIMARY KEY,
    key_hash    TEXT NOT NULL UNIQUE,
    enrolled_at DOUBLE PRECISION NOT NULL
);

-- Audit subjects were unsalted SHA-256 of the identifier (an email, a phone number), which a
-- dictionary reverses; they are now HMAC-SHA256 under a server-side key (control/privacy.py).
-- Old hashes cannot be re-keyed without the identifiers, so they are replaced by a marker:
-- the entries stay, but no longer say whose they were.
ALTER TABLE audit_log DISABLE TRIGGER audit_log_append_only;
UPDATE audit_log SET subject = 'sha256-removed' WHERE subject IS NOT NULL;
UPDATE audit_log SET details = jsonb_set(details, '{previous}', '"sha256-removed"')
    WHERE jsonb_typeof(details -> 'previous') = 'string';
UPDATE audit_log SET details = jsonb_set(details, '{new_subject}', '"sha256-removed"')
    WHERE jsonb_typeof(details -> 'new_subject') = 'string';
ALTER TABLE audit_log ENABLE TRIGGER audit_log_append_only;
