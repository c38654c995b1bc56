-- tests/sql/test_schema.sql — every table, view and function exists with the expected columns
-- and signatures; everything is documented (COMMENT) and every constraint is named.
-- The expected lists are written out here on purpose: a migration that drops or renames
-- something the processes rely on must fail this file.
BEGIN;
SELECT plan(101);

SELECT has_schema('cortex');
SELECT has_schema('cortex_part');
SELECT has_schema('cortex_meta');

SELECT tables_are('cortex', ARRAY[
    'settings', 'scheduler_lease', 'nodes', 'gpus', 'models', 'model_aliases', 'node_models',
    'placements', 'placement_gpus', 'demand', 'requests', 'events', 'api_keys', 'rate_windows'
]);
SELECT views_are('cortex', ARRAY[
    'placement_transitions', 'fleet_status', 'device_status', 'model_status', 'placement_status',
    'catalogue', 'routes', 'model_usage', 'model_latency', 'node_utilisation', 'key_usage',
    'recent_events', 'help'
]);
SELECT functions_are('cortex', ARRAY[
    -- rules (0002)
    'setting_normalize', 'settings_validate', 'settings_consistency', 'setting', 'setting_int',
    'setting_interval', 'setting_bool', 'settings_notify', 'check_model_name', 'check_node_name',
    'model_names_guard', 'models_touch', 'resolve_model', 'record_event', 'node_liveness',
    'placements_guard', 'placements_announce', 'demand_announce', 'models_announce',
    'model_aliases_announce', 'nodes_announce',
    -- partitions (0003)
    'create_request_partition', 'ensure_request_partitions', 'drop_request_partitions_older_than',
    -- runtime (0004)
    'lease_acquire', 'lease_renew', 'lease_release', 'lease_check', 'node_register',
    'node_heartbeat', 'node_model_entry_valid', 'node_models_sync', 'placement_transition',
    'placement_progress', 'demand_open', 'demand_load', 'placements_touch', 'placement_create',
    'demand_resolve', 'mark_dead_nodes',
    -- admin (0005)
    'model_require', 'node_require', 'check_priority', 'check_tensor_parallel', 'add_model',
    'remove_model', 'alias_model', 'unalias_model', 'pin_model', 'unpin_model', 'set_priority',
    'set_idle_ttl', 'set_replicas', 'set_tensor_parallel', 'request_load', 'request_unload',
    'drain_node', 'undrain_node', 'remove_node', 'create_api_key', 'api_key_lookup',
    'revoke_api_key', 'set_setting', 'reset_setting',
    -- scheduler (0007)
    'placement_move', 'model_retry_loads', 'demand_failover',
    -- rate limits (0008)
    'rate_take', 'set_api_key_limits'
]);

-- tables
SELECT columns_are('cortex', 'settings', ARRAY['key', 'value', 'kind', 'allowed', 'min_value',
    'default_value', 'description', 'updated_at', 'updated_by']);
SELECT columns_are('cortex', 'scheduler_lease', ARRAY['singleton', 'holder', 'epoch',
    'acquired_at', 'renewed_at', 'expires_at']);
SELECT columns_are('cortex', 'nodes', ARRAY['id', 'name', 'endpoint', 'version', 'incarnation',
    'registered_at', 'last_heartbeat_at', 'node_clock_at', 'queue_depth', 'active_sequences',
    'draining', 'drain_requested_at', 'marked_down_at', 'down_reason']);
SELECT columns_are('cortex', 'gpus', ARRAY['id', 'node_id', 'kind', 'ordinal', 'name', 'uuid',
    'compute_capability', 'memory_total_bytes', 'memory_used_bytes', 'memory_free_bytes',
    'utilization_pct', 'updated_at']);
SELECT columns_are('cortex', 'models', ARRAY['id', 'name', 'enabled', 'source', 'display_name',
    'description', 'format', 'architecture', 'size_bytes', 'memory_bytes', 'context_length',
    'tensor_parallel', 'priority', 'pinned', 'min_replicas', 'max_replicas', 'idle_ttl',
    'load_failures', 'last_load_error', 'last_load_error_at', 'created_at', 'updated_at']);
SELECT columns_are('cortex', 'model_aliases', ARRAY['alias', 'model_id', 'created_at',
    'created_by']);
SELECT columns_are('cortex', 'node_models', ARRAY['node_id', 'name', 'format', 'architecture',
    'size_bytes', 'memory_bytes', 'context_length', 'path', 'scanned_at']);
