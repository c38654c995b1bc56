-- tests/sql/test_views.sql — the operator and analyst views compute the right numbers from
-- known data (expected values worked out by hand).
BEGIN;
SET LOCAL client_min_messages = warning;
SET LOCAL timezone = 'UTC';
SELECT plan(22);

-- 100 successful warm requests of model vw-a at 10:xx with ttft 1..100 ms and total 10x that,
-- 4 more in the same hour: a 500, a 429, a cancelled one and a cold start; 2 for vw-b at 11:xx.
CREATE TEMP TABLE h AS SELECT date_trunc('hour', now()) - interval '3 hours' AS t;
INSERT INTO cortex.requests (request_id, created_at, dialect, status_code, requested_model,
                             served_model, node, api_key_id, tokens_in, tokens_out, ttft_ms,
                             total_ms, queue_wait_ms, decode_tps)
SELECT 'vw-a-' || g, (SELECT t FROM h) + g * interval '1 second', 'openai', 200, 'alias-a', 'vw-a',
       'vw-node', 7, 10, 20, g, g * 10, 0, 50
  FROM generate_series(1, 100) g;
INSERT INTO cortex.requests (request_id, created_at, dialect, status_code, requested_model,
                             served_model, node, api_key_id, tokens_in, tokens_out, ttft_ms,
                             total_ms, cancelled, cold_start)
VALUES ('vw-500', (SELECT t FROM h), 'anthropic', 500, 'vw-a', 'vw-a', 'vw-node', 7, 5, 0, NULL, 3, false, false),
       ('vw-429', (SELECT t FROM h), 'anthropic', 429, 'vw-a', NULL, NULL, 7, 0, 0, NULL, 1, false, false),
       ('vw-cxl', (SELECT t FROM h), 'openai', 499, 'vw-a', 'vw-a', 'vw-node', 7, 5, 2, 100, 500, true, false),
       ('vw-cold', (SELECT t FROM h), 'openai', 200, 'vw-a', 'vw-a', 'vw-node', 7, 5, 5, 30000, 31000, false, true),
       ('vw-b-1', (SELECT t FROM h) + interval '1 hour', 'openai', 200, 'vw-b', 'vw-b', 'vw-node', NULL, 1, 1, 5, 5, false, false),
       ('vw-b-2', (SELECT t FROM h) + interval '1 hour', 'openai', 200, 'vw-b', 'vw-b', 'vw-node', NULL, 1, 1, 7, 7, false, false);

SELECT results_eq(
    $$SELECT requests, errors, server_errors, cancelled, cold_starts, tokens_in, tokens_out
        FROM cortex.model_usage WHERE model = 'vw-a' AND hour = (SELECT t FROM h)$$,
    $$VALUES (104::bigint, 2::bigint, 1::bigint, 1::bigint, 1::bigint, 1015::bigint, 2007::bigint)$$,
    'model_usage counts requests, errors, cancellations, cold starts and tokens');
SELECT is((SELECT count(*)::integer FROM cortex.model_usage WHERE model = 'vw-b'), 1,
          'another model in another hour is its own row');
SELECT results_eq(
    $$SELECT requests, round(ttft_p50_ms::numeric, 3), round(ttft_p95_ms::numeric, 3),
             round(ttft_p99_ms::numeric, 3), round(total_p50_ms::numeric, 3),
             round(total_p99_ms::numeric, 3)
        FROM cortex.model_latency WHERE model = 'vw-a' AND NOT cold_start$$,
    $$VALUES (100::bigint, 50.5, 95.05, 99.01, 505.0, 990.1)$$,
    'model_latency: p50/p95/p99 of the 100 warm successes (errors and cancellations excluded)');
SELECT is((SELECT ttft_p50_ms FROM cortex.model_latency WHERE model = 'vw-a' AND cold_start),
          30000::float8, 'the cold start is reported apart');
SELECT results_eq(
    $$SELECT requests, busy_seconds, avg_concurrency FROM cortex.node_utilisation
       WHERE node = 'vw-node' AND hour = (SELECT t FROM h)$$,
    $$VALUES (103::bigint, 82.0::numeric, 0.023::numeric)$$,
    'node_utilisation: 103 requests, 50.5 + 0.003 + 0.5 + 31 s busy, concurrency over the hour');
SELECT results_eq(
    $$SELECT requests, errors, tokens_out FROM cortex.key_usage WHERE api_key_id = 7$$,
    $$VALUES (104::bigint, 2::bigint, 2007::bigint)$$, 'key_usage per key per day');

-- catalogue and status views
CREATE TEMP TABLE fx AS
SELECT cortex.add_model('vw-held') AS held_id,
       cortex.add_model('vw-nowhere') AS nowhere_id,
       cortex.node_register('vw-n1', 'http://vw-n1:8400',
           '[{"ordinal":0,"memory_total_bytes":1000,"name":"GPU"}]') AS n1,
       cortex.lease_acquire('vw-scheduler') AS epoch;
