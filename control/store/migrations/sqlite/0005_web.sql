-- The web front (SQLite): staff accounts and presence, invitations, console sessions, the
-- call reference, the visitor's media and connection check, callback requests.

-- Staff sign in with email and password (argon2id, control/accounts.py). ``email`` is
-- lower-cased and unique across tenants (sign-in names no tenant). ``presence``, the wrap-up
-- and the missed-ring count decide whom a call rings (control/lifecycle.py); ``seen_at`` is the
-- last console activity.
ALTER TABLE staff ADD COLUMN email TEXT;
ALTER TABLE staff ADD COLUMN password_hash TEXT;
ALTER TABLE staff ADD COLUMN password_changed_at REAL;
ALTER TABLE staff ADD COLUMN roles TEXT NOT NULL DEFAULT '["staff"]';
ALTER TABLE staff ADD COLUMN presence TEXT NOT NULL DEFAULT 'available';
ALTER TABLE staff ADD COLUMN wrapup_until REAL;
ALTER TABLE staff ADD COLUMN missed_rings INTEGER NOT NULL DEFAULT 0;
ALTER TABLE staff ADD COLUMN seen_at REAL;
CREATE UNIQUE INDEX staff_email ON staff (email) WHERE email IS NOT NULL;

-- An invitation sets a member's first password. Only the SHA-256 of its secret is kept.
CREATE TABLE invitations (
    token_hash TEXT PRIMARY KEY,
    tenant_id  TEXT NOT NULL,
    staff_id   TEXT NOT NULL,
    email      TEXT NOT NULL,
    created_at REAL NOT NULL,
    expires_at REAL NOT NULL,
    used_at    REAL,
    FOREIGN KEY (tenant_id, staff_id) REFERENCES staff (tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX invitations_staff ON invitations (tenant_id, staff_id);

-- A signed-in console: the cookie's value is shown once and kept as its SHA-256.
CREATE TABLE web_sessions (
    id_hash    TEXT PRIMARY KEY,
    tenant_id  TEXT NOT NULL,
    staff_id   TEXT NOT NULL,
    csrf       TEXT NOT NULL,
    created_at REAL NOT NULL,
    last_seen  REAL NOT NULL,
    expires_at REAL NOT NULL,
    revoked_at REAL,
    FOREIGN KEY (tenant_id, staff_id) REFERENCES staff (tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX web_sessions_staff ON web_sessions (tenant_id, staff_id);
CREATE INDEX web_sessions_expires ON web_sessions (expires_at);

-- A console token names the web session it was minted under: signing out revokes it.
ALTER TABLE tokens ADD COLUMN parent TEXT;
CREATE INDEX tokens_parent ON tokens (parent) WHERE parent IS NOT NULL;
CREATE INDEX tokens_staff ON tokens (tenant_id, staff_id) WHERE staff_id IS NOT NULL;

-- 1: relay candidates only (neither party learns the other's address); 0: direct paths too.
ALTER TABLE links ADD COLUMN relay_only INTEGER NOT NULL DEFAULT 1;

-- ``call_ref`` is the short reference the visitor sees (K7Q2-M9XD); ``media`` what the visitor
-- chose; ``visitor_check`` the connection check's verdict (JSON); a callback request keeps the
-- visitor's name and contact in ``visitor_ref``, so export, erasure and retention cover it.
ALTER TABLE calls ADD COLUMN call_ref TEXT;
ALTER TABLE calls ADD COLUMN media TEXT;
ALTER TABLE calls ADD COLUMN visitor_check TEXT;
ALTER TABLE calls ADD COLUMN callback_state TEXT;
ALTER TABLE calls ADD COLUMN callback_at REAL;
ALTER TABLE calls ADD COLUMN callback_done_by TEXT;
CREATE UNIQUE INDEX calls_call_ref ON calls (tenant_id, call_ref) WHERE call_ref IS NOT NULL;
CREATE INDEX calls_callbacks ON calls (tenant_id, callback_at) WHERE callback_state = 'open';
