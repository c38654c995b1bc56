-- sql/0006_views.sql — views for operators, analysts and the gateways.
--
-- What: fleet_status, device_status, model_status, placement_status, catalogue and routes
-- (current state); model_usage, model_latency, node_utilisation and key_usage (hourly or daily facts
-- from cortex.requests); recent_events; help (the function reference).
-- Why: operators and analysts work from psql; these views answer the common questions without
-- joins, and compute liveness with the database clock. Usage views aggregate over all retained
-- request rows: filter on their hour/day column, or query cortex.requests with a created_at
-- range directly when only a few days matter (that prunes partitions).

------------------------------------------------------------------------------------------------
-- current state
------------------------------------------------------------------------------------------------
CREATE VIEW cortex.fleet_status AS
SELECT n.id AS node_id,
       n.name AS node,
       n.endpoint,
       CASE WHEN n.marked_down_at IS NOT NULL THEN 'down'
            ELSE cortex.node_liveness(n.last_heartbeat_at) END AS liveness,
       date_trunc('second', now() - n.last_heartbeat_at) AS heartbeat_age,
       n.draining,
       n.down_reason,
       COALESCE(d.devices, 0) AS devices,
       d.memory_total_bytes,
       d.memory_used_bytes,
       d.memory_free_bytes,
       round(100.0 * d.memory_used_bytes / NULLIF(d.memory_total_bytes, 0), 1) AS memory_used_pct,
       n.queue_depth,
       n.active_sequences,
       COALESCE(p.ready_models, '{}') AS ready_models,
       COALESCE(p.loading_models, '{}') AS loading_models,
       n.version,
       n.incarnation,
       n.registered_at,
       n.last_heartbeat_at
  FROM cortex.nodes n
  LEFT JOIN LATERAL (
        SELECT count(*) AS devices,
               sum(g.memory_total_bytes)::bigint AS memory_total_bytes,
               sum(g.memory_used_bytes)::bigint AS memory_used_bytes,
               sum(g.memory_free_bytes)::bigint AS memory_free_bytes
          FROM cortex.gpus g
         WHERE g.node_id = n.id) d ON true
  LEFT JOIN LATERAL (
        SELECT array_agg(DISTINCT m.name ORDER BY m.name) FILTER (WHERE pl.state = 'ready')
                   AS ready_models,
               array_agg(DISTINCT m.name ORDER BY m.name)
                   FILTER (WHERE pl.state IN ('requested', 'loading')) AS loading_models
          FROM cortex.placements pl
          JOIN cortex.models m ON m.id = pl.model_id
         WHERE pl.node_id = n.id AND pl.state IN ('requested', 'loading', 'ready')) p ON true;
COMMENT ON VIEW cortex.fleet_status IS
    'One row per node: liveness by the database clock, devices and memory, load, models. '
    'SELECT * FROM cortex.fleet_status ORDER BY node;';
COMMENT ON COLUMN cortex.fleet_status.node_id IS 'Node id.';
COMMENT ON COLUMN cortex.fleet_status.node IS 'Node name.';
COMMENT ON COLUMN cortex.fleet_status.endpoint IS 'Neuron base URL.';
COMMENT ON COLUMN cortex.fleet_status.liveness IS
    'alive, late (no heartbeat for two intervals), dead (none within heartbeat_grace) or down '
    '(marked down by the scheduler), all judged by the database clock.';
COMMENT ON COLUMN cortex.fleet_status.heartbeat_age IS
    'Time since the latest heartbeat, by the database clock.';
COMMENT ON COLUMN cortex.fleet_status.draining IS 'True while an operator drains the node.';
COMMENT ON COLUMN cortex.fleet_status.down_reason IS 'Why the scheduler marked it down.';
COMMENT ON COLUMN cortex.fleet_status.devices IS 'Number of devices (GPUs, or 1 for a CPU host).';
COMMENT ON COLUMN cortex.fleet_status.memory_total_bytes IS 'Device memory in total, bytes.';
COMMENT ON COLUMN cortex.fleet_status.memory_used_bytes IS
    'Device memory in use at the latest heartbeat, bytes.';
