-- Copies of slots brought up to date by what changed alone. An instance
-- that finds its copy of a slot behind reads the slot's tokens changed
-- since the copy's version instead of all of them, so a copy costs as much
-- as the changes it lacks, not as the slot's size.
--
-- Every write of a token stamps it from the sequence that slot versions
-- come from. A transaction that writes a token has locked its slot's row
-- first, so the stamps it draws are taken after the commit of the version
-- a copy was read at, and are greater than it: "changed > version" finds
-- every token changed since. (Each writer locks the slot's row, or all of
-- a doctor's slots of the day, before it writes a token; a writer that did
-- not would leave copies wrong, so ARCHITECTURE.md lists this among the
-- invariants.) The sequence has no cache (CACHE 1, the default), so its
-- values grow with time across sessions.
ALTER TABLE tokens ADD COLUMN changed BIGINT NOT NULL DEFAULT 0;

CREATE FUNCTION opd_stamp_token() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.changed := nextval('slot_versions');
    RETURN NEW;
END
$$;
CREATE TRIGGER tokens_stamp BEFORE INSERT OR UPDATE ON tokens
    FOR EACH ROW EXECUTE FUNCTION opd_stamp_token();

CREATE INDEX tokens_changed_by_slot ON tokens (slot_id, changed);
