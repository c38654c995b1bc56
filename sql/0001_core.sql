-- sql/0001_core.sql — the control-plane tables.
--
-- What: creates schema cortex with every entity of DESIGN.md (settings, scheduler_lease, nodes,
-- gpus, models, model_aliases, node_models, placements, placement_gpus, demand, requests, events,
-- api_keys) and schema cortex_part, which holds the daily partitions of cortex.requests.
-- Why: PostgreSQL is Cortex's source of truth. This migration lays down state only; behaviour
-- (state machine, NOTIFY, partition management, the neuron/gateway/scheduler/admin functions and
-- the views) follows in 0002-0006. Constraints are named <table>_<what>_{pk,fk,uq,ck} so that an
-- error names the rule it broke, and every table and column carries a COMMENT so that \d+ in psql
-- documents the schema. Times are timestamptz stamped by the database clock (now()).

CREATE SCHEMA cortex;
COMMENT ON SCHEMA cortex IS
    'Cortex control plane: fleet state, policy, request facts and the psql admin interface.';

CREATE SCHEMA cortex_part;
COMMENT ON SCHEMA cortex_part IS
    'Daily partitions of cortex.requests (requests_YYYYMMDD, UTC days) and its default partition; '
    'created and dropped only by cortex.ensure_request_partitions / '
    'cortex.drop_request_partitions_older_than.';

------------------------------------------------------------------------------------------------
-- settings: policy knobs, one typed row per key. Values are validated by a trigger (0002).
------------------------------------------------------------------------------------------------
CREATE TABLE cortex.settings (
    key           text        NOT NULL,
    value         text        NOT NULL,
    kind          text        NOT NULL,
    allowed       text[],
    min_value     text,
    default_value text        NOT NULL,
    description   text        NOT NULL,
    updated_at    timestamptz NOT NULL DEFAULT now(),
    updated_by    text        NOT NULL DEFAULT session_user,
    CONSTRAINT settings_pk PRIMARY KEY (key),
    CONSTRAINT settings_key_ck CHECK (key ~ '^[a-z][a-z0-9_]{0,62}$'),
    CONSTRAINT settings_kind_ck CHECK (kind IN ('integer', 'interval', 'boolean', 'enum')),
    CONSTRAINT settings_allowed_ck CHECK ((kind = 'enum') = (allowed IS NOT NULL)),
    CONSTRAINT settings_min_value_ck CHECK (min_value IS NULL OR kind IN ('integer', 'interval'))
);
COMMENT ON TABLE cortex.settings IS
    'Policy knobs editable from psql with cortex.set_setting(key, value); each value is validated '
    'against its kind, so a typo cannot reach the scheduler or the gateways.';
COMMENT ON COLUMN cortex.settings.key IS 'Setting name (lower_snake_case), e.g. eviction_strategy.';
COMMENT ON COLUMN cortex.settings.value IS
    'Current value as text, already validated (integers are stored normalised).';
COMMENT ON COLUMN cortex.settings.kind IS
    'Value type: integer, interval (PostgreSQL interval syntax), boolean or enum.';
COMMENT ON COLUMN cortex.settings.allowed IS 'For kind enum: the accepted values; NULL otherwise.';
COMMENT ON COLUMN cortex.settings.min_value IS
    'For kind integer or interval: the smallest accepted value (inclusive); NULL = no bound.';
COMMENT ON COLUMN cortex.settings.default_value IS
    'Value restored by cortex.reset_setting(key).';
COMMENT ON COLUMN cortex.settings.description IS 'What the setting controls and its unit.';
COMMENT ON COLUMN cortex.settings.updated_at IS 'Database time of the last change.';
COMMENT ON COLUMN cortex.settings.updated_by IS 'Database role that made the last change.';

------------------------------------------------------------------------------------------------
-- scheduler_lease: exactly one row; the epoch fences stale leaders.
------------------------------------------------------------------------------------------------
CREATE TABLE cortex.scheduler_lease (
    singleton   boolean     NOT NULL DEFAULT true,
    holder      text,
    epoch       bigint      NOT NULL DEFAULT 0,
    acquired_at timestamptz,
    renewed_at  timestamptz,
    expires_at  timestamptz NOT NULL DEFAULT '-infinity',
    CONSTRAINT scheduler_lease_pk PRIMARY KEY (singleton),
    CONSTRAINT scheduler_lease_singleton_ck CHECK (singleton),
    CONSTRAINT scheduler_lease_epoch_ck CHECK (epoch >= 0)
);
COMMENT ON TABLE cortex.scheduler_lease IS
    'The scheduler leader lease (one row). Every leader write runs cortex.lease_check(epoch) in '
    'its transaction; a new leader bumps epoch, so writes from a stale leader raise CX001.';
COMMENT ON COLUMN cortex.scheduler_lease.singleton IS 'Always true: keeps the table at one row.';
COMMENT ON COLUMN cortex.scheduler_lease.holder IS
    'Identity of the scheduler holding (or last holding) the lease, e.g. host:pid.';
COMMENT ON COLUMN cortex.scheduler_lease.epoch IS
    'Leadership generation; incremented on every change of leader (0 = never held).';
COMMENT ON COLUMN cortex.scheduler_lease.acquired_at IS 'Database time the current epoch began.';
COMMENT ON COLUMN cortex.scheduler_lease.renewed_at IS 'Database time of the last renewal.';
COMMENT ON COLUMN cortex.scheduler_lease.expires_at IS
    'Database time after which the lease is free for another scheduler.';

