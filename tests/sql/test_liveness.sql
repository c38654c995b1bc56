-- tests/sql/test_liveness.sql — node liveness is judged by the database clock only.
--
-- Inside one transaction now() is fixed, so heartbeat ages set relative to now() are exact.
-- Each node reports a wildly wrong clock of its own to show that it plays no part.
BEGIN;
SELECT plan(26);

-- heartbeat_interval 5 s (late after 10 s), heartbeat_grace 15 s (dead after that)
SELECT cortex.reset_setting('heartbeat_interval') \g /dev/null
SELECT cortex.reset_setting('heartbeat_grace') \g /dev/null

CREATE TEMP TABLE fx AS
SELECT cortex.node_register('lv-fresh', 'http://lv-fresh:8400',
           '[{"ordinal":0,"memory_total_bytes":1000}]') AS fresh,
       cortex.node_register('lv-late', 'http://lv-late:8400',
           '[{"ordinal":0,"memory_total_bytes":1000}]') AS late,
       cortex.node_register('lv-dead', 'http://lv-dead:8400',
           '[{"ordinal":0,"memory_total_bytes":1000},{"ordinal":1,"memory_total_bytes":1000}]') AS dead,
       cortex.add_model('lv-model') AS model_id,
       cortex.lease_acquire('lv-scheduler') AS epoch;

-- The node's own clock says 1970 for the fresh node and "right now" for the others.
SELECT is(cortex.node_heartbeat((SELECT fresh FROM fx),
                                '[{"ordinal":0,"memory_used_bytes":400,"memory_free_bytes":600}]',
                                3, 2, '1970-01-01 00:00:00+00'),
          true, 'a heartbeat from a registered node is accepted');
SELECT cortex.node_heartbeat((SELECT late FROM fx), '[]', 0, 0, now()) \g /dev/null
SELECT cortex.node_heartbeat((SELECT dead FROM fx), '[]', 0, 0, now()) \g /dev/null
SELECT is((SELECT last_heartbeat_at FROM cortex.nodes WHERE id = (SELECT fresh FROM fx)), now(),
          'the heartbeat is stamped with the database clock');
SELECT is((SELECT node_clock_at FROM cortex.nodes WHERE id = (SELECT fresh FROM fx)),
          '1970-01-01 00:00:00+00'::timestamptz, 'the node''s own clock is only recorded');

-- Age the database stamps (what time passing would do); the nodes' clocks stay as reported.
UPDATE cortex.nodes SET last_heartbeat_at = now() - interval '12 seconds'
 WHERE id = (SELECT late FROM fx);
UPDATE cortex.nodes SET last_heartbeat_at = now() - interval '20 seconds'
 WHERE id = (SELECT dead FROM fx);

SELECT is((SELECT liveness FROM cortex.fleet_status WHERE node = 'lv-fresh'), 'alive',
          'fresh database stamp: alive, although the node''s clock says 1970');
SELECT is((SELECT liveness FROM cortex.fleet_status WHERE node = 'lv-late'), 'late',
          '12 s without heartbeat (> 2 intervals): late');
SELECT is((SELECT liveness FROM cortex.fleet_status WHERE node = 'lv-dead'), 'dead',
          '20 s without heartbeat (> grace): dead, although the node''s clock said now');
SELECT is((SELECT heartbeat_age FROM cortex.fleet_status WHERE node = 'lv-dead'),
          interval '20 seconds', 'heartbeat_age is measured with the database clock');
SELECT is(cortex.node_liveness(now() - interval '15 seconds'), 'late',
          'exactly the grace period is not yet dead');
SELECT is(cortex.node_liveness(NULL), 'dead', 'a node that never heartbeated is dead');
SELECT is((SELECT ARRAY[memory_used_bytes, memory_free_bytes, queue_depth, active_sequences]
             FROM cortex.fleet_status WHERE node = 'lv-fresh'),
          ARRAY[400, 600, 3, 2]::bigint[], 'fleet_status shows memory and load from the heartbeat');

-- The thresholds come from the settings.
SELECT cortex.set_setting('heartbeat_grace', '1 minute') \g /dev/null
SELECT is((SELECT liveness FROM cortex.fleet_status WHERE node = 'lv-dead'), 'late',
          'with a 1 minute grace the 20 s silent node is only late');
SELECT cortex.reset_setting('heartbeat_grace') \g /dev/null

-- A heartbeat cannot backdate or forward-date itself.
SELECT cortex.node_heartbeat((SELECT late FROM fx), '[]', 0, 0, now() - interval '1 day')
\g /dev/null
SELECT is((SELECT liveness FROM cortex.fleet_status WHERE node = 'lv-late'), 'alive',
          'a heartbeat revives a late node whatever clock the node reports');

