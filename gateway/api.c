/*
 * gateway/api.c — routes of both dialects, the catalogue refresher and /metrics (see api.h).
 */
#include "api.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "accounting.h"
#include "anthropic.h"
#include "buf.h"
#include "catalog.h"
#include "error.h"
#include "http_server.h"
#include "jsonutil.h"
#include "keys.h"
#include "log.h"
#include "metrics.h"
#include "openai.h"
#include "proxy.h"
#include "ratelimit.h"
#include "snapshot.h"
#include "timing.h"
#include "upstream.h"
#include "xalloc.h"

struct api {
    struct api_config cfg; /* strings borrowed only during api_create */
    struct upstream_pool *pool;
    struct catalog_aliases *aliases;
    struct proxy *proxy;
    struct snapshot *snapshot;     /* NULL: static upstreams */
    struct keys *keys;             /* NULL: open mode */
    struct accounting *accounting; /* NULL: no request rows (static mode) */
    struct ratelimit *ratelimit;   /* NULL: no per-key limits (open or static mode) */
    struct metrics *stats;         /* per-request series */
    http_server_t *server;
    http_server_t *metrics;
    int64_t started_s; /* wall clock: the "created" of every model */

    pthread_t refresher;
    bool refresher_started;
    pthread_mutex_t mu;
    pthread_cond_t wake;
    bool stopping;                   /* under mu */
    _Atomic uint64_t refreshed_ms;   /* monotonic time of the last successful refresh; 0 never */
    atomic_uint_fast64_t n_rejected; /* answered with an error by a route itself */
    atomic_uint_fast64_t n_unauthorized;
};

/* ---- helpers ------------------------------------------------------------------------------ */

/* Whether a request on a route shared by both dialects comes from an Anthropic client. */
static bool api_is_anthropic(http_request_t *req)
{
    return http_request_header(req, "anthropic-version") != NULL ||
           http_request_header(req, "x-api-key") != NULL;
}

/* The endpoint name of a request row for the request's route. */
static const char *api_endpoint(http_request_t *req)
{
    static const struct {
        const char *path, *endpoint;
    } map[] = {
            {"/v1/chat/completions", "chat"},
            {"/v1/completions", "completions"},
            {"/v1/embeddings", "embeddings"},
            {"/v1/messages", "messages"},
            {"/v1/messages/count_tokens", "count_tokens"},
    };
    const char *path = http_request_path(req);
    for (size_t i = 0; i < sizeof map / sizeof map[0]; i++) {
        if (strcmp(path, map[i].path) == 0)
            return map[i].endpoint;
    }
    return "models";
}

/* Counts a request answered by a route itself (not proxied) in the metrics. */
static void api_count(struct api *a, bool anthropic, int status)
{
    struct metrics_request mr = {.model = "", .anthropic = anthropic, .status = status};
    metrics_observe_request(a->stats, &mr);
}

/*
 * Answers req with e, refused before proxying: counted, and with --db recorded as a request
 * row (key_id 0: none known; requested_model NULL: not parsed yet).
 */
static void api_fail(struct api *a, http_request_t *req, bool anthropic, int64_t key_id,
                     const char *requested_model, const struct error *e)
{
    atomic_fetch_add(&a->n_rejected, 1);
    proxy_reply_error(req, anthropic, e);
    int status =
            error_http_status(e->code, anthropic ? ERROR_DIALECT_ANTHROPIC : ERROR_DIALECT_OPENAI);
    api_count(a, anthropic, status);
    if (!a->accounting)
        return;
    struct accounting_row row = {
            .request_id = http_request_id(req),
            .created_us = timing_wall_ms() * 1000,
            .api_key_id = key_id,
            .anthropic = anthropic,
            .endpoint = api_endpoint(req),
            .requested_model = requested_model,
            .status = status,
            .queue_wait_ms = -1,
            .ttft_ms = -1,
            .total_ms = -1,
            .decode_tps = -1,
    };
    accounting_submit(a->accounting, &row);
}

static bool api_model_exists(const char *name, void *ud)
{
    return upstream_pool_has_model(ud, name);
}

/* The served model for the client's name, or NULL (err set) when nobody serves it. In database
 * mode the result is a string of buf. */