------------------------------------------------------------------------------------------------
-- nodes and their devices
------------------------------------------------------------------------------------------------
CREATE TABLE cortex.nodes (
    id                 bigint      GENERATED ALWAYS AS IDENTITY,
    name               text        NOT NULL,
    endpoint           text        NOT NULL,
    version            text,
    incarnation        bigint      NOT NULL DEFAULT 1,
    registered_at      timestamptz NOT NULL DEFAULT now(),
    last_heartbeat_at  timestamptz,
    node_clock_at      timestamptz,
    queue_depth        integer     NOT NULL DEFAULT 0,
    active_sequences   integer     NOT NULL DEFAULT 0,
    draining           boolean     NOT NULL DEFAULT false,
    drain_requested_at timestamptz,
    marked_down_at     timestamptz,
    down_reason        text,
    CONSTRAINT nodes_pk PRIMARY KEY (id),
    CONSTRAINT nodes_name_uq UNIQUE (name),
    CONSTRAINT nodes_name_ck CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$'),
    CONSTRAINT nodes_endpoint_ck
        CHECK (endpoint ~ '^https?://[^[:space:]/]+(/[^[:space:]]*)?$' AND length(endpoint) <= 512),
    CONSTRAINT nodes_incarnation_ck CHECK (incarnation >= 1),
    CONSTRAINT nodes_load_ck CHECK (queue_depth >= 0 AND active_sequences >= 0),
    CONSTRAINT nodes_drain_ck CHECK (NOT draining OR drain_requested_at IS NOT NULL),
    CONSTRAINT nodes_down_ck CHECK ((marked_down_at IS NULL) = (down_reason IS NULL))
);
COMMENT ON TABLE cortex.nodes IS
    'One row per neuron (GPU or CPU host). Registered and heartbeated by the neuron; liveness is '
    'judged only from last_heartbeat_at against the database clock (see cortex.node_liveness).';
COMMENT ON COLUMN cortex.nodes.id IS 'Node id, stable across restarts of the same neuron name.';
COMMENT ON COLUMN cortex.nodes.name IS 'Unique node name (host name style: letters, digits, . _ -).';
COMMENT ON COLUMN cortex.nodes.endpoint IS
    'Base URL the gateways and the scheduler use to reach the neuron, e.g. http://gpu1:8400.';
COMMENT ON COLUMN cortex.nodes.version IS 'Neuron software version reported at registration.';
COMMENT ON COLUMN cortex.nodes.incarnation IS
    'Incremented each time the neuron (re)registers; placements of an older incarnation are void.';
COMMENT ON COLUMN cortex.nodes.registered_at IS 'Database time of the latest registration.';
COMMENT ON COLUMN cortex.nodes.last_heartbeat_at IS
    'Database time (now()) of the latest heartbeat; the only input to liveness.';
COMMENT ON COLUMN cortex.nodes.node_clock_at IS
    'The node''s own clock at its latest heartbeat, kept for diagnosing skew; never compared with '
    'database time.';
COMMENT ON COLUMN cortex.nodes.queue_depth IS 'Requests waiting on the node at its latest heartbeat.';
COMMENT ON COLUMN cortex.nodes.active_sequences IS
    'Sequences being decoded on the node at its latest heartbeat.';
COMMENT ON COLUMN cortex.nodes.draining IS
    'Operator asked to empty this node (cortex.drain_node): no new placements; the scheduler '
    'moves its models elsewhere. Survives neuron restarts.';
COMMENT ON COLUMN cortex.nodes.drain_requested_at IS 'Database time draining was last switched on.';
COMMENT ON COLUMN cortex.nodes.marked_down_at IS
    'Set by the scheduler (cortex.mark_dead_nodes) when heartbeats stopped for longer than '
    'heartbeat_grace; cleared when the neuron registers again.';
COMMENT ON COLUMN cortex.nodes.down_reason IS 'Why the node was marked down; NULL while up.';

CREATE TABLE cortex.gpus (
    id                 bigint      GENERATED ALWAYS AS IDENTITY,
    node_id            bigint      NOT NULL,
    kind               text        NOT NULL DEFAULT 'cuda',
    ordinal            integer     NOT NULL,
    name               text,
    uuid               text,
    compute_capability text,
    memory_total_bytes bigint      NOT NULL,
    memory_used_bytes  bigint,
    memory_free_bytes  bigint,
    utilization_pct    real,
    updated_at         timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT gpus_pk PRIMARY KEY (id),
    CONSTRAINT gpus_node_fk FOREIGN KEY (node_id) REFERENCES cortex.nodes (id) ON DELETE CASCADE,
    CONSTRAINT gpus_device_uq UNIQUE (node_id, kind, ordinal),
    CONSTRAINT gpus_id_node_uq UNIQUE (id, node_id),
    CONSTRAINT gpus_kind_ck CHECK (kind IN ('cuda', 'cpu')),
    CONSTRAINT gpus_ordinal_ck CHECK (ordinal >= 0),
    CONSTRAINT gpus_memory_total_ck CHECK (memory_total_bytes > 0),
    CONSTRAINT gpus_memory_used_ck CHECK (memory_used_bytes IS NULL OR memory_used_bytes >= 0),
    CONSTRAINT gpus_memory_free_ck CHECK (memory_free_bytes IS NULL OR memory_free_bytes >= 0),
    CONSTRAINT gpus_utilization_ck CHECK (utilization_pct IS NULL OR utilization_pct BETWEEN 0 AND 100)
);
COMMENT ON TABLE cortex.gpus IS
    'Compute devices of each node, synced at registration and updated by heartbeats. A host '
    'without GPUs registers one device of kind cpu whose memory_total_bytes is its memory budget.';
