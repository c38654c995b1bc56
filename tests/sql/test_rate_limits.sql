-- tests/sql/test_rate_limits.sql — 0008: per-key minute counters. rate_take leases slices of a
-- key's requests per minute (a tenth of what is left, at least 1, never beyond the limit),
-- takes unused slices back only in the minute they were leased, charges tokens, reports the
-- minute, totals, limits and time left; old minutes are deleted; set_api_key_limits.
-- (Inside one transaction now() stands still, so every call below is in the same minute.)
BEGIN;
SET LOCAL client_min_messages = warning;
SELECT plan(27);

CREATE TEMP TABLE k60 AS
SELECT id FROM cortex.create_api_key('rpm 60', requests_per_minute => 60, tokens_per_minute => 1000);
CREATE TEMP TABLE kfree AS SELECT id FROM cortex.create_api_key('unlimited');

-- slices shrink with what is left, and add up to exactly the limit
CREATE TEMP TABLE grants (n serial, granted integer, used integer);
DO $$
DECLARE
    r record;
BEGIN
    FOR i IN 1..40 LOOP
        SELECT * INTO r FROM cortex.rate_take((SELECT id FROM k60), 1000);
        INSERT INTO grants (granted, used) VALUES (r.granted, r.requests_used);
    END LOOP;
END
$$;
SELECT is((SELECT granted FROM grants WHERE n = 1), 6, 'the first slice is a tenth of the limit');
SELECT is((SELECT granted FROM grants WHERE n = 2), 6, 'the second, a tenth of the 54 left (rounded up)');
SELECT is((SELECT sum(granted)::integer FROM grants), 60, 'the grants add up to exactly the limit');
SELECT is((SELECT max(used) FROM grants), 60, 'requests_used never passes the limit');
SELECT ok((SELECT bool_and(granted >= 1) FROM grants WHERE used < 60 OR n = (SELECT min(n) FROM grants WHERE used = 60)),
          'every lease before the budget ran out got at least one request');
SELECT is((SELECT count(*)::integer FROM grants WHERE granted = 0), 40 - (SELECT count(*)::integer FROM grants WHERE granted > 0),
          'once the budget is spent every lease gets 0');
SELECT is((SELECT requests FROM cortex.rate_windows WHERE api_key_id = (SELECT id FROM k60)), 60,
          'the counter row holds the minute''s grants');

-- giving back
SELECT is((SELECT requests_used FROM cortex.rate_take((SELECT id FROM k60), 0, 5,
                                                      date_trunc('minute', now()))), 55,
          'an unused slice given back in its minute frees its requests');
SELECT is((SELECT granted FROM cortex.rate_take((SELECT id FROM k60), 3)), 1,
          'with 5 left a lease gets a tenth rounded up: 1');
SELECT is((SELECT requests_used FROM cortex.rate_take((SELECT id FROM k60), 0, 4,
                                                      date_trunc('minute', now()) - interval '1 minute')), 56,
          'a slice from an earlier minute is not taken back');
SELECT is((SELECT granted FROM cortex.rate_take((SELECT id FROM k60), 2)), 1,
          'a small want is granted up to the slice size');

-- what it reports
SELECT is((SELECT window_start FROM cortex.rate_take((SELECT id FROM k60), 0)),
          date_trunc('minute', now()), 'the window is the database''s current minute');
SELECT ok((SELECT reset_ms BETWEEN 1 AND 60000 FROM cortex.rate_take((SELECT id FROM k60), 0)),
          'reset_ms is the time left in the minute');
SELECT results_eq(
    format('SELECT requests_per_minute, tokens_per_minute FROM cortex.rate_take(%s, 0)',
           (SELECT id FROM k60)),
    $$VALUES (60, 1000)$$, 'the key''s limits come back with every call');

-- tokens
SELECT is((SELECT tokens_used FROM cortex.rate_take((SELECT id FROM k60), 0, tokens => 300)),
          300::bigint, 'tokens are charged to the minute');
SELECT is((SELECT tokens_used FROM cortex.rate_take((SELECT id FROM k60), 0, tokens => 800)),
          1100::bigint, 'charges add up (and may pass the limit: it is known only afterwards)');

-- an unlimited key
SELECT results_eq(
    format('SELECT granted, requests_used FROM cortex.rate_take(%s, 500)', (SELECT id FROM kfree)),
    $$VALUES (500, 0)$$, 'an unlimited key gets what it asks and counts nothing');
SELECT results_eq(
    format('SELECT requests_per_minute, tokens_per_minute FROM cortex.rate_take(%s, 0)',
           (SELECT id FROM kfree)),
    $$VALUES (NULL::integer, NULL::integer)$$, 'its limits are NULL');

-- old minutes go when a key's new minute starts
CREATE TEMP TABLE kold AS SELECT id FROM cortex.create_api_key('old rows', requests_per_minute => 10);
INSERT INTO cortex.rate_windows (api_key_id, window_start, requests)
VALUES ((SELECT id FROM kold), date_trunc('minute', now()) - interval '3 minutes', 7);
SELECT is((SELECT granted FROM cortex.rate_take((SELECT id FROM kold), 1)), 1,
          'a new minute starts with the whole budget');
SELECT is((SELECT array_agg(window_start) FROM cortex.rate_windows WHERE api_key_id = (SELECT id FROM kold)),
          ARRAY[date_trunc('minute', now())], 'the key''s earlier minutes are deleted');
SELECT throws_ok(format($$INSERT INTO cortex.rate_windows (api_key_id, window_start)
                          VALUES (%s, now() + interval '1.5 seconds')$$, (SELECT id FROM kold)),
                 '23514', NULL, 'a window must start on a minute');

-- bad input
SELECT throws_ok(format('SELECT * FROM cortex.rate_take(%s, -1)', (SELECT id FROM k60)), '22023',
                 NULL, 'a negative want is refused');
SELECT throws_ok('SELECT * FROM cortex.rate_take(-5, 1)', '42704', NULL, 'an unknown key');

-- set_api_key_limits
SELECT lives_ok(format('SELECT cortex.set_api_key_limits(%s, 120, NULL)', (SELECT id FROM k60)),
                'limits can be changed');
SELECT results_eq(
    format('SELECT requests_per_minute, tokens_per_minute FROM cortex.api_keys WHERE id = %s',
           (SELECT id FROM k60)),
    $$VALUES (120, NULL::integer)$$, 'the new limits are stored (NULL = unlimited)');
SELECT is((SELECT count(*)::integer FROM cortex.events WHERE kind = 'admin.api_key_limits'
              AND (detail->>'id')::bigint = (SELECT id FROM k60)), 1, 'the change is audited');
SELECT throws_ok('SELECT cortex.set_api_key_limits(-5, 1, 1)', '42704', NULL,
                 'an unknown key is refused');

SELECT * FROM finish();
ROLLBACK;