SELECT columns_are('cortex', 'placements', ARRAY['id', 'model_id', 'node_id', 'state', 'reason',
    'epoch', 'memory_bytes', 'progress_bytes', 'progress_total_bytes', 'created_at',
    'state_changed_at', 'ready_at', 'ended_at', 'last_used_at', 'replaces_id']);
SELECT columns_are('cortex', 'placement_gpus', ARRAY['placement_id', 'node_id', 'gpu_id', 'rank']);
SELECT columns_are('cortex', 'demand', ARRAY['id', 'model_id', 'kind', 'node_id', 'source',
    'state', 'reason', 'wanted_count', 'created_at', 'last_wanted_at', 'resolved_at', 'epoch',
    'placement_id']);
SELECT columns_are('cortex', 'requests', ARRAY['request_id', 'created_at', 'recorded_at',
    'gateway', 'api_key_id', 'dialect', 'endpoint', 'requested_model', 'served_model', 'node',
    'placement_id', 'stream', 'status_code', 'error_type', 'finish_reason', 'cancelled',
    'cold_start', 'tokens_in', 'tokens_out', 'tokens_cached', 'queue_wait_ms', 'ttft_ms',
    'total_ms', 'decode_tps', 'client']);
SELECT columns_are('cortex', 'events', ARRAY['id', 'at', 'kind', 'actor', 'epoch', 'model',
    'node', 'placement_id', 'demand_id', 'reason', 'detail']);
SELECT columns_are('cortex', 'api_keys', ARRAY['id', 'name', 'prefix', 'secret_sha256',
    'requests_per_minute', 'tokens_per_minute', 'created_at', 'created_by', 'expires_at',
    'revoked_at', 'revoked_by']);
SELECT columns_are('cortex', 'rate_windows', ARRAY['api_key_id', 'window_start', 'requests',
    'tokens', 'updated_at']);
SELECT columns_are('cortex_meta', 'schema_migrations', ARRAY['version', 'name', 'checksum',
    'applied_at', 'applied_by']);

-- views
SELECT columns_are('cortex', 'placement_transitions', ARRAY['from_state', 'to_state', 'meaning']);
SELECT columns_are('cortex', 'fleet_status', ARRAY['node_id', 'node', 'endpoint', 'liveness',
    'heartbeat_age', 'draining', 'down_reason', 'devices', 'memory_total_bytes',
    'memory_used_bytes', 'memory_free_bytes', 'memory_used_pct', 'queue_depth',
    'active_sequences', 'ready_models', 'loading_models', 'version', 'incarnation',
    'registered_at', 'last_heartbeat_at']);
SELECT columns_are('cortex', 'device_status', ARRAY['gpu_id', 'node', 'device', 'name',
    'memory_total_bytes', 'memory_used_bytes', 'memory_free_bytes', 'memory_used_pct',
    'reserved_bytes', 'utilization_pct', 'models', 'updated_age']);
SELECT columns_are('cortex', 'model_status', ARRAY['model_id', 'model', 'aliases', 'enabled',
    'source', 'tensor_parallel', 'priority', 'pinned', 'min_replicas', 'max_replicas',
    'idle_ttl', 'memory_bytes', 'ready_replicas', 'loading_replicas', 'files_on',
    'load_failures', 'last_load_error', 'last_used_at', 'open_demand']);
SELECT columns_are('cortex', 'placement_status', ARRAY['placement_id', 'model', 'node', 'state',
    'devices', 'progress_pct', 'reason', 'in_state_for', 'idle_for', 'memory_bytes', 'epoch',
    'created_at', 'ready_at', 'ended_at']);
SELECT columns_are('cortex', 'catalogue', ARRAY['name', 'kind', 'model', 'model_id', 'servable',
    'ready_replicas', 'context_length', 'display_name', 'created_at']);
SELECT columns_are('cortex', 'routes', ARRAY['placement_id', 'model_id', 'model', 'node_id',
    'node', 'endpoint', 'liveness', 'draining', 'queue_depth', 'active_sequences', 'ready_at',
    'last_used_at']);
SELECT columns_are('cortex', 'model_usage', ARRAY['hour', 'model', 'requests', 'errors',
    'server_errors', 'cancelled', 'cold_starts', 'tokens_in', 'tokens_out', 'tokens_cached',
    'avg_decode_tps']);
SELECT columns_are('cortex', 'model_latency', ARRAY['hour', 'model', 'cold_start', 'requests',
    'ttft_p50_ms', 'ttft_p95_ms', 'ttft_p99_ms', 'total_p50_ms', 'total_p95_ms', 'total_p99_ms',
    'queue_wait_p95_ms']);
