-- A group's call in fewer statements, with the same answers as 0009's.
--
-- A call costs the database about 1 ms of CPU on this project's 2-core
-- machine whatever its size (pgbench from one client with asynchronous
-- commit: 1,026 us for one booking, 1,564 for four), and a statement in
-- PL/pgSQL costs tens of microseconds, so the call now runs fewer:
--   * the locks on slots and doctors' days read the versions and numbers
--     each booking is checked against, instead of a query per booking;
--   * a booking's new token is found by a loop over its changes, not a
--     query;
--   * idempotency keys are locked and stored, and moved tokens updated,
--     only when a call has any; the count of changes is summed as calls
--     pass.
-- The locks are taken in the same order as before (see 0009), and what
-- each booking is checked against was read under them, as before.
CREATE OR REPLACE FUNCTION opd_book_group(
    p_channel TEXT,
    p_slot TEXT[], p_version BIGINT[], p_doctor TEXT[], p_date TEXT[], p_number INTEGER[],
    p_allocated INTEGER[], p_waitlisted INTEGER[], p_at BIGINT[], p_actor TEXT[],
    p_first INTEGER[], p_last INTEGER[],
    c_call INTEGER[], c_token UUID[], c_number INTEGER[], c_patient TEXT[], c_source TEXT[],
    c_priority SMALLINT[], c_from TEXT[], c_to TEXT[], c_reason TEXT[],
    c_active BOOLEAN[], c_seated BOOLEAN[], c_checked_in BIGINT[], c_skips SMALLINT[],
    c_estimate BIGINT[],
    k_key TEXT[], k_fingerprint BYTEA[], k_response TEXT[], k_since BIGINT[],
    k_per_caller BIGINT[], k_total BIGINT[])
RETURNS TABLE (r_call INTEGER, r_outcome TEXT, r_version BIGINT, r_issued INTEGER,
               r_fingerprint BYTEA, r_token UUID, r_response TEXT, r_caller_keys BIGINT,
               r_caller_oldest BIGINT, r_total_keys BIGINT, r_total_oldest BIGINT)
LANGUAGE plpgsql AS $$
DECLARE
    calls INTEGER := cardinality(p_slot);
    i INTEGER;
    j INTEGER;
    f INTEGER;
    l INTEGER;
    key_hash BIGINT;
    booked UUID;
    stored RECORD;
    counts RECORD;
    current_version BIGINT;
    issued INTEGER;
    -- The calls that write, the token each books, and what they take.
    passed INTEGER[] := '{}';
    booked_tokens UUID[] := '{}';
    taken_slots TEXT[] := '{}';
    taken_days TEXT[] := '{}';
    taken_keys TEXT[] := '{}';
    keyed_actors TEXT[] := '{}';
    head BIGINT;
    changes INTEGER := 0;
    -- What the locks read: each slot's version and each day's numbers,
    -- by slot id and by doctor and date.
    locked_slots TEXT[];
    locked_versions BIGINT[];
    locked_days TEXT[];
    locked_issued INTEGER[];
    -- Whether a call that passed moves a token that exists already.
    moves BOOLEAN := false;