static const char *api_resolve(struct api *a, const char *name, char *buf, size_t size,
                               struct error *err)
{
    if (a->snapshot) {
        if (snapshot_resolve(a->snapshot, name, buf, size))
            return buf;
        error_set(err, ERR_MODEL_NOT_FOUND, "model", "The model '%s' does not exist", name);
        return NULL;
    }
    const char *served = catalog_resolve(a->aliases, name, api_model_exists, a->pool);
    if (!upstream_pool_has_model(a->pool, served)) {
        error_set(err, ERR_MODEL_NOT_FOUND, "model", "The model '%s' does not exist", name);
        return NULL;
    }
    return served;
}

/* Checks the request's API key (none in open mode: *key_out zeroed). Returns true when the
 * request may go on; false when it has been answered (401, or 503 when keys cannot be
 * checked). */
static bool api_auth(struct api *a, http_request_t *req, bool anthropic, struct keys_key *key_out)
{
    *key_out = (struct keys_key){0};
    if (!a->keys)
        return true;
    const char *secret = http_request_header(req, "x-api-key");
    const char *auth = http_request_header(req, "authorization");
    if (!secret && auth && strncasecmp(auth, "Bearer ", 7) == 0) {
        secret = auth + 7;
        while (*secret == ' ')
            secret++;
    }
    enum keys_result r = secret ? keys_check(a->keys, secret, key_out) : KEYS_DENIED;
    if (r == KEYS_OK)
        return true;
    struct error e = ERROR_INIT;
    if (r == KEYS_UNAVAILABLE)
        error_set(&e, ERR_UNAVAILABLE, NULL, "API keys cannot be checked now; retry later");
    else
        error_set(&e, ERR_UNAUTHORIZED, NULL,
                  secret ? "invalid API key" : "an API key is required (Authorization: Bearer)");
    atomic_fetch_add(&a->n_unauthorized, 1);
    api_fail(a, req, anthropic, 0, NULL, &e);
    error_clear(&e);
    return false;
}

/* The parsed body of req, or NULL with err set. */
static json_t *api_body(http_request_t *req, struct error *err)
{
    size_t len;
    const char *body = http_request_body(req, &len);
    return jsonutil_parse_object(body, len, err);
}

/* The common tail of every proxied route: resolve the model, then hand over. norm is
 * consumed. */
static void api_proxy(struct api *a, http_request_t *req, enum proxy_kind kind, json_t *norm,
                      bool anthropic, const struct keys_key *key)
{
    struct error err = ERROR_INIT;
    const char *model = json_string_value(json_object_get(norm, "model"));
    char *client_model = xstrdup(model ? model : "");
    char buf[256];
    const char *served = api_resolve(a, client_model, buf, sizeof buf, &err);
    if (!served) {
        api_fail(a, req, anthropic, key->id, client_model, &err);
        json_decref(norm);
        goto out;
    }
    json_object_set_new(norm, "model", json_string(served));
    const json_t *opts = json_object_get(norm, "stream_options");
    struct proxy_call call = {
            .kind = kind,
            .body = norm,
            .client_model = client_model,
            .stream = json_is_true(json_object_get(norm, "stream")),
            .include_usage = json_is_true(json_object_get(opts, "include_usage")),
            .api_key_id = key->id,
            .rpm = key->requests_per_minute,
            .tpm = key->tokens_per_minute,
    };
    proxy_start(a->proxy, req, &call);
out:
    free(client_model);
    error_clear(&err);
}

/* ---- routes ------------------------------------------------------------------------------- */

typedef int (*api_openai_normalize_fn)(const json_t *req, const struct openai_options *opt,
                                       json_t **out, struct error *err);

static void api_openai_route(struct api *a, http_request_t *req, enum proxy_kind kind)
{
    struct keys_key key;
    if (!api_auth(a, req, false, &key))
        return;
    struct error err = ERROR_INIT;
    json_t *norm = NULL;
    json_t *body = api_body(req, &err);
    struct openai_options opt = {.max_tokens_cap = a->cfg.max_tokens_cap};
    int rc = -1;
    if (body) {
        if (kind == PROXY_KIND_CHAT)
            rc = openai_chat_request_normalize(body, &opt, &norm, &err);
        else if (kind == PROXY_KIND_COMPLETION)
            rc = openai_completion_request_normalize(body, &opt, &norm, &err);
        else
            rc = openai_embedding_request_normalize(body, &norm, &err);
    }
    if (rc < 0)
        api_fail(a, req, false, key.id, json_string_value(json_object_get(body, "model")), &err);
    else
        api_proxy(a, req, kind, norm, false, &key);
    json_decref(body);
    error_clear(&err);
}

