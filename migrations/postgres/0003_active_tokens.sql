-- Whether a token is active (allocated or waiting) is the engine's rule,
-- Status::is_active: every insert and update of a token writes `active`
-- from it, beside the status, and the indexes and queries that want the
-- active tokens select them by this column, so no query lists statuses.
-- The rows written before this column existed are filled once, here, from
-- the statuses that were active then.
ALTER TABLE tokens ADD COLUMN active BOOLEAN;
UPDATE tokens SET active = status IN ('ALLOCATED', 'WAITLISTED');
ALTER TABLE tokens ALTER COLUMN active SET NOT NULL;

DROP INDEX tokens_active_by_slot;
CREATE INDEX tokens_active_by_slot ON tokens (slot_id, sequence) WHERE active;
DROP INDEX one_active_token_per_patient_and_slot;
CREATE UNIQUE INDEX one_active_token_per_patient_and_slot ON tokens (slot_id, patient_id)
    WHERE active;