COMMENT ON COLUMN cortex.fleet_status.memory_free_bytes IS
    'Device memory free at the latest heartbeat, bytes.';
COMMENT ON COLUMN cortex.fleet_status.memory_used_pct IS 'memory_used_bytes / memory_total_bytes, %.';
COMMENT ON COLUMN cortex.fleet_status.queue_depth IS 'Requests queued at the latest heartbeat.';
COMMENT ON COLUMN cortex.fleet_status.active_sequences IS
    'Sequences decoding at the latest heartbeat.';
COMMENT ON COLUMN cortex.fleet_status.ready_models IS 'Models with a ready replica on the node.';
COMMENT ON COLUMN cortex.fleet_status.loading_models IS
    'Models requested or loading on the node.';
COMMENT ON COLUMN cortex.fleet_status.version IS 'Neuron version.';
COMMENT ON COLUMN cortex.fleet_status.incarnation IS 'Registration count of the neuron.';
COMMENT ON COLUMN cortex.fleet_status.registered_at IS 'Database time of the latest registration.';
COMMENT ON COLUMN cortex.fleet_status.last_heartbeat_at IS 'Database time of the latest heartbeat.';

CREATE VIEW cortex.device_status AS
SELECT g.id AS gpu_id,
       n.name AS node,
       g.kind || ':' || g.ordinal AS device,
       g.name,
       g.memory_total_bytes,
       g.memory_used_bytes,
       g.memory_free_bytes,
       round(100.0 * g.memory_used_bytes / g.memory_total_bytes, 1) AS memory_used_pct,
       COALESCE(r.reserved_bytes, 0) AS reserved_bytes,
       g.utilization_pct,
       COALESCE(r.models, '{}') AS models,
       date_trunc('second', now() - g.updated_at) AS updated_age
  FROM cortex.gpus g
  JOIN cortex.nodes n ON n.id = g.node_id
  LEFT JOIN LATERAL (
        SELECT sum(pl.memory_bytes / cnt.devices)::bigint AS reserved_bytes,
               array_agg(DISTINCT m.name ORDER BY m.name) AS models
          FROM cortex.placement_gpus pg
          JOIN cortex.placements pl ON pl.id = pg.placement_id
          JOIN cortex.models m ON m.id = pl.model_id
          CROSS JOIN LATERAL (SELECT count(*) AS devices FROM cortex.placement_gpus pg2
                               WHERE pg2.placement_id = pl.id) cnt
         WHERE pg.gpu_id = g.id AND pl.state IN ('requested', 'loading', 'ready', 'unloading')
       ) r ON true;
COMMENT ON VIEW cortex.device_status IS
    'One row per device: memory reported by the neuron, memory reserved by live placements, '
    'and the models on it.';
COMMENT ON COLUMN cortex.device_status.gpu_id IS 'Device id (cortex.gpus.id).';
COMMENT ON COLUMN cortex.device_status.node IS 'Node name.';
COMMENT ON COLUMN cortex.device_status.device IS 'kind:ordinal, e.g. cuda:0 or cpu:0.';
COMMENT ON COLUMN cortex.device_status.name IS 'Device model name.';
COMMENT ON COLUMN cortex.device_status.memory_total_bytes IS 'Total memory, bytes.';
COMMENT ON COLUMN cortex.device_status.memory_used_bytes IS 'Used memory at the latest heartbeat.';
COMMENT ON COLUMN cortex.device_status.memory_free_bytes IS 'Free memory at the latest heartbeat.';
COMMENT ON COLUMN cortex.device_status.memory_used_pct IS 'Used / total, %.';
COMMENT ON COLUMN cortex.device_status.reserved_bytes IS
    'Memory the scheduler reserved on this device for live placements (a placement''s '
    'memory_bytes split evenly over its devices).';