static void api_chat(http_request_t *req, void *ud)
{
    api_openai_route(ud, req, PROXY_KIND_CHAT);
}

static void api_completions(http_request_t *req, void *ud)
{
    api_openai_route(ud, req, PROXY_KIND_COMPLETION);
}

static void api_embeddings(http_request_t *req, void *ud)
{
    api_openai_route(ud, req, PROXY_KIND_EMBEDDING);
}

static void api_anthropic_route(struct api *a, http_request_t *req, bool count_tokens)
{
    struct keys_key key;
    if (!api_auth(a, req, true, &key))
        return;
    struct error err = ERROR_INIT;
    json_t *norm = NULL;
    json_t *body = api_body(req, &err);
    struct anthropic_options opt = {.max_tokens_cap = a->cfg.max_tokens_cap,
                                    .count_tokens = count_tokens};
    int rc = body ? anthropic_request_to_openai(body, &opt, &norm, &err) : -1;
    if (rc < 0) {
        api_fail(a, req, true, key.id, json_string_value(json_object_get(body, "model")), &err);
    } else {
        api_proxy(a, req, count_tokens ? PROXY_KIND_COUNT_TOKENS : PROXY_KIND_MESSAGES, norm, true,
                  &key);
    }
    json_decref(body);
    error_clear(&err);
}

static void api_messages(http_request_t *req, void *ud)
{
    api_anthropic_route(ud, req, false);
}

static void api_count_tokens(http_request_t *req, void *ud)
{
    api_anthropic_route(ud, req, true);
}

static void api_models(http_request_t *req, void *ud)
{
    struct api *a = ud;
    struct keys_key key;
    if (!api_auth(a, req, api_is_anthropic(req), &key))
        return;
    /* Served models (database: models and aliases); alias patterns are not listed. */
    json_t *ids = a->snapshot ? snapshot_models(a->snapshot) : upstream_pool_models(a->pool);
    json_t *list = catalog_list_json(ids, a->started_s);
    if (api_is_anthropic(req))
        http_request_add_reply_header(req, "request-id", http_request_id(req));
    http_request_reply_json(req, 200, list);
    api_count(a, api_is_anthropic(req), 200);
    json_decref(list);
    json_decref(ids);
}

static void api_model(http_request_t *req, void *ud)
{
    struct api *a = ud;
    struct keys_key key;
    if (!api_auth(a, req, api_is_anthropic(req), &key))
        return;
    const char *id = http_request_wildcard(req);
    struct error err = ERROR_INIT;
    char buf[256];
    if (!api_resolve(a, id, buf, sizeof buf, &err)) {
        api_fail(a, req, api_is_anthropic(req), key.id, id, &err);
        error_clear(&err);
        return;
    }
    json_t *m = catalog_model_json(id, a->started_s);
    http_request_reply_json(req, 200, m);
    api_count(a, api_is_anthropic(req), 200);
    json_decref(m);
}

static void api_hello(http_request_t *req, void *ud)
{
    (void)ud;
    http_request_reply(req, 200, "application/json", "{}", 2);
}

static void api_event_logging(http_request_t *req, void *ud)
{
    (void)ud;
    http_request_reply(req, 200, "application/json", "{}", 2);
}

static void api_health(http_request_t *req, void *ud)
{
    (void)ud;
    http_request_reply_text(req, 200, "ok\n");
}

/* Appends one unlabelled sample. */
static void api_sample(struct buf *b, const char *name, const char *type, const char *help,
                       unsigned long long value)
{
    metrics_append_family(b, name, type, help);
    buf_appendf(b, "%s %llu\n", name, value);
}

/* Appends one family with a sample per upstream (label upstream = its base URL). */
static void api_upstream_family(struct api *a, struct buf *b, const char *name, const char *type,
                                const char *help, int which)
{
    metrics_append_family(b, name, type, help);
    size_t n = upstream_pool_size(a->pool);
    for (size_t i = 0; i < n; i++) {
        int64_t in_flight = 0;
        bool ejected = false;
        uint64_t errors, ejections;
        upstream_pool_state(a->pool, i, &in_flight, NULL, &ejected);
        upstream_pool_counts(a->pool, i, &errors, &ejections);
        unsigned long long v[] = {(unsigned long long)in_flight, ejected ? 1 : 0, errors,
                                  ejections};
        buf_appendf(b, "%s{upstream=", name);
        metrics_append_label(b, upstream_pool_url(a->pool, i));
        buf_appendf(b, "} %llu\n", v[which]);
    }
}