COMMENT ON COLUMN cortex.gpus.id IS 'Device id (cluster-wide).';
COMMENT ON COLUMN cortex.gpus.node_id IS 'Node that owns the device.';
COMMENT ON COLUMN cortex.gpus.kind IS 'cuda (a GPU) or cpu (the host''s memory budget for models).';
COMMENT ON COLUMN cortex.gpus.ordinal IS 'Device index on the node (CUDA ordinal; 0 for cpu).';
COMMENT ON COLUMN cortex.gpus.name IS 'Device model name as reported, e.g. NVIDIA H100 80GB HBM3.';
COMMENT ON COLUMN cortex.gpus.uuid IS 'Vendor device UUID (GPU-...), when known.';
COMMENT ON COLUMN cortex.gpus.compute_capability IS 'CUDA compute capability, e.g. 9.0.';
COMMENT ON COLUMN cortex.gpus.memory_total_bytes IS
    'Total device memory in bytes (for cpu: the memory budget the neuron may use for models).';
COMMENT ON COLUMN cortex.gpus.memory_used_bytes IS 'Bytes in use at the latest heartbeat.';
COMMENT ON COLUMN cortex.gpus.memory_free_bytes IS 'Bytes free at the latest heartbeat.';
COMMENT ON COLUMN cortex.gpus.utilization_pct IS 'Compute utilisation (0-100) at the latest heartbeat.';
COMMENT ON COLUMN cortex.gpus.updated_at IS 'Database time of the latest registration or heartbeat.';

------------------------------------------------------------------------------------------------
-- the model catalogue
------------------------------------------------------------------------------------------------
CREATE TABLE cortex.models (
    id                 bigint      GENERATED ALWAYS AS IDENTITY,
    name               text        NOT NULL,
    enabled            boolean     NOT NULL DEFAULT true,
    source             text        NOT NULL DEFAULT 'operator',
    display_name       text,
    description        text,
    format             text,
    architecture       text,
    size_bytes         bigint,
    memory_bytes       bigint,
    context_length     integer,
    tensor_parallel    integer     NOT NULL DEFAULT 1,
    priority           integer     NOT NULL DEFAULT 0,
    pinned             boolean     NOT NULL DEFAULT false,
    min_replicas       integer     NOT NULL DEFAULT 0,
    max_replicas       integer     NOT NULL DEFAULT 1,
    idle_ttl           interval,
    load_failures      integer     NOT NULL DEFAULT 0,
    last_load_error    text,
    last_load_error_at timestamptz,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT models_pk PRIMARY KEY (id),
    CONSTRAINT models_name_uq UNIQUE (name),
    CONSTRAINT models_name_ck CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}$'),
    CONSTRAINT models_source_ck CHECK (source IN ('operator', 'scan')),
    CONSTRAINT models_format_ck CHECK (format IS NULL OR format IN ('gguf', 'hf')),
    CONSTRAINT models_size_ck CHECK (size_bytes IS NULL OR size_bytes >= 0),
    CONSTRAINT models_memory_ck CHECK (memory_bytes IS NULL OR memory_bytes > 0),
    CONSTRAINT models_context_ck CHECK (context_length IS NULL OR context_length > 0),
    CONSTRAINT models_tensor_parallel_ck CHECK (tensor_parallel BETWEEN 1 AND 64),
    CONSTRAINT models_priority_ck CHECK (priority >= 0),
    CONSTRAINT models_replicas_ck
        CHECK (min_replicas >= 0 AND max_replicas >= 1 AND max_replicas >= min_replicas),
    CONSTRAINT models_idle_ttl_ck CHECK (idle_ttl IS NULL OR idle_ttl > interval '0'),
    CONSTRAINT models_load_failures_ck CHECK (load_failures >= 0)
);
COMMENT ON TABLE cortex.models IS
    'The model catalogue and its per-model policy. Rows come from cortex.add_model or, when '
    'auto_register_models is on, from a neuron''s disk scan. Clients name a model by name or by '
    'an alias (cortex.model_aliases); cortex.resolve_model does the lookup.';
COMMENT ON COLUMN cortex.models.id IS 'Model id.';
COMMENT ON COLUMN cortex.models.name IS
    'Canonical model name as clients send it and as nodes hold it on disk, e.g. qwen3.6-27b '
    '(letters, digits, . _ - : /; at most 128 characters).';
COMMENT ON COLUMN cortex.models.enabled IS
    'False after cortex.remove_model while nodes still hold the files: hidden from the catalogue, '
    'kept so that rescans do not bring it back. cortex.add_model enables it again.';
COMMENT ON COLUMN cortex.models.source IS 'operator (cortex.add_model) or scan (auto-registered).';
COMMENT ON COLUMN cortex.models.display_name IS 'Human-friendly name for model listings; NULL = name.';
COMMENT ON COLUMN cortex.models.description IS 'Free-text note for operators.';
COMMENT ON COLUMN cortex.models.format IS
    'Weights format, gguf or hf (safetensors directory); NULL = whatever the nodes hold.';
COMMENT ON COLUMN cortex.models.architecture IS 'Model architecture, e.g. qwen3; NULL = from nodes.';
COMMENT ON COLUMN cortex.models.size_bytes IS 'Size of the weight files in bytes; NULL = from nodes.';
COMMENT ON COLUMN cortex.models.memory_bytes IS
    'Device memory one replica needs in total (weights + KV cache + workspace), overriding the '
    'nodes'' estimates; NULL = use cortex.node_models.memory_bytes.';
COMMENT ON COLUMN cortex.models.context_length IS
    'Context length to serve (sizes the KV cache); NULL = the model''s own maximum.';
COMMENT ON COLUMN cortex.models.tensor_parallel IS
    'Tensor-parallel degree: how many GPUs of one node a replica spans.';
COMMENT ON COLUMN cortex.models.priority IS
    'Eviction priority (>= 0, higher is kept longer) when eviction_strategy = priority.';
COMMENT ON COLUMN cortex.models.pinned IS
    'Pinned models are kept loaded (at least one replica) and never evicted or idle-unloaded.';
COMMENT ON COLUMN cortex.models.min_replicas IS
    'Replicas the scheduler keeps loaded even without demand (pinned implies at least 1).';
