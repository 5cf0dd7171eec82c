-- Idempotency keys belong to the caller (the API key's name) that used
-- them: one desk can neither replay another desk's answer nor learn that
-- another desk used a key. Only a SHA-256 digest of the canonical request
-- is kept, not the request itself, so a body padded with unknown fields
-- costs no more to remember than a plain one. Existing records keep their
-- meaning: the caller is whoever booked the token the key created, and the
-- digest is taken of the canonical request they stored.
CREATE TABLE idempotency_by_caller (
    caller      TEXT NOT NULL,
    key         TEXT NOT NULL,
    fingerprint BLOB NOT NULL,
    token_id    BLOB NOT NULL,
    response    TEXT NOT NULL,
    stored_at   INTEGER NOT NULL,
    PRIMARY KEY (caller, key)
) STRICT;
INSERT INTO idempotency_by_caller (caller, key, fingerprint, token_id, response, stored_at)
SELECT t.created_by, i.key, sha256(i.fingerprint), i.token_id, i.response, i.stored_at
  FROM idempotency AS i
  JOIN tokens AS t ON t.token_id = i.token_id;
DROP TABLE idempotency;
ALTER TABLE idempotency_by_caller RENAME TO idempotency;
CREATE INDEX idempotency_by_age ON idempotency (stored_at);
