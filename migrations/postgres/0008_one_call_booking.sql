-- A booking in one call. An instance keeps copies of the slots it books
-- into and decides on its copy; `opd_book` writes the decision only if the
-- slot is still exactly what the copy was taken from.
--
-- Every update of a slot's row gives it a new version, whatever the
-- statement: token changes always update their slot's counters, and
-- capacity, closing and the day's end are columns of the row, so no
-- change to what a booking decides on can leave the version as it was.
CREATE SEQUENCE slot_versions;
ALTER TABLE slots ADD COLUMN version BIGINT NOT NULL DEFAULT nextval('slot_versions');

CREATE FUNCTION opd_next_slot_version() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.version := nextval('slot_versions');
    RETURN NEW;
END
$$;
CREATE TRIGGER slots_new_version BEFORE UPDATE ON slots
    FOR EACH ROW EXECUTE FUNCTION opd_next_slot_version();

-- Writes one booking decided on a copy of slot `p_slot` at version
-- `p_version`, in one transaction, taking the locks in the order every
-- other transaction takes them (idempotency key, slot, doctor's day, log
-- head). `c_*` are the token changes in the order of the answer (the
-- booked token, `c_from` NULL, is inserted; the others are updated);
-- `k_*` is the idempotency record, all NULL without a key. Answers:
--   WRITTEN  the booked token exists: an earlier try of this call, lost
--            with its connection, committed;
--   ALREADY  the key is stored (its fingerprint, token and response);
--   LIMIT    the key would pass a limit (the counts of stored keys);
--   STALE    the slot or the day's token numbers moved on (the numbers
--            issued), and nothing was written;
--   BOOKED   written, with the slot's new version.
CREATE FUNCTION opd_book(
    p_slot TEXT, p_version BIGINT, p_doctor TEXT, p_date TEXT, p_number INTEGER,
    p_allocated INTEGER, p_waitlisted INTEGER, p_at BIGINT, p_actor TEXT, p_channel TEXT,
    c_token UUID[], c_number INTEGER[], c_patient TEXT[], c_source TEXT[],
    c_priority SMALLINT[], c_from TEXT[], c_to TEXT[], c_reason TEXT[],
    c_active BOOLEAN[], c_seated BOOLEAN[], c_checked_in BIGINT[], c_skips SMALLINT[],
    c_estimate BIGINT[],
    k_key TEXT, k_fingerprint BYTEA, k_response TEXT, k_since BIGINT,
    k_per_caller BIGINT, k_total BIGINT)
RETURNS TABLE (r_outcome TEXT, r_version BIGINT, r_issued INTEGER, r_fingerprint BYTEA,
               r_token UUID, r_response TEXT, r_caller_keys BIGINT, r_caller_oldest BIGINT,
               r_total_keys BIGINT, r_total_oldest BIGINT)
LANGUAGE plpgsql AS $$
DECLARE
    booked UUID;
    stored RECORD;
    counts RECORD;
    current_version BIGINT;
    issued INTEGER;
    new_version BIGINT;
    head BIGINT;
    changes INTEGER := cardinality(c_token);
