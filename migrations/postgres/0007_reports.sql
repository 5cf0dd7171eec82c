-- The estimate a check-in answer gave (and a return's after a skip) rides
-- on the event of that change, so that how far calls came from their
-- estimates can be told from the log. Events logged before have none.
ALTER TABLE events ADD COLUMN estimated_call_at BIGINT;

-- Day reports are made from the events: token events and slot creations.
-- The log keeps events 24 hours; when pruning deletes them from `events`,
-- the same statement copies those kinds here, where they are kept for
-- good (as tokens and their history are), so every event is in exactly
-- one of the two tables and a report of any day can be made again.
CREATE TABLE report_events (
    id                BIGINT PRIMARY KEY,
    at                BIGINT NOT NULL,
    actor             TEXT NOT NULL,
    kind              TEXT NOT NULL,
    slot_id           TEXT NOT NULL,
    doctor_id         TEXT NOT NULL,
    date              TEXT NOT NULL,
    reason            TEXT NOT NULL,
    token_id          UUID,
    token_number      INTEGER,
    source            TEXT,
    from_status       TEXT,
    to_status         TEXT,
    start_time        TEXT,
    end_time          TEXT,
    capacity          INTEGER,
    allocated         INTEGER,
    waitlisted        INTEGER,
    closes_at         BIGINT,
    closed            BOOLEAN,
    estimated_call_at BIGINT
);
CREATE INDEX report_events_by_date ON report_events (date, id);
