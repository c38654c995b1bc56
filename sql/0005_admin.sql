-- sql/0005_admin.sql — the operator's psql interface.
--
-- What: functions to add, alias, remove and configure models (pin, priority, idle TTL, replicas,
-- tensor parallelism), to request loads and unloads, to drain and remove nodes, to create,
-- look up and revoke API keys, and to change settings.
-- Why: operators administer the fleet from psql (DESIGN.md). Each function validates its input
-- and raises a short message with SQLSTATE 22023 (bad value), 42704 (unknown object), 23505
-- (name taken) or 55000 (wrong state), a detail and a hint; each successful call writes an
-- admin.* event naming the database role. Arguments are only ever used as values, never
-- spliced into SQL text, so a name containing SQL stays data.

------------------------------------------------------------------------------------------------
-- lookups
------------------------------------------------------------------------------------------------
CREATE FUNCTION cortex.model_require(name text)
RETURNS cortex.models
LANGUAGE plpgsql STABLE AS $$
DECLARE
    m cortex.models;
BEGIN
    PERFORM cortex.check_model_name(model_require.name);
    SELECT * INTO m FROM cortex.models mo WHERE mo.id = cortex.resolve_model(model_require.name);
    IF NOT FOUND THEN
        RAISE EXCEPTION 'unknown model "%"', model_require.name
            USING ERRCODE = '42704',
                  HINT = 'SELECT name, aliases FROM cortex.model_status lists the catalogue.';
    END IF;
    RETURN m;
END
$$;
COMMENT ON FUNCTION cortex.model_require(text) IS
    'internal: the enabled model a name or alias means; raises 22023 for an empty or malformed '
    'name and 42704 for an unknown one.';

CREATE FUNCTION cortex.node_require(name text)
RETURNS cortex.nodes
LANGUAGE plpgsql STABLE AS $$
DECLARE
    n cortex.nodes;
BEGIN
    PERFORM cortex.check_node_name(node_require.name);
    SELECT * INTO n FROM cortex.nodes nd WHERE nd.name = node_require.name;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'unknown node "%"', node_require.name
            USING ERRCODE = '42704', HINT = 'SELECT node FROM cortex.fleet_status lists the nodes.';
    END IF;
    RETURN n;
END
$$;
COMMENT ON FUNCTION cortex.node_require(text) IS
    'internal: the node of that name; raises 22023 for a malformed name and 42704 for an '
    'unknown one.';

CREATE FUNCTION cortex.check_priority(priority integer)
RETURNS integer
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF check_priority.priority IS NULL OR check_priority.priority < 0 THEN
        RAISE EXCEPTION 'priority must be zero or more, not %',
                        COALESCE(check_priority.priority::text, 'NULL')
            USING ERRCODE = '22023', HINT = 'Higher priorities are evicted last.';
    END IF;
    RETURN check_priority.priority;
END
$$;
COMMENT ON FUNCTION cortex.check_priority(integer) IS
    'internal: returns a valid priority (>= 0) or raises 22023.';

CREATE FUNCTION cortex.check_tensor_parallel(degree integer)
RETURNS integer
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF check_tensor_parallel.degree IS NULL OR check_tensor_parallel.degree NOT BETWEEN 1 AND 64 THEN
        RAISE EXCEPTION 'tensor_parallel must be between 1 and 64, not %',
                        COALESCE(check_tensor_parallel.degree::text, 'NULL')
            USING ERRCODE = '22023';
    END IF;
    RETURN check_tensor_parallel.degree;
END
$$;
COMMENT ON FUNCTION cortex.check_tensor_parallel(integer) IS
    'internal: returns a valid tensor-parallel degree (1-64) or raises 22023.';

