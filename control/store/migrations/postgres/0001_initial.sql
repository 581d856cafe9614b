-- Clickacall control plane, initial schema (PostgreSQL).
-- Lists and objects are JSONB; times are double precision Unix seconds.
-- Tenant-owned rows have the composite key (tenant_id, id): nothing one tenant stores can
-- collide with, or reveal, another tenant's rows.

CREATE TABLE tenants (
    id               TEXT PRIMARY KEY,
    name             TEXT NOT NULL,
    allowed_regions  TEXT NOT NULL,
    retention_months INTEGER NOT NULL,
    created_at       DOUBLE PRECISION NOT NULL
);

CREATE TABLE api_keys (
    id         TEXT PRIMARY KEY,
    tenant_id  TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    key_hash   BYTEA NOT NULL UNIQUE,
    created_at DOUBLE PRECISION NOT NULL,
    revoked_at DOUBLE PRECISION
);
CREATE INDEX api_keys_tenant ON api_keys (tenant_id, created_at);

CREATE TABLE staff (
    tenant_id  TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    id         TEXT NOT NULL,
    name       TEXT NOT NULL,
    groups     JSONB NOT NULL,
    active     BOOLEAN NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (tenant_id, id)
);

CREATE TABLE links (
    tenant_id    TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    id           TEXT NOT NULL,
    public_id    TEXT NOT NULL UNIQUE,
    name         TEXT NOT NULL,
    media        JSONB NOT NULL,
    ring_staff   JSONB NOT NULL,
    ring_groups  JSONB NOT NULL,
    hours        JSONB,
    ring_timeout DOUBLE PRECISION NOT NULL,
    active       BOOLEAN NOT NULL,
    created_at   DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (tenant_id, id)
);

-- Calls outlive their link (call logs are kept for the tenant's retention period), so
-- link_id is checked when a call is created rather than by a foreign key.
CREATE TABLE calls (
    tenant_id       TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    id              TEXT NOT NULL,
    link_id         TEXT NOT NULL,
    status          TEXT NOT NULL,
    created_at      DOUBLE PRECISION NOT NULL,
    answered_at     DOUBLE PRECISION,
    ended_at        DOUBLE PRECISION,
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
    issued_at  DOUBLE PRECISION NOT NULL,
    expires_at DOUBLE PRECISION NOT NULL,
    revoked_at DOUBLE PRECISION
);
CREATE INDEX tokens_revoked ON tokens (revoked_at) WHERE revoked_at IS NOT NULL;
CREATE INDEX tokens_expires ON tokens (expires_at);

CREATE TABLE relay_nodes (
    id             TEXT PRIMARY KEY,
    region         TEXT NOT NULL,
    urls           JSONB NOT NULL,
    allocations    BIGINT NOT NULL,
    packet_rate    DOUBLE PRECISION NOT NULL,
    cpu            DOUBLE PRECISION NOT NULL,
    draining       BOOLEAN NOT NULL,
    last_heartbeat DOUBLE PRECISION NOT NULL,
    registered_at  DOUBLE PRECISION NOT NULL
);
CREATE INDEX relay_nodes_region ON relay_nodes (region);
