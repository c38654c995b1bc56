-- tests/sql/test_placements.sql — the placement state machine and the functions around it.
--
-- The legal transitions are written out below, independently of cortex.placement_transitions;
-- every other ordered pair of distinct states is tried and must raise CX002, both as a plain
-- UPDATE (any client) and through cortex.placement_transition (the neuron's call).
-- NOTIFY cannot be observed from inside a transaction that is rolled back; run_pgtap.sh checks
-- the cortex_placement and cortex_demand notifications and their payloads in a real session.
BEGIN;
SELECT plan(85);

CREATE TEMP TABLE legal (from_state text, to_state text);
INSERT INTO legal VALUES
    ('requested', 'loading'), ('requested', 'failed'), ('requested', 'gone'),
    ('loading', 'ready'), ('loading', 'failed'), ('loading', 'unloading'),
    ('ready', 'unloading'), ('ready', 'failed'),
    ('unloading', 'gone'), ('unloading', 'failed');
CREATE TEMP TABLE states (s text, ord integer);
INSERT INTO states VALUES ('requested', 1), ('loading', 2), ('ready', 3), ('unloading', 4),
                          ('gone', 5), ('failed', 6);

CREATE TEMP TABLE fx AS
SELECT cortex.add_model('pt-model', tensor_parallel => 2) AS model_id,
       cortex.add_model('pt-solo') AS solo_id,
       cortex.node_register('pt-node', 'http://pt-node:8400',
           '[{"ordinal":0,"memory_total_bytes":80000000000},
             {"ordinal":1,"memory_total_bytes":80000000000}]') AS node_id,
       cortex.node_register('pt-other', 'http://pt-other:8400',
           '[{"ordinal":0,"memory_total_bytes":80000000000}]') AS other_id,
       cortex.lease_acquire('pt-scheduler') AS epoch;

-- A new placement of pt-model on both GPUs of pt-node, driven along a legal path to `target`.
CREATE FUNCTION pg_temp.placement_in(target text) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    pid bigint;
    step text;
BEGIN
    pid := cortex.placement_create(
        (SELECT epoch FROM fx), (SELECT model_id FROM fx), (SELECT node_id FROM fx),
        ARRAY(SELECT g.id FROM cortex.gpus g WHERE g.node_id = (SELECT node_id FROM fx)
               ORDER BY g.ordinal));
    FOREACH step IN ARRAY CASE target
        WHEN 'requested' THEN '{}'::text[]
        WHEN 'loading' THEN '{loading}'
        WHEN 'ready' THEN '{loading,ready}'
        WHEN 'unloading' THEN '{loading,ready,unloading}'
        WHEN 'gone' THEN '{loading,ready,unloading,gone}'
        WHEN 'failed' THEN '{loading,failed}' END
    LOOP
        UPDATE cortex.placements SET state = step,
               reason = CASE WHEN step = 'failed' THEN 'test failure' END
         WHERE id = pid;
    END LOOP;
    RETURN pid;
END
$$;

-- 1. the documented table matches the expected one
SELECT set_eq('SELECT from_state, to_state FROM cortex.placement_transitions',
              'SELECT from_state, to_state FROM legal',
              'cortex.placement_transitions lists exactly the legal transitions');

-- 2. every illegal transition raises CX002 as a plain UPDATE (20 pairs)
SELECT throws_ok(
           format('UPDATE cortex.placements SET state = %L, reason = %L WHERE id = %s',
                  b.s, 'because', pg_temp.placement_in(a.s)),
           'CX002', format('illegal placement transition %s -> %s', a.s, b.s),
           format('UPDATE %s -> %s is rejected', a.s, b.s))
  FROM states a CROSS JOIN states b
 WHERE a.s <> b.s
   AND NOT EXISTS (SELECT 1 FROM legal l WHERE l.from_state = a.s AND l.to_state = b.s)
 ORDER BY a.ord, b.ord;

-- 3. ... and through cortex.placement_transition (20 pairs)
SELECT throws_ok(
           format('SELECT cortex.placement_transition(%s, %L, %L)',
                  pg_temp.placement_in(a.s), b.s, 'because'),
           'CX002', format('illegal placement transition %s -> %s', a.s, b.s),
           format('placement_transition %s -> %s is rejected', a.s, b.s))
  FROM states a CROSS JOIN states b
 WHERE a.s <> b.s
   AND NOT EXISTS (SELECT 1 FROM legal l WHERE l.from_state = a.s AND l.to_state = b.s)
 ORDER BY a.ord, b.ord;

-- 4. every legal transition works (10 pairs) and leaves the row in the new state
CREATE TEMP TABLE legal_run AS
SELECT l.from_state, l.to_state, pg_temp.placement_in(l.from_state) AS pid
  FROM legal l;
SELECT lives_ok(
           format('SELECT cortex.placement_transition(%s, %L, %L)', r.pid, r.to_state, 'because'),
           format('placement_transition %s -> %s works', r.from_state, r.to_state))
  FROM legal_run r ORDER BY r.from_state, r.to_state;
SELECT is_empty($$
    SELECT r.from_state, r.to_state FROM legal_run r JOIN cortex.placements p ON p.id = r.pid
     WHERE p.state <> r.to_state
$$, 'each legal transition left its placement in the target state');

-- 5. other rules of the trigger
SELECT throws_ok(
    format($$INSERT INTO cortex.placements (model_id, node_id, state) VALUES (%s, %s, 'ready')$$,
           (SELECT model_id FROM fx), (SELECT node_id FROM fx)),
    'CX002', 'a placement must start in state requested, not ready',
    'a placement cannot be inserted in any state but requested');
SELECT throws_ok(
    format($$UPDATE cortex.placements SET state = 'failed', reason = NULL WHERE id = %s$$,
           pg_temp.placement_in('loading')),
    'CX002', NULL, 'failing without a reason is rejected');
SELECT throws_ok(
    format($$SELECT cortex.placement_transition(%s, 'failed')$$, pg_temp.placement_in('ready')),
    'CX002', NULL, 'placement_transition to failed needs a reason');
SELECT throws_ok(
    format('UPDATE cortex.placements SET node_id = %s WHERE id = %s',
           (SELECT other_id FROM fx), pg_temp.placement_in('ready')),
    'CX002', NULL, 'a placement cannot move to another node');
SELECT throws_ok(
    format($$UPDATE cortex.placements SET reason = 'rewritten history' WHERE id = %s$$,
           pg_temp.placement_in('gone')),
    'CX002', NULL, 'a terminal placement cannot be edited');
SELECT throws_ok(
    format('SELECT cortex.placement_progress(%s, 10, 100)', pg_temp.placement_in('ready')),
    'CX002', NULL, 'load progress is refused outside loading');
SELECT throws_ok('SELECT cortex.placement_transition(-1, ''ready'')', '42704',
                 'unknown placement -1', 'an unknown placement id raises 42704');
SELECT throws_ok(
    format($$SELECT cortex.placement_transition(%s, 'exploded')$$, pg_temp.placement_in('ready')),
    '22023', 'unknown placement state "exploded"', 'an unknown state raises 22023');

-- 6. progress, timestamps, idempotent retries, events
CREATE TEMP TABLE p1 AS SELECT pg_temp.placement_in('loading') AS id;
SELECT lives_ok(format('SELECT cortex.placement_progress(%s, 50, 200)', (SELECT id FROM p1)),
                'progress is accepted while loading');
SELECT is((SELECT progress_pct FROM cortex.placement_status WHERE placement_id = (SELECT id FROM p1)),
          25.0, 'placement_status shows 50 of 200 bytes as 25%');
SELECT throws_ok(format('SELECT cortex.placement_progress(%s, 300, 200)', (SELECT id FROM p1)),
                 '22023', NULL, 'progress beyond the total is rejected');
SELECT is(cortex.placement_transition((SELECT id FROM p1), 'ready'), true,
          'loading -> ready reports a change');
SELECT is(cortex.placement_transition((SELECT id FROM p1), 'ready'), false,
          'reporting ready again is an idempotent no-op');
SELECT is((SELECT ready_at FROM cortex.placements WHERE id = (SELECT id FROM p1)), now(),
          'ready_at is stamped with the database clock');
SELECT is((SELECT array_agg(kind ORDER BY id) FROM cortex.events
            WHERE placement_id = (SELECT id FROM p1)),
          ARRAY['placement.requested', 'placement.loading', 'placement.ready'],
          'one event per transition, none for the repeated report');
SELECT is((SELECT detail->>'from' FROM cortex.events
            WHERE placement_id = (SELECT id FROM p1) AND kind = 'placement.ready'),
          'loading', 'the event records the previous state');
SELECT is((SELECT epoch FROM cortex.events
            WHERE placement_id = (SELECT id FROM p1) AND kind = 'placement.requested'),
          (SELECT epoch FROM fx), 'the creation event carries the scheduler epoch');
SELECT is((SELECT ARRAY[devices::text, state] FROM cortex.placement_status
            WHERE placement_id = (SELECT id FROM p1)),
          ARRAY['{cuda:0,cuda:1}', 'ready'], 'placement_status shows both devices in rank order');
SELECT ok((SELECT 'pt-model' = ANY (ready_models) FROM cortex.fleet_status WHERE node = 'pt-node'),
          'fleet_status lists the ready model on its node');
SELECT is(cortex.placements_touch(ARRAY[(SELECT id FROM p1), pg_temp.placement_in('loading')]),
          1, 'placements_touch only touches ready placements');
CREATE TEMP TABLE p_end AS SELECT pg_temp.placement_in('gone') AS id;
SELECT ok((SELECT ended_at = now() AND state_changed_at = now() FROM cortex.placements
            WHERE id = (SELECT id FROM p_end)), 'ended_at is set when a placement ends');

-- 7. load failures are counted per model and reset by a successful load
UPDATE cortex.models SET load_failures = 0 WHERE id = (SELECT model_id FROM fx);
SELECT cortex.placement_transition(pg_temp.placement_in('loading'), 'failed', 'CUDA out of memory') \g /dev/null
SELECT cortex.placement_transition(pg_temp.placement_in('requested'), 'failed', 'file missing') \g /dev/null
SELECT cortex.placement_transition(pg_temp.placement_in('ready'), 'failed', 'engine crashed') \g /dev/null
SELECT is((SELECT load_failures FROM cortex.models WHERE id = (SELECT model_id FROM fx)), 2,
          'failed loads count, a crash while serving does not');
SELECT is((SELECT last_load_error FROM cortex.models WHERE id = (SELECT model_id FROM fx)),
          'file missing', 'the latest load error is kept');
SELECT cortex.placement_transition(pg_temp.placement_in('loading'), 'ready') \g /dev/null
SELECT is((SELECT load_failures FROM cortex.models WHERE id = (SELECT model_id FROM fx)), 0,
          'a successful load resets the count');

-- 8. placement_create validates devices, node state and epoch
SELECT throws_ok(
    format('SELECT cortex.placement_create(%s, %s, %s, ARRAY[%s]::bigint[])',
           (SELECT epoch FROM fx), (SELECT model_id FROM fx), (SELECT node_id FROM fx),
           (SELECT min(id) FROM cortex.gpus WHERE node_id = (SELECT node_id FROM fx))),
    '22023', 'model pt-model needs 2 device(s) (tensor_parallel), got 1',
    'a tensor-parallel model needs exactly its degree of devices');
SELECT throws_ok(
    format('SELECT cortex.placement_create(%s, %s, %s, ARRAY[%s]::bigint[])',
           (SELECT epoch FROM fx), (SELECT solo_id FROM fx), (SELECT node_id FROM fx),
           (SELECT min(id) FROM cortex.gpus WHERE node_id = (SELECT other_id FROM fx))),
    '22023', NULL, 'a device of another node is rejected');
SELECT throws_ok(
    format('SELECT cortex.placement_create(%s, %s, %s, ARRAY[%s, %s]::bigint[])',
           (SELECT epoch FROM fx), (SELECT model_id FROM fx), (SELECT node_id FROM fx),
           (SELECT min(id) FROM cortex.gpus WHERE node_id = (SELECT node_id FROM fx)),
           (SELECT min(id) FROM cortex.gpus WHERE node_id = (SELECT node_id FROM fx))),
    '22023', 'a placement cannot use the same device twice', 'a device cannot be used twice');
SELECT throws_ok(
    format('SELECT cortex.placement_create(%s, %s, %s, ARRAY[%s]::bigint[])',
           (SELECT epoch FROM fx) - 1, (SELECT solo_id FROM fx), (SELECT node_id FROM fx),
           (SELECT min(id) FROM cortex.gpus WHERE node_id = (SELECT node_id FROM fx))),
    'CX001', NULL, 'a stale epoch cannot create placements');
SELECT throws_ok(
    format($$SELECT cortex.placement_transition(%s, 'unloading', 'evict', %s)$$,
           pg_temp.placement_in('ready'), (SELECT epoch FROM fx) + 1),
    'CX001', NULL, 'a scheduler transition with a stale epoch is rejected');
SELECT cortex.drain_node('pt-other') \g /dev/null
SELECT throws_ok(
    format('SELECT cortex.placement_create(%s, %s, %s, ARRAY[%s]::bigint[])',
           (SELECT epoch FROM fx), (SELECT solo_id FROM fx), (SELECT other_id FROM fx),
           (SELECT min(id) FROM cortex.gpus WHERE node_id = (SELECT other_id FROM fx))),
    '55000', 'node pt-other is draining', 'no placement on a draining node');
UPDATE cortex.nodes SET last_heartbeat_at = now() - interval '1 hour', draining = false
 WHERE id = (SELECT other_id FROM fx);
SELECT throws_ok(
    format('SELECT cortex.placement_create(%s, %s, %s, ARRAY[%s]::bigint[])',
           (SELECT epoch FROM fx), (SELECT solo_id FROM fx), (SELECT other_id FROM fx),
           (SELECT min(id) FROM cortex.gpus WHERE node_id = (SELECT other_id FROM fx))),
    '55000', 'node pt-other is down', 'no placement on a node without recent heartbeats');

-- 9. a re-registering neuron voids the placements of its previous incarnation
CREATE TEMP TABLE before_restart AS
SELECT pg_temp.placement_in('ready') AS ready_id, pg_temp.placement_in('unloading') AS unloading_id;
SELECT cortex.node_register('pt-node', 'http://pt-node:8400',
    '[{"ordinal":0,"memory_total_bytes":80000000000},{"ordinal":1,"memory_total_bytes":80000000000}]')
\g /dev/null
SELECT is((SELECT array_agg(state ORDER BY id) FROM cortex.placements
            WHERE id IN (SELECT ready_id FROM before_restart UNION SELECT unloading_id FROM before_restart)),
          ARRAY['failed', 'gone'], 'restart: ready -> failed, unloading -> gone');
SELECT is_empty($$SELECT 1 FROM cortex.placements p JOIN fx ON p.node_id = fx.node_id
                   WHERE p.state IN ('requested', 'loading', 'ready', 'unloading')$$,
                'no live placement survives a neuron restart');

SELECT * FROM finish();
ROLLBACK;