COMMENT ON COLUMN cortex.models.max_replicas IS 'Most replicas the scheduler may place.';
COMMENT ON COLUMN cortex.models.idle_ttl IS
    'Unload a replica unused for this long; NULL = the idle_ttl setting.';
COMMENT ON COLUMN cortex.models.load_failures IS
    'Consecutive failed loads (reset by a successful load or cortex.request_load); the scheduler '
    'stops retrying at the max_load_attempts setting.';
COMMENT ON COLUMN cortex.models.last_load_error IS 'Reason given by the latest failed load.';
COMMENT ON COLUMN cortex.models.last_load_error_at IS 'Database time of the latest failed load.';
COMMENT ON COLUMN cortex.models.created_at IS 'Database time the model was added.';
COMMENT ON COLUMN cortex.models.updated_at IS 'Database time of the latest change to this row.';

CREATE TABLE cortex.model_aliases (
    alias      text        NOT NULL,
    model_id   bigint      NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    created_by text        NOT NULL DEFAULT session_user,
    CONSTRAINT model_aliases_pk PRIMARY KEY (alias),
    CONSTRAINT model_aliases_model_fk FOREIGN KEY (model_id)
        REFERENCES cortex.models (id) ON DELETE CASCADE,
    CONSTRAINT model_aliases_alias_ck CHECK (alias ~ '^[A-Za-z0-9][A-Za-z0-9._:/-]{0,126}[*]?$')
);
CREATE INDEX model_aliases_model_ix ON cortex.model_aliases (model_id);
COMMENT ON TABLE cortex.model_aliases IS
    'Other names clients may use for a model, e.g. claude-sonnet-4 -> qwen3.6-27b. An alias '
    'ending in * is a prefix pattern (claude-sonnet-* matches claude-sonnet-4-5-20250929); the '
    'longest matching pattern wins, exact names and aliases win over patterns.';
COMMENT ON COLUMN cortex.model_aliases.alias IS
    'The alternative name, or a prefix pattern ending in *. Shares one namespace with model names.';
COMMENT ON COLUMN cortex.model_aliases.model_id IS 'The model the alias resolves to.';
COMMENT ON COLUMN cortex.model_aliases.created_at IS 'Database time the alias was (re)pointed.';
COMMENT ON COLUMN cortex.model_aliases.created_by IS 'Database role that created the alias.';

CREATE TABLE cortex.node_models (
    node_id        bigint      NOT NULL,
    name           text        NOT NULL,
    format         text        NOT NULL,
    architecture   text,
    size_bytes     bigint      NOT NULL,
    memory_bytes   bigint,
    context_length integer,
    path           text,
    scanned_at     timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT node_models_pk PRIMARY KEY (node_id, name),
    CONSTRAINT node_models_node_fk FOREIGN KEY (node_id)
        REFERENCES cortex.nodes (id) ON DELETE CASCADE,
    CONSTRAINT node_models_name_ck CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}$'),
    CONSTRAINT node_models_format_ck CHECK (format IN ('gguf', 'hf')),
    CONSTRAINT node_models_size_ck CHECK (size_bytes >= 0),
    CONSTRAINT node_models_memory_ck CHECK (memory_bytes IS NULL OR memory_bytes > 0),
    CONSTRAINT node_models_context_ck CHECK (context_length IS NULL OR context_length > 0)
);
CREATE INDEX node_models_name_ix ON cortex.node_models (name);
COMMENT ON TABLE cortex.node_models IS
    'Which node holds which model files, from the neuron''s disk scan at start and on rescan '
    '(cortex.node_models_sync). Joined to cortex.models by name.';
COMMENT ON COLUMN cortex.node_models.node_id IS 'Node holding the files.';
COMMENT ON COLUMN cortex.node_models.name IS 'Model name derived from the files (matches models.name).';
COMMENT ON COLUMN cortex.node_models.format IS 'gguf (single file) or hf (safetensors directory).';
COMMENT ON COLUMN cortex.node_models.architecture IS 'Architecture read from the model metadata.';
COMMENT ON COLUMN cortex.node_models.size_bytes IS 'Total size of the weight files in bytes.';
COMMENT ON COLUMN cortex.node_models.memory_bytes IS
    'The neuron''s estimate of device memory one replica needs (weights + KV cache + workspace).';
COMMENT ON COLUMN cortex.node_models.context_length IS 'Maximum context length from the metadata.';
COMMENT ON COLUMN cortex.node_models.path IS 'Location of the files on the node (informational).';
COMMENT ON COLUMN cortex.node_models.scanned_at IS 'Database time of the scan that reported it.';

------------------------------------------------------------------------------------------------
-- placements: a model replica on a node's devices, with an enforced state machine (0002)
------------------------------------------------------------------------------------------------
CREATE TABLE cortex.placements (
    id                   bigint      GENERATED ALWAYS AS IDENTITY,
    model_id             bigint      NOT NULL,
    node_id              bigint      NOT NULL,
    state                text        NOT NULL DEFAULT 'requested',
    reason               text,
    epoch                bigint,
    memory_bytes         bigint,
    progress_bytes       bigint      NOT NULL DEFAULT 0,
    progress_total_bytes bigint,
    created_at           timestamptz NOT NULL DEFAULT now(),
    state_changed_at     timestamptz NOT NULL DEFAULT now(),
    ready_at             timestamptz,
    ended_at             timestamptz,
    last_used_at         timestamptz,
    CONSTRAINT placements_pk PRIMARY KEY (id),
    CONSTRAINT placements_id_node_uq UNIQUE (id, node_id),
    CONSTRAINT placements_model_fk FOREIGN KEY (model_id)
        REFERENCES cortex.models (id) ON DELETE CASCADE,
    CONSTRAINT placements_node_fk FOREIGN KEY (node_id)
        REFERENCES cortex.nodes (id) ON DELETE CASCADE,
    CONSTRAINT placements_state_ck
        CHECK (state IN ('requested', 'loading', 'ready', 'unloading', 'gone', 'failed')),
    CONSTRAINT placements_failed_reason_ck CHECK (state <> 'failed' OR reason IS NOT NULL),
    CONSTRAINT placements_ended_ck CHECK ((state IN ('gone', 'failed')) = (ended_at IS NOT NULL)),
    CONSTRAINT placements_memory_ck CHECK (memory_bytes IS NULL OR memory_bytes > 0),
    CONSTRAINT placements_progress_ck CHECK (progress_bytes >= 0 AND (progress_total_bytes IS NULL
        OR (progress_total_bytes >= 0 AND progress_bytes <= progress_total_bytes)))
);
CREATE INDEX placements_active_ix ON cortex.placements (model_id, state)
    WHERE state IN ('requested', 'loading', 'ready', 'unloading');
