-- Who a call rang (JSON list of staff ids): the link's members who were available when the
-- visitor clicked, kept with the call so its timeline says who was rung even after the link's
-- set-up or the team changes. NULL for calls stored before this column.
ALTER TABLE calls ADD COLUMN rung TEXT;
