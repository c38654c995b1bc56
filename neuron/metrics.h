/*
 * neuron/metrics.h — the neuron's counters and their Prometheus text exposition (GET /metrics).
 *
 * Contract: a struct metrics holds process-wide counters that request handlers and batcher
 * callbacks bump from any thread (relaxed atomics: a scrape may see one request's counters
 * half-updated, never torn values). metrics_render() adds the gauges it reads at scrape time
 * from the registry (memory per device, models by state, per-model reserved memory and cache
 * budget, cache bytes in use, queue depth, active sequences, batch steps and load durations).
 */
#ifndef CORTEX_NEURON_METRICS_H
#define CORTEX_NEURON_METRICS_H

#include "buf.h"
#include "registry.h"

#include <stdint.h>

enum metrics_endpoint {
    METRICS_ENDPOINT_CHAT,
    METRICS_ENDPOINT_COMPLETIONS,
    METRICS_ENDPOINT_TOKENIZE,
    METRICS_ENDPOINT_COUNT,
};

struct metrics;

struct metrics *metrics_create(void);
void metrics_destroy(struct metrics *m);

/* One answered request (status as sent; 200 for streams that started). */
void metrics_count_request(struct metrics *m, enum metrics_endpoint ep, int status);
/* One generation that ended: its tokens, why it ended ("stop", "length", "tool_calls",
 * "cancelled", "error"), time in the queue and to the first token (ms). */
void metrics_count_generation(struct metrics *m, int64_t prompt_tokens, int64_t completion_tokens,
                              const char *finish, double queue_ms, double first_token_ms);

/* Appends the Prometheus text format (version 0.0.4) of every metric to out. */
void metrics_render(struct metrics *m, struct registry *r, struct buf *out);

#endif