COMMENT ON COLUMN cortex.device_status.utilization_pct IS 'Compute utilisation at the latest heartbeat.';
COMMENT ON COLUMN cortex.device_status.models IS 'Models with a live placement on the device.';
COMMENT ON COLUMN cortex.device_status.updated_age IS 'Time since the device was last reported.';

CREATE VIEW cortex.model_status AS
SELECT m.id AS model_id,
       m.name AS model,
       COALESCE(a.aliases, '{}') AS aliases,
       m.enabled,
       m.source,
       m.tensor_parallel,
       m.priority,
       m.pinned,
       m.min_replicas,
       m.max_replicas,
       COALESCE(m.idle_ttl, cortex.setting_interval('idle_ttl')) AS idle_ttl,
       COALESCE(m.memory_bytes, f.memory_bytes) AS memory_bytes,
       COALESCE(p.ready, 0) AS ready_replicas,
       COALESCE(p.loading, 0) AS loading_replicas,
       COALESCE(f.nodes, '{}') AS files_on,
       m.load_failures,
       m.last_load_error,
       p.last_used_at,
       COALESCE(d.open_demand, 0) AS open_demand
  FROM cortex.models m
  LEFT JOIN LATERAL (
        SELECT array_agg(al.alias ORDER BY al.alias) AS aliases
          FROM cortex.model_aliases al WHERE al.model_id = m.id) a ON true
  LEFT JOIN LATERAL (
        SELECT count(*) FILTER (WHERE pl.state = 'ready') AS ready,
               count(*) FILTER (WHERE pl.state IN ('requested', 'loading')) AS loading,
               max(COALESCE(pl.last_used_at, pl.ready_at)) AS last_used_at
          FROM cortex.placements pl WHERE pl.model_id = m.id) p ON true
  LEFT JOIN LATERAL (
        SELECT array_agg(n.name ORDER BY n.name) AS nodes, max(nm.memory_bytes) AS memory_bytes
          FROM cortex.node_models nm JOIN cortex.nodes n ON n.id = nm.node_id
         WHERE nm.name = m.name) f ON true
  LEFT JOIN LATERAL (
        SELECT count(*) AS open_demand
          FROM cortex.demand de WHERE de.model_id = m.id AND de.state = 'open') d ON true;
COMMENT ON VIEW cortex.model_status IS
    'One row per catalogue model: policy, effective idle TTL and memory need, replicas, which '
    'nodes hold the files, load failures and open demand.';
COMMENT ON COLUMN cortex.model_status.model_id IS 'Model id.';
COMMENT ON COLUMN cortex.model_status.model IS 'Model name.';
COMMENT ON COLUMN cortex.model_status.aliases IS 'Aliases and patterns resolving to it.';
COMMENT ON COLUMN cortex.model_status.enabled IS 'False when removed but still on some node''s disk.';
COMMENT ON COLUMN cortex.model_status.source IS 'operator or scan.';
COMMENT ON COLUMN cortex.model_status.tensor_parallel IS 'GPUs per replica.';
COMMENT ON COLUMN cortex.model_status.priority IS 'Eviction priority.';
COMMENT ON COLUMN cortex.model_status.pinned IS 'Kept loaded, never evicted.';
COMMENT ON COLUMN cortex.model_status.min_replicas IS 'Replicas kept without demand.';
COMMENT ON COLUMN cortex.model_status.max_replicas IS 'Most replicas placed.';
COMMENT ON COLUMN cortex.model_status.idle_ttl IS
    'Effective idle TTL (the model''s own, else the idle_ttl setting).';
COMMENT ON COLUMN cortex.model_status.memory_bytes IS
    'Effective memory need of one replica (the model''s own, else the largest node estimate).';
