-- Clickacall control plane, initial schema (SQLite).
-- Lists and objects are JSON text; times are REAL Unix seconds; booleans are 0/1.
-- Tenant-owned rows have the composite key (tenant_id, id): nothing one tenant stores can
-- collide with, or reveal, another tenant's rows.

CREATE TABLE tenants (
    id               TEXT PRIMARY KEY,
    name             TEXT NOT NULL,
    allowed_regions  TEXT NOT NULL,
    retention_months INTEGER NOT NULL,
    created_at       REAL NOT NULL
);

CREATE TABLE api_keys (
    id         TEXT PRIMARY KEY,
    tenant_id  TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    key_hash   BLOB NOT NULL UNIQUE,
    created_at REAL NOT NULL,
    revoked_at REAL
);
CREATE INDEX api_keys_tenant ON api_keys (tenant_id, created_at);

CREATE TABLE staff (
    tenant_id  TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    id         TEXT NOT NULL,
    name       TEXT NOT NULL,
    groups     TEXT NOT NULL,
    active     INTEGER NOT NULL,
    created_at REAL NOT NULL,
    PRIMARY KEY (tenant_id, id)
);

CREATE TABLE links (
    tenant_id    TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    id           TEXT NOT NULL,
    public_id    TEXT NOT NULL UNIQUE,
    name         TEXT NOT NULL,
    media        TEXT NOT NULL,
    ring_staff   TEXT NOT NULL,
    ring_groups  TEXT NOT NULL,
    hours        TEXT,
    ring_timeout REAL NOT NULL,
    active       INTEGER NOT NULL,
    created_at   REAL NOT NULL,
    PRIMARY KEY (tenant_id, id)
);

-- Calls outlive their link (call logs are kept for the tenant's retention period), so
-- link_id is checked when a call is created rather than by a foreign key.
CREATE TABLE calls (
    tenant_id       TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    id              TEXT NOT NULL,
    link_id         TEXT NOT NULL,
    status          TEXT NOT NULL,
    created_at      REAL NOT NULL,
    answered_at     REAL,
    ended_at        REAL,
    answered_by     TEXT,
    end_reason      TEXT,
    relay_node      TEXT,
    relay_region    TEXT,
    visitor_prefix  TEXT,
    visitor_browser TEXT,
    visitor_os      TEXT,
    visitor_ref     TEXT,
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX calls_tenant_created ON calls (tenant_id, created_at, id);
CREATE INDEX calls_status ON calls (status, created_at);

CREATE TABLE tokens (
    id         TEXT PRIMARY KEY,
    tenant_id  TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    call_id    TEXT,
    role       TEXT,
    staff_id   TEXT,
    issued_at  REAL NOT NULL,
    expires_at REAL NOT NULL,
    revoked_at REAL
);
CREATE INDEX tokens_revoked ON tokens (revoked_at) WHERE revoked_at IS NOT NULL;
CREATE INDEX tokens_expires ON tokens (expires_at);

CREATE TABLE relay_nodes (
    id             TEXT PRIMARY KEY,
    region         TEXT NOT NULL,
    urls           TEXT NOT NULL,
    allocations    INTEGER NOT NULL,
    packet_rate    REAL NOT NULL,
    cpu            REAL NOT NULL,
    draining       INTEGER NOT NULL,
    last_heartbeat REAL NOT NULL,
    registered_at  REAL NOT NULL
);
CREATE INDEX relay_nodes_region ON relay_nodes (region);