CREATE INDEX placements_node_ix ON cortex.placements (node_id, state);
COMMENT ON TABLE cortex.placements IS
    'A replica of a model on a node''s devices. State machine: requested -> loading -> ready -> '
    'unloading -> gone, with failed (reason required) reachable from every live state; illegal '
    'transitions raise CX002 (see cortex.placement_transitions). Every insert, state change and '
    'delete sends NOTIFY cortex_placement with the id and writes an event. Terminal rows (gone, '
    'failed) are kept as history.';
COMMENT ON COLUMN cortex.placements.id IS 'Placement id (the NOTIFY cortex_placement payload).';
COMMENT ON COLUMN cortex.placements.model_id IS 'Model being served; fixed for the row''s life.';
COMMENT ON COLUMN cortex.placements.node_id IS 'Node serving it; fixed for the row''s life.';
COMMENT ON COLUMN cortex.placements.state IS
    'requested (scheduler asked), loading (neuron reading weights), ready (serving), unloading, '
    'gone (ended normally) or failed (ended abnormally, see reason).';
COMMENT ON COLUMN cortex.placements.reason IS
    'Why the latest transition happened; required for failed (load error, node down, ...).';
COMMENT ON COLUMN cortex.placements.epoch IS 'Scheduler epoch that created the placement.';
COMMENT ON COLUMN cortex.placements.memory_bytes IS
    'Device memory the scheduler reserved for this replica, summed over its devices.';
COMMENT ON COLUMN cortex.placements.progress_bytes IS 'Weight bytes read so far while loading.';
COMMENT ON COLUMN cortex.placements.progress_total_bytes IS 'Weight bytes to read in total.';
COMMENT ON COLUMN cortex.placements.created_at IS 'Database time the placement was requested.';
COMMENT ON COLUMN cortex.placements.state_changed_at IS 'Database time of the latest state change.';
COMMENT ON COLUMN cortex.placements.ready_at IS 'Database time it became ready.';
COMMENT ON COLUMN cortex.placements.ended_at IS 'Database time it reached gone or failed.';
COMMENT ON COLUMN cortex.placements.last_used_at IS
    'Database time a gateway last routed to it (cortex.placements_touch); drives LRU eviction '
    'and idle unloading (NULL = unused since ready_at).';

CREATE TABLE cortex.placement_gpus (
    placement_id bigint  NOT NULL,
    node_id      bigint  NOT NULL,
    gpu_id       bigint  NOT NULL,
    rank         integer NOT NULL,
    CONSTRAINT placement_gpus_pk PRIMARY KEY (placement_id, rank),
    CONSTRAINT placement_gpus_gpu_uq UNIQUE (placement_id, gpu_id),
    CONSTRAINT placement_gpus_placement_fk FOREIGN KEY (placement_id, node_id)
        REFERENCES cortex.placements (id, node_id) ON DELETE CASCADE,
    CONSTRAINT placement_gpus_gpu_fk FOREIGN KEY (gpu_id, node_id)
        REFERENCES cortex.gpus (id, node_id) ON DELETE CASCADE,
    CONSTRAINT placement_gpus_rank_ck CHECK (rank >= 0)
);
CREATE INDEX placement_gpus_gpu_ix ON cortex.placement_gpus (gpu_id);
COMMENT ON TABLE cortex.placement_gpus IS
    'Devices a placement spans, one row per tensor-parallel rank. The composite foreign keys '
    'guarantee that every device belongs to the placement''s node.';
COMMENT ON COLUMN cortex.placement_gpus.placement_id IS 'The placement.';
COMMENT ON COLUMN cortex.placement_gpus.node_id IS
    'The placement''s node (repeated so that both foreign keys can check it).';
COMMENT ON COLUMN cortex.placement_gpus.gpu_id IS 'A device of that node.';
COMMENT ON COLUMN cortex.placement_gpus.rank IS 'Tensor-parallel rank on this device (0-based).';

------------------------------------------------------------------------------------------------
-- demand: requests to load (or unload) a model, from gateways and operators
------------------------------------------------------------------------------------------------
CREATE TABLE cortex.demand (
    id             bigint      GENERATED ALWAYS AS IDENTITY,
    model_id       bigint      NOT NULL,
    kind           text        NOT NULL DEFAULT 'load',
    node_id        bigint,
    source         text        NOT NULL,
    state          text        NOT NULL DEFAULT 'open',
    reason         text,
    wanted_count   integer     NOT NULL DEFAULT 1,
    created_at     timestamptz NOT NULL DEFAULT now(),
    last_wanted_at timestamptz NOT NULL DEFAULT now(),
    resolved_at    timestamptz,
    epoch          bigint,
    placement_id   bigint,
    CONSTRAINT demand_pk PRIMARY KEY (id),
    CONSTRAINT demand_model_fk FOREIGN KEY (model_id)
        REFERENCES cortex.models (id) ON DELETE CASCADE,
    CONSTRAINT demand_node_fk FOREIGN KEY (node_id) REFERENCES cortex.nodes (id) ON DELETE CASCADE,
    CONSTRAINT demand_placement_fk FOREIGN KEY (placement_id)
        REFERENCES cortex.placements (id) ON DELETE SET NULL,
    CONSTRAINT demand_kind_ck CHECK (kind IN ('load', 'unload')),
    CONSTRAINT demand_state_ck
        CHECK (state IN ('open', 'satisfied', 'failed', 'expired', 'cancelled')),
    CONSTRAINT demand_resolved_ck CHECK ((state = 'open') = (resolved_at IS NULL)),
    CONSTRAINT demand_source_ck CHECK (length(source) BETWEEN 1 AND 200),
    CONSTRAINT demand_wanted_ck CHECK (wanted_count >= 1)
);
CREATE UNIQUE INDEX demand_open_uq ON cortex.demand (model_id, kind, (COALESCE(node_id, 0)))
    WHERE state = 'open';
