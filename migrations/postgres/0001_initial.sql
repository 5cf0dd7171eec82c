-- The shared state of every instance. Every table carries doctor_id, the
-- distribution key when the schema is sharded (see ARCHITECTURE.md): one
-- request touches one slot and its doctor's day, so one shard.
-- Dates and times are text in fixed-width ISO form (ordering and overlap
-- tests work on them); instants are integer nanoseconds since the epoch so
-- every instance renders them exactly as they were answered.

CREATE TABLE slots (
    slot_id         TEXT PRIMARY KEY,
    doctor_id       TEXT NOT NULL,
    date            TEXT NOT NULL,
    start_time      TEXT NOT NULL,
    end_time        TEXT NOT NULL,
    capacity        INTEGER NOT NULL,
    allocated_count INTEGER NOT NULL DEFAULT 0,
    waitlist_count  INTEGER NOT NULL DEFAULT 0,
    created_at      BIGINT NOT NULL
);
CREATE INDEX slots_by_doctor_day ON slots (doctor_id, date, start_time);
CREATE INDEX slots_in_listing_order ON slots (date, start_time, slot_id);

-- Locked by every booking of the doctor's day: token numbers stay gapless
-- and in request order.
CREATE TABLE doctor_days (
    doctor_id      TEXT NOT NULL,
    date           TEXT NOT NULL,
    numbers_issued INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (doctor_id, date)
);

-- Drawn while the slot's row is locked, so within a slot arrival order is
-- commit order. Gaps left by rolled-back requests are never shown.
CREATE SEQUENCE token_sequence;

CREATE TABLE tokens (
    token_id     UUID PRIMARY KEY,
    sequence     BIGINT NOT NULL UNIQUE,
    token_number INTEGER NOT NULL,
    patient_id   TEXT NOT NULL,
    slot_id      TEXT NOT NULL REFERENCES slots (slot_id),
    doctor_id    TEXT NOT NULL,
    source       TEXT NOT NULL,
    priority     SMALLINT NOT NULL,
    status       TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL
);
CREATE INDEX tokens_active_by_slot ON tokens (slot_id, sequence)
    WHERE status IN ('ALLOCATED', 'WAITLISTED');
CREATE UNIQUE INDEX one_active_token_per_patient_and_slot ON tokens (slot_id, patient_id)
    WHERE status IN ('ALLOCATED', 'WAITLISTED');

CREATE TABLE token_history (
    id          BIGSERIAL PRIMARY KEY,
    token_id    UUID NOT NULL REFERENCES tokens (token_id),
    doctor_id   TEXT NOT NULL,
    at          BIGINT NOT NULL,
    from_status TEXT,
    to_status   TEXT NOT NULL,
    reason      TEXT NOT NULL,
    actor       TEXT NOT NULL
);
CREATE INDEX token_history_by_token ON token_history (token_id, id);

CREATE TABLE idempotency (
    key         TEXT PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    token_id    UUID NOT NULL,
    response    TEXT NOT NULL,
    stored_at   BIGINT NOT NULL
);
CREATE INDEX idempotency_by_age ON idempotency (stored_at);
