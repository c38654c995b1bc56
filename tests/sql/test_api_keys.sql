-- tests/sql/test_api_keys.sql — API keys: the secret is returned once and never stored; only
-- its SHA-256 is; lookup by secret, expiry and revocation work.
BEGIN;
SET LOCAL client_min_messages = warning;
SELECT plan(32);

CREATE TEMP TABLE k1 AS
SELECT * FROM cortex.create_api_key('ci pipeline', requests_per_minute => 600,
                                    tokens_per_minute => 100000);
CREATE TEMP TABLE k2 AS SELECT * FROM cortex.create_api_key('alice''s laptop');

-- what create_api_key returns
SELECT is((SELECT count(*)::integer FROM k1), 1, 'create_api_key returns one row');
SELECT matches((SELECT secret FROM k1), '^cx_[0-9a-f]{64}$', 'the secret is cx_ + 64 hex digits');
SELECT is((SELECT prefix FROM k1), (SELECT left(secret, 11) FROM k1),
          'the prefix is the first 11 characters of the secret');
SELECT isnt((SELECT secret FROM k1), (SELECT secret FROM k2), 'two keys get different secrets');
SELECT isnt((SELECT substr(secret, 4, 32) FROM k1), (SELECT substr(secret, 36, 32) FROM k1),
            'the two halves of a secret are independent');

-- what is stored: the hash, never the secret
SELECT is((SELECT secret_sha256 FROM cortex.api_keys WHERE id = (SELECT id FROM k1)),
          (SELECT sha256(convert_to(secret, 'UTF8')) FROM k1),
          'the stored hash is the SHA-256 of the secret');
SELECT is_empty($$
    SELECT k.id FROM cortex.api_keys k, k1
     WHERE strpos(row_to_json(k)::text, substr(k1.secret, 4)) > 0
        OR strpos(encode(k.secret_sha256, 'hex'), substr(k1.secret, 4)) > 0
$$, 'no api_keys row contains the secret, in any column');
SELECT is_empty($$
    SELECT e.id FROM cortex.events e, k1
     WHERE strpos(row_to_json(e)::text, substr(k1.secret, 4)) > 0
$$, 'the audit events do not contain the secret either');
SELECT is((SELECT detail->>'prefix' FROM cortex.events
            WHERE kind = 'admin.api_key_created' AND (detail->>'id')::bigint = (SELECT id FROM k1)),
          (SELECT prefix FROM k1), 'the creation event names the key by its prefix');
SELECT is_empty($$
    SELECT a.attname FROM pg_attribute a
     WHERE a.attrelid = 'cortex.api_keys'::regclass AND a.attnum > 0 AND NOT a.attisdropped
       AND a.attname ~ 'secret' AND a.atttypid <> 'bytea'::regtype
$$, 'api_keys has no text column for a secret');
SELECT is((SELECT array_agg(p.proname::text) FROM pg_proc p
            WHERE p.pronamespace = 'cortex'::regnamespace
              AND 'secret' = ANY (p.proargnames)
              AND p.proargmodes IS NOT NULL
              AND p.proargmodes[array_position(p.proargnames, 'secret')] IN ('o', 't')),
          ARRAY['create_api_key'], 'only create_api_key ever hands out a secret');

-- lookup
SELECT results_eq(
    format('SELECT id, name, requests_per_minute, tokens_per_minute FROM cortex.api_key_lookup(%L)',
           (SELECT secret FROM k1)),
    format($$VALUES (%s::bigint, 'ci pipeline'::text, 600, 100000)$$, (SELECT id FROM k1)),
    'the secret finds its key and limits');
SELECT is((SELECT id FROM cortex.api_key_lookup((SELECT secret FROM k2))), (SELECT id FROM k2),
          'each secret finds its own key');
SELECT is_empty(format('SELECT * FROM cortex.api_key_lookup(%L)',
                       (SELECT left(secret, 66) || CASE WHEN right(secret, 1) = '0' THEN '1' ELSE '0' END
                          FROM k1)),
                'a secret with one character changed finds nothing');