static void api_metrics(http_request_t *req, void *ud)
{
    struct api *a = ud;
    struct buf b = BUF_INIT;
    metrics_render(a->stats, &b);
    api_sample(&b, "cortex_gateway_rejected_total", "counter",
               "Requests a route answered with an error itself, before proxying (bad key, bad "
               "body, unknown model).",
               (unsigned long long)atomic_load(&a->n_rejected));
    api_sample(&b, "cortex_gateway_unauthorized_total", "counter",
               "Requests refused for a missing or invalid API key.",
               (unsigned long long)atomic_load(&a->n_unauthorized));
    api_sample(&b, "cortex_gateway_in_flight", "gauge", "Requests being proxied now.",
               proxy_in_flight(a->proxy));
    api_sample(&b, "cortex_gateway_slow_clients_dropped_total", "counter",
               "Connections dropped for not sending their request headers within "
               "--header-timeout.",
               (unsigned long long)http_server_slow_dropped(a->server));
    /* Exported without a limiter too (open mode: zeros), so dashboards and alerts that read
     * it never see the series vanish. */
    struct ratelimit_stats rs = {0};
    if (a->ratelimit)
        ratelimit_get_stats(a->ratelimit, &rs);
    metrics_append_family(&b, "cortex_gateway_rate_limited_total", "counter",
                          "Requests refused with 429 for a per-key limit, by the limit.");
    buf_appendf(&b, "cortex_gateway_rate_limited_total{limit=\"requests\"} %llu\n",
                (unsigned long long)rs.refused_requests);
    buf_appendf(&b, "cortex_gateway_rate_limited_total{limit=\"tokens\"} %llu\n",
                (unsigned long long)rs.refused_tokens);
    if (a->ratelimit) {
        api_sample(&b, "cortex_gateway_rate_limit_db_calls_total", "counter",
                   "Calls of cortex.rate_take (slice leases and token syncs).",
                   (unsigned long long)rs.db_calls);
        api_sample(&b, "cortex_gateway_rate_limit_db_failures_total", "counter",
                   "Calls of cortex.rate_take that failed (local limits applied meanwhile).",
                   (unsigned long long)rs.db_failures);
    }
    if (a->snapshot) {
        metrics_append_family(&b, "cortex_gateway_snapshot_age_seconds", "gauge",
                              "Time since the catalogue and placements were last read from "
                              "PostgreSQL (-1: never).");
        buf_appendf(&b, "cortex_gateway_snapshot_age_seconds %.3f\n", snapshot_age_s(a->snapshot));
        api_sample(&b, "cortex_gateway_cold_start_holding", "gauge",
                   "Requests held waiting for a model to load.", snapshot_holding(a->snapshot));
    }
    if (a->accounting) {
        struct accounting_stats st;
        accounting_get_stats(a->accounting, &st);
        api_sample(&b, "cortex_gateway_accounting_buffered", "gauge",
                   "Request rows waiting to be written to PostgreSQL.",
                   (unsigned long long)st.buffered);
        api_sample(&b, "cortex_gateway_accounting_written_total", "counter",
                   "Request rows written to PostgreSQL.", (unsigned long long)st.written);
        api_sample(&b, "cortex_gateway_accounting_dropped_total", "counter",
                   "Request rows lost (buffer full, refused batch, shutdown).",
                   (unsigned long long)st.dropped);
    }
    uint64_t refreshed = atomic_load(&a->refreshed_ms);
    if (!a->snapshot) {
        metrics_append_family(&b, "cortex_gateway_catalog_age_seconds", "gauge",
                              "Time since the model lists of the static upstreams were last "
                              "read (-1: never).");
        if (refreshed)
            buf_appendf(&b, "cortex_gateway_catalog_age_seconds %.3f\n",
                        (double)(timing_now_ms() - refreshed) / 1000.0);
        else
            buf_append_str(&b, "cortex_gateway_catalog_age_seconds -1\n");
    }
    api_upstream_family(a, &b, "cortex_gateway_upstream_in_flight", "gauge",
                        "Requests outstanding per upstream, from this gateway's view.", 0);
    api_upstream_family(a, &b, "cortex_gateway_upstream_ejected", "gauge",
                        "Whether an upstream is ejected now after consecutive failures.", 1);
    api_upstream_family(a, &b, "cortex_gateway_upstream_errors_total", "counter",
                        "Failed attempts on an upstream (connect failure, 5xx, broken stream).", 2);
    api_upstream_family(a, &b, "cortex_gateway_upstream_ejections_total", "counter",
                        "Times an upstream was ejected after consecutive failures.", 3);
    http_request_reply(req, 200, "text/plain; version=0.0.4; charset=utf-8", b.data, b.len);
    buf_free(&b);
}

