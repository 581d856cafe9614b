-- The business's dashboard (SQLite): named API keys, two-factor sign-in for admins.

-- A name the tenant gives a key ("CRM sync"), shown in listings beside its public id.
ALTER TABLE api_keys ADD COLUMN name TEXT;

-- TOTP (RFC 6238) for a member who turned it on: ``totp_secret`` (base32) once confirmed,
-- ``totp_pending`` while enrolling (shown as a QR code, confirmed with a code), ``totp_step``
-- the time step of the last code accepted (a code is good once: a replay is refused).
ALTER TABLE staff ADD COLUMN totp_secret TEXT;
ALTER TABLE staff ADD COLUMN totp_pending TEXT;
ALTER TABLE staff ADD COLUMN totp_step INTEGER;

-- 1: the password was right but the second factor is still to come (no access yet).
ALTER TABLE web_sessions ADD COLUMN pending INTEGER NOT NULL DEFAULT 0;

-- Recovery codes of a member with two-factor sign-in: shown once, kept as SHA-256, used once.
CREATE TABLE recovery_codes (
    tenant_id  TEXT NOT NULL,
    staff_id   TEXT NOT NULL,
    code_hash  TEXT NOT NULL,
    created_at REAL NOT NULL,
    used_at    REAL,
    PRIMARY KEY (tenant_id, staff_id, code_hash),
    FOREIGN KEY (tenant_id, staff_id) REFERENCES staff (tenant_id, id) ON DELETE CASCADE
);
