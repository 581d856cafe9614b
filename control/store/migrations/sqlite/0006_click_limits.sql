-- Abuse limits on the public click (SQLite): a tenant's overrides of the operator's click
-- limits (JSON object by field name; {} follows the defaults), and an index for counting the
-- calls ringing on a link and a tenant (the ringing caps, control/api/calls.py).
ALTER TABLE tenants ADD COLUMN click_limits TEXT NOT NULL DEFAULT '{}';
CREATE INDEX calls_ringing ON calls (tenant_id, created_at) WHERE status = 'ringing';
