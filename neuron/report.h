/*
 * neuron/report.h — keeps the database's picture of this node true: registration, heartbeats,
 * the models on disk and the state and progress of the placements the node holds.
 *
 * Contract: a reporter owns one thread and one database connection (common/db.h). It registers
 * the node (cortex.node_register: name, advertised endpoint, the CPU device with the memory
 * budget), syncs the disk scan (cortex.node_models_sync), heartbeats every period with the
 * database clock (cortex.node_heartbeat: memory used/free, queue depth, active sequences) and
 * reports each placement's transitions (cortex.placement_transition, along legal paths only:
 * requested -> loading -> ready -> unloading -> gone, or -> failed) and load progress
 * (cortex.placement_progress). Nothing on the serving path waits for it.
 *
 * Failures: while PostgreSQL is unreachable the reporter retries with db.h's jittered backoff
 * and the node keeps serving; on reconnect it re-syncs everything (models on disk, every
 * placement's current state, a heartbeat) without registering again, because registering voids
 * the placements of the node's previous incarnation. Only when a heartbeat says the node is
 * unknown or was marked down does it register again, after asking the registry to unload
 * every model (their placements are void by then).
 */
#ifndef CORTEX_NEURON_REPORT_H
#define CORTEX_NEURON_REPORT_H

#include "registry.h"

#include <stdint.h>

struct report_options {
    const char *conninfo;  /* libpq connection string */
    const char *node;      /* node name */
    const char *endpoint;  /* advertised URL */
    int64_t heartbeat_ms;  /* heartbeat period */
    uint64_t memory_total; /* the CPU device's memory budget */
};

struct report;

/* Starts the reporter thread (options copied). Returns NULL with a message in err when the
 * connection string is malformed. The registry is borrowed and must outlive the reporter. */
struct report *report_create(const struct report_options *opt, struct registry *r, char *err,
                             size_t errlen) __attribute__((warn_unused_result));
/* Wakes the reporter: a placement changed state or made progress. Any thread; never blocks
 * for long (it is the registry observer). */
void report_notify(struct report *rep);
/* Registry observer adapter: ud is the struct report. */
void report_observe(void *ud, const struct registry_event *ev);
/* Stops the thread (after a last attempt to report what changed) and frees everything;
 * accepts NULL. */
void report_destroy(struct report *rep);

#endif
