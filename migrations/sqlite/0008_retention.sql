-- The engine holds only live days (see ARCHITECTURE.md, "Live days and
-- history"). Start-up loads the slots from a date on, and a read of an
-- older day loads that day's slots, their tokens and their history from
-- here: these indexes make each of those a range instead of a scan of
-- every token ever booked. Bookings concentrate on a few slots and
-- changes on recent tokens, so the two token indexes are written near
-- their ends, as the tables are.
CREATE INDEX slots_by_date ON slots (date, doctor_id);
CREATE INDEX tokens_by_slot ON tokens (slot_id, sequence);
CREATE INDEX token_history_by_token ON token_history (token_sequence);

-- Token ids are random, so an index of every token's id would cost each
-- booking a random B-tree insert. Only tokens of days that left the
-- engine are looked up here, so their ids are indexed when their day
-- leaves, once a day, in one transaction.
CREATE TABLE old_tokens (
    token_id BLOB PRIMARY KEY,
    sequence INTEGER NOT NULL
) STRICT, WITHOUT ROWID;

-- Every slot dated before `evicted_before` is over and out of the engine,
-- and its tokens are in old_tokens. A directory made before this
-- migration has nothing indexed yet: its first start loads every day, as
-- before, and its first tick indexes the old ones.
CREATE TABLE retention (
    id             INTEGER PRIMARY KEY CHECK (id = 1),
    evicted_before TEXT NOT NULL
) STRICT;
INSERT INTO retention (id, evicted_before) VALUES (1, '0000-01-01');