SELECT columns_are('cortex', 'node_utilisation', ARRAY['hour', 'node', 'requests', 'errors',
    'tokens_in', 'tokens_out', 'busy_seconds', 'avg_concurrency', 'avg_decode_tps']);
SELECT columns_are('cortex', 'key_usage', ARRAY['day', 'api_key_id', 'key_name', 'prefix',
    'requests', 'errors', 'tokens_in', 'tokens_out']);
SELECT columns_are('cortex', 'recent_events', ARRAY['id', 'at', 'age', 'kind', 'actor', 'epoch',
    'model', 'node', 'placement_id', 'demand_id', 'reason', 'detail']);
SELECT columns_are('cortex', 'help', ARRAY['audience', 'function', 'description']);

-- types the C code and the analysts depend on
SELECT col_type_is('cortex', 'requests', 'created_at', 'timestamp with time zone',
                   'requests.created_at is timestamptz');
SELECT col_type_is('cortex', 'api_keys', 'secret_sha256', 'bytea', 'api_keys keeps a bytea hash');
SELECT col_type_is('cortex', 'scheduler_lease', 'epoch', 'bigint', 'the lease epoch is bigint');
SELECT col_type_is('cortex', 'events', 'detail', 'jsonb', 'events.detail is jsonb');
SELECT col_type_is('cortex', 'models', 'idle_ttl', 'interval', 'models.idle_ttl is an interval');
SELECT is_partitioned('cortex', 'requests', 'requests is partitioned');
SELECT has_table('cortex_part', 'requests_default', 'requests has a default partition');
SELECT has_table('cortex_part'::name,
                 ('requests_' || to_char((now() AT TIME ZONE 'UTC')::date, 'YYYYMMDD'))::name,
                 'the migrations created today''s requests partition');
SELECT is((SELECT count(*)::integer FROM cortex.scheduler_lease), 1, 'the lease table has its row');
SELECT set_eq('SELECT key FROM cortex.settings', ARRAY[
    'eviction_strategy', 'defrag_after_cycles', 'heartbeat_interval', 'heartbeat_grace',
    'idle_ttl', 'max_load_attempts', 'load_timeout', 'scheduler_tick', 'lease_duration',
    'demand_ttl', 'request_retention', 'request_partitions_ahead', 'auto_register_models',
    'device_memory_reserve_mib', 'evict_in_flight'], 'the settings are all there');

-- signatures the processes call (argument types in order)
SELECT has_function('cortex', f, args, format('cortex.%s(%s)', f, array_to_string(args, ', ')))
  FROM (VALUES
    ('lease_acquire', ARRAY['text', 'interval']),
    ('lease_renew', ARRAY['text', 'bigint', 'interval']),
    ('lease_release', ARRAY['text', 'bigint']),
    ('lease_check', ARRAY['bigint']),
    ('node_register', ARRAY['text', 'text', 'jsonb', 'text']),
    ('node_heartbeat', ARRAY['bigint', 'jsonb', 'integer', 'integer', 'timestamp with time zone']),
    ('node_models_sync', ARRAY['bigint', 'jsonb']),
    ('placement_transition', ARRAY['bigint', 'text', 'text', 'bigint']),
    ('placement_progress', ARRAY['bigint', 'bigint', 'bigint']),
    ('placement_create', ARRAY['bigint', 'bigint', 'bigint', 'bigint[]', 'bigint']),
    ('placements_touch', ARRAY['bigint[]']),
    ('demand_load', ARRAY['text', 'text']),
    ('demand_resolve', ARRAY['bigint', 'bigint', 'text', 'text', 'bigint']),
    ('mark_dead_nodes', ARRAY['bigint']),
    ('resolve_model', ARRAY['text']),
    ('api_key_lookup', ARRAY['text']),
    ('record_event', ARRAY['text', 'text', 'jsonb', 'text', 'text', 'bigint', 'bigint']),
    ('node_liveness', ARRAY['timestamp with time zone']),
    ('ensure_request_partitions', ARRAY['integer']),
    ('create_request_partition', ARRAY['date']),
    ('drop_request_partitions_older_than', ARRAY['interval']),
    ('add_model', ARRAY['text', 'integer', 'integer', 'bigint', 'integer', 'text', 'text', 'text']),
    ('remove_model', ARRAY['text']),
    ('alias_model', ARRAY['text', 'text']),
    ('unalias_model', ARRAY['text']),
    ('pin_model', ARRAY['text']),
    ('unpin_model', ARRAY['text']),
    ('set_priority', ARRAY['text', 'integer']),
    ('set_idle_ttl', ARRAY['text', 'interval']),
    ('set_replicas', ARRAY['text', 'integer', 'integer']),
    ('set_tensor_parallel', ARRAY['text', 'integer']),
    ('request_load', ARRAY['text', 'text']),
    ('request_unload', ARRAY['text', 'text']),
    ('drain_node', ARRAY['text']),
    ('undrain_node', ARRAY['text']),
    ('remove_node', ARRAY['text']),
    ('create_api_key', ARRAY['text', 'integer', 'integer', 'interval']),
    ('revoke_api_key', ARRAY['bigint']),
    ('revoke_api_key', ARRAY['text']),
    ('set_setting', ARRAY['text', 'text']),
    ('reset_setting', ARRAY['text']),
    ('placement_move', ARRAY['bigint', 'bigint', 'bigint', 'bigint[]', 'bigint']),
    ('model_retry_loads', ARRAY['bigint', 'bigint']),
    ('demand_failover', ARRAY['bigint', 'bigint']),
    ('rate_take', ARRAY['bigint', 'integer', 'integer', 'timestamp with time zone', 'bigint']),
    ('set_api_key_limits', ARRAY['bigint', 'integer', 'integer'])
  ) AS t(f, args);

