-- The event log: one row per change, written in the same transaction as
-- the change. Ids strictly increase in commit order across every instance
-- on this database and have no gaps: a transaction takes its ids from
-- event_log_head as its last write, and that row's lock is held until it
-- commits, so a later id is never committed before an earlier one. The
-- table holds no patient ids. The log starts empty: changes made before it
-- existed are in token_history only.
CREATE TABLE events (
    id           BIGINT PRIMARY KEY,
    at           BIGINT NOT NULL,
    actor        TEXT NOT NULL,
    -- 'TOKEN' or 'SLOT'.
    kind         TEXT NOT NULL,
    slot_id      TEXT NOT NULL,
    doctor_id    TEXT NOT NULL,
    date         TEXT NOT NULL,
    reason       TEXT NOT NULL,
    -- Token events.
    token_id     UUID,
    token_number INTEGER,
    source       TEXT,
    from_status  TEXT,
    to_status    TEXT,
    -- Slot events: the slot as it stood after the change.
    start_time   TEXT,
    end_time     TEXT,
    capacity     INTEGER,
    allocated    INTEGER,
    waitlisted   INTEGER
);

-- The newest id handed out: one row, locked by every writer last.
CREATE TABLE event_log_head (
    singleton BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (singleton),
    last_id   BIGINT NOT NULL
);
INSERT INTO event_log_head (last_id) VALUES (0);
