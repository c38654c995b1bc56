-- sql/0002_rules.sql — rules the database enforces on its own tables.
--
-- What: typed setting getters and the settings validation trigger; node liveness judged with the
-- database clock; the placement state machine (a view of the legal transitions plus a trigger
-- that rejects everything else with SQLSTATE CX002); one namespace for model names and aliases;
-- model resolution (exact name, alias, longest prefix pattern); the event recorder; NOTIFY
-- triggers that carry only an id (or a settings key) as payload.
-- Why: these rules must hold whichever client writes (neuron, scheduler, gateway, an operator in
-- psql), so they live in triggers and functions next to the data rather than in C code.
--
-- Error codes raised here and in later migrations (SQLSTATE, C code matches on them):
--   CX001 stale scheduler epoch       CX002 placement rule violated (e.g. illegal transition)
--   22023 invalid parameter value     42704 unknown object (model, node, key, setting)
--   23505 name already taken          55000 object not in the required state

------------------------------------------------------------------------------------------------
-- settings
------------------------------------------------------------------------------------------------
CREATE FUNCTION cortex.setting_normalize(key text, kind text, allowed text[], min_value text,
                                         value text)
RETURNS text
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    v text := btrim(setting_normalize.value);
BEGIN
    IF v IS NULL OR v = '' THEN
        RAISE EXCEPTION 'setting % needs a value', setting_normalize.key
            USING ERRCODE = '22023';
    END IF;
    CASE setting_normalize.kind
    WHEN 'enum' THEN
        IF NOT v = ANY (setting_normalize.allowed) THEN
            RAISE EXCEPTION 'invalid value "%" for setting %', v, setting_normalize.key
                USING ERRCODE = '22023',
                      DETAIL = format('expected one of: %s',
                                      array_to_string(setting_normalize.allowed, ', '));
        END IF;
        RETURN v;
    WHEN 'integer' THEN
        IF v !~ '^[+-]?[0-9]{1,18}$' THEN
            RAISE EXCEPTION 'invalid value "%" for setting %', v, setting_normalize.key
                USING ERRCODE = '22023', DETAIL = 'expected a whole number';
        END IF;
        IF setting_normalize.min_value IS NOT NULL
           AND v::bigint < setting_normalize.min_value::bigint THEN
            RAISE EXCEPTION 'invalid value "%" for setting %', v, setting_normalize.key
                USING ERRCODE = '22023',
                      DETAIL = format('the smallest accepted value is %s',
                                      setting_normalize.min_value);
        END IF;
        RETURN v::bigint::text;
    WHEN 'interval' THEN
        DECLARE
            i interval;
        BEGIN
            i := v::interval;
            IF setting_normalize.min_value IS NOT NULL
               AND i < setting_normalize.min_value::interval THEN
                RAISE EXCEPTION 'invalid value "%" for setting %', v, setting_normalize.key
                    USING ERRCODE = '22023',
                          DETAIL = format('the smallest accepted value is %s',
                                          setting_normalize.min_value);
            END IF;
        EXCEPTION
            WHEN invalid_datetime_format OR datetime_field_overflow OR interval_field_overflow
                 OR syntax_error THEN
                RAISE EXCEPTION 'invalid value "%" for setting %', v, setting_normalize.key
                    USING ERRCODE = '22023',
                          DETAIL = 'expected an interval such as ''30 seconds'' or ''5 minutes''';
        END;
        RETURN v;
    WHEN 'boolean' THEN
        DECLARE
            b boolean;
        BEGIN
            b := v::boolean;
            RETURN b::text;
        EXCEPTION WHEN invalid_text_representation THEN
            RAISE EXCEPTION 'invalid value "%" for setting %', v, setting_normalize.key
                USING ERRCODE = '22023', DETAIL = 'expected true or false';
        END;
    ELSE
        RAISE EXCEPTION 'setting % has unknown kind %', setting_normalize.key,
                        setting_normalize.kind USING ERRCODE = '22023';
    END CASE;
END
$$;
COMMENT ON FUNCTION cortex.setting_normalize(text, text, text[], text, text) IS
    'internal: validates a setting value for its kind and bounds and returns it normalised; '
    'raises 22023 with the accepted values otherwise.';

