/*
 * scheduler/metrics.h — the scheduler's Prometheus metrics: decision counters and fleet gauges.
 *
 * Contract: counters (planning cycles, decisions by action and cause, neuron requests by kind
 * and outcome, database errors) only grow; the fleet gauges (nodes by liveness, placements by
 * state, models by state, device memory, open demand, leadership) are replaced as a whole from
 * each snapshot the scheduler reads, so a scrape never sees half of one snapshot and half of
 * another. metrics_render() produces the text exposition format (version 0.0.4).
 *
 * Threads: every function may be called from any thread (one mutex); the scheduler's loop
 * writes, the /metrics handler renders.
 */
#ifndef CORTEX_SCHEDULER_METRICS_H
#define CORTEX_SCHEDULER_METRICS_H

#include <stdbool.h>
#include <stdint.h>

#include "dispatch.h"
#include "fleet.h"
#include "plan.h"

struct metrics;

struct metrics *metrics_create(void);
/* Accepts NULL. */
void metrics_destroy(struct metrics *m);

void metrics_count_cycle(struct metrics *m);
void metrics_count_decision(struct metrics *m, enum plan_action_kind kind, enum plan_cause cause);
void metrics_count_neuron(struct metrics *m, enum dispatch_kind kind,
                          enum dispatch_outcome outcome);
void metrics_count_db_error(struct metrics *m);
void metrics_set_leader(struct metrics *m, bool leader, int64_t epoch);
/* Replaces the fleet gauges with those of snapshot f (borrowed for the call). */
void metrics_set_fleet(struct metrics *m, const struct fleet *f);

/* The exposition text; the caller frees it. */
char *metrics_render(struct metrics *m);

#endif