SELECT cortex.node_models_sync((SELECT n1 FROM fx),
    '[{"name":"vw-held","format":"gguf","size_bytes":100,"memory_bytes":300}]') \g /dev/null
SELECT cortex.alias_model('vw-alias', 'vw-held') \g /dev/null
SELECT cortex.alias_model('vw-pat-*', 'vw-nowhere') \g /dev/null

SELECT results_eq(
    $$SELECT name, kind, model, servable FROM cortex.catalogue
       WHERE model IN ('vw-held', 'vw-nowhere') ORDER BY name$$,
    $$VALUES ('vw-alias'::text, 'alias'::text, 'vw-held'::text, true),
             ('vw-held', 'model', 'vw-held', true),
             ('vw-nowhere', 'model', 'vw-nowhere', false),
             ('vw-pat-*', 'pattern', 'vw-nowhere', false)$$,
    'catalogue: models and aliases, servable when a live node holds the files');
SELECT cortex.drain_node('vw-n1') \g /dev/null
SELECT is((SELECT servable FROM cortex.catalogue WHERE name = 'vw-held'), false,
          'files on a draining node do not make a model servable');
SELECT cortex.undrain_node('vw-n1') \g /dev/null
SELECT results_eq(
    $$SELECT files_on, memory_bytes, aliases FROM cortex.model_status WHERE model = 'vw-held'$$,
    $$VALUES ('{vw-n1}'::text[], 300::bigint, '{vw-alias}'::text[])$$,
    'model_status: where the files are, the node''s memory estimate, aliases');

CREATE TEMP TABLE pl AS
SELECT cortex.placement_create((SELECT epoch FROM fx), (SELECT held_id FROM fx), (SELECT n1 FROM fx),
                               ARRAY(SELECT id FROM cortex.gpus WHERE node_id = (SELECT n1 FROM fx)),
                               400) AS id;
SELECT is((SELECT ready_replicas FROM cortex.catalogue WHERE name = 'vw-held'), 0::bigint,
          'a requested placement is not a ready replica');
SELECT is((SELECT loading_models FROM cortex.fleet_status WHERE node = 'vw-n1'), '{vw-held}'::text[],
          'fleet_status lists requested/loading models');
SELECT cortex.placement_transition((SELECT id FROM pl), 'loading') \g /dev/null
SELECT cortex.placement_transition((SELECT id FROM pl), 'ready') \g /dev/null
SELECT is((SELECT ready_replicas FROM cortex.catalogue WHERE name = 'vw-alias'), 1::bigint,
          'the alias shows its model''s ready replica');
SELECT is((SELECT ARRAY[reserved_bytes::text, models::text, device] FROM cortex.device_status
            WHERE node = 'vw-n1'),
          ARRAY['400', '{vw-held}', 'cuda:0'], 'device_status: reservation and models per device');
SELECT results_eq(
    $$SELECT model, node, endpoint, liveness FROM cortex.routes
       WHERE placement_id = (SELECT id FROM pl)$$,
    $$VALUES ('vw-held'::text, 'vw-n1'::text, 'http://vw-n1:8400'::text, 'alive'::text)$$,
    'routes lists the ready replica with its endpoint');
SELECT is((SELECT ready_replicas FROM cortex.model_status WHERE model = 'vw-held'), 1::bigint,
          'model_status counts the ready replica');
SELECT is((SELECT idle_for FROM cortex.placement_status WHERE placement_id = (SELECT id FROM pl)),
          interval '0', 'a just-ready placement has been idle for no time');
SELECT ok((SELECT count(*) > 0 FROM cortex.recent_events WHERE placement_id = (SELECT id FROM pl)),
          'recent_events shows the placement''s events');
SELECT is((SELECT kind FROM cortex.recent_events LIMIT 1), 'placement.ready',
          'recent_events lists the newest first');
SELECT cortex.set_setting('heartbeat_grace', '1 minute') \g /dev/null
UPDATE cortex.nodes SET last_heartbeat_at = now() - interval '2 minutes' WHERE name = 'vw-n1';
SELECT is((SELECT liveness FROM cortex.fleet_status WHERE node = 'vw-n1'), 'dead',
          'fleet_status follows the heartbeat_grace setting');
SELECT cortex.mark_dead_nodes((SELECT epoch FROM fx)) \g /dev/null
SELECT is_empty('SELECT 1 FROM cortex.routes WHERE node = ''vw-n1''',
                'a node marked down leaves the routes');
SELECT is((SELECT servable FROM cortex.catalogue WHERE name = 'vw-nowhere'), false,
          'a model nobody holds stays unservable');
SELECT ok((SELECT count(*) >= 20 FROM cortex.help WHERE audience = 'admin'),
          'help lists the admin functions');

SELECT * FROM finish();
ROLLBACK;
