/*
 * neuron/report.h — keeps the database's picture of this node true: registration, heartbeats,
 * the models on disk and the state and progress of the placements the node holds.
 *
 * Contract: a reporter owns one thread and one database connection (common/db.h). It registers
 * the node (cortex.node_register: name, advertised endpoint, the registry's devices: the GPUs
 * with name, UUID, compute capability and total memory, or the CPU device with the memory
 * budget), syncs the disk scan (cortex.node_models_sync), heartbeats every period with the
 * database clock (cortex.node_heartbeat: memory used/free per device, queue depth, active
 * sequences) and reports each placement's transitions (cortex.placement_transition, along
 * legal paths only: requested -> loading -> ready -> unloading -> gone, or -> failed) and load
 * progress (cortex.placement_progress). A load the registry refused at once (unknown model, no
 * room) marks its placement failed with the refusal as the reason. Nothing on the serving path
 * waits for it.
 *
 * The heartbeat period is the --heartbeat flag when given; otherwise the database setting
 * heartbeat_interval, read at registration and again on every re-sync after a reconnect (5 s
 * until it has been read).
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
    const char *conninfo; /* libpq connection string */
    const char *node;     /* node name */
    const char *endpoint; /* advertised URL */
    int64_t heartbeat_ms; /* heartbeat period; 0: the database's heartbeat_interval setting */
};

/* The period used before heartbeat_interval has been read (and when it cannot be). */
#define REPORT_DEFAULT_HEARTBEAT_MS 5000
/* Shortest period the reporter accepts, from the flag or from the database. */
#define REPORT_MIN_HEARTBEAT_MS 100

struct report;

/* Starts the reporter thread (options copied). Returns NULL with a message in err when the
 * connection string is malformed. The registry is borrowed and must outlive the reporter. */
struct report *report_create(const struct report_options *opt, struct registry *r, char *err,
                             size_t errlen) __attribute__((warn_unused_result));
/* Wakes the reporter: a placement changed state or made progress. Any thread; never blocks
 * for long (it is the registry observer). */
void report_notify(struct report *rep);
/* Registry observer adapter: ud is the struct report. A refused load's placement is queued to
 * be marked failed. */
void report_observe(void *ud, const struct registry_event *ev);
/* The heartbeat period in use now, in milliseconds. Any thread. */
int64_t report_heartbeat_period_ms(struct report *rep);
/* Stops the thread (after a last attempt to report what changed) and frees everything;
 * accepts NULL. */
void report_destroy(struct report *rep);

#endif