CREATE FUNCTION cortex.settings_validate()
RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.value := cortex.setting_normalize(NEW.key, NEW.kind, NEW.allowed, NEW.min_value,
                                          NEW.value);
    NEW.default_value := cortex.setting_normalize(NEW.key, NEW.kind, NEW.allowed, NEW.min_value,
                                                  NEW.default_value);
    IF TG_OP = 'UPDATE' THEN
        NEW.updated_at := now();
        NEW.updated_by := session_user;
    END IF;
    RETURN NEW;
END
$$;
COMMENT ON FUNCTION cortex.settings_validate() IS
    'internal: trigger that validates every write to cortex.settings, including direct UPDATEs.';

CREATE TRIGGER settings_validate_trg
    BEFORE INSERT OR UPDATE ON cortex.settings
    FOR EACH ROW EXECUTE FUNCTION cortex.settings_validate();

-- Some settings only make sense relative to others; check the pair after every change.
CREATE FUNCTION cortex.settings_consistency()
RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    grace interval;
    beat interval;
    lease interval;
    tick interval;
BEGIN
    SELECT max(s.value) FILTER (WHERE s.key = 'heartbeat_grace')::interval,
           max(s.value) FILTER (WHERE s.key = 'heartbeat_interval')::interval,
           max(s.value) FILTER (WHERE s.key = 'lease_duration')::interval,
           max(s.value) FILTER (WHERE s.key = 'scheduler_tick')::interval
      INTO grace, beat, lease, tick
      FROM cortex.settings s;
    IF grace <= beat THEN
        RAISE EXCEPTION 'heartbeat_grace (%) must be longer than heartbeat_interval (%)',
                        grace, beat
            USING ERRCODE = '22023',
                  HINT = 'Otherwise healthy nodes are marked down between two heartbeats.';
    END IF;
    IF lease <= tick THEN
        RAISE EXCEPTION 'lease_duration (%) must be longer than scheduler_tick (%)', lease, tick
            USING ERRCODE = '22023',
                  HINT = 'Otherwise the leader loses its lease between two renewals.';
    END IF;
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION cortex.settings_consistency() IS
    'internal: trigger rejecting setting combinations that cannot work (heartbeat_grace not '
    'longer than heartbeat_interval, lease_duration not longer than scheduler_tick).';

CREATE TRIGGER settings_consistency_trg
    AFTER INSERT OR UPDATE ON cortex.settings
    FOR EACH STATEMENT EXECUTE FUNCTION cortex.settings_consistency();

CREATE FUNCTION cortex.setting(key text)
RETURNS text
LANGUAGE plpgsql STABLE AS $$
DECLARE
    v text;
BEGIN
    SELECT s.value INTO v FROM cortex.settings s WHERE s.key = setting.key;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'unknown setting "%"', setting.key
            USING ERRCODE = '42704', HINT = 'SELECT key FROM cortex.settings lists them.';
    END IF;
    RETURN v;
END
$$;
COMMENT ON FUNCTION cortex.setting(text) IS
    'any: the current value of a setting as text; raises 42704 for an unknown key.';

CREATE FUNCTION cortex.setting_int(key text)
RETURNS bigint
LANGUAGE sql STABLE AS $$ SELECT cortex.setting(key)::bigint $$;
COMMENT ON FUNCTION cortex.setting_int(text) IS 'any: an integer setting''s value.';

CREATE FUNCTION cortex.setting_interval(key text)
RETURNS interval
LANGUAGE sql STABLE AS $$ SELECT cortex.setting(key)::interval $$;
COMMENT ON FUNCTION cortex.setting_interval(text) IS 'any: an interval setting''s value.';

CREATE FUNCTION cortex.setting_bool(key text)
RETURNS boolean
LANGUAGE sql STABLE AS $$ SELECT cortex.setting(key)::boolean $$;
COMMENT ON FUNCTION cortex.setting_bool(text) IS 'any: a boolean setting''s value.';

CREATE FUNCTION cortex.settings_notify()
RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.value IS DISTINCT FROM OLD.value THEN
        PERFORM pg_notify('cortex_setting', NEW.key);
    END IF;
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION cortex.settings_notify() IS
    'internal: trigger sending NOTIFY cortex_setting with the changed key.';