/* clang-format off */
static const http_route_t api_routes[] = {
    {"GET", "/v1/models", api_models},
    {"GET", "/v1/models/*", api_model},
    {"POST", "/v1/chat/completions", api_chat},
    {"POST", "/v1/completions", api_completions},
    {"POST", "/v1/embeddings", api_embeddings},
    {"POST", "/v1/messages", api_messages},
    {"POST", "/v1/messages/count_tokens", api_count_tokens},
    {"GET", "/api/hello", api_hello},
    {"HEAD", "/api/hello", api_hello},
    {"POST", "/api/event_logging/batch", api_event_logging},
    {"GET", "/health", api_health},
};

static const http_route_t api_metrics_routes[] = {
    {"GET", "/metrics", api_metrics},
    {"GET", "/health", api_health},
};
/* clang-format on */

/* ---- catalogue refresher ------------------------------------------------------------------ */

size_t api_refresh_catalog(struct api *a)
{
    size_t answered = upstream_pool_refresh(a->pool, 2000);
    if (answered > 0)
        atomic_store(&a->refreshed_ms, timing_now_ms());
    return answered;
}

static void *api_refresher(void *arg)
{
    struct api *a = arg;
    pthread_mutex_lock(&a->mu);
    while (!a->stopping) {
        pthread_mutex_unlock(&a->mu);
        api_refresh_catalog(a);
        pthread_mutex_lock(&a->mu);
        struct timespec until;
        clock_gettime(CLOCK_MONOTONIC, &until);
        int64_t ms = a->cfg.catalog_refresh_ms;
        until.tv_sec += ms / 1000;
        until.tv_nsec += (ms % 1000) * 1000000;
        if (until.tv_nsec >= 1000000000) {
            until.tv_sec++;
            until.tv_nsec -= 1000000000;
        }
        while (!a->stopping && pthread_cond_timedwait(&a->wake, &a->mu, &until) == 0)
            ;
    }
    pthread_mutex_unlock(&a->mu);
    return NULL;
}

/* ---- life cycle --------------------------------------------------------------------------- */

struct api *api_create(const struct api_config *cfg, char **errmsg)
{
    *errmsg = NULL;
    bool use_db = cfg->db && cfg->db[0];
    if (!cfg->open && !use_db) {
        *errmsg = xstrdup("API keys live in the database: give --db, or start with --open (no "
                          "authentication) for local use");
        return NULL;
    }
    if (!cfg->listen || (!use_db && cfg->n_upstreams == 0)) {
        *errmsg = xstrdup("a listen address and either --db or at least one upstream are "
                          "required");
        return NULL;
    }
    struct api *a = xcalloc(1, sizeof *a);
    a->cfg = *cfg;
    if (a->cfg.catalog_refresh_ms <= 0)
        a->cfg.catalog_refresh_ms = 5000;
    a->started_s = timing_wall_s();
    a->stats = metrics_create();
    pthread_mutex_init(&a->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&a->wake, &ca);
    pthread_condattr_destroy(&ca);

