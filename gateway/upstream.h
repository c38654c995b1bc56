/*
 * gateway/upstream.h — the neurons a gateway proxies to: which models each serves, how busy
 * each is from this gateway's view, and which are ejected after failing.
 *
 * Contract: a pool holds a fixed list of upstream base URLs ("http://10.0.0.5:13131"), each
 * with the model ids it serves (replaced wholesale by upstream_pool_set_models, e.g. from its
 * GET /v1/models), a count of outstanding requests, and a failure record. All functions are
 * thread-safe (one mutex; nothing blocks while holding it except upstream_pool_refresh's
 * network calls, which run without it).
 *
 * Choice: upstream_pool_acquire picks, among the upstreams that serve the model, are not
 * ejected and are not excluded by the caller (those already tried for this request), the one
 * with the fewest outstanding requests (ties: the lowest index after a rotating start, so
 * equal replicas share the load). The caller reports how it went with upstream_pool_release:
 * UPSTREAM_OUTCOME_FAILED for a connect failure or a 5xx answer, which after eject_after
 * consecutive failures ejects the upstream for eject_ms; any success clears the record. An
 * ejected upstream comes back by itself when its time is up (it then gets one request to
 * prove itself: another failure ejects it again at once).
 *
 * The pool is fed either statically (--upstream URLs with upstream_pool_refresh reading their
 * model lists) or from the database's placement snapshot (snapshot.h, upstream_pool_sync).
 */
#ifndef CORTEX_GATEWAY_UPSTREAM_H
#define CORTEX_GATEWAY_UPSTREAM_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Most upstreams one pool holds (an exclusion set is a 64-bit mask). */
#define UPSTREAM_MAX 64

struct upstream_pool;

enum upstream_outcome {
    UPSTREAM_OUTCOME_OK,     /* an answer came (whatever its status below 500) */
    UPSTREAM_OUTCOME_FAILED, /* no connection, or a 5xx: counts towards ejection */
    UPSTREAM_OUTCOME_NEUTRAL /* cancelled by the client: says nothing about the upstream */
};

/* What upstream_pool_acquire hands out. */
struct upstream_lease {
    int index;         /* which upstream; pass to release and to the exclusion mask */
    char url[256];     /* its base URL, without a trailing '/' */
    int64_t in_flight; /* its outstanding requests, this one included */
};

/* urls[0..n) are copied (n <= UPSTREAM_MAX; a trailing '/' is dropped). eject_after 0 means 3,
 * eject_ms 0 means 10000. n may be 0 for a pool fed by upstream_pool_sync. Returns NULL when n
 * is too large. */
struct upstream_pool *upstream_pool_create(const char *const *urls, size_t n, int eject_after,
                                           int64_t eject_ms);
void upstream_pool_destroy(struct upstream_pool *p); /* accepts NULL */

size_t upstream_pool_size(const struct upstream_pool *p);
/* The base URL of upstream i (valid for the pool's life). */
const char *upstream_pool_url(const struct upstream_pool *p, size_t i);

/* Replaces the model ids upstream i serves with ids[0..n) (copied). */
void upstream_pool_set_models(struct upstream_pool *p, size_t i, const char *const *ids, size_t n);
/*
 * Replaces what every upstream serves with the rows (urls[k], models[k]), k < n (e.g. the
 * database's ready placements): a URL not seen before joins the pool (indexes stay stable, so
 * leases and failure records survive), a known URL absent from the rows serves nothing until
 * it reappears. Returns 0, or -1 when some rows were dropped because the pool is full
 * (UPSTREAM_MAX URLs).
 */
int upstream_pool_sync(struct upstream_pool *p, const char *const *urls, const char *const *models,
                       size_t n) __attribute__((warn_unused_result));
/* Whether any upstream (ejected or not) serves model. */
bool upstream_pool_has_model(const struct upstream_pool *p, const char *model);
/* Every model id any upstream serves, sorted and unique: a new array of strings. */
json_t *upstream_pool_models(const struct upstream_pool *p);

/*
 * Picks an upstream for model (see the contract); bit i of exclude skips upstream i. Returns 0
 * with *out filled and the upstream's outstanding count raised, or -1 when none is available
 * (none serves the model, or all that do are ejected or excluded).
 */
int upstream_pool_acquire(struct upstream_pool *p, const char *model, uint64_t exclude,
                          struct upstream_lease *out) __attribute__((warn_unused_result));
/* Ends a lease: lowers the outstanding count and records the outcome. */
void upstream_pool_release(struct upstream_pool *p, int index, enum upstream_outcome outcome);

/* Upstream i's state, for tests and metrics: outstanding requests, consecutive failures,
 * whether it is ejected now. Pointers may be NULL. */
void upstream_pool_state(struct upstream_pool *p, size_t i, int64_t *in_flight, int *failures,
                         bool *ejected);

/* Upstream i's totals since the start, for metrics: failed outcomes (connect failures, 5xx)
 * and ejections. */
void upstream_pool_counts(struct upstream_pool *p, size_t i, uint64_t *errors, uint64_t *ejections);

/*
 * Asks every upstream for GET <url>/v1/models (each bounded by timeout_ms) and stores the ids
 * it lists; an upstream that does not answer keeps its previous list (a neuron that is down is
 * also ejected by the requests that fail on it). Blocking: call from a background thread.
 * Returns the number of upstreams that answered.
 */
size_t upstream_pool_refresh(struct upstream_pool *p, long timeout_ms);

#endif
