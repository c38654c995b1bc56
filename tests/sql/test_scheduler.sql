-- tests/sql/test_scheduler.sql — the scheduler's calls added by 0007: moves, retries, failover.
--
-- Dead nodes are simulated by moving last_heartbeat_at into the past; "recently used" by
-- last_used_at. now() is constant inside the test transaction, which is also what
-- demand_failover relies on (it runs in the transaction of mark_dead_nodes).
BEGIN;
SELECT plan(25);

UPDATE cortex.scheduler_lease SET expires_at = '-infinity';
CREATE TEMP TABLE fx AS
SELECT cortex.add_model('sc-a', memory_bytes => 1000) AS a_id,
       cortex.add_model('sc-b', memory_bytes => 1000) AS b_id,
       cortex.add_model('sc-c', memory_bytes => 1000) AS c_id,
       cortex.node_register('sc-n1', 'http://sc-n1:8400',
           '[{"kind":"cpu","ordinal":0,"memory_total_bytes":100000}]') AS n1,
       cortex.node_register('sc-n2', 'http://sc-n2:8400',
           '[{"kind":"cpu","ordinal":0,"memory_total_bytes":100000}]') AS n2,
       cortex.lease_acquire('sc-scheduler', '1 hour') AS epoch;

CREATE FUNCTION pg_temp.gpus(node bigint) RETURNS bigint[] LANGUAGE sql AS $$
    SELECT array_agg(g.id ORDER BY g.ordinal) FROM cortex.gpus g WHERE g.node_id = node
$$;

-- A ready placement of a model on a node.
CREATE FUNCTION pg_temp.ready(model bigint, node bigint) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    pid bigint;
BEGIN
    pid := cortex.placement_create((SELECT epoch FROM fx), model, node, pg_temp.gpus(node), 1000);
    PERFORM cortex.placement_transition(pid, 'loading');
    PERFORM cortex.placement_transition(pid, 'ready');
    RETURN pid;
END
$$;

-- placement_move
CREATE TEMP TABLE mv AS SELECT pg_temp.ready((SELECT a_id FROM fx), (SELECT n1 FROM fx)) AS old_id;
SELECT lives_ok(format('CREATE TEMP TABLE moved AS SELECT cortex.placement_move(%s, %s, %s, %L) AS id',
                       (SELECT epoch FROM fx), (SELECT old_id FROM mv), (SELECT n2 FROM fx),
                       pg_temp.gpus((SELECT n2 FROM fx))),
                'a ready placement can be moved');
SELECT is((SELECT ARRAY[state, replaces_id::text, memory_bytes::text, model_id::text, node_id::text]
             FROM cortex.placements WHERE id = (SELECT id FROM moved)),
          ARRAY['requested', (SELECT old_id FROM mv)::text, '1000', (SELECT a_id FROM fx)::text,
                (SELECT n2 FROM fx)::text],
          'the replacement is requested, names the old placement and keeps model and memory');
SELECT is((SELECT state FROM cortex.placements WHERE id = (SELECT old_id FROM mv)), 'ready',
          'the old placement keeps serving');
SELECT is((SELECT epoch FROM cortex.placements WHERE id = (SELECT id FROM moved)),
          (SELECT epoch FROM fx), 'the replacement carries the epoch');
SELECT throws_ok(format('SELECT cortex.placement_move(%s, %s, %s, %L)', (SELECT epoch FROM fx),
                        (SELECT old_id FROM mv), (SELECT n2 FROM fx),
                        pg_temp.gpus((SELECT n2 FROM fx))),
                 '55000', format('placement %s is already being moved', (SELECT old_id FROM mv)),
                 'a placement is moved once at a time');
SELECT throws_ok(format('SELECT cortex.placement_move(%s, %s, %s, %L)', (SELECT epoch FROM fx),
                        (SELECT id FROM moved), (SELECT n1 FROM fx),
                        pg_temp.gpus((SELECT n1 FROM fx))),
                 '55000', NULL, 'a requested placement cannot be moved');
SELECT throws_ok(format('SELECT cortex.placement_move(%s, %s, %s, %L)', (SELECT epoch FROM fx),
                        -1, (SELECT n1 FROM fx), pg_temp.gpus((SELECT n1 FROM fx))),
                 '42704', 'unknown placement -1', 'an unknown placement cannot be moved');
SELECT throws_ok(format('SELECT cortex.placement_move(%s, %s, %s, %L)', (SELECT epoch FROM fx) - 1,
                        (SELECT old_id FROM mv), (SELECT n2 FROM fx),
                        pg_temp.gpus((SELECT n2 FROM fx))),
                 'CX001', NULL, 'a stale epoch cannot move');