COMMENT ON COLUMN cortex.model_status.ready_replicas IS 'Ready placements.';
COMMENT ON COLUMN cortex.model_status.loading_replicas IS 'Requested or loading placements.';
COMMENT ON COLUMN cortex.model_status.files_on IS 'Nodes whose disk scan found the model.';
COMMENT ON COLUMN cortex.model_status.load_failures IS 'Consecutive failed loads.';
COMMENT ON COLUMN cortex.model_status.last_load_error IS 'Latest load failure reason.';
COMMENT ON COLUMN cortex.model_status.last_used_at IS
    'Latest use of any replica (or its ready time if never used).';
COMMENT ON COLUMN cortex.model_status.open_demand IS 'Open demand rows (load or unload).';

CREATE VIEW cortex.placement_status AS
SELECT pl.id AS placement_id,
       m.name AS model,
       n.name AS node,
       pl.state,
       COALESCE(dv.devices, '{}') AS devices,
       CASE WHEN pl.progress_total_bytes > 0
            THEN round(100.0 * pl.progress_bytes / pl.progress_total_bytes, 1) END AS progress_pct,
       pl.reason,
       date_trunc('second', now() - pl.state_changed_at) AS in_state_for,
       CASE WHEN pl.state = 'ready'
            THEN date_trunc('second', now() - COALESCE(pl.last_used_at, pl.ready_at)) END
           AS idle_for,
       pl.memory_bytes,
       pl.epoch,
       pl.created_at,
       pl.ready_at,
       pl.ended_at
  FROM cortex.placements pl
  JOIN cortex.models m ON m.id = pl.model_id
  JOIN cortex.nodes n ON n.id = pl.node_id
  LEFT JOIN LATERAL (
        SELECT array_agg(g.kind || ':' || g.ordinal ORDER BY pg.rank) AS devices
          FROM cortex.placement_gpus pg JOIN cortex.gpus g ON g.id = pg.gpu_id
         WHERE pg.placement_id = pl.id) dv ON true;
COMMENT ON VIEW cortex.placement_status IS
    'Placements with model and node names, devices, load progress and idle time. Live ones: '
    'WHERE state NOT IN (''gone'', ''failed'').';
COMMENT ON COLUMN cortex.placement_status.placement_id IS 'Placement id.';
COMMENT ON COLUMN cortex.placement_status.model IS 'Model name.';
COMMENT ON COLUMN cortex.placement_status.node IS 'Node name.';
COMMENT ON COLUMN cortex.placement_status.state IS 'Placement state.';
COMMENT ON COLUMN cortex.placement_status.devices IS 'Devices in rank order, e.g. {cuda:0,cuda:1}.';
COMMENT ON COLUMN cortex.placement_status.progress_pct IS 'Load progress, % of bytes read.';
COMMENT ON COLUMN cortex.placement_status.reason IS 'Reason of the latest transition.';
COMMENT ON COLUMN cortex.placement_status.in_state_for IS 'Time in the current state.';
COMMENT ON COLUMN cortex.placement_status.idle_for IS 'For ready placements: time since last use.';
COMMENT ON COLUMN cortex.placement_status.memory_bytes IS 'Memory reserved by the scheduler.';
COMMENT ON COLUMN cortex.placement_status.epoch IS 'Scheduler epoch that created it.';
COMMENT ON COLUMN cortex.placement_status.created_at IS 'When it was requested.';
COMMENT ON COLUMN cortex.placement_status.ready_at IS 'When it became ready.';
COMMENT ON COLUMN cortex.placement_status.ended_at IS 'When it ended (gone or failed).';

CREATE VIEW cortex.catalogue AS
WITH servable AS (
    SELECT m.id,
           (SELECT count(*) FROM cortex.placements pl
             WHERE pl.model_id = m.id AND pl.state = 'ready') AS ready_replicas,
           EXISTS (SELECT 1 FROM cortex.node_models nm JOIN cortex.nodes n ON n.id = nm.node_id
                    WHERE nm.name = m.name AND NOT n.draining AND n.marked_down_at IS NULL
                      AND cortex.node_liveness(n.last_heartbeat_at) <> 'dead') AS held
      FROM cortex.models m
     WHERE m.enabled
)
SELECT m.name, 'model' AS kind, m.name AS model, m.id AS model_id,
       (s.ready_replicas > 0 OR s.held) AS servable, s.ready_replicas, m.context_length,
       COALESCE(m.display_name, m.name) AS display_name, m.created_at
  FROM cortex.models m JOIN servable s ON s.id = m.id