-- The scheduler marks dead nodes down: only the dead one, its placements end, no load failure.
SELECT cortex.node_heartbeat((SELECT dead FROM fx)) \g /dev/null
CREATE TEMP TABLE pl AS
SELECT cortex.placement_create((SELECT epoch FROM fx), (SELECT model_id FROM fx),
                               (SELECT fresh FROM fx),
                               ARRAY(SELECT id FROM cortex.gpus WHERE node_id = (SELECT fresh FROM fx)))
           AS on_fresh,
       cortex.placement_create((SELECT epoch FROM fx), (SELECT model_id FROM fx),
                               (SELECT dead FROM fx),
                               ARRAY(SELECT min(id) FROM cortex.gpus WHERE node_id = (SELECT dead FROM fx)))
           AS on_dead,
       cortex.placement_create((SELECT epoch FROM fx), (SELECT model_id FROM fx),
                               (SELECT dead FROM fx),
                               ARRAY(SELECT max(id) FROM cortex.gpus WHERE node_id = (SELECT dead FROM fx)))
           AS unloading_on_dead;
SELECT cortex.placement_transition((SELECT on_dead FROM pl), 'loading') \g /dev/null
SELECT cortex.placement_transition((SELECT unloading_on_dead FROM pl), 'loading') \g /dev/null
SELECT cortex.placement_transition((SELECT unloading_on_dead FROM pl), 'unloading') \g /dev/null
UPDATE cortex.nodes SET last_heartbeat_at = now() - interval '20 seconds'
 WHERE id = (SELECT dead FROM fx);
UPDATE cortex.models SET load_failures = 0 WHERE id = (SELECT model_id FROM fx);

SELECT throws_ok(format('SELECT cortex.mark_dead_nodes(%s)', (SELECT epoch FROM fx) - 1),
                 'CX001', NULL, 'a stale scheduler cannot mark nodes down');
SELECT results_eq(format('SELECT cortex.mark_dead_nodes(%s)', (SELECT epoch FROM fx)),
                  format('VALUES (%s::bigint)', (SELECT dead FROM fx)),
                  'mark_dead_nodes marks exactly the node past its grace');
SELECT is_empty(format('SELECT cortex.mark_dead_nodes(%s)', (SELECT epoch FROM fx)),
                'marking again finds nothing new');
SELECT is((SELECT liveness FROM cortex.fleet_status WHERE node = 'lv-dead'), 'down',
          'fleet_status shows the node down');
SELECT matches((SELECT down_reason FROM cortex.nodes WHERE id = (SELECT dead FROM fx)),
               '^no heartbeat for 00:00:20 \(grace 15 seconds\)$',
               'the down reason states the silence measured by the database clock');
SELECT is((SELECT state FROM cortex.placements WHERE id = (SELECT on_dead FROM pl)), 'failed',
          'a loading placement on the dead node failed');
SELECT is((SELECT state FROM cortex.placements WHERE id = (SELECT unloading_on_dead FROM pl)), 'gone',
          'an unloading placement on the dead node is gone');
SELECT matches((SELECT reason FROM cortex.placements WHERE id = (SELECT on_dead FROM pl)),
               '^node down: ', 'the placement says why it failed');
SELECT is((SELECT state FROM cortex.placements WHERE id = (SELECT on_fresh FROM pl)), 'requested',
          'the placement on the live node is untouched');
SELECT is((SELECT load_failures FROM cortex.models WHERE id = (SELECT model_id FROM fx)), 0,
          'a node loss is not counted as a load failure of the model');
SELECT is((SELECT count(*)::integer FROM cortex.events WHERE kind = 'node.down' AND node = 'lv-dead'
              AND epoch = (SELECT epoch FROM fx) AND actor = 'lv-scheduler'),
          1, 'the node.down event names the scheduler and its epoch');

-- A node marked down must re-register; registering clears the mark.
SELECT is(cortex.node_heartbeat((SELECT dead FROM fx)), false,
          'a heartbeat from a node marked down is refused (it must register again)');
SELECT cortex.node_register('lv-dead', 'http://lv-dead:8400',
                            '[{"ordinal":0,"memory_total_bytes":1000}]') \g /dev/null
SELECT is((SELECT ARRAY[liveness, incarnation::text, devices::text] FROM cortex.fleet_status
            WHERE node = 'lv-dead'),
          ARRAY['alive', '2', '1'], 'registering again: alive, new incarnation, devices re-synced');
SELECT is(cortex.node_heartbeat(-1), false, 'a heartbeat for an unknown node id is refused');

SELECT * FROM finish();
ROLLBACK;
