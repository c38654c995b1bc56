-- sql/0008_rate_limits.sql — per-API-key request and token limits that hold across gateways.
--
-- What: cortex.rate_windows (one counter row per key per minute of database time: requests
-- granted to gateways, tokens charged); cortex.rate_take (the gateways' one call: take a slice of
-- the minute's request budget, give an unused slice back, charge tokens, learn the totals);
-- cortex.set_api_key_limits (the operators' way to change a key's limits, which live in the
-- existing columns api_keys.requests_per_minute / tokens_per_minute).
-- Why: gateways are stateless and several run behind a load balancer, so a limit enforced by
-- each alone would admit N times the limit. A database round trip per request would put
-- PostgreSQL on every request's hot path; instead each gateway leases small slices of the
-- minute's budget with one atomic row update and admits locally until its slice is used up.
-- Slices shrink as the budget runs out (a tenth of what is left, at least 1), so the unused
-- remainder stranded on other gateways at the end of a minute stays small, and a gateway that
-- stops seeing a key's traffic gives its unused slice back. The sum of grants never exceeds the
-- limit. Tokens are known only after a request ends: gateways charge them in batches and refuse
-- new requests while the minute's total is at or over the limit.
--
-- Windows are fixed minutes of the database clock (date_trunc('minute', now())); a key's rows
-- of past minutes are deleted when its next minute starts, so the table holds about one row per
-- active key.

CREATE TABLE cortex.rate_windows (
    api_key_id   bigint      NOT NULL,
    window_start timestamptz NOT NULL,
    requests     integer     NOT NULL DEFAULT 0,
    tokens       bigint      NOT NULL DEFAULT 0,
    updated_at   timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT rate_windows_pk PRIMARY KEY (api_key_id, window_start),
    CONSTRAINT rate_windows_key_fk FOREIGN KEY (api_key_id) REFERENCES cortex.api_keys (id)
        ON DELETE CASCADE,
    CONSTRAINT rate_windows_counts_ck CHECK (requests >= 0 AND tokens >= 0),
    CONSTRAINT rate_windows_minute_ck CHECK (window_start = date_trunc('minute', window_start))
);
COMMENT ON TABLE cortex.rate_windows IS
    'Per-key, per-minute usage counters shared by all gateways (written by cortex.rate_take). '
    'Only the current minute of each active key is kept.';
COMMENT ON COLUMN cortex.rate_windows.api_key_id IS 'The key (cortex.api_keys.id).';
COMMENT ON COLUMN cortex.rate_windows.window_start IS
    'Start of the minute (database time, truncated to the minute) the counters are for.';
COMMENT ON COLUMN cortex.rate_windows.requests IS
    'Requests granted to gateways in this minute (leased slices, minus slices given back); '
    'never above the key''s requests_per_minute.';
COMMENT ON COLUMN cortex.rate_windows.tokens IS
    'Input + output tokens charged by gateways for requests that ended in this minute.';
COMMENT ON COLUMN cortex.rate_windows.updated_at IS 'Database time of the last change.';

CREATE FUNCTION cortex.rate_take(api_key_id bigint, want integer, give_back integer DEFAULT 0,
                                 give_back_window timestamptz DEFAULT NULL,
                                 tokens bigint DEFAULT 0,
                                 OUT window_start timestamptz, OUT granted integer,
                                 OUT requests_used integer, OUT tokens_used bigint,
                                 OUT requests_per_minute integer, OUT tokens_per_minute integer,
                                 OUT reset_ms integer)
RETURNS record
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    w cortex.rate_windows;
    remaining integer;
BEGIN
    IF rate_take.want < 0 OR rate_take.give_back < 0 OR rate_take.tokens < 0 THEN
        RAISE EXCEPTION 'want, give_back and tokens must not be negative' USING ERRCODE = '22023';
    END IF;
    SELECT k.requests_per_minute, k.tokens_per_minute
      INTO rate_take.requests_per_minute, rate_take.tokens_per_minute
      FROM cortex.api_keys k WHERE k.id = rate_take.api_key_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'unknown api key %', COALESCE(rate_take.api_key_id::text, 'NULL')
            USING ERRCODE = '42704';
    END IF;
    window_start := date_trunc('minute', now());
    reset_ms := GREATEST(1, ceil(extract(epoch FROM window_start + interval '1 minute'
                                                     - clock_timestamp()) * 1000))::integer;
    -- The row is created once per key and minute; the key's older minutes go with it.
    INSERT INTO cortex.rate_windows AS r (api_key_id, window_start)
    VALUES (rate_take.api_key_id, rate_take.window_start)
    ON CONFLICT ON CONSTRAINT rate_windows_pk DO NOTHING;
    IF FOUND THEN
        DELETE FROM cortex.rate_windows r
         WHERE r.api_key_id = rate_take.api_key_id AND r.window_start < rate_take.window_start;
    END IF;
    SELECT * INTO w FROM cortex.rate_windows r
     WHERE r.api_key_id = rate_take.api_key_id AND r.window_start = rate_take.window_start
       FOR UPDATE;
    -- A slice leased in an earlier minute has expired with it: nothing to give back.
    IF rate_take.give_back_window IS DISTINCT FROM rate_take.window_start THEN
        give_back := 0;
    END IF;
    w.requests := GREATEST(0, w.requests - rate_take.give_back);
    granted := 0;
    IF rate_take.want > 0 THEN
        IF rate_take.requests_per_minute IS NULL THEN
            granted := rate_take.want;
        ELSE
            remaining := GREATEST(0, rate_take.requests_per_minute - w.requests);
            granted := LEAST(rate_take.want, remaining, GREATEST(1, ceil(remaining / 10.0)::integer));
        END IF;
    END IF;
    UPDATE cortex.rate_windows r
       SET requests = CASE WHEN rate_take.requests_per_minute IS NULL THEN r.requests
                           ELSE w.requests + rate_take.granted END,
           tokens = r.tokens + rate_take.tokens,
           updated_at = now()
     WHERE r.api_key_id = rate_take.api_key_id AND r.window_start = rate_take.window_start
    RETURNING r.requests, r.tokens INTO rate_take.requests_used, rate_take.tokens_used;
END
$$;
COMMENT ON FUNCTION cortex.rate_take(bigint, integer, integer, timestamptz, bigint) IS
    'gateway: in the key''s current minute, gives back give_back unused requests leased in '
    'give_back_window (ignored once that minute is over), charges tokens, and leases up to want '
    'requests (at most a tenth of what is left, at least 1, never beyond requests_per_minute). '
    'Returns the minute, the grant, the minute''s totals, the key''s limits and the milliseconds '
    'until the minute ends.';

CREATE FUNCTION cortex.set_api_key_limits(id bigint, requests_per_minute integer,
                                          tokens_per_minute integer)
RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    k cortex.api_keys;
BEGIN
    IF set_api_key_limits.requests_per_minute <= 0 OR set_api_key_limits.tokens_per_minute <= 0 THEN
        RAISE EXCEPTION 'rate limits must be positive (NULL = unlimited)' USING ERRCODE = '22023';
    END IF;
    UPDATE cortex.api_keys ak
       SET requests_per_minute = set_api_key_limits.requests_per_minute,
           tokens_per_minute = set_api_key_limits.tokens_per_minute
     WHERE ak.id = set_api_key_limits.id
    RETURNING * INTO k;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'unknown api key %', COALESCE(set_api_key_limits.id::text, 'NULL')
            USING ERRCODE = '42704', HINT = 'SELECT id, name, prefix FROM cortex.api_keys;';
    END IF;
    PERFORM cortex.record_event('admin.api_key_limits', NULL,
                                jsonb_build_object('id', k.id, 'prefix', k.prefix,
                                                   'requests_per_minute', k.requests_per_minute,
                                                   'tokens_per_minute', k.tokens_per_minute));
END
$$;
COMMENT ON FUNCTION cortex.set_api_key_limits(bigint, integer, integer) IS
    'admin: sets an API key''s requests and tokens per minute (NULL = unlimited); gateways apply '
    'them from their next key lookup (seconds). Example: SELECT cortex.set_api_key_limits(3, '
    '600, 200000);';