UNION ALL
SELECT a.alias, CASE WHEN a.alias LIKE '%*' THEN 'pattern' ELSE 'alias' END, m.name, m.id,
       (s.ready_replicas > 0 OR s.held), s.ready_replicas, m.context_length,
       COALESCE(m.display_name, m.name), a.created_at
  FROM cortex.model_aliases a
  JOIN cortex.models m ON m.id = a.model_id
  JOIN servable s ON s.id = m.id;
COMMENT ON VIEW cortex.catalogue IS
    'What clients may ask for (GET /v1/models): every enabled model and alias, and whether a '
    'live, non-draining node can serve it now. Patterns (kind = pattern) are matched by prefix '
    'and not listed to clients.';
COMMENT ON COLUMN cortex.catalogue.name IS 'Name a client sends (model name, alias or pattern).';
COMMENT ON COLUMN cortex.catalogue.kind IS 'model, alias or pattern.';
COMMENT ON COLUMN cortex.catalogue.model IS 'Canonical model the name resolves to.';
COMMENT ON COLUMN cortex.catalogue.model_id IS 'Its id.';
COMMENT ON COLUMN cortex.catalogue.servable IS
    'True when a replica is ready or a live, non-draining node holds the files.';
COMMENT ON COLUMN cortex.catalogue.ready_replicas IS 'Ready placements of the model.';
COMMENT ON COLUMN cortex.catalogue.context_length IS 'Configured context length, if any.';
COMMENT ON COLUMN cortex.catalogue.display_name IS 'Human-friendly name.';
COMMENT ON COLUMN cortex.catalogue.created_at IS 'When the model or alias was created.';

CREATE VIEW cortex.routes AS
SELECT pl.id AS placement_id,
       m.id AS model_id,
       m.name AS model,
       n.id AS node_id,
       n.name AS node,
       n.endpoint,
       cortex.node_liveness(n.last_heartbeat_at) AS liveness,
       n.draining,
       n.queue_depth,
       n.active_sequences,
       pl.ready_at,
       pl.last_used_at
  FROM cortex.placements pl
  JOIN cortex.models m ON m.id = pl.model_id
  JOIN cortex.nodes n ON n.id = pl.node_id
 WHERE pl.state = 'ready' AND m.enabled AND n.marked_down_at IS NULL;
COMMENT ON VIEW cortex.routes IS
    'Ready replicas a gateway may route to (its routing snapshot): re-read on NOTIFY '
    'cortex_placement / cortex_node / cortex_catalogue and periodically. Prefer alive, '
    'non-draining nodes with short queues; dead nodes are listed until the scheduler marks '
    'them down.';
COMMENT ON COLUMN cortex.routes.placement_id IS 'Placement id (for cortex.placements_touch).';
COMMENT ON COLUMN cortex.routes.model_id IS 'Model id.';
COMMENT ON COLUMN cortex.routes.model IS 'Canonical model name to send to the neuron.';
COMMENT ON COLUMN cortex.routes.node_id IS 'Node id.';
COMMENT ON COLUMN cortex.routes.node IS 'Node name.';
COMMENT ON COLUMN cortex.routes.endpoint IS 'Neuron base URL.';
COMMENT ON COLUMN cortex.routes.liveness IS 'alive, late or dead (database clock).';
COMMENT ON COLUMN cortex.routes.draining IS 'True while the node drains (avoid for new work).';
COMMENT ON COLUMN cortex.routes.queue_depth IS 'Queued requests at the latest heartbeat.';
COMMENT ON COLUMN cortex.routes.active_sequences IS 'Decoding sequences at the latest heartbeat.';
COMMENT ON COLUMN cortex.routes.ready_at IS 'When the replica became ready.';
COMMENT ON COLUMN cortex.routes.last_used_at IS 'Latest use reported by a gateway.';

