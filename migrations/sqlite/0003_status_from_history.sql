-- A token's row is written once, when it is booked. Its current status and
-- the time of its last change are those of its newest history row, or of
-- its creation when it has none. A later change then appends one history
-- row instead of rewriting the token's row in place, so a commit writes the
-- last pages of two tables and no longer one scattered page per changed
-- token. Every change already has its history row, so nothing is lost.
ALTER TABLE tokens DROP COLUMN status;
ALTER TABLE tokens DROP COLUMN updated_at;