CREATE INDEX demand_state_ix ON cortex.demand (state, created_at);
COMMENT ON TABLE cortex.demand IS
    'Wishes for a model to be loaded (a gateway holding a cold request, an operator) or unloaded '
    '(an operator). At most one open row per model, kind and target node: asking again bumps '
    'wanted_count. A new row sends NOTIFY cortex_demand with its id; the scheduler resolves it.';
COMMENT ON COLUMN cortex.demand.id IS 'Demand id (the NOTIFY cortex_demand payload).';
COMMENT ON COLUMN cortex.demand.model_id IS 'The model wanted (aliases already resolved).';
COMMENT ON COLUMN cortex.demand.kind IS 'load or unload.';
COMMENT ON COLUMN cortex.demand.node_id IS 'Target node chosen by an operator; NULL = anywhere.';
COMMENT ON COLUMN cortex.demand.source IS
    'Who asked: a gateway name, or operator:<role> for admin functions.';
COMMENT ON COLUMN cortex.demand.state IS
    'open until the scheduler resolves it: satisfied, failed, expired (nobody waited long '
    'enough, see demand_ttl) or cancelled.';
COMMENT ON COLUMN cortex.demand.reason IS 'Why it was resolved that way (failures, cancellation).';
COMMENT ON COLUMN cortex.demand.wanted_count IS 'How many times it was asked for while open.';
COMMENT ON COLUMN cortex.demand.created_at IS 'Database time of the first ask.';
COMMENT ON COLUMN cortex.demand.last_wanted_at IS 'Database time of the latest ask.';
COMMENT ON COLUMN cortex.demand.resolved_at IS 'Database time it left the open state.';
COMMENT ON COLUMN cortex.demand.epoch IS 'Scheduler epoch that resolved it.';
COMMENT ON COLUMN cortex.demand.placement_id IS 'Placement that satisfied it, if any.';

------------------------------------------------------------------------------------------------
-- requests: one row per API request, partitioned by UTC day (management in 0003)
------------------------------------------------------------------------------------------------
CREATE TABLE cortex.requests (
    request_id      text             NOT NULL,
    created_at      timestamptz      NOT NULL DEFAULT now(),
    recorded_at     timestamptz      NOT NULL DEFAULT now(),
    gateway         text,
    api_key_id      bigint,
    dialect         text             NOT NULL,
    endpoint        text             NOT NULL DEFAULT 'chat',
    requested_model text,
    served_model    text,
    node            text,
    placement_id    bigint,
    stream          boolean          NOT NULL DEFAULT false,
    status_code     smallint         NOT NULL,
    error_type      text,
    finish_reason   text,
    cancelled       boolean          NOT NULL DEFAULT false,
    cold_start      boolean          NOT NULL DEFAULT false,
    tokens_in       integer          NOT NULL DEFAULT 0,
    tokens_out      integer          NOT NULL DEFAULT 0,
    tokens_cached   integer          NOT NULL DEFAULT 0,
    queue_wait_ms   double precision,
    ttft_ms         double precision,
    total_ms        double precision,
    decode_tps      double precision,
    client          text,
    CONSTRAINT requests_pk PRIMARY KEY (request_id, created_at),
    CONSTRAINT requests_request_id_ck CHECK (length(request_id) BETWEEN 1 AND 128),
    CONSTRAINT requests_dialect_ck CHECK (dialect IN ('openai', 'anthropic')),
    CONSTRAINT requests_endpoint_ck CHECK (endpoint ~ '^[a-z][a-z0-9_.]{0,63}$'),
    CONSTRAINT requests_status_ck CHECK (status_code BETWEEN 100 AND 599),
    CONSTRAINT requests_tokens_ck CHECK (tokens_in >= 0 AND tokens_out >= 0 AND tokens_cached >= 0),
    CONSTRAINT requests_timings_ck CHECK ((queue_wait_ms IS NULL OR queue_wait_ms >= 0)
        AND (ttft_ms IS NULL OR ttft_ms >= 0) AND (total_ms IS NULL OR total_ms >= 0)
        AND (decode_tps IS NULL OR decode_tps >= 0))
) PARTITION BY RANGE (created_at);
CREATE INDEX requests_created_at_ix ON cortex.requests (created_at);
CREATE INDEX requests_served_model_ix ON cortex.requests (served_model, created_at);
CREATE INDEX requests_api_key_ix ON cortex.requests (api_key_id, created_at);
COMMENT ON TABLE cortex.requests IS
    'One row per API request, written by gateways in batches off the request path with INSERT '
    '... ON CONFLICT DO NOTHING, so a retried batch is harmless. Partitioned by UTC day into '
    'cortex_part.requests_YYYYMMDD (rows outside every partition land in '
    'cortex_part.requests_default); retention drops whole partitions.';
COMMENT ON COLUMN cortex.requests.request_id IS
    'Gateway-assigned request id (also the request-id response header); unique with created_at.';