BEGIN
    SELECT c.token INTO booked FROM unnest(c_token, c_from) AS c(token, from_status)
     WHERE c.from_status IS NULL;
    -- A token id is drawn for each request, so only an earlier try of this
    -- same call can have written it.
    IF EXISTS (SELECT 1 FROM tokens t WHERE t.token_id = booked) THEN
        RETURN QUERY SELECT 'WRITTEN', NULL::BIGINT, NULL::INTEGER, NULL::BYTEA, NULL::UUID,
                            NULL::TEXT, NULL::BIGINT, NULL::BIGINT, NULL::BIGINT, NULL::BIGINT;
        RETURN;
    END IF;

    IF k_key IS NOT NULL THEN
        PERFORM pg_advisory_xact_lock(hashtextextended(p_actor || E'\n' || k_key, 0));
        SELECT i.fingerprint, i.token_id, i.response INTO stored FROM idempotency i
         WHERE i.caller = p_actor AND i.key = k_key AND i.stored_at >= k_since;
        IF FOUND THEN
            -- A stored answer read here may be committed and not yet on
            -- the synchronous standby. With a transaction id, this call's
            -- commit waits for the standby to confirm everything before
            -- it, so the answer is given once durable.
            PERFORM txid_current();
            RETURN QUERY SELECT 'ALREADY', NULL::BIGINT, NULL::INTEGER, stored.fingerprint,
                                stored.token_id, stored.response, NULL::BIGINT, NULL::BIGINT,
                                NULL::BIGINT, NULL::BIGINT;
            RETURN;
        END IF;
        SELECT count(*) FILTER (WHERE i.caller = p_actor) AS caller_keys,
               min(i.stored_at) FILTER (WHERE i.caller = p_actor) AS caller_oldest,
               count(*) AS total_keys, min(i.stored_at) AS total_oldest
          INTO counts FROM idempotency i WHERE i.stored_at >= k_since;
        IF counts.caller_keys >= k_per_caller OR counts.total_keys >= k_total THEN
            RETURN QUERY SELECT 'LIMIT', NULL::BIGINT, NULL::INTEGER, NULL::BYTEA, NULL::UUID,
                                NULL::TEXT, counts.caller_keys, counts.caller_oldest,
                                counts.total_keys, counts.total_oldest;
            RETURN;
        END IF;
    END IF;

    SELECT s.version INTO current_version FROM slots s WHERE s.slot_id = p_slot FOR UPDATE;
    IF current_version IS DISTINCT FROM p_version THEN
        RETURN QUERY SELECT 'STALE', NULL::BIGINT, NULL::INTEGER, NULL::BYTEA, NULL::UUID,
                            NULL::TEXT, NULL::BIGINT, NULL::BIGINT, NULL::BIGINT, NULL::BIGINT;
        RETURN;
    END IF;
    SELECT d.numbers_issued INTO issued FROM doctor_days d
     WHERE d.doctor_id = p_doctor AND d.date = p_date FOR UPDATE;
    IF issued IS DISTINCT FROM p_number - 1 THEN
        RETURN QUERY SELECT 'STALE', NULL::BIGINT, issued, NULL::BYTEA, NULL::UUID,
                            NULL::TEXT, NULL::BIGINT, NULL::BIGINT, NULL::BIGINT, NULL::BIGINT;
        RETURN;
    END IF;

    -- The arrival sequence is drawn under the slot's lock, so within a
    -- slot arrival order is commit order.
    INSERT INTO tokens (token_id, sequence, token_number, patient_id, slot_id, doctor_id, source,
                        priority, status, active, seated, created_at, updated_at)
    SELECT c.token, nextval('token_sequence'), c.number, c.patient, p_slot, p_doctor, c.source,
           c.priority, c.to_status, c.active, c.seated, p_at, p_at
      FROM unnest(c_token, c_number, c_patient, c_source, c_priority, c_from, c_to, c_active,
                  c_seated)
           AS c(token, number, patient, source, priority, from_status, to_status, active, seated)
     WHERE c.from_status IS NULL;
    UPDATE tokens t
       SET status = c.to_status, active = c.active, seated = c.seated,
           checked_in_at = c.checked_in, skips = c.skips, updated_at = p_at
      FROM unnest(c_token, c_from, c_to, c_active, c_seated, c_checked_in, c_skips)
           AS c(token, from_status, to_status, active, seated, checked_in, skips)
     WHERE c.from_status IS NOT NULL AND t.token_id = c.token;
    INSERT INTO token_history (token_id, doctor_id, at, from_status, to_status, reason, actor)
    SELECT c.token, p_doctor, p_at, c.from_status, c.to_status, c.reason, p_actor
      FROM unnest(c_token, c_from, c_to, c_reason) WITH ORDINALITY
           AS c(token, from_status, to_status, reason, ord)
     ORDER BY c.ord;
    UPDATE slots s SET allocated_count = p_allocated, waitlist_count = p_waitlisted
     WHERE s.slot_id = p_slot
    RETURNING s.version INTO new_version;
    UPDATE doctor_days d SET numbers_issued = p_number
     WHERE d.doctor_id = p_doctor AND d.date = p_date;

    IF k_key IS NOT NULL THEN
        INSERT INTO idempotency (caller, key, fingerprint, token_id, response, stored_at)
        VALUES (p_actor, k_key, k_fingerprint, booked, k_response, p_at)
        ON CONFLICT (caller, key) DO UPDATE SET
            fingerprint = excluded.fingerprint, token_id = excluded.token_id,
            response = excluded.response, stored_at = excluded.stored_at;
        DELETE FROM idempotency i WHERE i.stored_at < k_since;
    END IF;

    -- The log's head is locked last, until the commit (see take_event_ids).
    UPDATE event_log_head h SET last_id = h.last_id + changes RETURNING h.last_id INTO head;
    INSERT INTO events (id, at, actor, kind, slot_id, doctor_id, date, reason, token_id,
                        token_number, source, from_status, to_status, estimated_call_at)
    SELECT head - changes + c.ord, p_at, p_actor, 'TOKEN', p_slot, p_doctor, p_date,
           c.reason, c.token, c.number, c.source, c.from_status, c.to_status, c.estimate
      FROM unnest(c_token, c_number, c_source, c_from, c_to, c_reason, c_estimate)
           WITH ORDINALITY
           AS c(token, number, source, from_status, to_status, reason, estimate, ord);
    PERFORM pg_notify(p_channel, '');

    RETURN QUERY SELECT 'BOOKED', new_version, p_number, NULL::BYTEA, NULL::UUID, NULL::TEXT,
                        NULL::BIGINT, NULL::BIGINT, NULL::BIGINT, NULL::BIGINT;
END
$$;