SELECT is_empty(format('SELECT * FROM cortex.api_key_lookup(%L)', (SELECT prefix FROM k1)),
                'the visible prefix alone finds nothing');
SELECT is_empty(format('SELECT * FROM cortex.api_key_lookup(%L)',
                       (SELECT encode(secret_sha256, 'hex') FROM cortex.api_keys WHERE id = (SELECT id FROM k1))),
                'the stored hash is not a usable secret');
SELECT is_empty('SELECT * FROM cortex.api_key_lookup(NULL)', 'NULL finds nothing');

-- expiry
CREATE TEMP TABLE k3 AS SELECT * FROM cortex.create_api_key('temporary', expires_in => '1 hour');
SELECT is((SELECT expires_at FROM cortex.api_keys WHERE id = (SELECT id FROM k3)),
          now() + interval '1 hour', 'expires_in sets expires_at from the database clock');
SELECT isnt_empty(format('SELECT * FROM cortex.api_key_lookup(%L)', (SELECT secret FROM k3)),
                  'a key works before it expires');
UPDATE cortex.api_keys SET expires_at = now() - interval '1 second' WHERE id = (SELECT id FROM k3);
SELECT is_empty(format('SELECT * FROM cortex.api_key_lookup(%L)', (SELECT secret FROM k3)),
                'an expired key finds nothing');

-- revocation
SELECT lives_ok(format('SELECT cortex.revoke_api_key(%s)', (SELECT id FROM k1)), 'revoke by id');
SELECT is_empty(format('SELECT * FROM cortex.api_key_lookup(%L)', (SELECT secret FROM k1)),
                'a revoked key finds nothing');
SELECT ok((SELECT revoked_at = now() AND revoked_by = session_user FROM cortex.api_keys
            WHERE id = (SELECT id FROM k1)), 'revocation records when and who');
SELECT throws_ok(format('SELECT cortex.revoke_api_key(%s)', (SELECT id FROM k1)), '55000', NULL,
                 'revoking twice is an error');
SELECT throws_ok('SELECT cortex.revoke_api_key(-1)', '42704', 'unknown api key -1',
                 'revoking an unknown id');
SELECT lives_ok(format('SELECT cortex.revoke_api_key(%L)', (SELECT prefix FROM k2)),
                'revoke by prefix');
SELECT is_empty(format('SELECT * FROM cortex.api_key_lookup(%L)', (SELECT secret FROM k2)),
                'the key revoked by prefix finds nothing');
CREATE TEMP TABLE k4 AS SELECT * FROM cortex.create_api_key('twin one');
CREATE TEMP TABLE k5 AS SELECT * FROM cortex.create_api_key('twin two');
UPDATE cortex.api_keys SET prefix = (SELECT prefix FROM k4) WHERE id = (SELECT id FROM k5);
SELECT throws_ok(format('SELECT cortex.revoke_api_key(%L)', (SELECT prefix FROM k4)), '22023', NULL,
                 'an ambiguous prefix is refused (revoke by id instead)');

-- bad input, and names stay data
SELECT throws_ok($$SELECT * FROM cortex.create_api_key('  ')$$, '22023',
                 'api key name must not be empty', 'an empty key name');
SELECT throws_ok($$SELECT * FROM cortex.create_api_key('x', requests_per_minute => 0)$$, '22023',
                 NULL, 'a zero rate limit');
SELECT throws_ok($$SELECT * FROM cortex.create_api_key('x', expires_in => '-1 day')$$, '22023',
                 NULL, 'an expiry in the past');
CREATE TEMP TABLE k6 AS
SELECT * FROM cortex.create_api_key($$Robert'); DROP TABLE cortex.api_keys; --$$);
SELECT is((SELECT name FROM cortex.api_keys WHERE id = (SELECT id FROM k6)),
          $$Robert'); DROP TABLE cortex.api_keys; --$$, 'a key name containing SQL is stored verbatim');

SELECT * FROM finish();
ROLLBACK;