BEGIN
    IF cardinality(array_remove(k_key, NULL)) > 0 THEN
        FOR key_hash IN
            SELECT DISTINCT hashtextextended(a.actor || E'\n' || a.key, 0)
              FROM unnest(p_actor, k_key) AS a(actor, key)
             WHERE a.key IS NOT NULL
             ORDER BY 1
        LOOP
            PERFORM pg_advisory_xact_lock(key_hash);
        END LOOP;
    END IF;
    -- Rows are locked as the sort hands them on, so in this order.
    SELECT array_agg(s.slot_id), array_agg(s.version) INTO locked_slots, locked_versions
      FROM (SELECT s.slot_id, s.version FROM slots s
             WHERE s.slot_id = ANY (p_slot) ORDER BY s.slot_id FOR UPDATE) s;
    SELECT array_agg(d.doctor_id || E'\n' || d.date), array_agg(d.numbers_issued)
      INTO locked_days, locked_issued
      FROM (SELECT d.doctor_id, d.date, d.numbers_issued FROM doctor_days d
              JOIN unnest(p_doctor, p_date) AS w(doctor, date)
                ON d.doctor_id = w.doctor AND d.date = w.date
             ORDER BY d.doctor_id, d.date
               FOR UPDATE OF d) d;

    -- First each call is checked, one by one; then the calls that passed
    -- are written together, a statement for all of them per table.
    FOR i IN 1 .. calls LOOP
        f := p_first[i];
        l := p_last[i];
        booked := NULL;
        FOR j IN f .. l LOOP
            IF c_from[j] IS NULL THEN
                booked := c_token[j];
            END IF;
        END LOOP;
        -- A token id is drawn for each request, so only an earlier try of
        -- this same call can have written it.
        IF EXISTS (SELECT 1 FROM tokens t WHERE t.token_id = booked) THEN
            RETURN QUERY SELECT i, 'WRITTEN', NULL::BIGINT, NULL::INTEGER, NULL::BYTEA,
                                NULL::UUID, NULL::TEXT, NULL::BIGINT, NULL::BIGINT,
                                NULL::BIGINT, NULL::BIGINT;
            CONTINUE;
        END IF;
        -- A second call on a slot, a doctor's day or a key that a call
        -- before it in the group takes is stale: it was decided without
        -- that call's change. An instance sends such calls together only
        -- after dropping its copies, or when one caller's key is used for
        -- two requests at once.
        IF p_slot[i] = ANY (taken_slots)
           OR p_doctor[i] || E'\n' || p_date[i] = ANY (taken_days)
           OR (k_key[i] IS NOT NULL AND p_actor[i] || E'\n' || k_key[i] = ANY (taken_keys)) THEN
            RETURN QUERY SELECT i, 'STALE', NULL::BIGINT, NULL::INTEGER, NULL::BYTEA,
                                NULL::UUID, NULL::TEXT, NULL::BIGINT, NULL::BIGINT,
                                NULL::BIGINT, NULL::BIGINT;
            CONTINUE;
        END IF;

        IF k_key[i] IS NOT NULL THEN
            SELECT s.fingerprint, s.token_id, s.response INTO stored FROM idempotency s
             WHERE s.caller = p_actor[i] AND s.key = k_key[i] AND s.stored_at >= k_since[i];
            IF FOUND THEN
                -- A stored answer read here may be committed and not yet on
                -- the synchronous standby. With a transaction id, this
                -- call's commit waits for the standby to confirm everything
                -- before it, so the answer is given once durable.
                PERFORM txid_current();
                RETURN QUERY SELECT i, 'ALREADY', NULL::BIGINT, NULL::INTEGER, stored.fingerprint,
                                    stored.token_id, stored.response, NULL::BIGINT,
                                    NULL::BIGINT, NULL::BIGINT, NULL::BIGINT;
                CONTINUE;
            END IF;
            -- The keys of the calls before it that passed are stored with
            -- them, after this loop, and counted here.
            SELECT count(*) FILTER (WHERE s.caller = p_actor[i])
                       + cardinality(array_positions(keyed_actors, p_actor[i])) AS caller_keys,
                   min(s.stored_at) FILTER (WHERE s.caller = p_actor[i]) AS caller_oldest,
                   count(*) + cardinality(keyed_actors) AS total_keys,
                   min(s.stored_at) AS total_oldest
              INTO counts FROM idempotency s WHERE s.stored_at >= k_since[i];
            IF counts.caller_keys >= k_per_caller[i] OR counts.total_keys >= k_total[i] THEN
                RETURN QUERY SELECT i, 'LIMIT', NULL::BIGINT, NULL::INTEGER, NULL::BYTEA,
                                    NULL::UUID, NULL::TEXT, counts.caller_keys,
                                    counts.caller_oldest, counts.total_keys, counts.total_oldest;
                CONTINUE;
            END IF;
        END IF;

        current_version := locked_versions[array_position(locked_slots, p_slot[i])];
        IF current_version IS DISTINCT FROM p_version[i] THEN
            RETURN QUERY SELECT i, 'STALE', NULL::BIGINT, NULL::INTEGER, NULL::BYTEA,
                                NULL::UUID, NULL::TEXT, NULL::BIGINT, NULL::BIGINT,
                                NULL::BIGINT, NULL::BIGINT;
            CONTINUE;
        END IF;
        issued := locked_issued[array_position(locked_days, p_doctor[i] || E'\n' || p_date[i])];
        IF issued IS DISTINCT FROM p_number[i] - 1 THEN
            RETURN QUERY SELECT i, 'STALE', NULL::BIGINT, issued, NULL::BYTEA, NULL::UUID,
                                NULL::TEXT, NULL::BIGINT, NULL::BIGINT, NULL::BIGINT,
                                NULL::BIGINT;
            CONTINUE;
        END IF;

        passed := passed || i;
        changes := changes + (l - f + 1);
        FOR j IN f .. l LOOP
            moves := moves OR c_from[j] IS NOT NULL;
        END LOOP;
        booked_tokens[i] := booked;
        taken_slots := taken_slots || p_slot[i];
        taken_days := taken_days || (p_doctor[i] || E'\n' || p_date[i]);
        IF k_key[i] IS NOT NULL THEN
            taken_keys := taken_keys || (p_actor[i] || E'\n' || k_key[i]);
            keyed_actors := keyed_actors || p_actor[i];
        END IF;
    END LOOP;
    IF cardinality(passed) = 0 THEN
        RETURN;
    END IF;

    -- The arrival sequence is drawn under the slots' locks, so within a
    -- slot arrival order is commit order.
    INSERT INTO tokens (token_id, sequence, token_number, patient_id, slot_id, doctor_id,
                        source, priority, status, active, seated, created_at, updated_at)
    SELECT c.token, nextval('token_sequence'), c.number, c.patient, p_slot[c.call],
           p_doctor[c.call], c.source, c.priority, c.to_status, c.active, c.seated,
           p_at[c.call], p_at[c.call]
      FROM unnest(c_call, c_token, c_number, c_patient, c_source, c_priority, c_from, c_to,
                  c_active, c_seated)
           AS c(call, token, number, patient, source, priority, from_status, to_status, active,
                seated)
     WHERE c.from_status IS NULL AND c.call = ANY (passed);
    IF moves THEN
        UPDATE tokens t
           SET status = c.to_status, active = c.active, seated = c.seated,
               checked_in_at = c.checked_in, skips = c.skips, updated_at = p_at[c.call]
          FROM unnest(c_call, c_token, c_from, c_to, c_active, c_seated, c_checked_in, c_skips)
               AS c(call, token, from_status, to_status, active, seated, checked_in, skips)
         WHERE c.from_status IS NOT NULL AND c.call = ANY (passed) AND t.token_id = c.token;
    END IF;
    INSERT INTO token_history (token_id, doctor_id, at, from_status, to_status, reason, actor)
    SELECT c.token, p_doctor[c.call], p_at[c.call], c.from_status, c.to_status, c.reason,
           p_actor[c.call]
      FROM unnest(c_call, c_token, c_from, c_to, c_reason) WITH ORDINALITY
           AS c(call, token, from_status, to_status, reason, ord)
     WHERE c.call = ANY (passed)
     ORDER BY c.ord;
    UPDATE doctor_days d SET numbers_issued = p_number[w.call]
      FROM unnest(passed) AS w(call)
     WHERE d.doctor_id = p_doctor[w.call] AND d.date = p_date[w.call];
    IF cardinality(keyed_actors) > 0 THEN
        INSERT INTO idempotency (caller, key, fingerprint, token_id, response, stored_at)
        SELECT p_actor[w.call], k_key[w.call], k_fingerprint[w.call], booked_tokens[w.call],
               k_response[w.call], p_at[w.call]
          FROM unnest(passed) AS w(call)
         WHERE k_key[w.call] IS NOT NULL
        ON CONFLICT (caller, key) DO UPDATE SET
            fingerprint = excluded.fingerprint, token_id = excluded.token_id,
            response = excluded.response, stored_at = excluded.stored_at;
        DELETE FROM idempotency s
         WHERE s.stored_at < (SELECT min(k_since[w.call]) FROM unnest(passed) AS w(call)
                               WHERE k_key[w.call] IS NOT NULL);
    END IF;

    -- The log's head is locked last, until the commit (see take_event_ids),
    -- once for the whole group.
    UPDATE event_log_head h SET last_id = h.last_id + changes RETURNING h.last_id INTO head;
    INSERT INTO events (id, at, actor, kind, slot_id, doctor_id, date, reason, token_id,
                        token_number, source, from_status, to_status, estimated_call_at)
    SELECT head - changes + row_number() OVER (ORDER BY c.ord), p_at[c.call], p_actor[c.call],
           'TOKEN', p_slot[c.call], p_doctor[c.call], p_date[c.call], c.reason, c.token,
           c.number, c.source, c.from_status, c.to_status, c.estimate
      FROM unnest(c_call, c_token, c_number, c_source, c_from, c_to, c_reason, c_estimate)
           WITH ORDINALITY
           AS c(call, token, number, source, from_status, to_status, reason, estimate, ord)
     WHERE c.call = ANY (passed);
    PERFORM pg_notify(p_channel, '');

    -- The slots' counters last: their new versions are the answers.
    RETURN QUERY
    UPDATE slots s SET allocated_count = p_allocated[w.call], waitlist_count = p_waitlisted[w.call]
      FROM unnest(passed) AS w(call)
     WHERE s.slot_id = p_slot[w.call]
    RETURNING w.call, 'BOOKED'::TEXT, s.version, p_number[w.call], NULL::BYTEA, NULL::UUID,
              NULL::TEXT, NULL::BIGINT, NULL::BIGINT, NULL::BIGINT, NULL::BIGINT;
END
$$;
