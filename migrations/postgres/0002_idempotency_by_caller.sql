-- Idempotency keys belong to the caller (the API key's name) that used
-- them: one desk can neither replay another desk's answer nor learn that
-- another desk used a key. Only a SHA-256 digest of the canonical request
-- is kept, not the request itself, so a body padded with unknown fields
-- costs no more to remember than a plain one. Existing records keep their
-- meaning: the caller is whoever booked the token the key created, and the
-- digest is taken of the canonical request they stored.
ALTER TABLE idempotency ADD COLUMN caller TEXT;
UPDATE idempotency AS i
   SET caller = h.actor
  FROM token_history AS h
 WHERE h.token_id = i.token_id AND h.from_status IS NULL;
DELETE FROM idempotency WHERE caller IS NULL;
ALTER TABLE idempotency ALTER COLUMN caller SET NOT NULL;
ALTER TABLE idempotency
    ALTER COLUMN fingerprint TYPE BYTEA USING sha256(convert_to(fingerprint, 'UTF8'));
ALTER TABLE idempotency DROP CONSTRAINT idempotency_pkey;
ALTER TABLE idempotency ADD PRIMARY KEY (caller, key);
-- Counting a caller's keys within the retention, for the per-caller bound.
CREATE INDEX idempotency_by_caller_and_age ON idempotency (caller, stored_at);
