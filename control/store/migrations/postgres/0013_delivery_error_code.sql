-- Why a webhook delivery's last attempt failed, for programs and the dashboard's catalogue:
-- a code of control.models.HOOK_ERRORS and its params (a JSON object: a status, seconds, a
-- technical detail). ``last_error`` keeps the English text. NULL for rows written before this
-- column: readers show their ``last_error`` as it is.
ALTER TABLE webhook_deliveries ADD COLUMN last_error_code TEXT;
ALTER TABLE webhook_deliveries ADD COLUMN last_error_params JSONB;
