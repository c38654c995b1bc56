/*
 * gateway/api.h — the client-facing HTTP service of the gateway: routes of both dialects, the
 * model catalogue, and the metrics listener.
 *
 * Contract: api_create binds the API address (and the metrics address when given), starts the
 * server threads, a background thread that refreshes the catalogue from the upstreams every
 * catalog_refresh_ms, and returns. Routes (shared/API.md):
 *   OpenAI:    GET /v1/models, GET /v1/models/{id}, POST /v1/chat/completions,
 *              POST /v1/completions, POST /v1/embeddings
 *   Anthropic: POST /v1/messages, POST /v1/messages/count_tokens (query strings such as
 *              ?beta=true are ignored), GET /v1/models (one answer carries both forms),
 *              HEAD|GET /api/hello and POST /api/event_logging/batch (200, for Claude Code)
 *   Other:     GET /health (200 "ok")
 *   Metrics:   GET /metrics on the metrics address (Prometheus text format)
 * Bodies are checked and translated on the server thread (a bad body gets its 4xx there, in
 * the route's dialect); the model name is resolved through the aliases, an unknown one gets
 * 404 model_not_found; then proxy.h carries the request. Routes shared by both dialects answer
 * errors in the Anthropic form when the request has an anthropic-version or x-api-key header.
 *
 * Routing: with db set, the catalogue and the ready placements come from PostgreSQL
 * (snapshot.h: LISTEN/NOTIFY + polling; the last snapshot keeps serving while the database is
 * down) and a model without a ready placement is cold-started (demand + hold, proxy.h);
 * without db, the static upstreams and --model-aliases are used.
 *
 * With db, every proxied request also ends as one row of cortex.requests (accounting.h).
 *
 * Authentication: with open, none. Otherwise (db required) every API route wants
 * "Authorization: Bearer <key>" or "x-api-key: <key>", checked by keys.h (401 in dialect),
 * and a key's requests- and tokens-per-minute limits are applied across the fleet
 * (ratelimit.h; 429 rate_limited in dialect with Retry-After).
 *
 * Metrics (metrics.h): every answer of an API route is counted by model, dialect and status;
 * a request refused before proxying (400/401/404, with db also a request row) has model "".
 */
#ifndef CORTEX_GATEWAY_API_H
#define CORTEX_GATEWAY_API_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Zero-initialise, then set; zero means the default. */
struct api_config {
    const char *listen;           /* required: "0.0.0.0:31313" */
    const char *metrics_listen;   /* NULL or "": no metrics listener */
    const char *db;               /* PostgreSQL conninfo: database-driven routing and keys */
    const char *const *upstreams; /* base URLs of the neurons; required without db */
    size_t n_upstreams;
    const char *aliases;                 /* "pattern=model,…" (catalog.h); NULL: none */
    bool open;                           /* serve without API keys; required without db */
    int64_t snapshot_poll_ms;            /* db: full re-read period; default 5000 */
    int64_t hold_timeout_ms;             /* db: cold-start hold; default 120000 */
    unsigned max_holds, max_holds_model; /* db: held requests; defaults 1000, 100 */
    int64_t key_cache_ms;                /* db: API key cache time; default 5000 */
    int64_t rate_limit_sync_ms;          /* db: per-key limits synced this often; default 250 */
    size_t accounting_max_rows;          /* db: request rows buffered; default 100000 */
    int64_t accounting_flush_ms;         /* db: request rows written this often; default 1000 */
    int64_t max_tokens_cap;              /* 0: none */
    int64_t max_body_bytes;              /* default 32 MiB */
    unsigned max_connections;            /* default 10000 */
    unsigned max_connections_per_ip;     /* 0: no limit per client address */
    unsigned header_timeout_s;           /* default 10 */
    unsigned idle_timeout_s;             /* default 300 */
    unsigned threads;                    /* server polling threads; default 2 */
    int64_t upstream_connect_timeout_ms; /* default 5000 */
    int64_t upstream_idle_timeout_ms;    /* default 300000 */
    int64_t ping_interval_ms;            /* default 10000 */
    int64_t catalog_refresh_ms;          /* default 5000 */
    int max_attempts;                    /* default 3 */
    unsigned max_in_flight;              /* default 10000 */
    int eject_after;                     /* default 3 */
    int64_t eject_ms;                    /* default 10000 */
};

struct api;

/* Starts the service. Returns NULL with *errmsg set (the caller frees it) on a bad config or a
 * bind failure. Destroy with api_destroy. */
struct api *api_create(const struct api_config *cfg, char **errmsg)
        __attribute__((warn_unused_result));
/* The bound ports (the real ones when the config asked for port 0); 0 when not listening. */
uint16_t api_port(const struct api *a);
uint16_t api_metrics_port(const struct api *a);
/* Refreshes the catalogue now (blocking); returns the number of upstreams that answered. */
size_t api_refresh_catalog(struct api *a);
/* Stops listening, tells every request in flight that its client is gone, waits for them and
 * for the refresher, and frees everything. Accepts NULL. */
void api_destroy(struct api *a);

#endif