------------------------------------------------------------------------------------------------
-- request analytics
------------------------------------------------------------------------------------------------
CREATE VIEW cortex.model_usage AS
SELECT date_trunc('hour', r.created_at) AS hour,
       COALESCE(r.served_model, r.requested_model) AS model,
       count(*) AS requests,
       count(*) FILTER (WHERE r.status_code >= 400 AND NOT r.cancelled) AS errors,
       count(*) FILTER (WHERE r.status_code >= 500 AND NOT r.cancelled) AS server_errors,
       count(*) FILTER (WHERE r.cancelled) AS cancelled,
       count(*) FILTER (WHERE r.cold_start) AS cold_starts,
       sum(r.tokens_in) AS tokens_in,
       sum(r.tokens_out) AS tokens_out,
       sum(r.tokens_cached) AS tokens_cached,
       round(avg(r.decode_tps)::numeric, 1) AS avg_decode_tps
  FROM cortex.requests r
 GROUP BY 1, 2;
COMMENT ON VIEW cortex.model_usage IS
    'Per model per hour: requests, errors, tokens. '
    'SELECT * FROM cortex.model_usage WHERE hour > now() - interval ''1 day'' ORDER BY hour;';
COMMENT ON COLUMN cortex.model_usage.hour IS 'Hour bucket (in the session time zone).';
COMMENT ON COLUMN cortex.model_usage.model IS 'Served model (the requested name when none served).';
COMMENT ON COLUMN cortex.model_usage.requests IS 'Requests received.';
COMMENT ON COLUMN cortex.model_usage.errors IS 'Requests answered with status >= 400 (not cancelled).';
COMMENT ON COLUMN cortex.model_usage.server_errors IS 'Of which status >= 500.';
COMMENT ON COLUMN cortex.model_usage.cancelled IS 'Requests the client abandoned.';
COMMENT ON COLUMN cortex.model_usage.cold_starts IS 'Requests that waited for a model load.';
COMMENT ON COLUMN cortex.model_usage.tokens_in IS 'Prompt tokens.';
COMMENT ON COLUMN cortex.model_usage.tokens_out IS 'Generated tokens.';
COMMENT ON COLUMN cortex.model_usage.tokens_cached IS 'Prompt tokens served from the prefix cache.';
COMMENT ON COLUMN cortex.model_usage.avg_decode_tps IS 'Mean decode speed, tokens/s.';

CREATE VIEW cortex.model_latency AS
SELECT date_trunc('hour', r.created_at) AS hour,
       r.served_model AS model,
       r.cold_start,
       count(*) AS requests,
       percentile_cont(0.50) WITHIN GROUP (ORDER BY r.ttft_ms) AS ttft_p50_ms,
       percentile_cont(0.95) WITHIN GROUP (ORDER BY r.ttft_ms) AS ttft_p95_ms,
       percentile_cont(0.99) WITHIN GROUP (ORDER BY r.ttft_ms) AS ttft_p99_ms,
       percentile_cont(0.50) WITHIN GROUP (ORDER BY r.total_ms) AS total_p50_ms,
       percentile_cont(0.95) WITHIN GROUP (ORDER BY r.total_ms) AS total_p95_ms,
       percentile_cont(0.99) WITHIN GROUP (ORDER BY r.total_ms) AS total_p99_ms,
       percentile_cont(0.95) WITHIN GROUP (ORDER BY r.queue_wait_ms) AS queue_wait_p95_ms
  FROM cortex.requests r
 WHERE r.status_code < 400 AND NOT r.cancelled AND r.served_model IS NOT NULL
 GROUP BY 1, 2, 3;
