/*
 * scheduler/plan.h — the scheduler's decisions, as a pure function of a fleet snapshot.
 *
 * Contract: plan_compute() reads a snapshot of the fleet (nodes and their devices, the model
 * catalogue, live placements, open demand) and the policy settings, and returns the actions
 * the leader should take now, in the order it should take them, each with a reason a person
 * can read. It touches no database, network or clock: every time in the snapshot is an age
 * measured by the database clock when the snapshot was read. The same input always gives the
 * same plan, so the policies are tested with small hand-built fleets.
 *
 * Memory model: a device's capacity is its total memory, less device_reserve_bytes on GPUs (a
 * CPU device is already a budget). A placement reserves memory_bytes split evenly over its
 * devices from the moment it is requested until it is gone; an unloading placement still holds
 * its memory. A model needs memory_bytes (weights + cache budget) for one replica: spread over
 * tensor_parallel GPUs of one node, or on the one device of a CPU node.
 *
 * Policies, in the order plan_compute applies them (docs/scheduler.md explains each):
 *  1. nodes silent beyond the grace period are marked down; their placements are over;
 *  2. loads and unloads that exceeded load_timeout are failed;
 *  3. a replacement (a move made by drain or defragmentation) that is ready retires the
 *     placement it replaces, once that one has no requests in flight;
 *  4. demand: satisfied when a replica is ready, expired after demand_ttl, failed when the
 *     model failed max_load_attempts loads (a demand opened after the latest failure resets the
 *     count instead) or can fit on no node at all; unload demand unloads;
 *  5. idle replicas past their TTL are unloaded (never pinned ones, never below min_replicas,
 *     never with requests in flight or open load demand);
 *  6. wanted replicas are placed — pinned and min_replicas first, then demand by priority, then
 *     moves off draining nodes — best fit on live, non-draining nodes (nodes without a
 *     replica of the model first, then nodes where it did not just fail, then holders of its
 *     files; with require_files only holders qualify); when nothing fits, replicas are evicted
 *     (lru: least recently used first; priority: lowest priority first, then LRU), never
 *     pinned ones and never ones with requests in flight unless evict_in_flight is set; the
 *     evicted memory is used once it is free, never in the same plan;
 *  7. every defrag_after_cycles cycles, a model that still cannot be placed gets room by moving
 *     other replicas (make before break) off the devices it needs.
 *
 * Ownership: the snapshot is borrowed for the duration of the call; the plan owns its actions
 * and their strings (plan_free). Not thread-safe per plan; different plans are independent.
 */
#ifndef CORTEX_SCHEDULER_PLAN_H
#define CORTEX_SCHEDULER_PLAN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The most devices one placement spans (models.tensor_parallel is at most 64). */
#define PLAN_MAX_DEVICES 64

enum plan_node_state {
    PLAN_NODE_ALIVE, /* heartbeating: may take new placements */
    PLAN_NODE_LATE,  /* silent for two intervals: keeps its placements, gets no new ones */
    PLAN_NODE_DEAD,  /* silent beyond heartbeat_grace, not yet marked down */
    PLAN_NODE_DOWN,  /* marked down: none of its placements is live */
};

struct plan_device {
    int64_t id; /* cortex.gpus.id */
    int ordinal;
    bool cpu;            /* a CPU host's memory budget: one device, no tensor parallelism */
    int64_t total_bytes; /* memory_total_bytes */
};

struct plan_node {
    int64_t id;
    const char *name;
    enum plan_node_state state;
    bool draining;
    const struct plan_device *devices;
    size_t n_devices;
};

struct plan_model {
    int64_t id;
    const char *name;
    int64_t memory_bytes; /* one replica's need; 0 = unknown (it cannot be placed) */
    int tensor_parallel;  /* GPUs of one node per replica (>= 1) */
    int priority;         /* higher is evicted later (strategy priority) */
    bool pinned;          /* kept loaded (at least one replica), never evicted or idle-unloaded */
    int min_replicas;
    int max_replicas;
    int64_t idle_ttl_ms;          /* effective idle TTL */
    int load_failures;            /* consecutive failed loads (models.load_failures) */
    const char *last_load_error;  /* latest failure reason, or NULL */
    const int64_t *file_node_ids; /* nodes whose disk scan found the model */
    size_t n_file_nodes;
    const int64_t *failed_node_ids; /* nodes where a load of it failed lately: tried last */
    size_t n_failed_nodes;
};

enum plan_placement_state {
    PLAN_PLACEMENT_REQUESTED,
    PLAN_PLACEMENT_LOADING,
    PLAN_PLACEMENT_READY,
    PLAN_PLACEMENT_UNLOADING,
};

/* A live placement (gone and failed ones are not part of the snapshot). */
struct plan_placement {
    int64_t id;
    int64_t model_id;
    int64_t node_id;
    enum plan_placement_state state;
    const int64_t *device_ids; /* cortex.gpus ids in rank order */
    size_t n_devices;
    int64_t memory_bytes; /* reserved over all its devices; 0 = the model's need */
    int64_t in_state_ms;  /* since its latest state change */
    int64_t idle_ms;      /* ready: since last use (or since ready) */
    int in_flight;        /* requests running or queued on it; < 0 unknown (counts as busy) */
    int64_t replaces_id;  /* the placement this one replaces (a move); 0 = none */
};

