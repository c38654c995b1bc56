/*
 * scheduler/runner.h — the scheduler's main loop: wake-ups, leadership, planning cycles, and
 * carrying the plan out against the database and the neurons.
 *
 * Contract: a runner owns two PostgreSQL connections (the leader election's, and the one it
 * reads the fleet and writes through, which LISTENs on cortex_demand, cortex_placement,
 * cortex_node, cortex_catalogue and cortex_setting), the neuron dispatcher and the loop state.
 * It wakes on a NOTIFY (a hint only: every cycle re-reads the whole fleet, which also covers
 * notifications missed while disconnected), on a neuron's answer, and on the tick.
 *
 * A cycle: read scheduler_tick and lease_duration (unless the options fix them; a runner that
 * has never read them does not stand for election, so even its first lease has the configured
 * length); an election step; read the fleet (also as a standby, for the metrics); as the
 * leader: refine requests in flight from the neurons' GET /models, plan, then carry out each
 * action — write it through the fenced SQL function (fleet_apply), then tell the neuron (load,
 * unload). A neuron that refuses or cannot be reached after its retries fails the placement
 * with the reason (a load failure, counted by the database). Waits are recorded as events only
 * when their reason changes. Placements the leader should have told a neuron about but has
 * not (a new leader after a failover, a neuron that did not act on a request) are told again.
 * Nothing is written once leadership is lost (locally: lease ran out; remotely: CX001).
 *
 * Not thread-safe: one thread runs the loop; the metrics object may be read from others.
 */
#ifndef CORTEX_SCHEDULER_RUNNER_H
#define CORTEX_SCHEDULER_RUNNER_H

#include <stdbool.h>
#include <stdint.h>

#include "dispatch.h"
#include "metrics.h"

typedef struct runner runner_t;

struct runner_options {
    const char *conninfo;    /* libpq connection string ("" = the libpq environment) */
    const char *holder;      /* lease holder name */
    int64_t tick_ms;         /* 0: the scheduler_tick setting */
    int64_t lease_ms;        /* 0: the lease_duration setting */
    int64_t resend_after_ms; /* tell a neuron again after this long without effect; 0 = 30 s */
    struct dispatch_options dispatch; /* fence is set by the runner */
};

/* Creates the runner (does not connect yet). m is borrowed and must outlive the runner. NULL
 * with *errmsg (caller frees) on a malformed connection string or when threads fail. */
runner_t *runner_create(const struct runner_options *opt, struct metrics *m, char **errmsg)
        __attribute__((warn_unused_result));
/* Stops the dispatcher, resigns the lease (a standby takes over at once) and frees; accepts
 * NULL. */
void runner_destroy(runner_t *r);

/* One cycle (see the contract), after handling the neurons' answers that have arrived.
 * Returns 0, or -1 when the database could not be read (retried at the next tick). */
int runner_cycle(runner_t *r);
/* Handles the neurons' answers that have arrived; returns how many. */
size_t runner_handle_results(runner_t *r);

/* Runs cycles until stop_fd becomes readable (e.g. a signal's self-pipe). Returns 0. */
int runner_run(runner_t *r, int stop_fd);

/* For tests and status: leadership and the number of planning cycles run as leader. */
bool runner_is_leader(const runner_t *r);
int64_t runner_epoch(const runner_t *r);
uint64_t runner_cycles(const runner_t *r);
/* The dispatcher (tests wait on dispatch_fd to let answers arrive). */
dispatch_t *runner_dispatch(runner_t *r);

#endif
