-- Closing a slot and ending its day. Every instance must agree when a slot
-- closes, so the closing time is computed once, when the slot is created,
-- and kept; so is the end of its date. `closed_at` is set by the closing
-- and `day_ended` by the day's end, in the same transaction as their token
-- changes: an instance looking for due work finds exactly what no other
-- has done. Slots created before this migration close at the end of their
-- date in UTC, which is when they were shown to close.
ALTER TABLE slots ADD COLUMN closes_at BIGINT;
ALTER TABLE slots ADD COLUMN day_ends_at BIGINT;
ALTER TABLE slots ADD COLUMN closed_at BIGINT;
ALTER TABLE slots ADD COLUMN day_ended BOOLEAN NOT NULL DEFAULT FALSE;
UPDATE slots
   SET day_ends_at = (EXTRACT(EPOCH FROM (date::date + 1)::timestamp AT TIME ZONE 'UTC'))::bigint * 1000000000;
UPDATE slots SET closes_at = day_ends_at;
ALTER TABLE slots ALTER COLUMN closes_at SET NOT NULL;
ALTER TABLE slots ALTER COLUMN day_ends_at SET NOT NULL;
CREATE INDEX slots_open_by_closing ON slots (closes_at) WHERE closed_at IS NULL;
CREATE INDEX slots_by_day_end ON slots (day_ends_at) WHERE NOT day_ended;

-- Slot events carry the slot's closing time and whether it has closed.
ALTER TABLE events ADD COLUMN closes_at BIGINT;
ALTER TABLE events ADD COLUMN closed BOOLEAN;
UPDATE events
   SET closes_at = (EXTRACT(EPOCH FROM (date::date + 1)::timestamp AT TIME ZONE 'UTC'))::bigint * 1000000000,
       closed = FALSE
 WHERE kind = 'SLOT';
