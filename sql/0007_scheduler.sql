-- sql/0007_scheduler.sql — what the scheduler needs beyond 0004: moves, retries, failover.
--
-- What: placements.replaces_id and cortex.placement_move (a replica moved make-before-break by
-- drain or defragmentation: the new placement names the one it replaces, which the scheduler
-- unloads once the new one is ready); cortex.model_retry_loads (new demand after a model hit
-- max_load_attempts asks again); cortex.demand_failover (models lost with a dead node that were
-- in use get load demand, so they are placed again on live nodes); the setting
-- evict_in_flight (the operator forces eviction of replicas that have requests in flight).
-- Why: the scheduler keeps no state of its own that a successor would need. A move in progress
-- must survive a change of leader, so it lives in the placement row; every write is fenced by
-- the leader's epoch like those of 0004.
--
-- replaces_id has no foreign key on purpose: deleting a node cascades to its placements, and a
-- SET NULL on a terminal placement elsewhere would be refused by the state machine trigger.
-- The scheduler treats an id that no longer names a live placement as "nothing to replace".

ALTER TABLE cortex.placements ADD COLUMN replaces_id bigint;
ALTER TABLE cortex.placements
    ADD CONSTRAINT placements_replaces_ck CHECK (replaces_id IS NULL OR replaces_id <> id);
CREATE INDEX placements_replaces_ix ON cortex.placements (replaces_id)
    WHERE replaces_id IS NOT NULL;
COMMENT ON COLUMN cortex.placements.replaces_id IS
    'For a move (drain, defragmentation): the placement this one replaces; the scheduler '
    'unloads that one once this one is ready. NULL for an ordinary placement.';

INSERT INTO cortex.settings (key, kind, value, default_value, allowed, min_value, description)
VALUES ('evict_in_flight', 'boolean', 'false', 'false', NULL, NULL,
        'Let the scheduler evict replicas that have requests in flight (those requests fail). '
        'Off: such replicas are skipped and the waiting model waits for room.');

CREATE FUNCTION cortex.placement_move(epoch bigint, placement_id bigint, node_id bigint,
                                      gpu_ids bigint[], memory_bytes bigint DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    src cortex.placements;
    pid bigint;
BEGIN
    PERFORM cortex.lease_check(placement_move.epoch);
    SELECT * INTO src FROM cortex.placements p WHERE p.id = placement_move.placement_id
       FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'unknown placement %', placement_move.placement_id
            USING ERRCODE = '42704';
    END IF;
    IF src.state NOT IN ('loading', 'ready') THEN
        RAISE EXCEPTION 'placement % is %: only a loading or ready placement can be moved',
                        src.id, src.state
            USING ERRCODE = '55000';
    END IF;
    IF EXISTS (SELECT 1 FROM cortex.placements p
                WHERE p.replaces_id = src.id
                  AND p.state IN ('requested', 'loading', 'ready', 'unloading')) THEN
        RAISE EXCEPTION 'placement % is already being moved', src.id
            USING ERRCODE = '55000';
    END IF;
    pid := cortex.placement_create(placement_move.epoch, src.model_id, placement_move.node_id,
                                   placement_move.gpu_ids,
                                   COALESCE(placement_move.memory_bytes, src.memory_bytes));
    UPDATE cortex.placements p SET replaces_id = src.id WHERE p.id = pid;
    RETURN pid;
END
$$;
COMMENT ON FUNCTION cortex.placement_move(bigint, bigint, bigint, bigint[], bigint) IS
    'scheduler: starts moving a loading or ready placement: creates its replacement (state '
    'requested, same model) on the given devices, like placement_create, with replaces_id set. '
    'The old placement keeps serving until the scheduler unloads it. Epoch-checked; returns '
    'the new placement id.';

CREATE FUNCTION cortex.model_retry_loads(epoch bigint, model_id bigint)
RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM cortex.lease_check(model_retry_loads.epoch);
    UPDATE cortex.models m SET load_failures = 0
     WHERE m.id = model_retry_loads.model_id AND m.load_failures > 0;
    RETURN FOUND;
END
$$;
COMMENT ON FUNCTION cortex.model_retry_loads(bigint, bigint) IS
    'scheduler: resets a model''s failed-load count because new demand asks for it again '
    '(cortex.request_load does the same for operators). Epoch-checked; false when there was '
    'nothing to reset.';

CREATE FUNCTION cortex.demand_failover(epoch bigint, node_id bigint)
RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    m record;
    opened integer := 0;
BEGIN
    PERFORM cortex.lease_check(demand_failover.epoch);
    -- now() is the transaction's start: these are the placements that mark_dead_nodes ended
    -- earlier in this same transaction.
    FOR m IN
        SELECT DISTINCT p.model_id
          FROM cortex.placements p
          JOIN cortex.models mo ON mo.id = p.model_id
         WHERE p.node_id = demand_failover.node_id AND p.state = 'failed'
           AND p.ended_at = now() AND p.reason LIKE 'node down:%' AND mo.enabled
           AND COALESCE(p.last_used_at, p.ready_at, p.created_at)
               > now() - COALESCE(mo.idle_ttl, cortex.setting_interval('idle_ttl'))
         ORDER BY p.model_id
    LOOP
        PERFORM cortex.demand_open(m.model_id, 'load', NULL, 'scheduler:failover');
        opened := opened + 1;
    END LOOP;
    RETURN opened;
END
$$;
COMMENT ON FUNCTION cortex.demand_failover(bigint, bigint) IS
    'scheduler: after cortex.mark_dead_nodes, in the same transaction, opens load demand '
    '(source scheduler:failover) for every model whose placement on the node was just ended '
    'and that was used within its idle TTL, so it is placed again on a live node. '
    'Epoch-checked; returns how many models it asked for.';