COMMENT ON VIEW cortex.model_latency IS
    'Latency percentiles of successful requests per model per hour, warm and cold starts apart '
    '(WHERE NOT cold_start for the steady state).';
COMMENT ON COLUMN cortex.model_latency.hour IS 'Hour bucket (in the session time zone).';
COMMENT ON COLUMN cortex.model_latency.model IS 'Served model.';
COMMENT ON COLUMN cortex.model_latency.cold_start IS 'True for requests that waited for a load.';
COMMENT ON COLUMN cortex.model_latency.requests IS 'Successful requests in the bucket.';
COMMENT ON COLUMN cortex.model_latency.ttft_p50_ms IS 'Median time to first token, ms.';
COMMENT ON COLUMN cortex.model_latency.ttft_p95_ms IS '95th percentile time to first token, ms.';
COMMENT ON COLUMN cortex.model_latency.ttft_p99_ms IS '99th percentile time to first token, ms.';
COMMENT ON COLUMN cortex.model_latency.total_p50_ms IS 'Median total time, ms.';
COMMENT ON COLUMN cortex.model_latency.total_p95_ms IS '95th percentile total time, ms.';
COMMENT ON COLUMN cortex.model_latency.total_p99_ms IS '99th percentile total time, ms.';
COMMENT ON COLUMN cortex.model_latency.queue_wait_p95_ms IS '95th percentile queue wait, ms.';

CREATE VIEW cortex.node_utilisation AS
SELECT date_trunc('hour', r.created_at) AS hour,
       r.node,
       count(*) AS requests,
       count(*) FILTER (WHERE r.status_code >= 400 AND NOT r.cancelled) AS errors,
       sum(r.tokens_in) AS tokens_in,
       sum(r.tokens_out) AS tokens_out,
       round((sum(r.total_ms) / 1000.0)::numeric, 1) AS busy_seconds,
       round((sum(r.total_ms) / 3600000.0)::numeric, 3) AS avg_concurrency,
       round(avg(r.decode_tps)::numeric, 1) AS avg_decode_tps
  FROM cortex.requests r
 WHERE r.node IS NOT NULL
 GROUP BY 1, 2;
COMMENT ON VIEW cortex.node_utilisation IS
    'Per node per hour: requests served, tokens, busy time and mean concurrency. Current memory '
    'use is in cortex.fleet_status and cortex.device_status.';
COMMENT ON COLUMN cortex.node_utilisation.hour IS 'Hour bucket (in the session time zone).';
COMMENT ON COLUMN cortex.node_utilisation.node IS 'Node name.';
COMMENT ON COLUMN cortex.node_utilisation.requests IS 'Requests it served.';
COMMENT ON COLUMN cortex.node_utilisation.errors IS 'Of which answered with status >= 400.';
COMMENT ON COLUMN cortex.node_utilisation.tokens_in IS 'Prompt tokens processed.';
COMMENT ON COLUMN cortex.node_utilisation.tokens_out IS 'Tokens generated.';
COMMENT ON COLUMN cortex.node_utilisation.busy_seconds IS 'Sum of request durations, seconds.';
COMMENT ON COLUMN cortex.node_utilisation.avg_concurrency IS
    'Mean requests in flight over the whole hour (busy_seconds / 3600).';
COMMENT ON COLUMN cortex.node_utilisation.avg_decode_tps IS 'Mean decode speed, tokens/s.';

CREATE VIEW cortex.key_usage AS
SELECT date_trunc('day', r.created_at) AS day,
       r.api_key_id,
       k.name AS key_name,
       k.prefix,
       count(*) AS requests,
       count(*) FILTER (WHERE r.status_code >= 400 AND NOT r.cancelled) AS errors,
       sum(r.tokens_in) AS tokens_in,
       sum(r.tokens_out) AS tokens_out
  FROM cortex.requests r
  LEFT JOIN cortex.api_keys k ON k.id = r.api_key_id
 GROUP BY 1, 2, 3, 4;