    char err[256];
    if (catalog_aliases_parse(cfg->aliases, &a->aliases, err, sizeof err) < 0) {
        *errmsg = xstrdup(err);
        goto fail;
    }
    a->pool = upstream_pool_create(use_db ? NULL : cfg->upstreams, use_db ? 0 : cfg->n_upstreams,
                                   cfg->eject_after, cfg->eject_ms);
    if (!a->pool) {
        *errmsg = xasprintf("between 1 and %d upstreams are allowed", UPSTREAM_MAX);
        goto fail;
    }
    if (use_db) {
        char host[128] = "gateway";
        if (gethostname(host, sizeof host) != 0)
            snprintf(host, sizeof host, "gateway");
        host[sizeof host - 1] = '\0';
        char source[160];
        snprintf(source, sizeof source, "gateway %s", host);
        struct snapshot_config snc = {
                .conninfo = cfg->db,
                .pool = a->pool,
                .source = source,
                .poll_ms = cfg->snapshot_poll_ms,
                .max_holds = cfg->max_holds,
                .max_holds_model = cfg->max_holds_model,
        };
        a->snapshot = snapshot_create(&snc, errmsg);
        if (!a->snapshot)
            goto fail;
        if (!snapshot_wait_first(a->snapshot, 5000))
            LOG_WARN("no catalogue from PostgreSQL yet: serving an empty one until it answers");
        a->accounting = accounting_create(cfg->db, host, cfg->accounting_max_rows,
                                          cfg->accounting_flush_ms, errmsg);
        if (!a->accounting)
            goto fail;
        if (!cfg->open) {
            a->keys = keys_create(cfg->db, cfg->key_cache_ms, errmsg);
            if (!a->keys)
                goto fail;
            struct ratelimit_config rc = {.conninfo = cfg->db, .sync_ms = cfg->rate_limit_sync_ms};
            a->ratelimit = ratelimit_create(&rc, errmsg);
            if (!a->ratelimit)
                goto fail;
        }
    }
    struct proxy_settings ps = {
            .pool = a->pool,
            .connect_timeout_ms = cfg->upstream_connect_timeout_ms,
            .idle_timeout_ms = cfg->upstream_idle_timeout_ms,
            .max_attempts = cfg->max_attempts,
            .ping_interval_ms = cfg->ping_interval_ms,
            .max_in_flight = cfg->max_in_flight,
            .snapshot = a->snapshot,
            .hold_timeout_ms = cfg->hold_timeout_ms,
            .accounting = a->accounting,
            .ratelimit = a->ratelimit,
            .metrics = a->stats,
    };
    a->proxy = proxy_create(&ps);

    http_server_config_t sc = {
            .listen = cfg->listen,
            .routes = api_routes,
            .n_routes = sizeof api_routes / sizeof api_routes[0],
            .ud = a,
            .max_body_bytes = cfg->max_body_bytes > 0 ? (size_t)cfg->max_body_bytes : 0,
            .max_connections = cfg->max_connections,
            .max_connections_per_ip = cfg->max_connections_per_ip,
            .header_timeout_s = cfg->header_timeout_s,
            .idle_timeout_s = cfg->idle_timeout_s,
            .threads = cfg->threads ? cfg->threads : 2,
    };
    a->server = http_server_create(&sc, errmsg);
    if (!a->server)
        goto fail;
    if (cfg->metrics_listen && cfg->metrics_listen[0]) {
        http_server_config_t mc = {
                .listen = cfg->metrics_listen,
                .routes = api_metrics_routes,
                .n_routes = sizeof api_metrics_routes / sizeof api_metrics_routes[0],
                .ud = a,
                .max_connections = 64,
        };
        a->metrics = http_server_create(&mc, errmsg);
        if (!a->metrics)
            goto fail;
    }
    if (!use_db) {
        if (pthread_create(&a->refresher, NULL, api_refresher, a) != 0) {
            *errmsg = xstrdup("cannot start the catalogue refresher thread");
            goto fail;
        }
        a->refresher_started = true;
    }
    a->cfg.listen = NULL; /* borrowed strings are not kept */
    a->cfg.metrics_listen = NULL;
    a->cfg.upstreams = NULL;
    a->cfg.aliases = NULL;
    a->cfg.db = NULL;
    return a;
fail:
    api_destroy(a);
    return NULL;
}

uint16_t api_port(const struct api *a)
{
    return a->server ? http_server_port(a->server) : 0;
}

uint16_t api_metrics_port(const struct api *a)
{
    return a->metrics ? http_server_port(a->metrics) : 0;
}

void api_destroy(struct api *a)
{
    if (!a)
        return;
    if (a->refresher_started) {
        pthread_mutex_lock(&a->mu);
        a->stopping = true;
        pthread_cond_broadcast(&a->wake);
        pthread_mutex_unlock(&a->mu);
        pthread_join(a->refresher, NULL);
    }
    http_server_destroy(a->metrics);
    http_server_destroy(a->server); /* every request in flight learns its client is gone */
    proxy_destroy(a->proxy);
    snapshot_destroy(a->snapshot);
    keys_destroy(a->keys);
    ratelimit_destroy(a->ratelimit);   /* after the proxy: its last charges are made */
    accounting_destroy(a->accounting); /* after the proxy: its last rows are queued */
    metrics_destroy(a->stats);
    upstream_pool_destroy(a->pool);
    catalog_aliases_destroy(a->aliases);
    pthread_cond_destroy(&a->wake);
    pthread_mutex_destroy(&a->mu);
    free(a);
}