COMMENT ON COLUMN cortex.requests.created_at IS
    'When the gateway received the request (its own clock; analysis only, never compared with '
    'database time). The partition key; a retried batch must send the same value.';
COMMENT ON COLUMN cortex.requests.recorded_at IS 'Database time the row was written.';
COMMENT ON COLUMN cortex.requests.gateway IS 'Name of the gateway that served the request.';
COMMENT ON COLUMN cortex.requests.api_key_id IS
    'cortex.api_keys.id of the caller; NULL when authentication is off or failed.';
COMMENT ON COLUMN cortex.requests.dialect IS 'API dialect of the request: openai or anthropic.';
COMMENT ON COLUMN cortex.requests.endpoint IS
    'Operation, e.g. chat (chat/completions), messages, completions, embeddings, count_tokens.';
COMMENT ON COLUMN cortex.requests.requested_model IS 'Model name as the client sent it.';
COMMENT ON COLUMN cortex.requests.served_model IS 'Canonical model that served it (aliases resolved).';
COMMENT ON COLUMN cortex.requests.node IS 'Name of the node that served it; NULL if none did.';
COMMENT ON COLUMN cortex.requests.placement_id IS 'cortex.placements.id that served it, if any.';
COMMENT ON COLUMN cortex.requests.stream IS 'True when the response was streamed.';
COMMENT ON COLUMN cortex.requests.status_code IS
    'HTTP status sent to the client (for a stream that failed after the 200: the status the '
    'in-band error stands for).';
COMMENT ON COLUMN cortex.requests.error_type IS 'Machine-readable error code, NULL on success.';
COMMENT ON COLUMN cortex.requests.finish_reason IS 'stop, length, tool_calls, ... (OpenAI terms).';
COMMENT ON COLUMN cortex.requests.cancelled IS 'True when the client went away before the end.';
COMMENT ON COLUMN cortex.requests.cold_start IS 'True when the request waited for a model load.';
COMMENT ON COLUMN cortex.requests.tokens_in IS 'Prompt tokens (including cached ones).';
COMMENT ON COLUMN cortex.requests.tokens_out IS 'Generated tokens (so far, when cancelled).';
COMMENT ON COLUMN cortex.requests.tokens_cached IS 'Prompt tokens served from the prefix cache.';
COMMENT ON COLUMN cortex.requests.queue_wait_ms IS
    'Milliseconds queued before work began (cold-load wait included).';
COMMENT ON COLUMN cortex.requests.ttft_ms IS 'Milliseconds from arrival to the first token.';
COMMENT ON COLUMN cortex.requests.total_ms IS 'Milliseconds from arrival to the last byte sent.';
COMMENT ON COLUMN cortex.requests.decode_tps IS 'Decode speed in tokens per second (engine timing).';
COMMENT ON COLUMN cortex.requests.client IS 'Client identification (User-Agent), truncated.';

CREATE TABLE cortex_part.requests_default PARTITION OF cortex.requests DEFAULT;
COMMENT ON TABLE cortex_part.requests_default IS
    'Catch-all partition for request rows whose day has no partition yet; '
    'cortex.create_request_partition moves them into the new partition.';

------------------------------------------------------------------------------------------------
-- events: the audit log
------------------------------------------------------------------------------------------------
CREATE TABLE cortex.events (
    id           bigint      GENERATED ALWAYS AS IDENTITY,
    at           timestamptz NOT NULL DEFAULT now(),
    kind         text        NOT NULL,
    actor        text        NOT NULL
        DEFAULT COALESCE(NULLIF(current_setting('cortex.actor', true), ''), session_user),
    epoch        bigint
        DEFAULT NULLIF(current_setting('cortex.epoch', true), '')::bigint,
    model        text,
    node         text,
    placement_id bigint,
    demand_id    bigint,
    reason       text,
    detail       jsonb       NOT NULL DEFAULT '{}',
    CONSTRAINT events_pk PRIMARY KEY (id),
    CONSTRAINT events_kind_ck CHECK (kind ~ '^[a-z][a-z0-9_]*([.][a-z][a-z0-9_]*)+$'),
    CONSTRAINT events_detail_ck CHECK (jsonb_typeof(detail) = 'object')
);
CREATE INDEX events_at_ix ON cortex.events (at);
CREATE INDEX events_model_ix ON cortex.events (model, at);
COMMENT ON TABLE cortex.events IS
    'Audit log of every scheduler action, placement transition, node change and admin call. '
    'Names (not ids) of models and nodes are stored so history survives their removal.';
COMMENT ON COLUMN cortex.events.id IS 'Event id (monotonic).';
COMMENT ON COLUMN cortex.events.at IS 'Database time of the event.';
COMMENT ON COLUMN cortex.events.kind IS
    'Dotted kind: placement.<state>, node.registered, node.down, lease.acquired, admin.<action>, ...';
COMMENT ON COLUMN cortex.events.actor IS
    'Who acted: the scheduler lease holder after cortex.lease_check, else the database role.';
COMMENT ON COLUMN cortex.events.epoch IS
    'Scheduler epoch of the transaction (set by cortex.lease_check); NULL outside the scheduler.';
COMMENT ON COLUMN cortex.events.model IS 'Model name involved, if any.';
COMMENT ON COLUMN cortex.events.node IS 'Node name involved, if any.';
COMMENT ON COLUMN cortex.events.placement_id IS 'Placement involved, if any.';
COMMENT ON COLUMN cortex.events.demand_id IS 'Demand row involved, if any.';
COMMENT ON COLUMN cortex.events.reason IS 'Human-readable reason.';
COMMENT ON COLUMN cortex.events.detail IS 'Structured detail (a JSON object).';