COMMENT ON VIEW cortex.key_usage IS 'Per API key per day: requests, errors and tokens.';
COMMENT ON COLUMN cortex.key_usage.day IS 'Day bucket (in the session time zone).';
COMMENT ON COLUMN cortex.key_usage.api_key_id IS 'Key id (NULL: unauthenticated requests).';
COMMENT ON COLUMN cortex.key_usage.key_name IS 'Key label.';
COMMENT ON COLUMN cortex.key_usage.prefix IS 'Key visible prefix.';
COMMENT ON COLUMN cortex.key_usage.requests IS 'Requests made with the key.';
COMMENT ON COLUMN cortex.key_usage.errors IS 'Of which answered with status >= 400.';
COMMENT ON COLUMN cortex.key_usage.tokens_in IS 'Prompt tokens.';
COMMENT ON COLUMN cortex.key_usage.tokens_out IS 'Generated tokens.';

------------------------------------------------------------------------------------------------
-- audit and help
------------------------------------------------------------------------------------------------
CREATE VIEW cortex.recent_events AS
SELECT e.id,
       e.at,
       date_trunc('second', now() - e.at) AS age,
       e.kind,
       e.actor,
       e.epoch,
       e.model,
       e.node,
       e.placement_id,
       e.demand_id,
       e.reason,
       e.detail
  FROM cortex.events e
 WHERE e.at > now() - interval '24 hours'
 ORDER BY e.id DESC;
COMMENT ON VIEW cortex.recent_events IS
    'Events of the last 24 hours, newest first. SELECT * FROM cortex.recent_events LIMIT 50;';
COMMENT ON COLUMN cortex.recent_events.id IS 'Event id.';
COMMENT ON COLUMN cortex.recent_events.at IS 'Database time of the event.';
COMMENT ON COLUMN cortex.recent_events.age IS 'How long ago.';
COMMENT ON COLUMN cortex.recent_events.kind IS 'Event kind, e.g. placement.ready.';
COMMENT ON COLUMN cortex.recent_events.actor IS 'Scheduler holder or database role.';
COMMENT ON COLUMN cortex.recent_events.epoch IS 'Scheduler epoch, if any.';
COMMENT ON COLUMN cortex.recent_events.model IS 'Model name, if any.';
COMMENT ON COLUMN cortex.recent_events.node IS 'Node name, if any.';
COMMENT ON COLUMN cortex.recent_events.placement_id IS 'Placement id, if any.';
COMMENT ON COLUMN cortex.recent_events.demand_id IS 'Demand id, if any.';
COMMENT ON COLUMN cortex.recent_events.reason IS 'Reason.';
COMMENT ON COLUMN cortex.recent_events.detail IS 'Structured detail.';

CREATE VIEW cortex.help AS
SELECT split_part(d.description, ':', 1) AS audience,
       p.proname || '(' || pg_get_function_arguments(p.oid) || ')' AS function,
       btrim(substr(d.description, strpos(d.description, ':') + 1)) AS description
  FROM pg_catalog.pg_proc p
  JOIN pg_catalog.pg_description d
    ON d.objoid = p.oid AND d.classoid = 'pg_catalog.pg_proc'::regclass AND d.objsubid = 0
 WHERE p.pronamespace = 'cortex'::regnamespace
   AND split_part(d.description, ':', 1) <> 'internal'
 ORDER BY CASE split_part(d.description, ':', 1) WHEN 'admin' THEN 0 ELSE 1 END, 1, 2;
COMMENT ON VIEW cortex.help IS
    'The callable functions with their documentation, admin ones first. '
    'SELECT function, description FROM cortex.help WHERE audience = ''admin'';';
COMMENT ON COLUMN cortex.help.audience IS
    'Who calls it: admin, gateway, neuron, scheduler (or several), any.';
COMMENT ON COLUMN cortex.help.function IS 'Name and arguments, with defaults.';
COMMENT ON COLUMN cortex.help.description IS 'What it does.';
