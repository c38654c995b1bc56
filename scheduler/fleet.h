/*
 * scheduler/fleet.h — the fleet snapshot read from PostgreSQL, and the leader's fenced writes.
 *
 * Contract: fleet_read() reads everything the scheduler decides from — settings, nodes and
 * devices, the enabled models, live placements, open demand — in one read-only REPEATABLE READ
 * transaction, so the snapshot is consistent and every age in it is measured against one
 * database now(). The snapshot owns its memory (fleet_destroy); its `snapshot` member is the
 * plan_fleet view that plan_compute() takes.
 *
 * Writes go through the SQL functions of sql/0004 and sql/0007, each action in its own
 * transaction that starts with cortex.lease_check(epoch) and ends with a scheduler.<action>
 * event (reason, cause, epoch and holder filled in by the database), so a stale leader's write
 * fails as a whole with FLEET_STALE. Every query is parameterised. The writes take an optional
 * errmsg: on failure *errmsg receives the database's message (the caller frees it).
 *
 * Requests in flight are not in the database: fleet_read() sets each placement's in_flight to
 * 0 when its node's latest heartbeat reported no active sequences and no queue, and to -1
 * (unknown, counted as busy) otherwise; the caller may refine it from the neurons.
 *
 * Not thread-safe: one thread uses a db_t and a fleet at a time.
 */
#ifndef CORTEX_SCHEDULER_FLEET_H
#define CORTEX_SCHEDULER_FLEET_H

#include <stdbool.h>
#include <stdint.h>

#include "db.h"
#include "plan.h"

#define FLEET_WUR __attribute__((warn_unused_result))

/* The settings the scheduler runs by (cortex.settings), converted. */
struct fleet_settings {
    struct plan_settings plan;
    int64_t tick_ms;  /* scheduler_tick */
    int64_t lease_ms; /* lease_duration */
    int64_t heartbeat_interval_ms;
    int64_t heartbeat_grace_ms;
};

/* What the snapshot knows about a node beyond the plan's view (parallel to nodes[]). */
struct fleet_node_info {
    const char *endpoint;
    const char *liveness; /* alive, late, dead or down */
    int queue_depth;
    int active_sequences;
};

/* Memory a device reported at its latest heartbeat (parallel to each node's devices). */
struct fleet_device_info {
    int64_t used_bytes; /* -1: not reported */
    int64_t free_bytes; /* -1: not reported */
};

struct fleet {
    struct fleet_settings settings;
    struct plan_fleet snapshot; /* points into the arrays below */
    struct plan_node *nodes;
    struct fleet_node_info *node_info;
    struct fleet_device_info **device_info; /* [node][device] */
    size_t n_nodes;
    struct plan_model *models;
    size_t n_models;
    struct plan_placement *placements; /* in_flight may be refined by the caller */
    size_t n_placements;
    struct plan_demand *demands;
    size_t n_demands;
    struct arena *arena; /* owns every string and array above */
};

/* Outcome of a write. */
enum fleet_result {
    FLEET_OK = 0,
    FLEET_ERROR = -1,    /* no connection, or an unexpected failure (logged) */
    FLEET_STALE = -2,    /* CX001: this epoch no longer leads; stop writing */
    FLEET_REJECTED = -3, /* the database refused: the state moved on since the snapshot */
};

/* Reads a snapshot. Returns 0 and *out (free with fleet_destroy), or -1 with *errmsg set to
 * the reason (the caller frees it; the transaction is rolled back). */
int fleet_read(db_t *db, struct fleet **out, char **errmsg) FLEET_WUR;
/* Frees a snapshot; accepts NULL. */
void fleet_destroy(struct fleet *f);
/* Reads the two settings the loop itself runs by, scheduler_tick and lease_duration, in ms and
 * outside any snapshot: the runner needs them before its first election step, which comes
 * before the first snapshot. Returns 0, or -1 with *errmsg (the caller frees it). */
int fleet_read_timing(db_t *db, int64_t *tick_ms, int64_t *lease_ms, char **errmsg) FLEET_WUR;

/* Lookups by id; NULL when absent. *info (optional) gets the node's extra facts. */
const struct plan_node *fleet_find_node(const struct fleet *f, int64_t id,
                                        const struct fleet_node_info **info);
const struct plan_model *fleet_find_model(const struct fleet *f, int64_t id);
struct plan_placement *fleet_find_placement(const struct fleet *f, int64_t id);

/*
 * Carries out one planned action as the leader of `epoch` (see the contract). For LOAD,
 * *placement_id (optional) receives the new placement's id; for other kinds it is set to 0.
 * MARK_DEAD also opens failover demand for the models the dead nodes were serving.
 */
enum fleet_result fleet_apply(db_t *db, int64_t epoch, const struct fleet *f,
                              const struct plan_action *a, int64_t *placement_id,
                              char **errmsg) FLEET_WUR;

/*
 * Ends a placement because its neuron refused or could not do what was asked: state is
 * "failed" (a refused or unreachable load: counts as a load failure) or "gone" (the neuron no
 * longer holds it). Records a scheduler.<event> event. Fenced like fleet_apply.
 */
enum fleet_result fleet_end_placement(db_t *db, int64_t epoch, int64_t placement_id,
                                      const char *state, const char *reason, const char *event,
                                      const char *model, const char *node, char **errmsg) FLEET_WUR;

/* Records an event kind (scheduler.<something>) with a reason and a JSON detail object (text;
 * NULL = {}), fenced by epoch. model, node: names or NULL; ids: 0 = none. */
enum fleet_result fleet_record_event(db_t *db, int64_t epoch, const char *kind, const char *reason,
                                     const char *detail_json, const char *model, const char *node,
                                     int64_t placement_id, int64_t demand_id,
                                     char **errmsg) FLEET_WUR;

#endif
