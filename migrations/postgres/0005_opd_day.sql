-- The OPD day. Whether a token holds a seat is the engine's rule,
-- Status::holds_seat, written beside `active` with every status change: a
-- slot is loaded with its active tokens and its seated ones (a completed
-- consultation still holds its seat), selected by these columns, so no
-- query lists statuses. Before this migration only allocated tokens held a
-- seat, which fills the column once, here.
ALTER TABLE tokens ADD COLUMN seated BOOLEAN;
UPDATE tokens SET seated = status = 'ALLOCATED';
ALTER TABLE tokens ALTER COLUMN seated SET NOT NULL;
-- The first check-in (nanoseconds since the epoch) and the calls not
-- answered, which the engine needs to decide and tokens loaded without
-- their history cannot tell.
ALTER TABLE tokens ADD COLUMN checked_in_at BIGINT;
ALTER TABLE tokens ADD COLUMN skips SMALLINT NOT NULL DEFAULT 0;

DROP INDEX tokens_active_by_slot;
CREATE INDEX tokens_loaded_by_slot ON tokens (slot_id, sequence) WHERE active OR seated;

-- How the doctor's day has gone, for call time estimates (engine::Pace).
ALTER TABLE doctor_days ADD COLUMN consultations INTEGER NOT NULL DEFAULT 0;
ALTER TABLE doctor_days ADD COLUMN consultation_nanos BIGINT NOT NULL DEFAULT 0;
ALTER TABLE doctor_days ADD COLUMN calls INTEGER NOT NULL DEFAULT 0;
ALTER TABLE doctor_days ADD COLUMN skips INTEGER NOT NULL DEFAULT 0;