-- triggers that carry the rules
SELECT has_trigger('cortex', 'placements', 'placements_guard_trg', 'placements state machine trigger');
SELECT has_trigger('cortex', 'placements', 'placements_announce_trg', 'placements NOTIFY trigger');
SELECT has_trigger('cortex', 'demand', 'demand_announce_trg', 'demand NOTIFY trigger');
SELECT has_trigger('cortex', 'settings', 'settings_validate_trg', 'settings validation trigger');

-- documentation: \d+ must describe everything
SELECT is_empty($$
    SELECT n.nspname || '.' || c.relname
      FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE n.nspname IN ('cortex', 'cortex_meta', 'cortex_part') AND c.relkind IN ('r', 'p', 'v')
       AND length(btrim(COALESCE(obj_description(c.oid, 'pg_class'), ''))) < 4
$$, 'every table and view has a COMMENT');
SELECT is_empty($$
    SELECT n.nspname || '.' || c.relname || '.' || a.attname
      FROM pg_class c
      JOIN pg_namespace n ON n.oid = c.relnamespace
      JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
     WHERE n.nspname IN ('cortex', 'cortex_meta') AND c.relkind IN ('r', 'p', 'v')
       AND length(btrim(COALESCE(col_description(c.oid, a.attnum), ''))) < 4
$$, 'every column of every table and view has a COMMENT');
SELECT is_empty($$
    SELECT p.oid::regprocedure::text
      FROM pg_proc p
     WHERE p.pronamespace = 'cortex'::regnamespace
       AND COALESCE(obj_description(p.oid, 'pg_proc'), '')
           !~ '^(internal|admin|any|gateway|neuron|scheduler)(, (gateway|neuron|scheduler))*: .{10,}'
$$, 'every function has a COMMENT that starts with its audience');
SELECT is_empty($$
    SELECT n.nspname FROM pg_namespace n
     WHERE n.nspname IN ('cortex', 'cortex_part', 'cortex_meta')
       AND obj_description(n.oid, 'pg_namespace') IS NULL
$$, 'every schema has a COMMENT');

-- naming: no constraint or index left with a generated name
SELECT is_empty($$
    SELECT co.conrelid::regclass || ': ' || co.conname
      FROM pg_constraint co
     WHERE co.connamespace IN ('cortex'::regnamespace, 'cortex_meta'::regnamespace)
       AND co.contype <> 't'
       AND co.conname !~ '_(pk|fk|uq|ck)$'
$$, 'every constraint is named <table>_<what>_{pk,fk,uq,ck}');
SELECT is_empty($$
    SELECT c.relname
      FROM pg_class c
     WHERE c.relnamespace = 'cortex'::regnamespace AND c.relkind IN ('i', 'I')
       AND c.relname !~ '_(pk|uq|ix)$'
$$, 'every index in cortex is named *_pk, *_uq or *_ix');
SELECT is_empty($$
    SELECT c.relname
      FROM pg_class c
     WHERE c.relnamespace = 'cortex'::regnamespace AND c.relkind IN ('r', 'p')
       AND NOT EXISTS (SELECT 1 FROM pg_constraint co
                        WHERE co.conrelid = c.oid AND co.contype = 'p')
$$, 'every table has a primary key');

SELECT * FROM finish();
ROLLBACK;