------------------------------------------------------------------------------------------------
-- models
------------------------------------------------------------------------------------------------
CREATE FUNCTION cortex.add_model(name text, tensor_parallel integer DEFAULT 1,
                                 priority integer DEFAULT 0, memory_bytes bigint DEFAULT NULL,
                                 context_length integer DEFAULT NULL, format text DEFAULT NULL,
                                 display_name text DEFAULT NULL, description text DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    old cortex.models;
    mid bigint;
BEGIN
    PERFORM cortex.check_model_name(add_model.name);
    PERFORM cortex.check_tensor_parallel(add_model.tensor_parallel);
    PERFORM cortex.check_priority(add_model.priority);
    IF add_model.memory_bytes IS NOT NULL AND add_model.memory_bytes <= 0 THEN
        RAISE EXCEPTION 'memory_bytes must be positive, not %', add_model.memory_bytes
            USING ERRCODE = '22023';
    END IF;
    IF add_model.context_length IS NOT NULL AND add_model.context_length <= 0 THEN
        RAISE EXCEPTION 'context_length must be positive, not %', add_model.context_length
            USING ERRCODE = '22023';
    END IF;
    IF add_model.format IS NOT NULL AND add_model.format NOT IN ('gguf', 'hf') THEN
        RAISE EXCEPTION 'invalid model format "%"', add_model.format
            USING ERRCODE = '22023', HINT = 'Use gguf, hf or NULL (whatever the nodes hold).';
    END IF;
    IF length(add_model.display_name) > 200 OR length(add_model.description) > 4000 THEN
        RAISE EXCEPTION 'display_name is limited to 200 characters, description to 4000'
            USING ERRCODE = '22023';
    END IF;

    SELECT * INTO old FROM cortex.models mo WHERE mo.name = add_model.name FOR UPDATE;
    IF FOUND AND old.enabled THEN
        RAISE EXCEPTION 'model "%" already exists', add_model.name
            USING ERRCODE = '23505',
                  HINT = 'Change it with cortex.set_priority, cortex.set_tensor_parallel, '
                         'cortex.set_replicas, cortex.set_idle_ttl or cortex.pin_model.';
    END IF;
    IF FOUND THEN
        UPDATE cortex.models mo
           SET enabled = true, source = 'operator', tensor_parallel = add_model.tensor_parallel,
               priority = add_model.priority, memory_bytes = add_model.memory_bytes,
               context_length = add_model.context_length, format = add_model.format,
               display_name = add_model.display_name, description = add_model.description,
               load_failures = 0
         WHERE mo.id = old.id;
        mid := old.id;
        RAISE NOTICE 'model "%" was removed earlier and is enabled again', add_model.name;
    ELSE
        INSERT INTO cortex.models AS mo (name, tensor_parallel, priority, memory_bytes,
                                         context_length, format, display_name, description)
        VALUES (add_model.name, add_model.tensor_parallel, add_model.priority,
                add_model.memory_bytes, add_model.context_length, add_model.format,
                add_model.display_name, add_model.description)
        RETURNING mo.id INTO mid;
    END IF;
    PERFORM cortex.record_event('admin.model_added', NULL,
                                jsonb_build_object('tensor_parallel', add_model.tensor_parallel,
                                                   'priority', add_model.priority,
                                                   'memory_bytes', add_model.memory_bytes),
                                add_model.name);
    RETURN mid;
END
$$;
COMMENT ON FUNCTION cortex.add_model(text, integer, integer, bigint, integer, text, text, text) IS
    'admin: adds a model to the catalogue (or enables one removed earlier) and returns its id. '
    'Example: SELECT cortex.add_model(''qwen3.6-27b'', tensor_parallel => 2);';

CREATE FUNCTION cortex.remove_model(name text)
RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    m cortex.models;
    live integer;
    holders text;
BEGIN
    PERFORM cortex.check_model_name(remove_model.name);
    IF EXISTS (SELECT 1 FROM cortex.model_aliases a WHERE a.alias = remove_model.name) THEN
        RAISE EXCEPTION '"%" is an alias, not a model', remove_model.name
            USING ERRCODE = '22023',
                  HINT = format('Remove the alias with SELECT cortex.unalias_model(%L);',
                                remove_model.name);
    END IF;
    SELECT * INTO m FROM cortex.models mo
     WHERE mo.name = remove_model.name AND mo.enabled FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'unknown model "%"', remove_model.name USING ERRCODE = '42704';
    END IF;
    SELECT count(*) INTO live FROM cortex.placements p
     WHERE p.model_id = m.id AND p.state IN ('requested', 'loading', 'ready', 'unloading');
    IF live > 0 THEN
        RAISE EXCEPTION 'model "%" still has % live placement(s)', m.name, live
            USING ERRCODE = '55000',
                  HINT = format('Unload it first (SELECT cortex.request_unload(%L);) and wait '
                                'until cortex.placement_status shows none live.', m.name);
    END IF;

    UPDATE cortex.demand d
       SET state = 'cancelled', reason = 'model removed', resolved_at = now()
     WHERE d.model_id = m.id AND d.state = 'open';

    SELECT string_agg(n.name, ', ' ORDER BY n.name) INTO holders
      FROM cortex.node_models nm JOIN cortex.nodes n ON n.id = nm.node_id
     WHERE nm.name = m.name;
    IF holders IS NOT NULL THEN
        -- Keep a disabled row so that the nodes' next scan does not register it again.
        UPDATE cortex.models mo
           SET enabled = false, pinned = false, min_replicas = 0
         WHERE mo.id = m.id;
        DELETE FROM cortex.model_aliases a WHERE a.model_id = m.id;
        RAISE NOTICE 'model "%" is hidden from the catalogue; nodes % still hold its files',
                     m.name, holders;
    ELSE
        DELETE FROM cortex.models mo WHERE mo.id = m.id;
    END IF;
    PERFORM cortex.record_event('admin.model_removed', NULL,
                                jsonb_build_object('files_on', holders), m.name);
END
$$;
COMMENT ON FUNCTION cortex.remove_model(text) IS
    'admin: removes a model and its aliases from the catalogue (refused while it has live '
    'placements). If nodes still hold its files it is kept disabled so scans do not re-add it.';

CREATE FUNCTION cortex.alias_model(alias text, model text)
RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    m cortex.models;
    previous text;
BEGIN
    IF alias_model.alias IS NULL OR btrim(alias_model.alias) = '' THEN
        RAISE EXCEPTION 'alias must not be empty' USING ERRCODE = '22023';
    END IF;
    IF alias_model.alias !~ '^[A-Za-z0-9][A-Za-z0-9._:/-]{0,126}[*]?$' THEN
        RAISE EXCEPTION 'invalid alias "%"', alias_model.alias
            USING ERRCODE = '22023',
                  DETAIL = 'Aliases start with a letter or digit, use only letters, digits and '
                           '. _ - : / and may end in * to match every name with that prefix.';
    END IF;
    m := cortex.model_require(alias_model.model);
    IF EXISTS (SELECT 1 FROM cortex.models mo WHERE mo.name = alias_model.alias) THEN
        RAISE EXCEPTION 'alias "%" is already the name of a model', alias_model.alias
            USING ERRCODE = '23505';
    END IF;

    SELECT mo.name INTO previous
      FROM cortex.model_aliases a JOIN cortex.models mo ON mo.id = a.model_id
     WHERE a.alias = alias_model.alias FOR UPDATE OF a;
    IF previous = m.name THEN
        RAISE NOTICE 'alias "%" already points to "%"', alias_model.alias, m.name;
        RETURN;
    ELSIF previous IS NOT NULL THEN
        UPDATE cortex.model_aliases a
           SET model_id = m.id, created_at = now(), created_by = session_user
         WHERE a.alias = alias_model.alias;
        RAISE NOTICE 'alias "%" moved from "%" to "%"', alias_model.alias, previous, m.name;
    ELSE
        INSERT INTO cortex.model_aliases (alias, model_id) VALUES (alias_model.alias, m.id);
    END IF;
    PERFORM cortex.record_event('admin.alias_set', NULL,
                                jsonb_build_object('alias', alias_model.alias,
                                                   'previous', previous),
                                m.name);
END
$$;
COMMENT ON FUNCTION cortex.alias_model(text, text) IS
    'admin: makes alias resolve to a model (creating or re-pointing it). An alias ending in * '
    'matches by prefix. Example: SELECT cortex.alias_model(''claude-sonnet-*'', ''qwen3.6-27b'');';

CREATE FUNCTION cortex.unalias_model(alias text)
RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    target text;
BEGIN
    IF unalias_model.alias IS NULL OR btrim(unalias_model.alias) = '' THEN
        RAISE EXCEPTION 'alias must not be empty' USING ERRCODE = '22023';
    END IF;
    DELETE FROM cortex.model_aliases a WHERE a.alias = unalias_model.alias
    RETURNING (SELECT mo.name FROM cortex.models mo WHERE mo.id = a.model_id) INTO target;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'unknown alias "%"', unalias_model.alias
            USING ERRCODE = '42704', HINT = 'SELECT * FROM cortex.model_aliases lists them.';
    END IF;
    PERFORM cortex.record_event('admin.alias_removed', NULL,
                                jsonb_build_object('alias', unalias_model.alias), target);
END
$$;
COMMENT ON FUNCTION cortex.unalias_model(text) IS 'admin: deletes an alias.';

CREATE FUNCTION cortex.pin_model(name text)
RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    m cortex.models := cortex.model_require(pin_model.name);
BEGIN
    UPDATE cortex.models mo SET pinned = true WHERE mo.id = m.id;
    PERFORM cortex.record_event('admin.pinned', NULL, '{}', m.name);
END
$$;
COMMENT ON FUNCTION cortex.pin_model(text) IS
    'admin: pins a model: the scheduler keeps at least one replica loaded and never evicts it.';

CREATE FUNCTION cortex.unpin_model(name text)
RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    m cortex.models := cortex.model_require(unpin_model.name);
BEGIN
    UPDATE cortex.models mo SET pinned = false WHERE mo.id = m.id;
    PERFORM cortex.record_event('admin.unpinned', NULL, '{}', m.name);
END
$$;
COMMENT ON FUNCTION cortex.unpin_model(text) IS
    'admin: unpins a model: it may be evicted and idle-unloaded again.';

CREATE FUNCTION cortex.set_priority(name text, priority integer)
RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    m cortex.models := cortex.model_require(set_priority.name);
BEGIN
    PERFORM cortex.check_priority(set_priority.priority);
    UPDATE cortex.models mo SET priority = set_priority.priority WHERE mo.id = m.id;
    PERFORM cortex.record_event('admin.priority_set', NULL,
                                jsonb_build_object('priority', set_priority.priority,
                                                   'previous', m.priority),
                                m.name);
END
$$;
COMMENT ON FUNCTION cortex.set_priority(text, integer) IS
    'admin: sets a model''s eviction priority (>= 0; higher is kept longer under '
    'eviction_strategy = priority).';

CREATE FUNCTION cortex.set_idle_ttl(name text, idle_ttl interval)
RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    m cortex.models := cortex.model_require(set_idle_ttl.name);
BEGIN
    IF set_idle_ttl.idle_ttl IS NOT NULL AND set_idle_ttl.idle_ttl <= interval '0' THEN
        RAISE EXCEPTION 'idle_ttl must be positive, not %', set_idle_ttl.idle_ttl
            USING ERRCODE = '22023',
                  HINT = 'Pass NULL to use the idle_ttl setting; pin the model to never unload it.';
    END IF;
    UPDATE cortex.models mo SET idle_ttl = set_idle_ttl.idle_ttl WHERE mo.id = m.id;
    PERFORM cortex.record_event('admin.idle_ttl_set', NULL,
                                jsonb_build_object('idle_ttl', set_idle_ttl.idle_ttl), m.name);
END
$$;
COMMENT ON FUNCTION cortex.set_idle_ttl(text, interval) IS
    'admin: sets how long an unused replica of the model stays loaded (NULL = the idle_ttl '
    'setting).';

CREATE FUNCTION cortex.set_replicas(name text, min_replicas integer,
                                    max_replicas integer DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    m cortex.models := cortex.model_require(set_replicas.name);
    hi integer;
BEGIN
    IF set_replicas.min_replicas IS NULL OR set_replicas.min_replicas < 0 THEN
        RAISE EXCEPTION 'min_replicas must be zero or more, not %',
                        COALESCE(set_replicas.min_replicas::text, 'NULL')
            USING ERRCODE = '22023';
    END IF;
    hi := COALESCE(set_replicas.max_replicas, GREATEST(m.max_replicas, set_replicas.min_replicas, 1));
    IF hi < 1 OR hi < set_replicas.min_replicas THEN
        RAISE EXCEPTION 'max_replicas (%) must be at least 1 and at least min_replicas (%)',
                        hi, set_replicas.min_replicas
            USING ERRCODE = '22023';
    END IF;
    UPDATE cortex.models mo
       SET min_replicas = set_replicas.min_replicas, max_replicas = hi
     WHERE mo.id = m.id;
    PERFORM cortex.record_event('admin.replicas_set', NULL,
                                jsonb_build_object('min_replicas', set_replicas.min_replicas,
                                                   'max_replicas', hi),
                                m.name);
END
$$;
COMMENT ON FUNCTION cortex.set_replicas(text, integer, integer) IS
    'admin: sets how many replicas the scheduler keeps loaded without demand (min) and may '
    'place at most (max; NULL keeps the current maximum, raised to min if needed).';

CREATE FUNCTION cortex.set_tensor_parallel(name text, degree integer)
RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    m cortex.models := cortex.model_require(set_tensor_parallel.name);
BEGIN
    PERFORM cortex.check_tensor_parallel(set_tensor_parallel.degree);
    UPDATE cortex.models mo SET tensor_parallel = set_tensor_parallel.degree WHERE mo.id = m.id;
    IF EXISTS (SELECT 1 FROM cortex.placements p
                WHERE p.model_id = m.id AND p.state IN ('requested', 'loading', 'ready')) THEN
        RAISE NOTICE 'live replicas of "%" keep their current layout until they are reloaded',
                     m.name;
    END IF;
    PERFORM cortex.record_event('admin.tensor_parallel_set', NULL,
                                jsonb_build_object('tensor_parallel', set_tensor_parallel.degree,
                                                   'previous', m.tensor_parallel),
                                m.name);
END
$$;
COMMENT ON FUNCTION cortex.set_tensor_parallel(text, integer) IS
    'admin: sets how many GPUs of one node each new replica of the model spans.';

------------------------------------------------------------------------------------------------
-- loads, unloads, nodes
------------------------------------------------------------------------------------------------
CREATE FUNCTION cortex.request_load(model text, node text DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    m cortex.models := cortex.model_require(request_load.model);
    n cortex.nodes;
    did bigint;
BEGIN
    IF request_load.node IS NOT NULL THEN
        n := cortex.node_require(request_load.node);
        IF n.draining THEN
            RAISE EXCEPTION 'node "%" is draining', n.name
                USING ERRCODE = '55000',
                      HINT = format('SELECT cortex.undrain_node(%L); to use it again.', n.name);
        END IF;
        IF n.marked_down_at IS NOT NULL THEN
            RAISE EXCEPTION 'node "%" is down', n.name USING ERRCODE = '55000';
        END IF;
    END IF;
    -- An operator asking again is the way to retry a model that hit max_load_attempts.
    UPDATE cortex.models mo SET load_failures = 0 WHERE mo.id = m.id AND mo.load_failures <> 0;
    did := cortex.demand_open(m.id, 'load', n.id, 'operator:' || session_user);
    PERFORM cortex.record_event('admin.load_requested', NULL, '{}', m.name, n.name, NULL, did);
    RETURN did;
END
$$;
COMMENT ON FUNCTION cortex.request_load(text, text) IS
    'admin: asks the scheduler to load a model (anywhere, or on the named node) and resets its '
    'failed-load count; returns the demand id (the same one while it is open).';

CREATE FUNCTION cortex.request_unload(model text, node text DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    m cortex.models := cortex.model_require(request_unload.model);
    n cortex.nodes;
    did bigint;
BEGIN
    IF request_unload.node IS NOT NULL THEN
        n := cortex.node_require(request_unload.node);
    END IF;
    IF m.pinned THEN
        RAISE EXCEPTION 'model "%" is pinned', m.name
            USING ERRCODE = '55000',
                  HINT = format('The scheduler would load it again: SELECT cortex.unpin_model(%L); '
                                'first.', m.name);
    END IF;
    IF NOT EXISTS (SELECT 1 FROM cortex.placements p
                    WHERE p.model_id = m.id
                      AND p.state IN ('requested', 'loading', 'ready')
                      AND (n.id IS NULL OR p.node_id = n.id)) THEN
        RAISE EXCEPTION 'model "%" is not loaded%', m.name,
                        CASE WHEN n.id IS NULL THEN '' ELSE format(' on node "%s"', n.name) END
            USING ERRCODE = '55000';
    END IF;
    did := cortex.demand_open(m.id, 'unload', n.id, 'operator:' || session_user);
    PERFORM cortex.record_event('admin.unload_requested', NULL, '{}', m.name, n.name, NULL, did);
    RETURN did;
END
$$;
COMMENT ON FUNCTION cortex.request_unload(text, text) IS
    'admin: asks the scheduler to unload a model (everywhere, or on the named node); refused '
    'for pinned or unloaded models. Returns the demand id.';

CREATE FUNCTION cortex.drain_node(node text)
RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    n cortex.nodes := cortex.node_require(drain_node.node);
BEGIN
    IF n.draining THEN
        RAISE NOTICE 'node "%" is already draining', n.name;
        RETURN;
    END IF;
    UPDATE cortex.nodes nd SET draining = true, drain_requested_at = now() WHERE nd.id = n.id;
    PERFORM cortex.record_event('admin.node_drain', NULL, '{}', NULL, n.name);
END
$$;
COMMENT ON FUNCTION cortex.drain_node(text) IS
    'admin: drains a node: no new placements there; the scheduler moves its models elsewhere '
    'and unloads them. The flag survives neuron restarts.';

CREATE FUNCTION cortex.undrain_node(node text)
RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    n cortex.nodes := cortex.node_require(undrain_node.node);
BEGIN
    IF NOT n.draining THEN
        RAISE NOTICE 'node "%" is not draining', n.name;
        RETURN;
    END IF;
    UPDATE cortex.nodes nd SET draining = false WHERE nd.id = n.id;
    PERFORM cortex.record_event('admin.node_undrain', NULL, '{}', NULL, n.name);
END
$$;
COMMENT ON FUNCTION cortex.undrain_node(text) IS 'admin: lets the scheduler use a drained node again.';

CREATE FUNCTION cortex.remove_node(node text)
RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    n cortex.nodes := cortex.node_require(remove_node.node);
BEGIN
    IF n.marked_down_at IS NULL AND cortex.node_liveness(n.last_heartbeat_at) <> 'dead' THEN
        RAISE EXCEPTION 'node "%" is still alive', n.name
            USING ERRCODE = '55000',
                  HINT = 'Drain it, stop its neuron and wait until fleet_status shows it dead.';
    END IF;
    IF EXISTS (SELECT 1 FROM cortex.placements p
                WHERE p.node_id = n.id AND p.state IN ('requested', 'loading', 'ready', 'unloading')) THEN
        RAISE EXCEPTION 'node "%" still has live placements', n.name
            USING ERRCODE = '55000',
                  HINT = 'The scheduler ends them when it marks the node down.';
    END IF;
    DELETE FROM cortex.nodes nd WHERE nd.id = n.id;
    PERFORM cortex.record_event('admin.node_removed', NULL,
                                jsonb_build_object('endpoint', n.endpoint), NULL, n.name);
END
$$;
COMMENT ON FUNCTION cortex.remove_node(text) IS
    'admin: forgets a dead node (decommissioned host) with its devices, files and placement '
    'history. Refused while it heartbeats or has live placements.';

------------------------------------------------------------------------------------------------
-- API keys
------------------------------------------------------------------------------------------------
CREATE FUNCTION cortex.create_api_key(name text, requests_per_minute integer DEFAULT NULL,
                                      tokens_per_minute integer DEFAULT NULL,
                                      expires_in interval DEFAULT NULL,
                                      OUT id bigint, OUT prefix text, OUT secret text)
RETURNS record
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    IF create_api_key.name IS NULL OR btrim(create_api_key.name) = '' THEN
        RAISE EXCEPTION 'api key name must not be empty' USING ERRCODE = '22023',
            HINT = 'Name it after who or what uses it, e.g. ''zed on alice-laptop''.';
    END IF;
    IF length(create_api_key.name) > 200 THEN
        RAISE EXCEPTION 'api key name is limited to 200 characters' USING ERRCODE = '22023';
    END IF;
    IF create_api_key.requests_per_minute <= 0 OR create_api_key.tokens_per_minute <= 0 THEN
        RAISE EXCEPTION 'rate limits must be positive (NULL = unlimited)' USING ERRCODE = '22023';
    END IF;
    IF create_api_key.expires_in <= interval '0' THEN
        RAISE EXCEPTION 'expires_in must be positive, not %', create_api_key.expires_in
            USING ERRCODE = '22023';
    END IF;

    -- 64 hex digits from two version-4 UUIDs: 244 random bits from the server's strong random
    -- source (gen_random_uuid is in core PostgreSQL, no extension needed).
    secret := 'cx_' || replace(gen_random_uuid()::text, '-', '')
                    || replace(gen_random_uuid()::text, '-', '');
    prefix := left(secret, 11);
    INSERT INTO cortex.api_keys AS k (name, prefix, secret_sha256, requests_per_minute,
                                      tokens_per_minute, expires_at)
    VALUES (create_api_key.name, create_api_key.prefix,
            sha256(convert_to(create_api_key.secret, 'UTF8')),
            create_api_key.requests_per_minute, create_api_key.tokens_per_minute,
            now() + create_api_key.expires_in)
    RETURNING k.id INTO create_api_key.id;
    PERFORM cortex.record_event('admin.api_key_created', NULL,
                                jsonb_build_object('id', create_api_key.id,
                                                   'prefix', create_api_key.prefix,
                                                   'name', create_api_key.name));
END
$$;
COMMENT ON FUNCTION cortex.create_api_key(text, integer, integer, interval) IS
    'admin: creates an API key and returns (id, prefix, secret). The secret is shown this once: '
    'only its SHA-256 is stored. Example: SELECT * FROM cortex.create_api_key(''ci'', '
    'requests_per_minute => 600);';

CREATE FUNCTION cortex.api_key_lookup(secret text)
RETURNS TABLE (id bigint, name text, requests_per_minute integer, tokens_per_minute integer)
LANGUAGE sql STABLE AS $$
    SELECT k.id, k.name, k.requests_per_minute, k.tokens_per_minute
      FROM cortex.api_keys k
     WHERE k.secret_sha256 = sha256(convert_to(api_key_lookup.secret, 'UTF8'))
       AND k.revoked_at IS NULL
       AND (k.expires_at IS NULL OR k.expires_at > now())
$$;
COMMENT ON FUNCTION cortex.api_key_lookup(text) IS
    'gateway: the active (not revoked, not expired) key whose secret this is, with its limits; '
    'no row when there is none.';

CREATE FUNCTION cortex.revoke_api_key(id bigint)
RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    k cortex.api_keys;
BEGIN
    SELECT * INTO k FROM cortex.api_keys ak WHERE ak.id = revoke_api_key.id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'unknown api key %', COALESCE(revoke_api_key.id::text, 'NULL')
            USING ERRCODE = '42704', HINT = 'SELECT id, name, prefix FROM cortex.api_keys;';
    END IF;
    IF k.revoked_at IS NOT NULL THEN
        RAISE EXCEPTION 'api key % (%) is already revoked', k.id, k.prefix
            USING ERRCODE = '55000', DETAIL = format('Revoked at %s by %s.', k.revoked_at,
                                                     k.revoked_by);
    END IF;
    UPDATE cortex.api_keys ak SET revoked_at = now(), revoked_by = session_user
     WHERE ak.id = k.id;
    PERFORM cortex.record_event('admin.api_key_revoked', NULL,
                                jsonb_build_object('id', k.id, 'prefix', k.prefix,
                                                   'name', k.name));
END
$$;
COMMENT ON FUNCTION cortex.revoke_api_key(bigint) IS
    'admin: revokes an API key by id; gateways reject it from their next lookup.';

CREATE FUNCTION cortex.revoke_api_key(prefix text)
RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    ids bigint[];
BEGIN
    IF revoke_api_key.prefix IS NULL OR btrim(revoke_api_key.prefix) = '' THEN
        RAISE EXCEPTION 'api key prefix must not be empty' USING ERRCODE = '22023';
    END IF;
    SELECT array_agg(ak.id) INTO ids FROM cortex.api_keys ak
     WHERE ak.prefix = revoke_api_key.prefix AND ak.revoked_at IS NULL;
    IF ids IS NULL THEN
        RAISE EXCEPTION 'no active api key has prefix "%"', revoke_api_key.prefix
            USING ERRCODE = '42704', HINT = 'SELECT id, name, prefix, revoked_at FROM cortex.api_keys;';
    END IF;
    IF cardinality(ids) > 1 THEN
        RAISE EXCEPTION 'prefix "%" matches % active keys', revoke_api_key.prefix, cardinality(ids)
            USING ERRCODE = '22023', HINT = 'Revoke by id: SELECT cortex.revoke_api_key(<id>);';
    END IF;
    PERFORM cortex.revoke_api_key(ids[1]);
END
$$;
COMMENT ON FUNCTION cortex.revoke_api_key(text) IS
    'admin: revokes the active API key with this visible prefix (cx_xxxxxxxx).';

------------------------------------------------------------------------------------------------
-- settings
------------------------------------------------------------------------------------------------
CREATE FUNCTION cortex.set_setting(key text, value text)
RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    old_value text;
    new_value text;
BEGIN
    IF set_setting.key IS NULL OR btrim(set_setting.key) = '' THEN
        RAISE EXCEPTION 'setting key must not be empty' USING ERRCODE = '22023';
    END IF;
    SELECT s.value INTO old_value FROM cortex.settings s WHERE s.key = set_setting.key FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'unknown setting "%"', set_setting.key
            USING ERRCODE = '42704',
                  HINT = 'SELECT key, value, description FROM cortex.settings lists them.';
    END IF;
    UPDATE cortex.settings s SET value = set_setting.value WHERE s.key = set_setting.key
    RETURNING s.value INTO new_value;
    PERFORM cortex.record_event('admin.setting_changed', NULL,
                                jsonb_build_object('key', set_setting.key, 'previous', old_value,
                                                   'value', new_value));
    RETURN new_value;
END
$$;
COMMENT ON FUNCTION cortex.set_setting(text, text) IS
    'admin: changes a setting after validating the value for its kind and bounds; returns the '
    'stored value. Example: SELECT cortex.set_setting(''eviction_strategy'', ''priority'');';

CREATE FUNCTION cortex.reset_setting(key text)
RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    d text;
BEGIN
    SELECT s.default_value INTO d FROM cortex.settings s WHERE s.key = reset_setting.key;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'unknown setting "%"', COALESCE(reset_setting.key, 'NULL')
            USING ERRCODE = '42704',
                  HINT = 'SELECT key, value, description FROM cortex.settings lists them.';
    END IF;
    RETURN cortex.set_setting(reset_setting.key, d);
END
$$;
COMMENT ON FUNCTION cortex.reset_setting(text) IS 'admin: restores a setting''s default value.';
