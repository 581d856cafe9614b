-- Call quality from the relays' summaries, per-call figures for call logs (SQLite).
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
    seq                INTEGER NOT NULL,
    started_at         REAL NOT NULL,
    at                 REAL NOT NULL,
    final              INTEGER NOT NULL,
    to_peer_packets    INTEGER,
    to_peer_bytes      INTEGER,
    to_peer_lost       INTEGER,
    to_peer_jitter_ms  REAL,
    to_peer_mos        REAL,
    to_client_packets  INTEGER,
    to_client_bytes    INTEGER,
    to_client_lost     INTEGER,
    to_client_jitter_ms REAL,
    to_client_mos      REAL,
    streams            TEXT NOT NULL,
    relay_dropped      INTEGER NOT NULL,
    relay_rxq_overflow INTEGER NOT NULL,
    relay_delay_us_p99 INTEGER NOT NULL,
    PRIMARY KEY (node_id, token_id, allocation),
    FOREIGN KEY (tenant_id, call_id) REFERENCES calls (tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX call_quality_call ON call_quality (tenant_id, call_id);

-- One call's allocations folded together (control/quality.py): what the call log lists and
-- filters on. "from_visitor"/"to_visitor" are the call's two directions.
CREATE TABLE call_stats (
    tenant_id              TEXT NOT NULL,
    call_id                TEXT NOT NULL,
    media                  TEXT NOT NULL,
    allocations            INTEGER NOT NULL,
    final                  INTEGER NOT NULL,
    bytes                  INTEGER NOT NULL,
    from_visitor_loss_pct  REAL,
    from_visitor_jitter_ms REAL,
    from_visitor_mos       REAL,
    to_visitor_loss_pct    REAL,
    to_visitor_jitter_ms   REAL,
    to_visitor_mos         REAL,
    mos                    REAL,
    relay_dropped          INTEGER NOT NULL,
    updated_at             REAL NOT NULL,
    PRIMARY KEY (tenant_id, call_id),
    FOREIGN KEY (tenant_id, call_id) REFERENCES calls (tenant_id, id) ON DELETE CASCADE
);

-- The highest summary seq stored per relay node: a replayed summary is ignored.
CREATE TABLE node_summaries (
    node_id    TEXT PRIMARY KEY,
    last_seq   INTEGER NOT NULL,
    stored     INTEGER NOT NULL,
    dropped    INTEGER NOT NULL,
    updated_at REAL NOT NULL
);

-- Call-log filters (link, answering staff) and the operator's cross-tenant aggregates.
CREATE INDEX calls_tenant_link ON calls (tenant_id, link_id, created_at, id);
CREATE INDEX calls_tenant_staff ON calls (tenant_id, answered_by, created_at, id);
CREATE INDEX calls_created ON calls (created_at);
