-- sql/0004_runtime.sql — the functions the Cortex processes call.
--
-- What: the scheduler leader lease (acquire / renew / release / check, with epoch fencing), the
-- neuron's calls (register, heartbeat, model scan, placement transitions and load progress),
-- the gateway's calls (demand, placement use), and scheduler writes that must be fenced
-- (placement creation, demand resolution, marking dead nodes).
-- Why: each process runs one parameterised SELECT cortex.fn($1, ...) per action, so the rules
-- (validation, fencing, failure counting, audit events) live in one place and every caller gets
-- the same behaviour. Scheduler writes take the epoch and raise CX001 when it is stale.
--
-- Leader election: a scheduler holds pg_try_advisory_lock(1668248180, 2) on its session and the
-- lease row below; the lease epoch fences writes even if two schedulers briefly both believe
-- they lead (a stalled process, a partitioned connection).

------------------------------------------------------------------------------------------------
-- the scheduler lease
------------------------------------------------------------------------------------------------
CREATE FUNCTION cortex.lease_acquire(holder text, duration interval DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    l cortex.scheduler_lease;
    d interval := COALESCE(lease_acquire.duration, cortex.setting_interval('lease_duration'));
    t timestamptz := clock_timestamp();
BEGIN
    IF lease_acquire.holder IS NULL OR btrim(lease_acquire.holder) = '' THEN
        RAISE EXCEPTION 'lease holder must not be empty' USING ERRCODE = '22023';
    END IF;
    IF d <= interval '0' THEN
        RAISE EXCEPTION 'lease duration must be positive, not %', d USING ERRCODE = '22023';
    END IF;
    BEGIN
        -- A leader's open write transaction holds the row FOR SHARE (lease_check); taking over
        -- must wait until that transaction ends, so try again at the next tick instead.
        SELECT * INTO l FROM cortex.scheduler_lease FOR UPDATE NOWAIT;
    EXCEPTION WHEN lock_not_available THEN
        RETURN NULL;
    END;
    IF l.holder = lease_acquire.holder AND l.expires_at > t THEN
        UPDATE cortex.scheduler_lease SET renewed_at = t, expires_at = t + d;
        RETURN l.epoch;
    END IF;
    IF l.expires_at > t THEN
        RETURN NULL;
    END IF;
    UPDATE cortex.scheduler_lease
       SET holder = lease_acquire.holder, epoch = l.epoch + 1, acquired_at = t, renewed_at = t,
           expires_at = t + d;
    PERFORM set_config('cortex.epoch', (l.epoch + 1)::text, true);
    PERFORM set_config('cortex.actor', lease_acquire.holder, true);
    PERFORM cortex.record_event('lease.acquired', NULL,
                                jsonb_build_object('previous_holder', l.holder,
                                                   'previous_epoch', l.epoch,
                                                   'expires_at', t + d));
    RETURN l.epoch + 1;
END
$$;
COMMENT ON FUNCTION cortex.lease_acquire(text, interval) IS
    'scheduler: takes the leader lease when it is free or expired (new epoch) or renews it when '
    'the holder already has it; returns the epoch held, or NULL when another scheduler leads or '
    'a leader''s write transaction holds the lease row (try again at the next tick). A leader '
    'renews with lease_renew.';

CREATE FUNCTION cortex.lease_renew(holder text, epoch bigint, duration interval DEFAULT NULL)
RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    d interval := COALESCE(lease_renew.duration, cortex.setting_interval('lease_duration'));
    t timestamptz := clock_timestamp();
BEGIN
    IF d <= interval '0' THEN
        RAISE EXCEPTION 'lease duration must be positive, not %', d USING ERRCODE = '22023';
    END IF;
    UPDATE cortex.scheduler_lease l
       SET renewed_at = t, expires_at = t + d
     WHERE l.holder = lease_renew.holder AND l.epoch = lease_renew.epoch AND l.expires_at > t;
    RETURN FOUND;
END
$$;
COMMENT ON FUNCTION cortex.lease_renew(text, bigint, interval) IS
    'scheduler: extends the lease if this holder still holds this epoch and it has not expired; '
    'false means leadership is lost (stop writing, call lease_acquire again).';

CREATE FUNCTION cortex.lease_release(holder text, epoch bigint)
RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE cortex.scheduler_lease l
       SET expires_at = clock_timestamp()
     WHERE l.holder = lease_release.holder AND l.epoch = lease_release.epoch
       AND l.expires_at > clock_timestamp();
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    PERFORM set_config('cortex.actor', lease_release.holder, true);
    PERFORM set_config('cortex.epoch', lease_release.epoch::text, true);
    PERFORM cortex.record_event('lease.released');
    RETURN true;
END
$$;
COMMENT ON FUNCTION cortex.lease_release(text, bigint) IS
    'scheduler: gives the lease up at once (clean shutdown) so a standby takes over without '
    'waiting for it to expire; false if it was not held.';

CREATE FUNCTION cortex.lease_check(epoch bigint)
RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    l cortex.scheduler_lease;
BEGIN
    -- FOR SHARE keeps a successor from bumping the epoch until this transaction has ended, so
    -- a write checked here can never commit after a new leader took over.
    SELECT * INTO l FROM cortex.scheduler_lease FOR SHARE;
    IF lease_check.epoch IS NULL OR l.epoch <> lease_check.epoch
       OR l.expires_at <= clock_timestamp() THEN
        RAISE EXCEPTION 'stale scheduler epoch %', COALESCE(lease_check.epoch::text, 'NULL')
            USING ERRCODE = 'CX001',
                  DETAIL = format('The lease is at epoch %s, held by %s until %s.',
                                  l.epoch, COALESCE(l.holder, 'nobody'), l.expires_at),
                  HINT = 'This scheduler is not the leader: stop writing and call '
                         'cortex.lease_acquire again.';
    END IF;
    PERFORM set_config('cortex.epoch', l.epoch::text, true);
    PERFORM set_config('cortex.actor', COALESCE(l.holder, ''), true);
END
$$;
COMMENT ON FUNCTION cortex.lease_check(bigint) IS
    'scheduler: raises CX001 unless epoch is the current, unexpired lease epoch; call it first in '
    'every leader write transaction. Events written later in the transaction carry the epoch.';

------------------------------------------------------------------------------------------------
-- neuron
------------------------------------------------------------------------------------------------
CREATE FUNCTION cortex.node_register(name text, endpoint text, devices jsonb,
                                     version text DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    nid bigint;
    inc bigint;
    voided integer;
BEGIN
    PERFORM cortex.check_node_name(node_register.name);
    IF node_register.endpoint IS NULL
       OR node_register.endpoint !~ '^https?://[^[:space:]/]+(/[^[:space:]]*)?$' THEN
        RAISE EXCEPTION 'invalid node endpoint "%"', node_register.endpoint
            USING ERRCODE = '22023', HINT = 'Use a base URL such as http://gpu1:8400.';
    END IF;
    IF node_register.devices IS NULL OR jsonb_typeof(node_register.devices) <> 'array'
       OR jsonb_array_length(node_register.devices) = 0 THEN
        RAISE EXCEPTION 'node % must register at least one device', node_register.name
            USING ERRCODE = '22023',
                  HINT = 'devices is a JSON array of {kind, ordinal, name, uuid, '
                         'compute_capability, memory_total_bytes}; a CPU host sends one '
                         '{"kind":"cpu","ordinal":0,"memory_total_bytes":budget}.';
    END IF;

    INSERT INTO cortex.nodes AS n (name, endpoint, version, last_heartbeat_at)
    VALUES (node_register.name, node_register.endpoint, node_register.version, now())
    ON CONFLICT ON CONSTRAINT nodes_name_uq DO UPDATE
       SET endpoint = EXCLUDED.endpoint, version = EXCLUDED.version,
           incarnation = n.incarnation + 1, registered_at = now(), last_heartbeat_at = now(),
           node_clock_at = NULL, queue_depth = 0, active_sequences = 0,
           marked_down_at = NULL, down_reason = NULL
    RETURNING n.id, n.incarnation INTO nid, inc;

    -- A neuron keeps no model across a restart: whatever the previous incarnation had is void.
    UPDATE cortex.placements p
       SET state = CASE WHEN p.state = 'unloading' THEN 'gone' ELSE 'failed' END,
           reason = 'node restarted (registered again)'
     WHERE p.node_id = nid AND p.state IN ('requested', 'loading', 'ready', 'unloading');
    GET DIAGNOSTICS voided = ROW_COUNT;

    INSERT INTO cortex.gpus AS g (node_id, kind, ordinal, name, uuid, compute_capability,
                                  memory_total_bytes, updated_at)
    SELECT nid, COALESCE(x.kind, 'cuda'), x.ordinal, x.name, x.uuid, x.compute_capability,
           x.memory_total_bytes, now()
      FROM jsonb_to_recordset(node_register.devices)
           AS x(kind text, ordinal integer, name text, uuid text, compute_capability text,
                memory_total_bytes bigint)
    ON CONFLICT ON CONSTRAINT gpus_device_uq DO UPDATE
       SET name = EXCLUDED.name, uuid = EXCLUDED.uuid,
           compute_capability = EXCLUDED.compute_capability,
           memory_total_bytes = EXCLUDED.memory_total_bytes,
           memory_used_bytes = NULL, memory_free_bytes = NULL, utilization_pct = NULL,
           updated_at = now();

    DELETE FROM cortex.gpus g
     WHERE g.node_id = nid
       AND NOT EXISTS (SELECT 1
                         FROM jsonb_to_recordset(node_register.devices)
                              AS x(kind text, ordinal integer)
                        WHERE COALESCE(x.kind, 'cuda') = g.kind AND x.ordinal = g.ordinal);

    PERFORM cortex.record_event('node.registered', NULL,
                                jsonb_build_object('incarnation', inc,
                                                   'endpoint', node_register.endpoint,
                                                   'devices', jsonb_array_length(node_register.devices),
                                                   'placements_voided', voided),
                                NULL, node_register.name);
    RETURN nid;
END
$$;
COMMENT ON FUNCTION cortex.node_register(text, text, jsonb, text) IS
    'neuron: registers (or re-registers) a node and its devices, stamps a heartbeat, clears a '
    'down mark, voids the placements of its previous incarnation and returns the node id.';

CREATE FUNCTION cortex.node_heartbeat(node_id bigint, devices jsonb DEFAULT '[]',
                                      queue_depth integer DEFAULT 0,
                                      active_sequences integer DEFAULT 0,
                                      node_clock timestamptz DEFAULT NULL)
RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
    IF node_heartbeat.devices IS NOT NULL AND jsonb_typeof(node_heartbeat.devices) <> 'array' THEN
        RAISE EXCEPTION 'heartbeat devices must be a JSON array' USING ERRCODE = '22023';
    END IF;
    UPDATE cortex.nodes n
       SET last_heartbeat_at = now(), node_clock_at = node_heartbeat.node_clock,
           queue_depth = COALESCE(node_heartbeat.queue_depth, 0),
           active_sequences = COALESCE(node_heartbeat.active_sequences, 0)
     WHERE n.id = node_heartbeat.node_id AND n.marked_down_at IS NULL;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    UPDATE cortex.gpus g
       SET memory_used_bytes = x.memory_used_bytes, memory_free_bytes = x.memory_free_bytes,
           utilization_pct = x.utilization_pct, updated_at = now()
      FROM jsonb_to_recordset(COALESCE(node_heartbeat.devices, '[]'))
           AS x(kind text, ordinal integer, memory_used_bytes bigint, memory_free_bytes bigint,
                utilization_pct real)
     WHERE g.node_id = node_heartbeat.node_id AND g.kind = COALESCE(x.kind, 'cuda')
       AND g.ordinal = x.ordinal;
    RETURN true;
END
$$;
COMMENT ON FUNCTION cortex.node_heartbeat(bigint, jsonb, integer, integer, timestamptz) IS
    'neuron: records a heartbeat stamped with the database clock, plus load and per-device '
    'memory ([{kind, ordinal, memory_used_bytes, memory_free_bytes, utilization_pct}]). '
    'node_clock is stored for diagnosis only. Returns false when the node is unknown or was '
    'marked down: the neuron must unload everything and register again.';

CREATE FUNCTION cortex.node_model_entry_valid(entry jsonb)
RETURNS boolean
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    r record;
BEGIN
    IF entry IS NULL OR jsonb_typeof(entry) <> 'object' THEN
        RETURN false;
    END IF;
    BEGIN
        SELECT * INTO r
          FROM jsonb_to_record(entry) AS x(name text, format text, size_bytes bigint,
                                           memory_bytes bigint, context_length integer);
    EXCEPTION WHEN data_exception THEN
        RETURN false;
    END;
    RETURN COALESCE(r.name ~ '^[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}$', false)
       AND COALESCE(r.format IN ('gguf', 'hf'), false)
       AND COALESCE(r.size_bytes >= 0, true)
       AND COALESCE(r.memory_bytes > 0, true)
       AND COALESCE(r.context_length > 0, true);
END
$$;
COMMENT ON FUNCTION cortex.node_model_entry_valid(jsonb) IS
    'internal: whether one entry of a neuron''s model scan can be stored.';

CREATE FUNCTION cortex.node_models_sync(node_id bigint, models jsonb)
RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    node_name text;
    kept integer;
    bad record;
    scan jsonb;
BEGIN
    SELECT n.name INTO node_name FROM cortex.nodes n WHERE n.id = node_models_sync.node_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'unknown node id %', node_models_sync.node_id USING ERRCODE = '42704';
    END IF;
    IF node_models_sync.models IS NULL OR jsonb_typeof(node_models_sync.models) <> 'array' THEN
        RAISE EXCEPTION 'models must be a JSON array' USING ERRCODE = '22023',
            HINT = 'Each element: {name, format, architecture, size_bytes, memory_bytes, '
                   'context_length, path}.';
    END IF;

    -- One unusable entry must not hide the rest of the node's models: skip it, loudly.
    FOR bad IN
        SELECT e FROM jsonb_array_elements(node_models_sync.models) e
         WHERE NOT cortex.node_model_entry_valid(e)
    LOOP
        RAISE WARNING 'node %: skipping invalid model entry %', node_name, left(bad.e::text, 200)
            USING HINT = 'name: letters, digits and . _ - : / (at most 128); format: gguf or hf.';
    END LOOP;
    scan := COALESCE((SELECT jsonb_agg(e) FROM jsonb_array_elements(node_models_sync.models) e
                       WHERE cortex.node_model_entry_valid(e)), '[]');

    DELETE FROM cortex.node_models nm
     WHERE nm.node_id = node_models_sync.node_id
       AND NOT EXISTS (SELECT 1 FROM jsonb_array_elements(scan) e WHERE e->>'name' = nm.name);

    INSERT INTO cortex.node_models AS nm (node_id, name, format, architecture, size_bytes,
                                          memory_bytes, context_length, path, scanned_at)
    SELECT DISTINCT ON (s.name) node_models_sync.node_id, s.name, s.format, s.architecture,
           COALESCE(s.size_bytes, 0), s.memory_bytes, s.context_length, s.path, now()
      FROM jsonb_to_recordset(scan)
           AS s(name text, format text, architecture text, size_bytes bigint,
                memory_bytes bigint, context_length integer, path text)
     ORDER BY s.name
    ON CONFLICT ON CONSTRAINT node_models_pk DO UPDATE
       SET format = EXCLUDED.format, architecture = EXCLUDED.architecture,
           size_bytes = EXCLUDED.size_bytes, memory_bytes = EXCLUDED.memory_bytes,
           context_length = EXCLUDED.context_length, path = EXCLUDED.path,
           scanned_at = EXCLUDED.scanned_at;
    GET DIAGNOSTICS kept = ROW_COUNT;

    IF cortex.setting_bool('auto_register_models') THEN
        INSERT INTO cortex.models (name, source, format, architecture, size_bytes)
        SELECT DISTINCT ON (s.name) s.name, 'scan', s.format, s.architecture, s.size_bytes
          FROM jsonb_to_recordset(scan)
               AS s(name text, format text, architecture text, size_bytes bigint)
         WHERE NOT EXISTS (SELECT 1 FROM cortex.models m WHERE m.name = s.name)
           AND NOT EXISTS (SELECT 1 FROM cortex.model_aliases a WHERE a.alias = s.name)
         ORDER BY s.name
        ON CONFLICT ON CONSTRAINT models_name_uq DO NOTHING;
    END IF;
    RETURN kept;
END
$$;
COMMENT ON FUNCTION cortex.node_models_sync(bigint, jsonb) IS
    'neuron: replaces the node''s cortex.node_models with its latest disk scan (JSON array of '
    '{name, format, architecture, size_bytes, memory_bytes, context_length, path}); entries with '
    'an invalid name or format are skipped with a WARNING. New names join the catalogue when '
    'auto_register_models is on. Returns how many entries were stored.';

CREATE FUNCTION cortex.placement_transition(placement_id bigint, state text,
                                            reason text DEFAULT NULL, epoch bigint DEFAULT NULL)
RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    p cortex.placements;
BEGIN
    IF placement_transition.epoch IS NOT NULL THEN
        PERFORM cortex.lease_check(placement_transition.epoch);
    END IF;
    IF placement_transition.state IS NULL OR placement_transition.state NOT IN
       ('requested', 'loading', 'ready', 'unloading', 'gone', 'failed') THEN
        RAISE EXCEPTION 'unknown placement state "%"', placement_transition.state
            USING ERRCODE = '22023',
                  HINT = 'States: requested, loading, ready, unloading, gone, failed.';
    END IF;
    SELECT * INTO p FROM cortex.placements pl WHERE pl.id = placement_transition.placement_id
       FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'unknown placement %', placement_transition.placement_id
            USING ERRCODE = '42704';
    END IF;
    -- Reporting the current state again is a retry after a lost acknowledgement, not an error.
    IF p.state = placement_transition.state THEN
        RETURN false;
    END IF;

    UPDATE cortex.placements pl
       SET state = placement_transition.state, reason = placement_transition.reason
     WHERE pl.id = p.id;

    IF placement_transition.state = 'failed' AND p.state IN ('requested', 'loading') THEN
        UPDATE cortex.models m
           SET load_failures = m.load_failures + 1,
               last_load_error = placement_transition.reason, last_load_error_at = now()
         WHERE m.id = p.model_id;
    ELSIF placement_transition.state = 'ready' THEN
        UPDATE cortex.models m SET load_failures = 0
         WHERE m.id = p.model_id AND m.load_failures <> 0;
    END IF;
    RETURN true;
END
$$;
COMMENT ON FUNCTION cortex.placement_transition(bigint, text, text, bigint) IS
    'neuron, scheduler: moves a placement to a new state (raises CX002 if illegal; failed needs '
    'a reason). A failed load counts towards models.load_failures, a ready one resets it. '
    'Returns false when the placement is already in that state (an idempotent retry). The '
    'scheduler passes its epoch (checked with lease_check); the neuron passes NULL.';

CREATE FUNCTION cortex.placement_progress(placement_id bigint, bytes_done bigint,
                                          bytes_total bigint)
RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF placement_progress.bytes_done IS NULL OR placement_progress.bytes_done < 0
       OR placement_progress.bytes_total IS NULL
       OR placement_progress.bytes_total < placement_progress.bytes_done THEN
        RAISE EXCEPTION 'invalid load progress % of %', placement_progress.bytes_done,
                        placement_progress.bytes_total
            USING ERRCODE = '22023', HINT = 'Need 0 <= bytes_done <= bytes_total.';
    END IF;
    UPDATE cortex.placements p
       SET progress_bytes = placement_progress.bytes_done,
           progress_total_bytes = placement_progress.bytes_total
     WHERE p.id = placement_progress.placement_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'unknown placement %', placement_progress.placement_id
            USING ERRCODE = '42704';
    END IF;
END
$$;
COMMENT ON FUNCTION cortex.placement_progress(bigint, bigint, bigint) IS
    'neuron: reports load progress (bytes read of total) of a loading placement; raises CX002 '
    'in any other state. Sends no NOTIFY (readers poll progress).';

------------------------------------------------------------------------------------------------
-- gateway
------------------------------------------------------------------------------------------------
CREATE FUNCTION cortex.demand_open(model_id bigint, kind text, node_id bigint, source text)
RETURNS bigint
LANGUAGE sql AS $$
    INSERT INTO cortex.demand AS d (model_id, kind, node_id, source)
    VALUES (demand_open.model_id, demand_open.kind, demand_open.node_id, demand_open.source)
    ON CONFLICT (model_id, kind, (COALESCE(node_id, 0))) WHERE state = 'open' DO UPDATE
       SET wanted_count = d.wanted_count + 1, last_wanted_at = now()
    RETURNING d.id
$$;
COMMENT ON FUNCTION cortex.demand_open(bigint, text, bigint, text) IS
    'internal: opens a demand row or, when one is already open for the same model, kind and '
    'node, bumps it; returns its id. Only a new row sends NOTIFY cortex_demand.';

CREATE FUNCTION cortex.demand_load(model text, source text)
RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    mid bigint;
BEGIN
    PERFORM cortex.check_model_name(demand_load.model);
    mid := cortex.resolve_model(demand_load.model);
    IF mid IS NULL THEN
        RAISE EXCEPTION 'unknown model "%"', demand_load.model USING ERRCODE = '42704';
    END IF;
    IF demand_load.source IS NULL OR length(demand_load.source) NOT BETWEEN 1 AND 200 THEN
        RAISE EXCEPTION 'demand source must be 1 to 200 characters' USING ERRCODE = '22023';
    END IF;
    RETURN cortex.demand_open(mid, 'load', NULL, demand_load.source);
END
$$;
COMMENT ON FUNCTION cortex.demand_load(text, text) IS
    'gateway: asks for a model (name or alias) to be loaded because a request is waiting; '
    'idempotent while the demand is open. Returns the demand id.';

CREATE FUNCTION cortex.placements_touch(ids bigint[])
RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    touched integer;
BEGIN
    UPDATE cortex.placements p SET last_used_at = now()
     WHERE p.id = ANY (placements_touch.ids) AND p.state = 'ready';
    GET DIAGNOSTICS touched = ROW_COUNT;
    RETURN touched;
END
$$;
COMMENT ON FUNCTION cortex.placements_touch(bigint[]) IS
    'gateway: marks ready placements as used now (batched, e.g. once a second per gateway); '
    'feeds LRU eviction and idle unloading. Returns how many were updated.';

------------------------------------------------------------------------------------------------
-- scheduler writes (fenced)
------------------------------------------------------------------------------------------------
CREATE FUNCTION cortex.placement_create(epoch bigint, model_id bigint, node_id bigint,
                                        gpu_ids bigint[], memory_bytes bigint DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    m cortex.models;
    n cortex.nodes;
    pid bigint;
    foreign_gpus integer;
    kinds text[];
BEGIN
    PERFORM cortex.lease_check(placement_create.epoch);
    SELECT * INTO m FROM cortex.models mo WHERE mo.id = placement_create.model_id AND mo.enabled;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'unknown model id %', placement_create.model_id USING ERRCODE = '42704';
    END IF;
    SELECT * INTO n FROM cortex.nodes nd WHERE nd.id = placement_create.node_id FOR SHARE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'unknown node id %', placement_create.node_id USING ERRCODE = '42704';
    END IF;
    IF n.marked_down_at IS NOT NULL OR cortex.node_liveness(n.last_heartbeat_at) = 'dead' THEN
        RAISE EXCEPTION 'node % is down', n.name USING ERRCODE = '55000';
    END IF;
    IF n.draining THEN
        RAISE EXCEPTION 'node % is draining', n.name USING ERRCODE = '55000';
    END IF;
    IF placement_create.gpu_ids IS NULL OR cardinality(placement_create.gpu_ids) = 0
       OR array_position(placement_create.gpu_ids, NULL) IS NOT NULL THEN
        RAISE EXCEPTION 'a placement needs at least one device' USING ERRCODE = '22023';
    END IF;
    IF (SELECT count(DISTINCT g) FROM unnest(placement_create.gpu_ids) g)
       <> cardinality(placement_create.gpu_ids) THEN
        RAISE EXCEPTION 'a placement cannot use the same device twice' USING ERRCODE = '22023';
    END IF;
    SELECT count(*) FILTER (WHERE g.id IS NULL), array_agg(DISTINCT g.kind)
      INTO foreign_gpus, kinds
      FROM unnest(placement_create.gpu_ids) AS want(id)
      LEFT JOIN cortex.gpus g ON g.id = want.id AND g.node_id = n.id;
    IF foreign_gpus > 0 THEN
        RAISE EXCEPTION 'devices % are not all on node %', placement_create.gpu_ids, n.name
            USING ERRCODE = '22023';
    END IF;
    IF 'cpu' = ANY (kinds) AND cardinality(placement_create.gpu_ids) <> 1 THEN
        RAISE EXCEPTION 'a cpu placement uses exactly one device' USING ERRCODE = '22023';
    END IF;
    IF NOT 'cpu' = ANY (kinds) AND cardinality(placement_create.gpu_ids) <> m.tensor_parallel THEN
        RAISE EXCEPTION 'model % needs % device(s) (tensor_parallel), got %', m.name,
                        m.tensor_parallel, cardinality(placement_create.gpu_ids)
            USING ERRCODE = '22023';
    END IF;

    INSERT INTO cortex.placements (model_id, node_id, epoch, memory_bytes)
    VALUES (m.id, n.id, placement_create.epoch, placement_create.memory_bytes)
    RETURNING id INTO pid;
    INSERT INTO cortex.placement_gpus (placement_id, node_id, gpu_id, rank)
    SELECT pid, n.id, g.id, g.ord - 1
      FROM unnest(placement_create.gpu_ids) WITH ORDINALITY AS g(id, ord);
    RETURN pid;
END
$$;
COMMENT ON FUNCTION cortex.placement_create(bigint, bigint, bigint, bigint[], bigint) IS
    'scheduler: creates a placement (state requested) of a model on devices of one live, '
    'non-draining node; gpu_ids are in tensor-parallel rank order and must number '
    'models.tensor_parallel (one device for cpu). Epoch-checked. Returns the placement id.';

CREATE FUNCTION cortex.demand_resolve(epoch bigint, demand_id bigint, state text,
                                      reason text DEFAULT NULL, placement_id bigint DEFAULT NULL)
RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    d cortex.demand;
BEGIN
    PERFORM cortex.lease_check(demand_resolve.epoch);
    IF demand_resolve.state IS NULL
       OR demand_resolve.state NOT IN ('satisfied', 'failed', 'expired', 'cancelled') THEN
        RAISE EXCEPTION 'invalid demand resolution "%"', demand_resolve.state
            USING ERRCODE = '22023', HINT = 'Use satisfied, failed, expired or cancelled.';
    END IF;
    UPDATE cortex.demand de
       SET state = demand_resolve.state, reason = demand_resolve.reason, resolved_at = now(),
           epoch = demand_resolve.epoch, placement_id = demand_resolve.placement_id
     WHERE de.id = demand_resolve.demand_id AND de.state = 'open'
    RETURNING * INTO d;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    PERFORM cortex.record_event('demand.' || d.state, d.reason,
                                jsonb_build_object('kind', d.kind, 'source', d.source,
                                                   'wanted_count', d.wanted_count),
                                (SELECT m.name FROM cortex.models m WHERE m.id = d.model_id),
                                (SELECT n.name FROM cortex.nodes n WHERE n.id = d.node_id),
                                d.placement_id, d.id);
    RETURN true;
END
$$;
COMMENT ON FUNCTION cortex.demand_resolve(bigint, bigint, text, text, bigint) IS
    'scheduler: closes an open demand row as satisfied, failed, expired or cancelled; '
    'epoch-checked; false when it was no longer open.';

CREATE FUNCTION cortex.mark_dead_nodes(epoch bigint)
RETURNS SETOF bigint
LANGUAGE plpgsql AS $$
DECLARE
    n cortex.nodes;
    why text;
BEGIN
    PERFORM cortex.lease_check(mark_dead_nodes.epoch);
    FOR n IN
        SELECT * FROM cortex.nodes nd
         WHERE nd.marked_down_at IS NULL AND cortex.node_liveness(nd.last_heartbeat_at) = 'dead'
         ORDER BY nd.id
           FOR UPDATE
    LOOP
        why := format('no heartbeat for %s (grace %s)',
                      date_trunc('second', now() - n.last_heartbeat_at),
                      cortex.setting('heartbeat_grace'));
        UPDATE cortex.nodes nd SET marked_down_at = now(), down_reason = why WHERE nd.id = n.id;
        UPDATE cortex.placements p
           SET state = CASE WHEN p.state = 'unloading' THEN 'gone' ELSE 'failed' END,
               reason = 'node down: ' || why
         WHERE p.node_id = n.id AND p.state IN ('requested', 'loading', 'ready', 'unloading');
        PERFORM cortex.record_event('node.down', why, '{}', NULL, n.name);
        RETURN NEXT n.id;
    END LOOP;
END
$$;
COMMENT ON FUNCTION cortex.mark_dead_nodes(bigint) IS
    'scheduler: marks down every node whose latest heartbeat is older than heartbeat_grace by '
    'the database clock and ends its live placements (failed; unloading ones gone) without '
    'counting them as load failures. Epoch-checked. Returns the ids it marked.';
