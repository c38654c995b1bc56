/*
 * scheduler/dispatch.h — the scheduler's requests to neurons, run on worker threads.
 *
 * Contract: the main loop never waits for a neuron. It submits jobs — load a model onto
 * devices, unload it, or probe GET /models for the requests each model has in flight — and
 * worker threads carry them out with a timeout per attempt and retries with exponential
 * backoff; outcomes come back through a queue, and dispatch_fd() becomes readable when one is
 * waiting (poll it with the database socket).
 *
 * Neuron API (docs/scheduler.md): POST {endpoint}/models/load {"model", "devices": [ordinals]}
 * answers 202 at once (the neuron reports progress and the ready or failed state into the
 * database itself; loading a model that is already loading or ready is accepted again);
 * POST {endpoint}/models/unload {"model"}; GET {endpoint}/models lists loaded models with
 * active_sequences and queued_requests.
 *
 * Retries: transport failures, 5xx and 429 are retried up to `attempts` times in all; any
 * other 4xx is the neuron's refusal and is final. Before every attempt the fence callback is
 * asked whether this process may still act (it leads, by its own clock): a job of a leader that
 * stalled or lost its lease is dropped (DISPATCH_ABORTED), never sent late.
 *
 * At most one job per placement is queued or running at a time (dispatch_submit refuses a
 * second one), so a neuron never gets the same load twice at once.
 *
 * Threads: dispatch_submit, dispatch_take_results and dispatch_pending may be called from the
 * owner's thread while workers run; the fence callback runs on worker threads.
 */
#ifndef CORTEX_SCHEDULER_DISPATCH_H
#define CORTEX_SCHEDULER_DISPATCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "plan.h"

typedef struct dispatch dispatch_t;

enum dispatch_kind {
    DISPATCH_LOAD,
    DISPATCH_UNLOAD,
    DISPATCH_PROBE,
};

enum dispatch_outcome {
    DISPATCH_ACCEPTED,    /* a 2xx answer (PROBE: the loaded models were read) */
    DISPATCH_REFUSED,     /* a 4xx answer other than 429: the neuron said no */
    DISPATCH_UNREACHABLE, /* transport failures or 5xx/429 on every attempt */
    DISPATCH_ABORTED,     /* dropped: the fence said no, or shutting down */
};

/* Whether this process may still act (called before every attempt, on a worker thread). */
typedef bool (*dispatch_fence_fn)(void *ud);

struct dispatch_options {
    int workers;             /* threads; default 4 */
    long timeout_ms;         /* per attempt; default 5000 */
    long connect_timeout_ms; /* default 2000 */
    int attempts;            /* in all, >= 1; default 3 */
    long backoff_initial_ms; /* delay before the second attempt; doubles; default 500 */
    long backoff_max_ms;     /* default 5000 */
    dispatch_fence_fn fence; /* NULL: always allowed */
    void *fence_ud;
};

/* A job; dispatch_submit copies everything. */
struct dispatch_job {
    enum dispatch_kind kind;
    int64_t placement_id; /* LOAD, UNLOAD: the placement it serves (0 for PROBE) */
    int64_t node_id;
    const char *endpoint; /* the neuron's base URL */
    const char *model;    /* LOAD, UNLOAD */
    int ordinals[PLAN_MAX_DEVICES];
    size_t n_ordinals;
    bool best_effort; /* UNLOAD after a failure: nobody acts on the outcome */
};

/* What a model on a probed neuron is doing. */
struct dispatch_probe_entry {
    char *model;
    char *state;   /* loading, ready, ... */
    int in_flight; /* active_sequences + queued_requests */
};

/* An outcome; owned by the caller after dispatch_take_results (dispatch_results_free). */
struct dispatch_result {
    enum dispatch_kind kind;
    int64_t placement_id;
    int64_t node_id;
    char *model;
    bool best_effort;
    enum dispatch_outcome outcome;
    long status;                        /* last HTTP status; 0 when none arrived */
    int attempts;                       /* attempts made */
    char *reason;                       /* for people: what went wrong (never NULL) */
    struct dispatch_probe_entry *probe; /* PROBE, ACCEPTED: the loaded models */
    size_t n_probe;
};

/* Starts the workers. NULL with *errmsg (caller frees) when threads cannot be started. */
dispatch_t *dispatch_create(const struct dispatch_options *opt, char **errmsg)
        __attribute__((warn_unused_result));
/* Stops the workers (jobs still queued are dropped, running ones finish their attempt) and
 * frees everything; accepts NULL. */
void dispatch_destroy(dispatch_t *d);

/* Queues a job. Returns 0, or -1 when a job for the same placement (or a probe of the same
 * node) is already queued or running. */
int dispatch_submit(dispatch_t *d, const struct dispatch_job *job)
        __attribute__((warn_unused_result));
/* Whether a job for this placement is queued or running. */
bool dispatch_pending(dispatch_t *d, int64_t placement_id);
/* Whether a probe of this node is queued or running. */
bool dispatch_probe_pending(dispatch_t *d, int64_t node_id);

/* A descriptor that is readable while results are waiting. */
int dispatch_fd(const dispatch_t *d);
/* Moves every waiting result to *out (an array the caller frees with dispatch_results_free)
 * and returns how many; clears the readiness of dispatch_fd. */
size_t dispatch_take_results(dispatch_t *d, struct dispatch_result **out);
void dispatch_results_free(struct dispatch_result *results, size_t n);

const char *dispatch_kind_name(enum dispatch_kind kind);
const char *dispatch_outcome_name(enum dispatch_outcome outcome);

#endif
