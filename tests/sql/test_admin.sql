-- tests/sql/test_admin.sql — the operator functions: they do what they say, reject bad input
-- with a clear message and SQLSTATE, and treat SQL text inside names as data.
BEGIN;
SET LOCAL client_min_messages = warning;
SELECT plan(108);

-- The hint attached to the error a statement raises (NULL if it does not raise).
CREATE FUNCTION pg_temp.hint_of(stmt text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    h text;
BEGIN
    EXECUTE stmt;
    RETURN NULL;
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS h = PG_EXCEPTION_HINT;
    RETURN h;
END
$$;

CREATE TEMP TABLE fx AS
SELECT cortex.add_model('adm-main', tensor_parallel => 2, priority => 3,
                        description => 'the main model') AS main_id,
       cortex.add_model('adm-small') AS small_id,
       cortex.node_register('adm-node', 'http://adm-node:8400',
           '[{"ordinal":0,"memory_total_bytes":1000},{"ordinal":1,"memory_total_bytes":1000}]')
           AS node_id,
       cortex.lease_acquire('adm-scheduler') AS epoch;

------------------------------------------------------------------------------------------------
-- add_model
------------------------------------------------------------------------------------------------
SELECT is((SELECT ARRAY[tensor_parallel, priority] FROM cortex.models WHERE name = 'adm-main'),
          ARRAY[2, 3], 'add_model stores tensor_parallel and priority');
SELECT is((SELECT actor FROM cortex.events WHERE kind = 'admin.model_added' AND model = 'adm-main'),
          session_user::text, 'add_model is audited with the database role');
SELECT throws_ok($$SELECT cortex.add_model('')$$, '22023', 'model name must not be empty',
                 'empty model name');
SELECT throws_ok($$SELECT cortex.add_model('   ')$$, '22023', 'model name must not be empty',
                 'blank model name');
SELECT throws_ok($$SELECT cortex.add_model(NULL)$$, '22023', 'model name must not be empty',
                 'NULL model name');
SELECT throws_ok($$SELECT cortex.add_model('has space')$$, '22023', 'invalid model name "has space"',
                 'model name with a space');
SELECT throws_ok($$SELECT cortex.add_model(repeat('a', 129))$$, '22023', NULL,
                 'model name longer than 128 characters');
SELECT throws_ok($$SELECT cortex.add_model('neg', priority => -1)$$, '22023',
                 'priority must be zero or more, not -1', 'negative priority');
SELECT throws_ok($$SELECT cortex.add_model('tp0', tensor_parallel => 0)$$, '22023',
                 'tensor_parallel must be between 1 and 64, not 0', 'tensor_parallel 0');
SELECT throws_ok($$SELECT cortex.add_model('mem0', memory_bytes => 0)$$, '22023',
                 'memory_bytes must be positive, not 0', 'zero memory');
SELECT throws_ok($$SELECT cortex.add_model('fmt', format => 'onnx')$$, '22023',
                 'invalid model format "onnx"', 'unknown format');
SELECT throws_ok($$SELECT cortex.add_model('adm-main')$$, '23505',
                 'model "adm-main" already exists', 'duplicate model');
SELECT isnt(pg_temp.hint_of($$SELECT cortex.add_model('adm-main')$$), NULL,
            'the duplicate error hints at the functions that change a model');
SELECT is((SELECT count(*)::integer FROM cortex.models WHERE name IN ('neg', 'tp0', 'mem0', 'fmt')),
          0, 'rejected models were not created');

------------------------------------------------------------------------------------------------
-- SQL text stays data
------------------------------------------------------------------------------------------------
SELECT throws_ok($$SELECT cortex.add_model('x''); DROP TABLE cortex.models; --')$$, '22023',
                 $$invalid model name "x'); DROP TABLE cortex.models; --"$$,
                 'a model name carrying SQL is rejected as an invalid name');
SELECT throws_ok($$SELECT cortex.pin_model('adm-main''; UPDATE cortex.models SET pinned = true; --')$$,
                 '22023', NULL, 'a pin_model argument carrying SQL is rejected');
SELECT throws_ok($$SELECT cortex.drain_node('adm-node; DROP TABLE cortex.nodes')$$, '22023', NULL,
                 'a node name carrying SQL is rejected');
SELECT has_table('cortex', 'models', 'cortex.models still exists');
SELECT has_table('cortex', 'nodes', 'cortex.nodes still exists');
SELECT is((SELECT count(*)::integer FROM cortex.models WHERE pinned), 0, 'nothing got pinned');
SELECT lives_ok($$SELECT cortex.add_model('adm-desc',
                      description => 'Robert''); DROP TABLE cortex.models; --')$$,
                'free text (a description) may contain SQL');
SELECT is((SELECT description FROM cortex.models WHERE name = 'adm-desc'),
          'Robert''); DROP TABLE cortex.models; --', 'and it is stored verbatim');
SELECT lives_ok($$SELECT cortex.demand_load('adm-small', 'gw''; DELETE FROM cortex.demand; --')$$,
                'a gateway source string containing SQL is accepted as data');
SELECT is((SELECT source FROM cortex.demand WHERE model_id = (SELECT small_id FROM fx)),
          'gw''; DELETE FROM cortex.demand; --', 'and stored verbatim');
SELECT throws_ok($$SELECT cortex.set_setting('eviction_strategy', 'lru''; DROP TABLE cortex.settings; --')$$,
                 '22023', NULL, 'a setting value carrying SQL is rejected');
SELECT has_table('cortex', 'settings', 'cortex.settings still exists');

------------------------------------------------------------------------------------------------
-- aliases and resolution
------------------------------------------------------------------------------------------------
SELECT lives_ok($$SELECT cortex.alias_model('claude-sonnet-4', 'adm-main')$$, 'exact alias');
SELECT lives_ok($$SELECT cortex.alias_model('claude-*', 'adm-small')$$, 'short pattern');
SELECT lives_ok($$SELECT cortex.alias_model('claude-sonnet-*', 'adm-main')$$, 'longer pattern');
SELECT is(cortex.resolve_model('adm-main'), (SELECT main_id FROM fx), 'a model name resolves');
SELECT is(cortex.resolve_model('claude-sonnet-4'), (SELECT main_id FROM fx), 'an alias resolves');
SELECT is(cortex.resolve_model('claude-sonnet-4-5-20250929'), (SELECT main_id FROM fx),
          'the longest matching pattern wins');
SELECT is(cortex.resolve_model('claude-3-5-haiku-20241022'), (SELECT small_id FROM fx),
          'a shorter pattern catches the rest');
SELECT is(cortex.resolve_model('gpt-4o'), NULL, 'an unmatched name resolves to nothing');
SELECT is(cortex.resolve_model('claude-'), (SELECT small_id FROM fx),
          'a pattern matches its bare prefix');
SELECT lives_ok($$SELECT cortex.alias_model('claude-sonnet-4', 'adm-small')$$, 'an alias can be re-pointed');
SELECT is(cortex.resolve_model('claude-sonnet-4'), (SELECT small_id FROM fx),
          'the re-pointed alias resolves to its new model');
SELECT is(cortex.resolve_model('claude-sonnet-4-5'), (SELECT main_id FROM fx),
          'patterns still win for names that are not exact aliases');
SELECT throws_ok($$SELECT cortex.alias_model('x', 'no-such-model')$$, '42704',
                 'unknown model "no-such-model"', 'alias to an unknown model');
SELECT throws_ok($$SELECT cortex.alias_model('adm-small', 'adm-main')$$, '23505',
                 'alias "adm-small" is already the name of a model', 'alias equal to a model name');
SELECT throws_ok($$SELECT cortex.add_model('claude-sonnet-4')$$, '23505',
                 'model name "claude-sonnet-4" is already an alias of model "adm-small"',
                 'model name equal to an alias');
SELECT throws_ok($$SELECT cortex.alias_model('', 'adm-main')$$, '22023', 'alias must not be empty',
                 'empty alias');
SELECT throws_ok($$SELECT cortex.alias_model('cl*ude', 'adm-main')$$, '22023',
                 'invalid alias "cl*ude"', 'a * is only allowed at the end');
SELECT throws_ok($$SELECT cortex.alias_model('a''; DROP TABLE cortex.model_aliases; --', 'adm-main')$$,
                 '22023', NULL, 'an alias carrying SQL is rejected');
SELECT throws_ok($$SELECT cortex.unalias_model('never-made')$$, '42704',
                 'unknown alias "never-made"', 'removing an unknown alias');
SELECT lives_ok($$SELECT cortex.unalias_model('claude-*')$$, 'an alias can be removed');
SELECT is(cortex.resolve_model('claude-3-5-haiku'), NULL, 'and no longer resolves');

------------------------------------------------------------------------------------------------
-- pin, priority, TTL, replicas, tensor parallel
------------------------------------------------------------------------------------------------
SELECT throws_ok($$SELECT cortex.pin_model('no-such-model')$$, '42704',
                 'unknown model "no-such-model"', 'pinning an unknown model');
SELECT isnt(pg_temp.hint_of($$SELECT cortex.pin_model('no-such-model')$$), NULL,
            'the unknown-model error hints where to look');
SELECT lives_ok($$SELECT cortex.pin_model('claude-sonnet-4')$$, 'pinning through an alias');
SELECT is((SELECT pinned FROM cortex.models WHERE name = 'adm-small'), true,
          'the alias''s model is pinned');
SELECT lives_ok($$SELECT cortex.unpin_model('adm-small')$$, 'unpinning');
SELECT is((SELECT pinned FROM cortex.models WHERE name = 'adm-small'), false, 'unpinned');
SELECT throws_ok($$SELECT cortex.set_priority('adm-main', -5)$$, '22023',
                 'priority must be zero or more, not -5', 'set_priority rejects a negative value');
SELECT throws_ok($$SELECT cortex.set_priority('adm-main', NULL)$$, '22023',
                 'priority must be zero or more, not NULL', 'set_priority rejects NULL');
SELECT throws_ok($$SELECT cortex.set_priority('nope', 1)$$, '42704', 'unknown model "nope"',
                 'set_priority on an unknown model');
SELECT lives_ok($$SELECT cortex.set_priority('adm-main', 10)$$, 'set_priority');
SELECT is((SELECT priority FROM cortex.models WHERE name = 'adm-main'), 10, 'priority stored');
SELECT is((SELECT detail FROM cortex.events WHERE kind = 'admin.priority_set' ORDER BY id DESC LIMIT 1),
          '{"priority": 10, "previous": 3}'::jsonb, 'the event records old and new priority');
SELECT throws_ok($$SELECT cortex.set_idle_ttl('adm-main', '-1 minute')$$, '22023', NULL,
                 'a negative idle TTL');
SELECT lives_ok($$SELECT cortex.set_idle_ttl('adm-main', '2 hours')$$, 'set_idle_ttl');
SELECT is((SELECT idle_ttl FROM cortex.model_status WHERE model = 'adm-main'), interval '2 hours',
          'model_status shows the model''s own TTL');
SELECT lives_ok($$SELECT cortex.set_idle_ttl('adm-main', NULL)$$, 'set_idle_ttl NULL');
SELECT is((SELECT idle_ttl FROM cortex.model_status WHERE model = 'adm-main'),
          cortex.setting_interval('idle_ttl'), 'NULL falls back to the idle_ttl setting');
SELECT throws_ok($$SELECT cortex.set_replicas('adm-main', 3, 2)$$, '22023', NULL,
                 'max_replicas below min_replicas');
SELECT throws_ok($$SELECT cortex.set_replicas('adm-main', -1)$$, '22023', NULL,
                 'negative min_replicas');
SELECT lives_ok($$SELECT cortex.set_replicas('adm-main', 2)$$, 'set_replicas with only a minimum');
SELECT is((SELECT ARRAY[min_replicas, max_replicas] FROM cortex.models WHERE name = 'adm-main'),
          ARRAY[2, 2], 'the maximum is raised to the minimum');
SELECT throws_ok($$SELECT cortex.set_tensor_parallel('adm-main', 65)$$, '22023', NULL,
                 'tensor_parallel above 64');

------------------------------------------------------------------------------------------------
-- load / unload, drain
------------------------------------------------------------------------------------------------
SELECT throws_ok($$SELECT cortex.request_load('no-such-model')$$, '42704',
                 'unknown model "no-such-model"', 'request_load of an unknown model');
SELECT throws_ok($$SELECT cortex.request_load('adm-main', 'no-such-node')$$, '42704',
                 'unknown node "no-such-node"', 'request_load on an unknown node');
UPDATE cortex.models SET load_failures = 3 WHERE name = 'adm-main';
CREATE TEMP TABLE d1 AS SELECT cortex.request_load('adm-main') AS id;
SELECT is(cortex.request_load('claude-sonnet-4-5'), (SELECT id FROM d1),
          'asking again (through a pattern alias) while open returns the same demand');
SELECT is((SELECT ARRAY[wanted_count::text, kind, state, source] FROM cortex.demand
            WHERE id = (SELECT id FROM d1)),
          ARRAY['2', 'load', 'open', 'operator:' || session_user], 'one open load demand, asked twice');
SELECT is((SELECT load_failures FROM cortex.models WHERE name = 'adm-main'), 0,
          'request_load resets the failed-load count');
SELECT isnt(cortex.request_load('adm-main', 'adm-node'), (SELECT id FROM d1),
            'a load on a specific node is a separate demand');
SELECT throws_ok($$SELECT cortex.request_unload('adm-small')$$, '55000',
                 'model "adm-small" is not loaded', 'unloading a model that is not loaded');
SELECT cortex.pin_model('adm-main') \g /dev/null
SELECT cortex.placement_create((SELECT epoch FROM fx), (SELECT main_id FROM fx), (SELECT node_id FROM fx),
                               ARRAY(SELECT id FROM cortex.gpus WHERE node_id = (SELECT node_id FROM fx)))
\g /dev/null
SELECT throws_ok($$SELECT cortex.request_unload('adm-main')$$, '55000', 'model "adm-main" is pinned',
                 'unloading a pinned model');
SELECT cortex.unpin_model('adm-main') \g /dev/null
SELECT ok(cortex.request_unload('adm-main', 'adm-node') IS NOT NULL, 'request_unload');
SELECT throws_ok($$SELECT cortex.remove_model('adm-main')$$, '55000',
                 'model "adm-main" still has 1 live placement(s)', 'removing a model in use');
SELECT throws_ok($$SELECT cortex.drain_node('no-such-node')$$, '42704', 'unknown node "no-such-node"',
                 'draining an unknown node');
SELECT throws_ok($$SELECT cortex.drain_node('')$$, '22023', 'node name must not be empty',
                 'draining an empty node name');
SELECT lives_ok($$SELECT cortex.drain_node('adm-node')$$, 'drain_node');
SELECT is((SELECT draining FROM cortex.fleet_status WHERE node = 'adm-node'), true,
          'fleet_status shows the node draining');
SELECT throws_ok($$SELECT cortex.request_load('adm-small', 'adm-node')$$, '55000',
                 'node "adm-node" is draining', 'no load requests onto a draining node');
SELECT throws_ok($$SELECT cortex.remove_node('adm-node')$$, '55000', 'node "adm-node" is still alive',
                 'a live node cannot be removed');

------------------------------------------------------------------------------------------------
-- remove_model
------------------------------------------------------------------------------------------------
SELECT throws_ok($$SELECT cortex.remove_model('claude-sonnet-4')$$, '22023',
                 '"claude-sonnet-4" is an alias, not a model', 'remove_model refuses an alias');
SELECT cortex.node_models_sync((SELECT node_id FROM fx),
                               '[{"name":"adm-small","format":"gguf","size_bytes":10}]') \g /dev/null
SELECT lives_ok($$SELECT cortex.remove_model('adm-small')$$, 'removing a model whose files remain');
SELECT is((SELECT enabled FROM cortex.models WHERE name = 'adm-small'), false,
          'it is kept, disabled, so that scans do not re-add it');
SELECT is(cortex.resolve_model('claude-sonnet-4'), (SELECT main_id FROM fx),
          'its exact alias is gone: the name falls through to the claude-sonnet-* pattern');
SELECT cortex.node_models_sync((SELECT node_id FROM fx),
                               '[{"name":"adm-small","format":"gguf","size_bytes":10}]') \g /dev/null
SELECT is((SELECT enabled FROM cortex.models WHERE name = 'adm-small'), false,
          'a rescan does not bring it back');
SELECT is(cortex.add_model('adm-small'), (SELECT small_id FROM fx), 'add_model enables it again');
SELECT lives_ok($$SELECT cortex.remove_model('adm-desc')$$, 'removing a model nobody holds');
SELECT is((SELECT count(*)::integer FROM cortex.models WHERE name = 'adm-desc'), 0, 'its row is deleted');

------------------------------------------------------------------------------------------------
-- settings
------------------------------------------------------------------------------------------------
SELECT throws_ok($$SELECT cortex.set_setting('no_such_setting', '1')$$, '42704',
                 'unknown setting "no_such_setting"', 'an unknown setting');
SELECT throws_ok($$SELECT cortex.set_setting('eviction_strategy', 'random')$$, '22023',
                 'invalid value "random" for setting eviction_strategy', 'an enum value not allowed');
SELECT is(cortex.set_setting('eviction_strategy', 'priority'), 'priority', 'a valid enum value');
SELECT is(cortex.setting('eviction_strategy'), 'priority', 'and it is stored');
SELECT throws_ok($$SELECT cortex.set_setting('heartbeat_interval', 'banana')$$, '22023',
                 'invalid value "banana" for setting heartbeat_interval', 'not an interval');
SELECT throws_ok($$SELECT cortex.set_setting('defrag_after_cycles', '-1')$$, '22023', NULL,
                 'an integer below its minimum');
SELECT throws_ok($$SELECT cortex.set_setting('defrag_after_cycles', '1.5')$$, '22023', NULL,
                 'not a whole number');
SELECT throws_ok($$SELECT cortex.set_setting('max_load_attempts', '0')$$, '22023', NULL,
                 'max_load_attempts must be positive');
SELECT is(cortex.set_setting('defrag_after_cycles', ' +007 '), '7', 'integers are normalised');
SELECT is(cortex.set_setting('auto_register_models', 'off'), 'false', 'booleans are normalised');
SELECT throws_ok($$SELECT cortex.set_setting('auto_register_models', 'maybe')$$, '22023', NULL,
                 'not a boolean');
SELECT throws_ok($$UPDATE cortex.settings SET value = 'sometimes' WHERE key = 'eviction_strategy'$$,
                 '22023', NULL, 'a direct UPDATE is validated too');
SELECT throws_ok($$SELECT cortex.set_setting('heartbeat_grace', '2 seconds')$$, '22023',
                 'heartbeat_grace (00:00:02) must be longer than heartbeat_interval (00:00:05)',
                 'a grace shorter than the heartbeat interval');
SELECT is(cortex.reset_setting('defrag_after_cycles'), '30', 'reset_setting restores the default');
SELECT is((SELECT detail FROM cortex.events WHERE kind = 'admin.setting_changed'
            ORDER BY id DESC LIMIT 1),
          '{"key": "defrag_after_cycles", "previous": "7", "value": "30"}'::jsonb,
          'setting changes are audited with old and new value');

SELECT * FROM finish();
ROLLBACK;
