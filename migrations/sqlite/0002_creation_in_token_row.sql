-- A token's creation (its reason and who booked it) is kept in the token's
-- own row instead of a separate history row, so a booking writes one row,
-- not two. The history table keeps every later status change. Each
-- existing token's creation row moves into the new columns.
ALTER TABLE tokens ADD COLUMN created_reason TEXT;
ALTER TABLE tokens ADD COLUMN created_by TEXT;
UPDATE tokens
   SET created_reason = h.reason, created_by = h.actor
  FROM token_history AS h
 WHERE h.token_sequence = tokens.sequence AND h.from_status IS NULL;
DELETE FROM token_history WHERE from_status IS NULL;