CREATE TRIGGER settings_notify_trg
    AFTER UPDATE ON cortex.settings
    FOR EACH ROW EXECUTE FUNCTION cortex.settings_notify();

------------------------------------------------------------------------------------------------
-- names
------------------------------------------------------------------------------------------------
CREATE FUNCTION cortex.check_model_name(name text, what text DEFAULT 'model name')
RETURNS text
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF check_model_name.name IS NULL OR btrim(check_model_name.name) = '' THEN
        RAISE EXCEPTION '% must not be empty', check_model_name.what USING ERRCODE = '22023';
    END IF;
    IF check_model_name.name !~ '^[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}$' THEN
        RAISE EXCEPTION 'invalid % "%"', check_model_name.what, check_model_name.name
            USING ERRCODE = '22023',
                  DETAIL = 'Names start with a letter or digit and use only letters, digits and '
                           '. _ - : / (at most 128 characters).';
    END IF;
    RETURN check_model_name.name;
END
$$;
COMMENT ON FUNCTION cortex.check_model_name(text, text) IS
    'internal: returns the name if it is a valid model name, else raises 22023.';

CREATE FUNCTION cortex.check_node_name(name text)
RETURNS text
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF check_node_name.name IS NULL OR btrim(check_node_name.name) = '' THEN
        RAISE EXCEPTION 'node name must not be empty' USING ERRCODE = '22023';
    END IF;
    IF check_node_name.name !~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$' THEN
        RAISE EXCEPTION 'invalid node name "%"', check_node_name.name
            USING ERRCODE = '22023',
                  DETAIL = 'Node names start with a letter or digit and use only letters, '
                           'digits and . _ - (at most 63 characters).';
    END IF;
    RETURN check_node_name.name;
END
$$;
COMMENT ON FUNCTION cortex.check_node_name(text) IS
    'internal: returns the name if it is a valid node name, else raises 22023.';

-- Model names and aliases share one namespace, so a name always resolves to one model.
CREATE FUNCTION cortex.model_names_guard()
RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    other text;
BEGIN
    IF TG_TABLE_NAME = 'models' THEN
        SELECT m.name INTO other
          FROM cortex.model_aliases a JOIN cortex.models m ON m.id = a.model_id
         WHERE a.alias = NEW.name;
        IF FOUND THEN
            RAISE EXCEPTION 'model name "%" is already an alias of model "%"', NEW.name, other
                USING ERRCODE = '23505',
                      HINT = 'Remove the alias first with cortex.unalias_model.';
        END IF;
    ELSE
        IF EXISTS (SELECT 1 FROM cortex.models m WHERE m.name = NEW.alias) THEN
            RAISE EXCEPTION 'alias "%" is already the name of a model', NEW.alias
                USING ERRCODE = '23505';
        END IF;
    END IF;
    RETURN NEW;
END
$$;
COMMENT ON FUNCTION cortex.model_names_guard() IS
    'internal: trigger keeping model names and aliases in one namespace.';

CREATE TRIGGER models_names_trg
    BEFORE INSERT OR UPDATE OF name ON cortex.models
    FOR EACH ROW EXECUTE FUNCTION cortex.model_names_guard();
CREATE TRIGGER model_aliases_names_trg
    BEFORE INSERT OR UPDATE OF alias ON cortex.model_aliases
    FOR EACH ROW EXECUTE FUNCTION cortex.model_names_guard();

CREATE FUNCTION cortex.models_touch()
RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at := now();
    RETURN NEW;
END
$$;
COMMENT ON FUNCTION cortex.models_touch() IS 'internal: trigger stamping models.updated_at.';

CREATE TRIGGER models_touch_trg
    BEFORE UPDATE ON cortex.models
    FOR EACH ROW EXECUTE FUNCTION cortex.models_touch();

