-- The event log: one row per change, written in the same transaction as
-- the change, with an id that strictly increases in commit order. Token
-- rows and token_history stay the record of each token; this table is what
-- the live stream, the board and the reports read, in id order. It holds
-- no patient ids. The log starts empty: changes made before it existed
-- are in the history tables only.
CREATE TABLE events (
    id           INTEGER PRIMARY KEY,
    at           INTEGER NOT NULL,
    actor        TEXT NOT NULL,
    -- 'TOKEN' or 'SLOT'.
    kind         TEXT NOT NULL,
    slot_id      TEXT NOT NULL,
    doctor_id    TEXT NOT NULL,
    date         TEXT NOT NULL,
    reason       TEXT NOT NULL,
    -- Token events.
    token_id     BLOB,
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
) STRICT;
