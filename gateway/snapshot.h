/*
 * gateway/snapshot.h — the gateway's view of the fleet from PostgreSQL: the catalogue (every
 * model any node can serve, with its aliases) and the ready placements (model -> neuron
 * endpoints), plus the cold-start machinery around them (demand and holding requests).
 *
 * Contract: snapshot_create starts one background thread with its own connection (db.h) that
 * LISTENs on cortex_placement, cortex_catalogue and cortex_node, re-reads both views on every
 * notification, every poll_ms, and after every (re)connect (a NOTIFY may have been missed),
 * and feeds the ready placements into the upstream pool (upstream_pool_sync), so routing,
 * retries and ejection work as with static upstreams. While PostgreSQL is down the last
 * snapshot stays in force; snapshot_age_s tells how old it is. All functions are thread-safe.
 *
 * Cold starts: snapshot_demand records that a model is wanted (cortex.demand_load, idempotent;
 * the database NOTIFYs cortex_demand for the scheduler) on a second connection of its own;
 * snapshot_hold blocks a worker thread until the model has a ready placement, the deadline
 * passes or the caller's cancel fires. Holds are bounded per model and in total.
 */
#ifndef CORTEX_GATEWAY_SNAPSHOT_H
#define CORTEX_GATEWAY_SNAPSHOT_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "http_client.h"
#include "upstream.h"

struct snapshot_config {
    const char *conninfo;       /* required; libpq connection string */
    struct upstream_pool *pool; /* borrowed; fed with the ready placements */
    const char *source;         /* who asks for loads (demand source); default "gateway" */
    int64_t poll_ms;            /* full re-read period; default 5000 */
    unsigned max_holds;         /* requests held at once in total; default 1000 */
    unsigned max_holds_model;   /* per model; default 100 */
};

enum snapshot_hold_result {
    SNAPSHOT_HOLD_READY,     /* a placement is ready: route the request */
    SNAPSHOT_HOLD_TIMEOUT,   /* the deadline passed */
    SNAPSHOT_HOLD_CANCELLED, /* the cancel fired (client gone) */
    SNAPSHOT_HOLD_FULL,      /* too many requests held already */
};

struct snapshot;

/* Copies cfg's strings and starts the thread; does not wait for the first read (use
 * snapshot_wait_first). NULL with *errmsg set (the caller frees it) on a malformed conninfo. */
struct snapshot *snapshot_create(const struct snapshot_config *cfg, char **errmsg)
        __attribute__((warn_unused_result));
/* Stops the thread, wakes every hold (they see SNAPSHOT_HOLD_CANCELLED) and frees. Accepts
 * NULL; call after the requests that may hold have ended. */
void snapshot_destroy(struct snapshot *s);

/* Waits up to timeout_ms for the first complete read; true when there is one. */
bool snapshot_wait_first(struct snapshot *s, int64_t timeout_ms);
/* Asks the thread to re-read now (does not wait). */
void snapshot_poke(struct snapshot *s);

/* The canonical model a client's name means (exact model or alias first, then the longest
 * matching prefix pattern), copied into model[0..size). Returns true when the catalogue knows
 * the name. */
bool snapshot_resolve(struct snapshot *s, const char *name, char *model, size_t size);
/* The names clients may ask for (models and aliases, not patterns), sorted: a new array. */
json_t *snapshot_models(struct snapshot *s);
/* Seconds since the last complete read (-1 before the first). */
double snapshot_age_s(const struct snapshot *s);
/* Complete reads so far, and requests held now (for metrics and tests). */
uint64_t snapshot_reads(const struct snapshot *s);
unsigned snapshot_holding(struct snapshot *s);

/* Records demand for model (canonical name). 0, or -1 when the database is unreachable or
 * refused (logged). Blocking (one round trip). */
int snapshot_demand(struct snapshot *s, const char *model) __attribute__((warn_unused_result));
/* Blocks until model has a ready placement in the pool, timeout_ms passes, or cancel (may be
 * NULL) fires. */
enum snapshot_hold_result snapshot_hold(struct snapshot *s, const char *model, int64_t timeout_ms,
                                        const http_client_cancel_t *cancel);

#endif