------------------------------------------------------------------------------------------------
-- api_keys: only a SHA-256 of each secret is stored
------------------------------------------------------------------------------------------------
CREATE TABLE cortex.api_keys (
    id                  bigint      GENERATED ALWAYS AS IDENTITY,
    name                text        NOT NULL,
    prefix              text        NOT NULL,
    secret_sha256       bytea       NOT NULL,
    requests_per_minute integer,
    tokens_per_minute   integer,
    created_at          timestamptz NOT NULL DEFAULT now(),
    created_by          text        NOT NULL DEFAULT session_user,
    expires_at          timestamptz,
    revoked_at          timestamptz,
    revoked_by          text,
    CONSTRAINT api_keys_pk PRIMARY KEY (id),
    CONSTRAINT api_keys_secret_uq UNIQUE (secret_sha256),
    CONSTRAINT api_keys_name_ck CHECK (length(btrim(name)) BETWEEN 1 AND 200),
    CONSTRAINT api_keys_prefix_ck CHECK (prefix ~ '^cx_[0-9a-f]{8}$'),
    CONSTRAINT api_keys_secret_ck CHECK (octet_length(secret_sha256) = 32),
    CONSTRAINT api_keys_limits_ck CHECK ((requests_per_minute IS NULL OR requests_per_minute > 0)
        AND (tokens_per_minute IS NULL OR tokens_per_minute > 0)),
    CONSTRAINT api_keys_revoked_ck CHECK ((revoked_at IS NULL) = (revoked_by IS NULL))
);
CREATE INDEX api_keys_prefix_ix ON cortex.api_keys (prefix);
COMMENT ON TABLE cortex.api_keys IS
    'API keys for the gateways. cortex.create_api_key returns the secret once; only its SHA-256 '
    'and a short visible prefix are stored. Gateways authenticate with cortex.api_key_lookup.';
COMMENT ON COLUMN cortex.api_keys.id IS 'Key id (what cortex.requests.api_key_id refers to).';
COMMENT ON COLUMN cortex.api_keys.name IS 'Free-text label: who or what the key is for.';
COMMENT ON COLUMN cortex.api_keys.prefix IS
    'First 11 characters of the secret (cx_ + 8 hex digits), to recognise a key in logs.';
COMMENT ON COLUMN cortex.api_keys.secret_sha256 IS 'SHA-256 of the secret''s UTF-8 bytes.';
COMMENT ON COLUMN cortex.api_keys.requests_per_minute IS 'Request rate limit; NULL = unlimited.';
COMMENT ON COLUMN cortex.api_keys.tokens_per_minute IS
    'Token rate limit (input + output); NULL = unlimited.';
COMMENT ON COLUMN cortex.api_keys.created_at IS 'Database time the key was created.';
COMMENT ON COLUMN cortex.api_keys.created_by IS 'Database role that created it.';
COMMENT ON COLUMN cortex.api_keys.expires_at IS 'Database time after which it stops working; NULL = never.';
COMMENT ON COLUMN cortex.api_keys.revoked_at IS 'Database time it was revoked; NULL = active.';
COMMENT ON COLUMN cortex.api_keys.revoked_by IS 'Database role that revoked it.';

------------------------------------------------------------------------------------------------
-- the lease row and the settings
------------------------------------------------------------------------------------------------
INSERT INTO cortex.scheduler_lease DEFAULT VALUES;

INSERT INTO cortex.settings (key, kind, value, default_value, allowed, min_value, description)
VALUES
    ('eviction_strategy', 'enum', 'lru', 'lru', ARRAY['lru', 'priority'], NULL,
     'Which replica to evict when memory is needed: lru (least recently used) or priority '
     '(lowest models.priority first, LRU among equals). Pinned models are never evicted.'),
    ('defrag_after_cycles', 'integer', '30', '30', NULL, '0',
     'Scheduler ticks between defragmentation passes that repack replicas to free whole '
     'devices; 0 disables defragmentation.'),
    ('heartbeat_interval', 'interval', '5 seconds', '5 seconds', NULL, '1 second',
     'How often neurons heartbeat. A node silent for two intervals shows as late.'),
    ('heartbeat_grace', 'interval', '15 seconds', '15 seconds', NULL, '1 second',
     'A node whose latest heartbeat is older than this (database clock) is dead and gets '
     'marked down by the scheduler.'),
    ('idle_ttl', 'interval', '30 minutes', '30 minutes', NULL, '1 second',
     'Default idle time after which an unused, unpinned replica is unloaded (models.idle_ttl '
     'overrides it per model).'),
    ('max_load_attempts', 'integer', '3', '3', NULL, '1',
     'Consecutive failed loads after which the scheduler stops retrying a model until an '
     'operator calls cortex.request_load.'),
    ('load_timeout', 'interval', '15 minutes', '15 minutes', NULL, '1 second',
     'A placement loading for longer than this is failed by the scheduler.'),
    ('scheduler_tick', 'interval', '2 seconds', '2 seconds', NULL, '100 milliseconds',
     'Scheduler periodic pass interval (it also wakes on NOTIFY).'),
    ('lease_duration', 'interval', '10 seconds', '10 seconds', NULL, '1 second',
     'Length of the scheduler leader lease; the leader renews well before it runs out.'),
    ('demand_ttl', 'interval', '10 minutes', '10 minutes', NULL, '1 second',
     'Open demand not asked for again within this time expires.'),
    ('request_retention', 'interval', '30 days', '30 days', NULL, '1 day',
     'Request rows older than this are dropped (whole daily partitions) by '
     'cortex.drop_request_partitions_older_than().'),
    ('request_partitions_ahead', 'integer', '7', '7', NULL, '1',
     'Days of request partitions cortex.ensure_request_partitions() creates ahead of today.'),
    ('auto_register_models', 'boolean', 'true', 'true', NULL, NULL,
     'Add models found by a neuron''s disk scan to the catalogue automatically.'),
    ('device_memory_reserve_mib', 'integer', '1024', '1024', NULL, '0',
     'MiB of every device the scheduler keeps free (CUDA context, fragmentation).');
