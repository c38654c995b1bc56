-- tests/sql/test_retention.sql — the requests table: daily partitions (UTC days, whatever the
-- session time zone), the default partition, idempotent inserts and retention that drops
-- exactly the expired partitions.
BEGIN;
SET LOCAL client_min_messages = warning;
-- A time zone far from UTC: partition days and retention must not depend on it.
SET LOCAL timezone = 'America/New_York';
SELECT plan(22);

CREATE TEMP TABLE today AS SELECT (now() AT TIME ZONE 'UTC')::date AS d;
CREATE FUNCTION pg_temp.part(offset_days integer) RETURNS text LANGUAGE sql AS $$
    SELECT 'cortex_part.requests_' || to_char((SELECT d FROM today) + offset_days, 'YYYYMMDD')
$$;
-- Noon UTC of a day relative to today.
CREATE FUNCTION pg_temp.noon(offset_days integer) RETURNS timestamptz LANGUAGE sql AS $$
    SELECT ((SELECT d FROM today) + offset_days)::timestamp AT TIME ZONE 'UTC' + interval '12 hours'
$$;
CREATE FUNCTION pg_temp.parts() RETURNS SETOF text LANGUAGE sql AS $$
    SELECT i.inhrelid::regclass::text FROM pg_inherits i
     WHERE i.inhparent = 'cortex.requests'::regclass
$$;

-- creating partitions
SELECT is(cortex.create_request_partition((SELECT d FROM today) - 10), pg_temp.part(-10),
          'create_request_partition returns the new partition''s name');
SELECT is(cortex.create_request_partition((SELECT d FROM today) - 10), NULL,
          'creating it again is a no-op');
SELECT is((SELECT count(*)::integer FROM generate_series(-9, -1) g
            WHERE cortex.create_request_partition((SELECT d FROM today) + g) IS NOT NULL),
          9, 'partitions for the nine days before today');
CREATE TEMP TABLE missing AS
SELECT count(*)::integer AS n FROM generate_series(0, 10) g
 WHERE pg_temp.part(g) NOT IN (SELECT pg_temp.parts());
SELECT is(cortex.ensure_request_partitions(10), (SELECT n FROM missing),
          'ensure_request_partitions creates exactly the missing days up to today + 10');
SELECT is_empty($$SELECT pg_temp.part(g) FROM generate_series(-10, 10) g
                  EXCEPT SELECT pg_temp.parts()$$,
                'every day from today - 10 to today + 10 has a partition');
SELECT is((SELECT pg_get_expr(c.relpartbound, c.oid) FROM pg_class c
            WHERE c.oid = pg_temp.part(-1)::regclass),
          format('FOR VALUES FROM (%L) TO (%L)',
                 ((SELECT d FROM today) - 1)::timestamp AT TIME ZONE 'UTC',
                 ((SELECT d FROM today))::timestamp AT TIME ZONE 'UTC'),
          'a partition covers exactly one UTC day');

-- inserting: routing, default partition, idempotency
INSERT INTO cortex.requests (request_id, created_at, dialect, status_code, served_model)
SELECT 'r' || g, pg_temp.noon(g), 'openai', 200, 'm' FROM generate_series(-10, 0) g;
INSERT INTO cortex.requests (request_id, created_at, dialect, status_code)
VALUES ('ancient', pg_temp.noon(-400), 'anthropic', 200),
       ('far-future', pg_temp.noon(400), 'openai', 200);
SELECT is((SELECT tableoid::regclass::text FROM cortex.requests WHERE request_id = 'r-5'),
          pg_temp.part(-5), 'a row lands in its day''s partition');
SELECT is((SELECT array_agg(request_id ORDER BY request_id) FROM cortex_part.requests_default),
          ARRAY['ancient', 'far-future'], 'rows without a partition land in the default one');
INSERT INTO cortex.requests (request_id, created_at, dialect, status_code)
VALUES ('r-5', pg_temp.noon(-5), 'openai', 500), ('r-new', pg_temp.noon(-5), 'openai', 200)
ON CONFLICT DO NOTHING;
SELECT is((SELECT array_agg(status_code ORDER BY request_id) FROM cortex.requests
            WHERE request_id IN ('r-5', 'r-new')),
          ARRAY[200, 200]::smallint[],
          'a retried batch (ON CONFLICT DO NOTHING) keeps the first row and adds only new ones');
SELECT throws_ok($$INSERT INTO cortex.requests (request_id, dialect, status_code)
                   VALUES ('bad', 'grpc', 200)$$, '23514', NULL, 'an unknown dialect is rejected');

-- a partition created later takes its rows out of the default partition
SELECT is(cortex.create_request_partition((SELECT d FROM today) + 400), pg_temp.part(400),
          'creating a partition for a day already in the default partition');
SELECT is((SELECT tableoid::regclass::text FROM cortex.requests WHERE request_id = 'far-future'),
          pg_temp.part(400), 'its row moved into the new partition');
SELECT is((SELECT count(*)::integer FROM cortex.requests WHERE request_id = 'far-future'), 1,
          'exactly once');

-- retention: keep 3 days. A day's partition expires when its end (next UTC midnight) is at or
-- before now() - 3 days: that is every day up to today - 4; today - 3 still holds live rows.
SELECT set_eq($$SELECT * FROM cortex.drop_request_partitions_older_than('3 days')$$,
              ARRAY(SELECT pg_temp.part(g) FROM generate_series(-10, -4) g),
              'retention drops exactly the partitions of today - 10 .. today - 4');
SELECT is_empty($$SELECT pg_temp.part(g) FROM generate_series(-3, 10) g
                  EXCEPT SELECT pg_temp.parts()$$,
                'the partitions of today - 3 onwards are kept');
SELECT is((SELECT array_agg(request_id ORDER BY created_at) FROM cortex.requests
            WHERE request_id LIKE 'r%' AND request_id <> 'r-new'),
          ARRAY['r-3', 'r-2', 'r-1', 'r0'], 'rows of expired days are gone, newer rows remain');
SELECT is((SELECT array_agg(request_id) FROM cortex_part.requests_default), NULL,
          'the expired row of the default partition was deleted');
SELECT is((SELECT count(*)::integer FROM cortex.requests WHERE request_id = 'far-future'), 1,
          'future rows are untouched');
SELECT ok((SELECT (detail->>'default_rows_deleted')::integer = 1
                  AND jsonb_array_length(detail->'dropped') = 7
             FROM cortex.events WHERE kind = 'requests.retention' ORDER BY id DESC LIMIT 1),
          'retention is recorded as an event');
SELECT is_empty($$SELECT * FROM cortex.drop_request_partitions_older_than('3 days')$$,
                'running retention again drops nothing');
SELECT is_empty($$SELECT * FROM cortex.drop_request_partitions_older_than()$$,
                'the default retention (request_retention, 30 days) drops nothing newer');
SELECT throws_ok($$SELECT * FROM cortex.drop_request_partitions_older_than('-1 day')$$, '22023',
                 NULL, 'a negative retention is rejected');

SELECT * FROM finish();
ROLLBACK;