CREATE FUNCTION cortex.resolve_model(name text)
RETURNS bigint
LANGUAGE sql STABLE AS $$
    SELECT r.id FROM (
        SELECT m.id, 0 AS rank, 0 AS len
          FROM cortex.models m
         WHERE m.name = resolve_model.name AND m.enabled
        UNION ALL
        SELECT m.id, 1, 0
          FROM cortex.model_aliases a JOIN cortex.models m ON m.id = a.model_id
         WHERE a.alias = resolve_model.name AND m.enabled
        UNION ALL
        SELECT m.id, 2, length(a.alias)
          FROM cortex.model_aliases a JOIN cortex.models m ON m.id = a.model_id
         WHERE a.alias LIKE '%*' AND m.enabled
           AND left(resolve_model.name, length(a.alias) - 1) = left(a.alias, -1)
    ) r
    ORDER BY r.rank, r.len DESC
    LIMIT 1
$$;
COMMENT ON FUNCTION cortex.resolve_model(text) IS
    'gateway: the id of the enabled model a client-supplied name means (exact model name, then '
    'exact alias, then the longest matching prefix pattern), or NULL.';

------------------------------------------------------------------------------------------------
-- events
------------------------------------------------------------------------------------------------
CREATE FUNCTION cortex.record_event(kind text, reason text DEFAULT NULL,
                                    detail jsonb DEFAULT '{}', model text DEFAULT NULL,
                                    node text DEFAULT NULL, placement_id bigint DEFAULT NULL,
                                    demand_id bigint DEFAULT NULL)
RETURNS bigint
LANGUAGE sql AS $$
    INSERT INTO cortex.events (kind, reason, detail, model, node, placement_id, demand_id)
    VALUES (record_event.kind, record_event.reason, COALESCE(record_event.detail, '{}'),
            record_event.model, record_event.node, record_event.placement_id,
            record_event.demand_id)
    RETURNING id
$$;
COMMENT ON FUNCTION cortex.record_event(text, text, jsonb, text, text, bigint, bigint) IS
    'scheduler: appends an audit event (actor and epoch are filled in from the transaction) and '
    'returns its id.';

------------------------------------------------------------------------------------------------
-- liveness: the database clock only
------------------------------------------------------------------------------------------------
CREATE FUNCTION cortex.node_liveness(last_heartbeat_at timestamptz)
RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT CASE
        WHEN last_heartbeat_at IS NULL THEN 'dead'
        WHEN now() - last_heartbeat_at > cortex.setting_interval('heartbeat_grace') THEN 'dead'
        WHEN now() - last_heartbeat_at > 2 * cortex.setting_interval('heartbeat_interval')
            THEN 'late'
        ELSE 'alive'
    END
$$;
COMMENT ON FUNCTION cortex.node_liveness(timestamptz) IS
    'any: alive, late (silent for more than two heartbeat intervals) or dead (silent for more '
    'than heartbeat_grace), judged by the database clock now() against the database-stamped '
    'heartbeat time; a node''s own clock plays no part.';

------------------------------------------------------------------------------------------------
-- the placement state machine
------------------------------------------------------------------------------------------------
CREATE VIEW cortex.placement_transitions (from_state, to_state, meaning) AS
VALUES
    ('requested', 'loading',   'the neuron accepted the load and started reading weights'),
    ('requested', 'failed',    'the neuron refused or could not start the load'),
    ('requested', 'gone',      'cancelled before the neuron started'),
    ('loading',   'ready',     'weights loaded; the replica serves requests'),
    ('loading',   'failed',    'the load failed (out of memory, bad files, timeout, node lost)'),
    ('loading',   'unloading', 'cancelled during the load'),
    ('ready',     'unloading', 'eviction, idle TTL, drain or an operator unload began'),
    ('ready',     'failed',    'the replica crashed or its node was lost while serving'),
    ('unloading', 'gone',      'memory released'),
    ('unloading', 'failed',    'the unload failed or its node was lost');
COMMENT ON VIEW cortex.placement_transitions IS
    'The legal placement state transitions; any other change of cortex.placements.state raises '
    'CX002. gone and failed are terminal.';
COMMENT ON COLUMN cortex.placement_transitions.from_state IS 'State before the transition.';
COMMENT ON COLUMN cortex.placement_transitions.to_state IS 'State after the transition.';
COMMENT ON COLUMN cortex.placement_transitions.meaning IS 'What the transition means.';

