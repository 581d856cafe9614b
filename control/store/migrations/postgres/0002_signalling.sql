-- Signalling messages, staff declines, tokens by call (PostgreSQL).

-- A call's signalling messages (SDP offers/answers, ICE candidates) wait here until the
-- other party reads them. They carry ICE candidates, so visitors' addresses: they are
-- deleted when the call reaches a final state, and swept after a bounded age otherwise.
CREATE TABLE signals (
    seq        BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id  TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    call_id    TEXT NOT NULL,
    sender     TEXT NOT NULL,
    body       TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL
);
CREATE INDEX signals_call ON signals (tenant_id, call_id, seq);
CREATE INDEX signals_created ON signals (created_at);

-- Every rung staff member who declined a ringing call; the call is rejected once all have.
CREATE TABLE call_declines (
    tenant_id TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    call_id   TEXT NOT NULL,
    staff_id  TEXT NOT NULL,
    at        DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (tenant_id, call_id, staff_id)
);

-- Ending a call revokes every token issued for it.
CREATE INDEX tokens_call ON tokens (tenant_id, call_id);
