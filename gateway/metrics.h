/*
 * gateway/metrics.h — the per-request Prometheus series of the gateway and the text-format
 * helpers /metrics is written with.
 *
 * Contract: metrics_observe_request records one finished API request: the requests counter by
 * (model, dialect, status), and for requests that were proxied the duration and time-to-first-
 * token histograms by (model, dialect) and the token counters by model. Label cardinality is
 * bounded: `model` is the served model, which only a catalogue lookup produces (a request
 * refused before its model was resolved — bad key, bad body, unknown model — has model=""),
 * and at most METRICS_MAX_MODELS model values exist: the first METRICS_MAX_MODELS - 1 names
 * get their own, later ones share model="_other"; likewise per (model, dialect) at most
 * METRICS_MAX_STATUSES status values, the last being status="other". metrics_render writes every family with # HELP and # TYPE, label values
 * escaped as the text format wants (backslash, double quote, newline). Thread-safe (one mutex,
 * held for a few additions per request).
 */
#ifndef CORTEX_GATEWAY_METRICS_H
#define CORTEX_GATEWAY_METRICS_H

#include <stdbool.h>
#include <stdint.h>

#include "buf.h"

#define METRICS_MAX_MODELS   256
#define METRICS_MAX_STATUSES 24

/* One finished request. */
struct metrics_request {
    const char *model; /* served model from the catalogue; NULL or "": not resolved */
    bool anthropic;    /* the client's dialect */
    int status;        /* what the client got */
    bool proxied;      /* it reached the proxy: the histograms and tokens below count */
    double duration_s; /* receive to end */
    double ttft_s;     /* to the first event from the neuron; < 0: none */
    int64_t tokens_in, tokens_out;
};

struct metrics;

struct metrics *metrics_create(void);    /* never NULL */
void metrics_destroy(struct metrics *m); /* accepts NULL */

void metrics_observe_request(struct metrics *m, const struct metrics_request *r);
/* Requests counted so far with exactly these labels (for tests). */
uint64_t metrics_requests(struct metrics *m, const char *model, bool anthropic, int status);

/* Appends the request families (requests, duration, TTFT, tokens) to b. */
void metrics_render(struct metrics *m, struct buf *b);

/* Appends "# HELP name help\n# TYPE name type\n". */
void metrics_append_family(struct buf *b, const char *name, const char *type, const char *help);
/* Appends value as an escaped label value between double quotes. */
void metrics_append_label(struct buf *b, const char *value);

#endif