enum plan_demand_kind {
    PLAN_DEMAND_LOAD,
    PLAN_DEMAND_UNLOAD,
};

/* An open demand row. */
struct plan_demand {
    int64_t id;
    int64_t model_id;
    enum plan_demand_kind kind;
    int64_t node_id;       /* the node an operator named; 0 = anywhere */
    int64_t wanted_ago_ms; /* since it was last asked for */
    bool after_failure;    /* opened after the model's latest failed load */
};

struct plan_fleet {
    const struct plan_node *nodes;
    size_t n_nodes;
    const struct plan_model *models;
    size_t n_models;
    const struct plan_placement *placements;
    size_t n_placements;
    const struct plan_demand *demands;
    size_t n_demands;
};

enum plan_eviction {
    PLAN_EVICTION_LRU,
    PLAN_EVICTION_PRIORITY,
};

struct plan_settings {
    enum plan_eviction eviction;
    int defrag_after_cycles;      /* 0 = never */
    int max_load_attempts;        /* >= 1 */
    int64_t device_reserve_bytes; /* kept free on every GPU */
    int64_t load_timeout_ms;      /* for loads and for unloads */
    int64_t demand_ttl_ms;
    bool evict_in_flight; /* the operator forces eviction of replicas with requests in flight */
    bool require_files;   /* place only on nodes holding the files (else: prefer them) */
};

enum plan_action_kind {
    PLAN_ACTION_MARK_DEAD, /* mark node_id (and any other dead node) down */
    PLAN_ACTION_LOAD,      /* create a placement of model_id on node_id's devices, then load */
    PLAN_ACTION_UNLOAD,    /* placement_id -> unloading, then ask its neuron to unload */
    PLAN_ACTION_FAIL,      /* placement_id -> failed */
    PLAN_ACTION_RESOLVE,   /* close demand_id with resolution */
    PLAN_ACTION_RETRY,     /* reset model_id's failed-load count: new demand asks again */
    PLAN_ACTION_WAIT,      /* nothing can be done for model_id yet */
};

/* Why an action was planned (events, metrics, tests). */
enum plan_cause {
    PLAN_CAUSE_NODE_DEAD, /* heartbeats stopped */
    PLAN_CAUSE_TIMEOUT,   /* a load or unload took longer than load_timeout */
    PLAN_CAUSE_DEMAND,    /* a load or unload demand */
    PLAN_CAUSE_REPLICAS,  /* pinned or min_replicas */
    PLAN_CAUSE_EVICT,     /* making room for another model */
    PLAN_CAUSE_IDLE,      /* idle TTL */
    PLAN_CAUSE_DRAIN,     /* the node drains */
    PLAN_CAUSE_DEFRAG,    /* defragmentation */
    PLAN_CAUSE_MOVED,     /* a replacement is ready */
    PLAN_CAUSE_FAILURES,  /* max_load_attempts */
};

enum plan_resolution {
    PLAN_RESOLUTION_SATISFIED,
    PLAN_RESOLUTION_FAILED,
    PLAN_RESOLUTION_EXPIRED,
    PLAN_RESOLUTION_CANCELLED,
};

struct plan_action {
    enum plan_action_kind kind;
    enum plan_cause cause;
    int64_t model_id;     /* 0 when none */
    int64_t node_id;      /* 0 when none */
    int64_t placement_id; /* UNLOAD, FAIL; RESOLVE: the satisfying placement (0 = none) */
    int64_t demand_id;    /* RESOLVE; LOAD and WAIT: the demand served (0 = none) */
    int64_t replaces_id;  /* LOAD: the placement the new one replaces (0 = none) */
    int64_t device_ids[PLAN_MAX_DEVICES]; /* LOAD: in rank order */
    int device_ordinals[PLAN_MAX_DEVICES];
    size_t n_devices;
    int64_t memory_bytes;            /* LOAD: reserved over all devices */
    enum plan_resolution resolution; /* RESOLVE */
    char *reason;                    /* owned; never NULL */
};

struct plan {
    struct plan_action *actions;
    size_t n_actions;
    size_t cap_actions;
};

/* Computes the actions for fleet under settings at planning cycle `cycle` (counted from 1 by
 * the caller; defragmentation runs when defrag_after_cycles divides it). out must be empty
 * (zeroed, or after plan_free); the caller frees it with plan_free. Inconsistent snapshot rows
 * (a placement on an unknown node, a device not on its node) are ignored, never trusted. */
void plan_compute(const struct plan_fleet *fleet, const struct plan_settings *settings,
                  uint64_t cycle, struct plan *out);
/* Frees the actions and their reasons and empties p; accepts NULL. */
void plan_free(struct plan *p);

/* Stable lower-case names: "load", "unload", ...; "evict", "idle", ...; "satisfied", ...
 * (events, metrics labels, SQL arguments). */
const char *plan_action_kind_name(enum plan_action_kind kind);
const char *plan_cause_name(enum plan_cause cause);
const char *plan_resolution_name(enum plan_resolution resolution);
/* Parses "lru" / "priority". Returns 0 and sets *out, or -1. */
int plan_eviction_parse(const char *text, enum plan_eviction *out)
        __attribute__((warn_unused_result));

/* Writes n bytes for people ("512 B", "300.0 MiB", "1.5 GiB") into out[0..size). */
char *plan_format_bytes(int64_t n, char *out, size_t size);

#endif
