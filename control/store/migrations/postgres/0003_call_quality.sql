-- Call quality from the relays' summaries, per-call figures for call logs (PostgreSQL).
-- Keyed by session token and allocation, never by address: nothing here holds a visitor's IP.

-- The newest summary of each allocation (counters are cumulative, so it replaces the older
-- ones). Rows go with their call: retention and erasure delete calls, and these follow.
CREATE TABLE call_quality (
    tenant_id          TEXT NOT NULL,
    call_id            TEXT NOT NULL,
    node_id            TEXT NOT NULL,
    allocation         TEXT NOT NULL,
    token_id           TEXT NOT NULL,
    role               TEXT NOT NULL,
    seq                BIGINT NOT NULL,
    started_at         DOUBLE PRECISION NOT NULL,
    at                 DOUBLE PRECISION NOT NULL,
    final              BOOLEAN NOT NULL,
    to_peer_packets    BIGINT,
    to_peer_bytes      BIGINT,
    to_peer_lost       BIGINT,
    to_peer_jitter_ms  DOUBLE PRECISION,
    to_peer_mos        DOUBLE PRECISION,
    to_client_packets  BIGINT,
    to_client_bytes    BIGINT,
    to_client_lost     BIGINT,
    to_client_jitter_ms DOUBLE PRECISION,
    to_client_mos      DOUBLE PRECISION,
    streams            JSONB NOT NULL,
    relay_dropped      BIGINT NOT NULL,
    relay_rxq_overflow BIGINT NOT NULL,
    relay_delay_us_p99 BIGINT NOT NULL,
    PRIMARY KEY (node_id, token_id, allocation),
    FOREIGN KEY (tenant_id, call_id) REFERENCES calls (tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX call_quality_call ON call_quality (tenant_id, call_id);

-- One call's allocations folded together (control/quality.py): what the call log lists and
-- filters on. "from_visitor"/"to_visitor" are the call's two directions.
CREATE TABLE call_stats (
    tenant_id              TEXT NOT NULL,
    call_id                TEXT NOT NULL,
    media                  JSONB NOT NULL,
    allocations            BIGINT NOT NULL,
    final                  BOOLEAN NOT NULL,
    bytes                  BIGINT NOT NULL,
    from_visitor_loss_pct  DOUBLE PRECISION,
    from_visitor_jitter_ms DOUBLE PRECISION,
    from_visitor_mos       DOUBLE PRECISION,
    to_visitor_loss_pct    DOUBLE PRECISION,
    to_visitor_jitter_ms   DOUBLE PRECISION,
    to_visitor_mos         DOUBLE PRECISION,
    mos                    DOUBLE PRECISION,
    relay_dropped          BIGINT NOT NULL,
    updated_at             DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (tenant_id, call_id),
    FOREIGN KEY (tenant_id, call_id) REFERENCES calls (tenant_id, id) ON DELETE CASCADE
);

-- The highest summary seq stored per relay node: a replayed summary is ignored.
CREATE TABLE node_summaries (
    node_id    TEXT PRIMARY KEY,
    last_seq   BIGINT NOT NULL,
    stored     BIGINT NOT NULL,
    dropped    BIGINT NOT NULL,
    updated_at DOUBLE PRECISION NOT NULL
);

-- Call-log filters (link, answering staff) and the operator's cross-tenant aggregates.
CREATE INDEX calls_tenant_link ON calls (tenant_id, link_id, created_at, id);
CREATE INDEX calls_tenant_staff ON calls (tenant_id, answered_by, created_at, id);
CREATE INDEX calls_created ON calls (created_at);