CREATE FUNCTION cortex.placements_guard()
RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    next_states text;
BEGIN
    IF TG_OP = 'INSERT' THEN
        IF NEW.state <> 'requested' THEN
            RAISE EXCEPTION 'a placement must start in state requested, not %', NEW.state
                USING ERRCODE = 'CX002';
        END IF;
        NEW.created_at := now();
        NEW.state_changed_at := now();
        NEW.ready_at := NULL;
        NEW.ended_at := NULL;
        RETURN NEW;
    END IF;

    IF NEW.id <> OLD.id OR NEW.model_id <> OLD.model_id OR NEW.node_id <> OLD.node_id THEN
        RAISE EXCEPTION 'placement % cannot change its id, model or node', OLD.id
            USING ERRCODE = 'CX002', HINT = 'End it and create a new placement instead.';
    END IF;

    IF NEW.state IS DISTINCT FROM OLD.state THEN
        IF NOT EXISTS (SELECT 1 FROM cortex.placement_transitions t
                        WHERE t.from_state = OLD.state AND t.to_state = NEW.state) THEN
            SELECT string_agg(t.to_state, ', ') INTO next_states
              FROM cortex.placement_transitions t WHERE t.from_state = OLD.state;
            RAISE EXCEPTION 'illegal placement transition % -> %', OLD.state, NEW.state
                USING ERRCODE = 'CX002',
                      DETAIL = format('placement %s', OLD.id),
                      HINT = CASE WHEN next_states IS NULL
                                  THEN format('%s is terminal', OLD.state)
                                  ELSE format('from %s the legal next states are: %s',
                                              OLD.state, next_states) END;
        END IF;
        IF NEW.state = 'failed' AND (NEW.reason IS NULL OR btrim(NEW.reason) = '') THEN
            RAISE EXCEPTION 'placement % cannot fail without a reason', OLD.id
                USING ERRCODE = 'CX002';
        END IF;
        NEW.state_changed_at := now();
        IF NEW.state = 'ready' THEN
            NEW.ready_at := now();
        ELSIF NEW.state IN ('gone', 'failed') THEN
            NEW.ended_at := now();
        END IF;
    ELSIF NEW.state IN ('gone', 'failed') AND NEW IS DISTINCT FROM OLD THEN
        RAISE EXCEPTION 'placement % is % and can no longer change', OLD.id, OLD.state
            USING ERRCODE = 'CX002';
    END IF;

    IF (NEW.progress_bytes IS DISTINCT FROM OLD.progress_bytes
        OR NEW.progress_total_bytes IS DISTINCT FROM OLD.progress_total_bytes)
       AND NOT (OLD.state = 'loading' AND NEW.state IN ('loading', 'ready')) THEN
        RAISE EXCEPTION 'placement % is %: load progress is only reported while loading',
                        OLD.id, NEW.state
            USING ERRCODE = 'CX002';
    END IF;
    RETURN NEW;
END
$$;
COMMENT ON FUNCTION cortex.placements_guard() IS
    'internal: trigger enforcing the placement state machine (cortex.placement_transitions), a '
    'reason on failure, fixed model/node, immutable terminal rows and progress only while '
    'loading; stamps state_changed_at, ready_at and ended_at with the database clock.';

CREATE TRIGGER placements_guard_trg
    BEFORE INSERT OR UPDATE ON cortex.placements
    FOR EACH ROW EXECUTE FUNCTION cortex.placements_guard();

CREATE FUNCTION cortex.placements_announce()
RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    row_ cortex.placements;
    model_name text;
    node_name text;
BEGIN
    IF TG_OP = 'DELETE' THEN
        PERFORM pg_notify('cortex_placement', OLD.id::text);
        RETURN NULL;
    END IF;
    IF TG_OP = 'UPDATE' AND NEW.state IS NOT DISTINCT FROM OLD.state THEN
        RETURN NULL;
    END IF;
    row_ := NEW;
    SELECT m.name INTO model_name FROM cortex.models m WHERE m.id = row_.model_id;
    SELECT n.name INTO node_name FROM cortex.nodes n WHERE n.id = row_.node_id;
    PERFORM cortex.record_event('placement.' || row_.state, row_.reason,
                                CASE WHEN TG_OP = 'UPDATE'
                                     THEN jsonb_build_object('from', OLD.state)
                                     ELSE '{}'::jsonb END,
                                model_name, node_name, row_.id);
    PERFORM pg_notify('cortex_placement', row_.id::text);
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION cortex.placements_announce() IS
    'internal: trigger that records an event for each new placement and state change and sends '
    'NOTIFY cortex_placement with the placement id (also on delete).';

