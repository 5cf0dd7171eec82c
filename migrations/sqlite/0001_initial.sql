-- Slots, tokens, their history and idempotency records.
-- Token rows are keyed by their arrival sequence, so a rebuild reads them
-- in arrival order with a plain table scan and every write appends or
-- updates by that key. Token ids need no index: the engine owns them, and
-- an index of random UUIDs would cost a random B-tree insert per booking.
CREATE TABLE slots (
    slot_id     TEXT PRIMARY KEY,
    doctor_id   TEXT NOT NULL,
    date        TEXT NOT NULL,
    start_time  TEXT NOT NULL,
    end_time    TEXT NOT NULL,
    capacity    INTEGER NOT NULL,
    created_at  INTEGER NOT NULL
) STRICT;

CREATE TABLE tokens (
    sequence     INTEGER PRIMARY KEY,
    token_id     BLOB NOT NULL,
    token_number INTEGER NOT NULL,
    patient_id   TEXT NOT NULL,
    slot_id      TEXT NOT NULL REFERENCES slots (slot_id),
    source       TEXT NOT NULL,
    status       TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL
) STRICT;

-- One row per status change; row ids give the order within a token.
CREATE TABLE token_history (
    id             INTEGER PRIMARY KEY,
    token_sequence INTEGER NOT NULL REFERENCES tokens (sequence),
    at             INTEGER NOT NULL,
    from_status    TEXT,
    to_status      TEXT NOT NULL,
    reason         TEXT NOT NULL,
    actor          TEXT NOT NULL
) STRICT;

CREATE TABLE idempotency (
    key         TEXT PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    token_id    BLOB NOT NULL,
    response    TEXT NOT NULL,
    stored_at   INTEGER NOT NULL
) STRICT;
CREATE INDEX idempotency_by_age ON idempotency (stored_at);
