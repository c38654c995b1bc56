-- sql/0003_partitions.sql — daily partitions of cortex.requests and their retention.
--
-- What: cortex.create_request_partition(day), cortex.ensure_request_partitions(days_ahead) and
-- cortex.drop_request_partitions_older_than(keep); creates the partitions for today and the
-- next request_partitions_ahead days.
-- Why: requests is the one high-volume table. Partitioning by UTC day lets retention drop whole
-- tables instead of deleting rows, and keeps per-day scans small. Inserts never fail for want
-- of a partition: rows for a day without one land in cortex_part.requests_default and move into
-- the day's partition when it is created. The scheduler leader calls ensure/drop periodically.
--
-- Partition DDL runs under pg_advisory_xact_lock(1668248180, 3) so concurrent callers queue.

CREATE FUNCTION cortex.create_request_partition(day date)
RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    part text;
    lo timestamptz;
    hi timestamptz;
    moved cortex.requests[];
BEGIN
    IF create_request_partition.day IS NULL THEN
        RAISE EXCEPTION 'partition day must not be NULL' USING ERRCODE = '22023';
    END IF;
    part := 'requests_' || to_char(create_request_partition.day, 'YYYYMMDD');
    lo := create_request_partition.day::timestamp AT TIME ZONE 'UTC';
    hi := (create_request_partition.day + 1)::timestamp AT TIME ZONE 'UTC';

    PERFORM pg_advisory_xact_lock(1668248180, 3);
    IF to_regclass(format('cortex_part.%I', part)) IS NOT NULL THEN
        RETURN NULL;
    END IF;

    -- A partition cannot be created while the default partition holds rows of its range, so
    -- those rows step aside and are re-inserted through the parent once the partition exists.
    SELECT array_agg(r) INTO moved
      FROM cortex.requests r
     WHERE r.tableoid = 'cortex_part.requests_default'::regclass
       AND r.created_at >= lo AND r.created_at < hi;
    IF moved IS NOT NULL THEN
        DELETE FROM cortex_part.requests_default d WHERE d.created_at >= lo AND d.created_at < hi;
    END IF;

    EXECUTE format('CREATE TABLE cortex_part.%I PARTITION OF cortex.requests '
                   'FOR VALUES FROM (%L) TO (%L)', part, lo, hi);
    EXECUTE format('COMMENT ON TABLE cortex_part.%I IS %L', part,
                   format('Requests received on %s (UTC day).', create_request_partition.day));

    IF moved IS NOT NULL THEN
        INSERT INTO cortex.requests SELECT * FROM unnest(moved);
    END IF;
    RETURN 'cortex_part.' || part;
END
$$;
COMMENT ON FUNCTION cortex.create_request_partition(date) IS
    'scheduler: creates the partition of cortex.requests for one UTC day (moving any rows of '
    'that day out of the default partition) and returns its name, or NULL if it existed.';

CREATE FUNCTION cortex.ensure_request_partitions(days_ahead integer DEFAULT NULL)
RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    n integer := COALESCE(ensure_request_partitions.days_ahead,
                          cortex.setting_int('request_partitions_ahead'));
    today date := (now() AT TIME ZONE 'UTC')::date;
    created integer := 0;
BEGIN
    IF n < 0 OR n > 366 THEN
        RAISE EXCEPTION 'days_ahead must be between 0 and 366, not %', n USING ERRCODE = '22023';
    END IF;
    FOR d IN 0..n LOOP
        IF cortex.create_request_partition(today + d) IS NOT NULL THEN
            created := created + 1;
        END IF;
    END LOOP;
    RETURN created;
END
$$;
COMMENT ON FUNCTION cortex.ensure_request_partitions(integer) IS
    'scheduler: makes sure cortex.requests has partitions for today and the next days_ahead '
    'UTC days (default: the request_partitions_ahead setting); returns how many it created.';

CREATE FUNCTION cortex.drop_request_partitions_older_than(keep interval DEFAULT NULL)
RETURNS SETOF text
LANGUAGE plpgsql AS $$
DECLARE
    k interval := COALESCE(drop_request_partitions_older_than.keep,
                           cortex.setting_interval('request_retention'));
    cutoff timestamptz;
    p record;
    upper_bound timestamptz;
    dropped text[] := '{}';
    purged bigint;
BEGIN
    IF k <= interval '0' THEN
        RAISE EXCEPTION 'retention must be a positive interval, not %', k
            USING ERRCODE = '22023';
    END IF;
    cutoff := now() - k;
    PERFORM pg_advisory_xact_lock(1668248180, 3);

    FOR p IN
        SELECT ns.nspname, c.relname, pg_get_expr(c.relpartbound, c.oid) AS bound
          FROM pg_catalog.pg_inherits i
          JOIN pg_catalog.pg_class c ON c.oid = i.inhrelid
          JOIN pg_catalog.pg_namespace ns ON ns.oid = c.relnamespace
         WHERE i.inhparent = 'cortex.requests'::regclass
         ORDER BY c.relname
    LOOP
        -- Judge by the partition's real upper bound, not by its name: a partition expires only
        -- when every row it can hold is older than the cutoff.
        upper_bound := substring(p.bound FROM 'TO \(''([^'']+)''\)')::timestamptz;
        IF upper_bound IS NOT NULL AND upper_bound <= cutoff THEN
            EXECUTE format('DROP TABLE %I.%I', p.nspname, p.relname);
            dropped := dropped || (p.nspname || '.' || p.relname);
            RETURN NEXT p.nspname || '.' || p.relname;
        END IF;
    END LOOP;

    DELETE FROM cortex_part.requests_default d WHERE d.created_at < cutoff;
    GET DIAGNOSTICS purged = ROW_COUNT;

    IF cardinality(dropped) > 0 OR purged > 0 THEN
        PERFORM cortex.record_event('requests.retention',
                                    format('dropped %s partition(s) older than %s',
                                           cardinality(dropped), cutoff),
                                    jsonb_build_object('cutoff', cutoff, 'dropped', dropped,
                                                       'default_rows_deleted', purged));
    END IF;
    RETURN;
END
$$;
COMMENT ON FUNCTION cortex.drop_request_partitions_older_than(interval) IS
    'scheduler: retention. Drops every partition of cortex.requests whose whole range is older '
    'than now() - keep (default: the request_retention setting), deletes equally old rows from '
    'the default partition, and returns the names of the dropped partitions.';

SELECT cortex.ensure_request_partitions();
