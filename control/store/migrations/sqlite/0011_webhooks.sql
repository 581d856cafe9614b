-- Webhooks (SQLite): a tenant's HTTPS endpoints for call events and the durable delivery queue.

-- An endpoint: where to POST, which events, the signing secret (``prev_secret`` still signs
-- until ``prev_until`` after a rotation), and whether payloads may carry visitor details.
CREATE TABLE webhook_endpoints (
    tenant_id       TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    id              TEXT NOT NULL,
    url             TEXT NOT NULL,
    events          TEXT NOT NULL,           -- JSON list of event names
    secret          TEXT NOT NULL,
    prev_secret     TEXT,
    prev_until      REAL,
    include_visitor INTEGER NOT NULL DEFAULT 0,
    active          INTEGER NOT NULL DEFAULT 1,
    created_at      REAL NOT NULL,
    PRIMARY KEY (tenant_id, id)
);

-- One row per event and endpoint; ``id`` is the idempotency id the receiver sees (kept by
-- "send again"). ``queued_at`` starts the retry window (creation, or the last "send again");
-- ``personal``: the payload carries visitor details (an erasure removes the row).
CREATE TABLE webhook_deliveries (
    tenant_id       TEXT NOT NULL,
    id              TEXT NOT NULL UNIQUE,
    endpoint_id     TEXT NOT NULL,
    call_id         TEXT,
    event           TEXT NOT NULL,
    payload         TEXT NOT NULL,
    personal        INTEGER NOT NULL DEFAULT 0,
    state           TEXT NOT NULL,           -- pending, delivered, failed
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL,
    last_status     INTEGER,
    last_error      TEXT,
    created_at      REAL NOT NULL,
    queued_at       REAL NOT NULL,
    done_at         REAL,
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, endpoint_id) REFERENCES webhook_endpoints (tenant_id, id)
        ON DELETE CASCADE
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (state, next_attempt_at);
CREATE INDEX webhook_deliveries_log ON webhook_deliveries (tenant_id, created_at, id);