CREATE TRIGGER placements_announce_trg
    AFTER INSERT OR UPDATE OF state OR DELETE ON cortex.placements
    FOR EACH ROW EXECUTE FUNCTION cortex.placements_announce();

------------------------------------------------------------------------------------------------
-- NOTIFY wake-ups: demand, catalogue, nodes
------------------------------------------------------------------------------------------------
CREATE FUNCTION cortex.demand_announce()
RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('cortex_demand', NEW.id::text);
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION cortex.demand_announce() IS
    'internal: trigger sending NOTIFY cortex_demand with the id of each new demand row.';

CREATE TRIGGER demand_announce_trg
    AFTER INSERT ON cortex.demand
    FOR EACH ROW EXECUTE FUNCTION cortex.demand_announce();

CREATE FUNCTION cortex.models_announce()
RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        PERFORM pg_notify('cortex_catalogue', OLD.id::text);
    ELSIF TG_OP = 'INSERT' OR NEW.name IS DISTINCT FROM OLD.name
          OR NEW.enabled IS DISTINCT FROM OLD.enabled
          OR NEW.display_name IS DISTINCT FROM OLD.display_name
          OR NEW.context_length IS DISTINCT FROM OLD.context_length
          OR NEW.pinned IS DISTINCT FROM OLD.pinned
          OR NEW.priority IS DISTINCT FROM OLD.priority
          OR NEW.min_replicas IS DISTINCT FROM OLD.min_replicas
          OR NEW.max_replicas IS DISTINCT FROM OLD.max_replicas
          OR NEW.tensor_parallel IS DISTINCT FROM OLD.tensor_parallel
          OR NEW.memory_bytes IS DISTINCT FROM OLD.memory_bytes
          OR NEW.idle_ttl IS DISTINCT FROM OLD.idle_ttl THEN
        PERFORM pg_notify('cortex_catalogue', NEW.id::text);
    END IF;
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION cortex.models_announce() IS
    'internal: trigger sending NOTIFY cortex_catalogue with the model id when a model is added, '
    'removed or its serving policy changes.';

CREATE TRIGGER models_announce_trg
    AFTER INSERT OR UPDATE OR DELETE ON cortex.models
    FOR EACH ROW EXECUTE FUNCTION cortex.models_announce();

CREATE FUNCTION cortex.model_aliases_announce()
RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        PERFORM pg_notify('cortex_catalogue', OLD.model_id::text);
    END IF;
    IF TG_OP IN ('UPDATE', 'INSERT') THEN
        PERFORM pg_notify('cortex_catalogue', NEW.model_id::text);
    END IF;
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION cortex.model_aliases_announce() IS
    'internal: trigger sending NOTIFY cortex_catalogue with the model id when its aliases change.';

CREATE TRIGGER model_aliases_announce_trg
    AFTER INSERT OR UPDATE OR DELETE ON cortex.model_aliases
    FOR EACH ROW EXECUTE FUNCTION cortex.model_aliases_announce();

CREATE FUNCTION cortex.nodes_announce()
RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        PERFORM pg_notify('cortex_node', OLD.id::text);
    ELSIF TG_OP = 'INSERT' OR NEW.endpoint IS DISTINCT FROM OLD.endpoint
          OR NEW.draining IS DISTINCT FROM OLD.draining
          OR NEW.marked_down_at IS DISTINCT FROM OLD.marked_down_at
          OR NEW.incarnation IS DISTINCT FROM OLD.incarnation THEN
        PERFORM pg_notify('cortex_node', NEW.id::text);
    END IF;
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION cortex.nodes_announce() IS
    'internal: trigger sending NOTIFY cortex_node with the node id when a node registers, moves, '
    'drains or is marked down (not on every heartbeat).';

CREATE TRIGGER nodes_announce_trg
    AFTER INSERT OR UPDATE OR DELETE ON cortex.nodes
    FOR EACH ROW EXECUTE FUNCTION cortex.nodes_announce();