UPDATE cortex.placements SET state = 'failed', reason = 'test' WHERE id = (SELECT id FROM moved);
SELECT throws_ok(format('SELECT cortex.placement_move(%s, %s, %s, %L)', (SELECT epoch FROM fx),
                        (SELECT old_id FROM mv), (SELECT n2 FROM fx),
                        pg_temp.gpus((SELECT n1 FROM fx))),
                 '22023', NULL, 'the devices must be on the target node (placement_create rules)');
SELECT throws_ok(format('UPDATE cortex.placements SET replaces_id = id WHERE id = %s',
                        (SELECT old_id FROM mv)),
                 '23514', NULL, 'a placement cannot replace itself');

-- model_retry_loads
UPDATE cortex.models SET load_failures = 3, last_load_error = 'boom' WHERE id = (SELECT b_id FROM fx);
SELECT is(cortex.model_retry_loads((SELECT epoch FROM fx), (SELECT b_id FROM fx)), true,
          'retry resets a failed-load count');
SELECT is((SELECT load_failures FROM cortex.models WHERE id = (SELECT b_id FROM fx)), 0,
          'the count is zero afterwards');
SELECT is(cortex.model_retry_loads((SELECT epoch FROM fx), (SELECT b_id FROM fx)), false,
          'nothing to reset: false');
SELECT throws_ok(format('SELECT cortex.model_retry_loads(%s, %s)', (SELECT epoch FROM fx) + 1,
                        (SELECT b_id FROM fx)),
                 'CX001', NULL, 'retry is epoch-checked');

-- demand_failover: n1 dies holding sc-a (ready, used just now: moved off above, the old one is
-- still ready), sc-b (ready, idle for two hours) and sc-c (loading).
CREATE TEMP TABLE lost AS
SELECT pg_temp.ready((SELECT b_id FROM fx), (SELECT n1 FROM fx)) AS b_pl,
       cortex.placement_create((SELECT epoch FROM fx), (SELECT c_id FROM fx), (SELECT n1 FROM fx),
                               pg_temp.gpus((SELECT n1 FROM fx)), 1000) AS c_pl;
SELECT cortex.placement_transition((SELECT c_pl FROM lost), 'loading') \g /dev/null
UPDATE cortex.placements SET last_used_at = now() WHERE id = (SELECT old_id FROM mv);
UPDATE cortex.placements SET last_used_at = now() - interval '2 hours'
 WHERE id = (SELECT b_pl FROM lost);
UPDATE cortex.nodes SET last_heartbeat_at = now() - interval '1 hour' WHERE id = (SELECT n1 FROM fx);

SELECT is(cortex.demand_failover((SELECT epoch FROM fx), (SELECT n1 FROM fx)), 0,
          'before mark_dead_nodes nothing was lost');
SELECT is(ARRAY(SELECT cortex.mark_dead_nodes((SELECT epoch FROM fx))), ARRAY[(SELECT n1 FROM fx)],
          'mark_dead_nodes marks n1 down');
SELECT is(cortex.demand_failover((SELECT epoch FROM fx), (SELECT n1 FROM fx)), 2,
          'failover asks for the two models in use');
SELECT set_eq(format('SELECT model_id FROM cortex.demand WHERE state = %L AND source = %L',
                     'open', 'scheduler:failover'),
              format('VALUES (%s), (%s)', (SELECT a_id FROM fx), (SELECT c_id FROM fx)),
              'open demand for sc-a (used now) and sc-c (loading), not sc-b (idle past its TTL)');
SELECT is(cortex.demand_failover((SELECT epoch FROM fx), (SELECT n1 FROM fx)), 2,
          'calling it again bumps the same open demand');
SELECT is((SELECT sum(wanted_count)::integer FROM cortex.demand
            WHERE state = 'open' AND source = 'scheduler:failover'), 4,
          'no duplicate demand rows, only wanted_count');
SELECT is(cortex.demand_failover((SELECT epoch FROM fx), (SELECT n2 FROM fx)), 0,
          'a live node lost nothing');
SELECT throws_ok(format('SELECT cortex.demand_failover(%s, %s)', (SELECT epoch FROM fx) + 1,
                        (SELECT n1 FROM fx)),
                 'CX001', NULL, 'failover is epoch-checked');

-- the setting
SELECT is(cortex.setting_bool('evict_in_flight'), false, 'evict_in_flight is off by default');
SELECT throws_ok($$SELECT cortex.set_setting('evict_in_flight', 'sometimes')$$, '22023', NULL,
                 'evict_in_flight takes a boolean');
SELECT is(cortex.set_setting('evict_in_flight', 'on'), 'true', 'evict_in_flight can be set');

SELECT * FROM finish();
ROLLBACK;
