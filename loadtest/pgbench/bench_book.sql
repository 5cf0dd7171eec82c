-- The reference the service's bookings on PostgreSQL are measured against
-- (loadtest/pg-slot-size.py runs it with pgbench): the writes of bookings
-- into full slots, each waitlisted, done by opd_book_group in one call from
-- the client, with the versions and numbers read by the same call. Each
-- pgbench client books into slots of its own, so no call finds a slot
-- stale, and nothing is decided: the difference to the service is the
-- service's own work (HTTP, the engine, its copies) and its round trips.
CREATE OR REPLACE FUNCTION bench_book(p_slots TEXT[]) RETURNS BIGINT LANGUAGE plpgsql AS $$
DECLARE
    n INTEGER := cardinality(p_slots);
    at BIGINT := (extract(epoch FROM clock_timestamp()) * 1e9)::BIGINT;
    slot RECORD;
    versions BIGINT[] := '{}';
    doctors TEXT[] := '{}';
    dates TEXT[] := '{}';
    numbers INTEGER[] := '{}';
    allocated INTEGER[] := '{}';
    waitlisted INTEGER[] := '{}';
    booked BIGINT;
BEGIN
    FOR slot IN
        SELECT s.version, s.doctor_id, s.date, d.numbers_issued, s.allocated_count,
               s.waitlist_count
          FROM unnest(p_slots) WITH ORDINALITY AS u(id, ord)
          JOIN slots s ON s.slot_id = u.id
          JOIN doctor_days d ON d.doctor_id = s.doctor_id AND d.date = s.date
         ORDER BY u.ord
    LOOP
        versions := versions || slot.version;
        doctors := doctors || slot.doctor_id;
        dates := dates || slot.date;
        numbers := numbers || (slot.numbers_issued + 1);
        allocated := allocated || slot.allocated_count;
        waitlisted := waitlisted || (slot.waitlist_count + 1);
    END LOOP;
    SELECT count(*) INTO booked
      FROM opd_book_group(
        'opd_bench', p_slots, versions, doctors, dates, numbers, allocated, waitlisted,
        array_fill(at, ARRAY[n]), array_fill('bench'::TEXT, ARRAY[n]),
        ARRAY(SELECT generate_series(1, n)), ARRAY(SELECT generate_series(1, n)),
        ARRAY(SELECT generate_series(1, n)),
        ARRAY(SELECT gen_random_uuid() FROM generate_series(1, n)), numbers,
        ARRAY(SELECT 'PB-' || gen_random_uuid() FROM generate_series(1, n)),
        array_fill('WALK_IN'::TEXT, ARRAY[n]), array_fill(5::SMALLINT, ARRAY[n]),
        array_fill(NULL::TEXT, ARRAY[n]), array_fill('WAITLISTED'::TEXT, ARRAY[n]),
        array_fill('WAITLISTED'::TEXT, ARRAY[n]), array_fill(true, ARRAY[n]),
        array_fill(false, ARRAY[n]), array_fill(NULL::BIGINT, ARRAY[n]),
        array_fill(0::SMALLINT, ARRAY[n]), array_fill(NULL::BIGINT, ARRAY[n]),
        array_fill(NULL::TEXT, ARRAY[n]), array_fill(NULL::BYTEA, ARRAY[n]),
        array_fill(NULL::TEXT, ARRAY[n]), array_fill(NULL::BIGINT, ARRAY[n]),
        array_fill(NULL::BIGINT, ARRAY[n]), array_fill(NULL::BIGINT, ARRAY[n]))
     WHERE r_outcome = 'BOOKED';
    IF booked <> n THEN
        RAISE EXCEPTION 'bench_book wrote % of % bookings', booked, n;
    END IF;
    RETURN booked;
END
$$;
