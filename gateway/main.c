/*
 * gateway/main.c — cortex-gateway: reads the settings table, starts the API service (api.h)
 * and runs until SIGINT or SIGTERM.
 */
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"
#include "config.h"
#include "http_client.h"
#include "log.h"
#include "xalloc.h"

struct gateway_settings {
    char *listen;
    char *metrics_listen;
    char *upstream;
    char *model_aliases;
    char *db;
    char *log_level;
    bool open;
    int64_t max_tokens_cap;
    int64_t max_body;
    int64_t max_connections;
    int64_t max_connections_per_ip;
    int64_t header_timeout_ms;
    int64_t idle_timeout_ms;
    int64_t threads;
    int64_t upstream_loops;
    int64_t upstream_connect_timeout_ms;
    int64_t upstream_idle_timeout_ms;
    int64_t ping_interval_ms;
    int64_t catalog_refresh_ms;
    int64_t retry_attempts;
    int64_t max_in_flight;
    int64_t eject_after;
    int64_t eject_time_ms;
    int64_t snapshot_poll_ms;
    int64_t hold_timeout_ms;
    int64_t max_holds;
    int64_t max_holds_model;
    int64_t key_cache_ms;
    int64_t rate_limit_sync_ms;
    int64_t accounting_buffer;
    int64_t accounting_flush_ms;
};

static struct gateway_settings settings;

/* clang-format off */
static const struct config_entry gateway_table[] = {
    {.name = "listen", .env = "CORTEX_GATEWAY_LISTEN", .type = CONFIG_TYPE_STRING,
     .def = "0.0.0.0:31313", .help = "address of the API (host:port)",
     .target = &settings.listen},
    {.name = "metrics-listen", .env = "CORTEX_GATEWAY_METRICS_LISTEN", .type = CONFIG_TYPE_STRING,
     .def = "0.0.0.0:31314", .help = "address of /metrics (Prometheus); empty: none",
     .target = &settings.metrics_listen},
    {.name = "upstream", .env = "CORTEX_GATEWAY_UPSTREAM", .type = CONFIG_TYPE_STRING,
     .def = "http://127.0.0.1:13131",
     .help = "neuron base URLs, comma-separated (static routing until the database is used)",
     .target = &settings.upstream},
    {.name = "model-aliases", .env = "CORTEX_GATEWAY_MODEL_ALIASES", .type = CONFIG_TYPE_STRING,
     .def = "", .help = "client model names mapped to served ones: pattern=model,... "
     "(fnmatch patterns, e.g. claude-*=smollm2)", .target = &settings.model_aliases},
    {.name = "db", .env = "CORTEX_GATEWAY_DB", .type = CONFIG_TYPE_STRING,
     .help = "PostgreSQL connection string: catalogue, routing, cold starts and API keys come "
     "from it (then --upstream and --model-aliases are not used)",
     .target = &settings.db},
    {.name = "open", .env = "CORTEX_GATEWAY_OPEN", .type = CONFIG_TYPE_BOOL, .def = "false",
     .help = "serve without API keys (local use); required without --db",
     .target = &settings.open},
    {.name = "log-level", .env = "CORTEX_LOG_LEVEL", .type = CONFIG_TYPE_STRING, .def = "info",
     .help = "trace, debug, info, warn, error or off", .target = &settings.log_level},
    {.name = "max-tokens-cap", .env = "CORTEX_GATEWAY_MAX_TOKENS_CAP", .type = CONFIG_TYPE_INT,
     .def = "0", .min = "0", .unit = "tokens", .reloadable = false,
     .help = "max_tokens above this is lowered to it (clients ask 32k-64k); 0: no cap",
     .target = &settings.max_tokens_cap},
    {.name = "max-body", .env = "CORTEX_GATEWAY_MAX_BODY", .type = CONFIG_TYPE_SIZE,
     .def = "32MiB", .min = "1KiB", .max = "1GiB", .help = "largest request body (413 above)",
     .target = &settings.max_body},
    {.name = "max-connections", .env = "CORTEX_GATEWAY_MAX_CONNECTIONS", .type = CONFIG_TYPE_INT,
     .def = "10000", .min = "1", .max = "1000000", .unit = "connections",
     .help = "concurrent client connections (more are closed at once)",
     .target = &settings.max_connections},
    {.name = "max-connections-per-ip", .env = "CORTEX_GATEWAY_MAX_CONNECTIONS_PER_IP",
     .type = CONFIG_TYPE_INT, .def = "0", .min = "0", .max = "1000000", .unit = "connections",
     .help = "concurrent connections from one client address; 0: no limit (behind a load "
     "balancer every connection comes from its address)", .target = &settings.max_connections_per_ip},
    {.name = "header-timeout", .env = "CORTEX_GATEWAY_HEADER_TIMEOUT", .type = CONFIG_TYPE_DURATION,
     .def = "10s", .min = "1s", .max = "10m",
     .help = "time a new connection has to send its request headers, however slowly it keeps "
     "sending (slower clients are dropped)",
     .target = &settings.header_timeout_ms},
    {.name = "idle-timeout", .env = "CORTEX_GATEWAY_IDLE_TIMEOUT", .type = CONFIG_TYPE_DURATION,
     .def = "5m", .min = "1s", .max = "1d", .help = "idle keep-alive connections are closed after",
     .target = &settings.idle_timeout_ms},
    {.name = "threads", .env = "CORTEX_GATEWAY_THREADS", .type = CONFIG_TYPE_INT, .def = "2",
     .min = "1", .max = "256", .unit = "threads", .help = "HTTP polling threads",
     .target = &settings.threads},
    {.name = "upstream-loops", .env = "CORTEX_GATEWAY_UPSTREAM_LOOPS", .type = CONFIG_TYPE_INT,
     .def = "2", .min = "1", .max = "64", .unit = "threads",
     .help = "threads that carry every neuron transfer (one libcurl multi handle each)",
     .target = &settings.upstream_loops},
    {.name = "upstream-connect-timeout", .env = "CORTEX_GATEWAY_UPSTREAM_CONNECT_TIMEOUT",
     .type = CONFIG_TYPE_DURATION, .def = "5s", .min = "100ms", .max = "5m",
     .help = "connecting to a neuron (then the next one is tried)",
     .target = &settings.upstream_connect_timeout_ms},
    {.name = "upstream-idle-timeout", .env = "CORTEX_GATEWAY_UPSTREAM_IDLE_TIMEOUT",
     .type = CONFIG_TYPE_DURATION, .def = "5m", .min = "1s", .max = "1d",
     .help = "a neuron that sends nothing for this long fails the request",
     .target = &settings.upstream_idle_timeout_ms},
    {.name = "ping-interval", .env = "CORTEX_GATEWAY_PING_INTERVAL", .type = CONFIG_TYPE_DURATION,
     .def = "10s", .min = "100ms", .max = "10m", .help = "keep-alive events on quiet streams",
     .target = &settings.ping_interval_ms},
    {.name = "catalog-refresh", .env = "CORTEX_GATEWAY_CATALOG_REFRESH",
     .type = CONFIG_TYPE_DURATION, .def = "5s", .min = "100ms", .max = "1h",
     .help = "how often the neurons' model lists are read", .target = &settings.catalog_refresh_ms},
    {.name = "retry-attempts", .env = "CORTEX_GATEWAY_RETRY_ATTEMPTS", .type = CONFIG_TYPE_INT,
     .def = "3", .min = "1", .max = "64", .unit = "neurons",
     .help = "neurons tried for one request before its first byte (connect failure, 503)",
     .target = &settings.retry_attempts},
    {.name = "max-in-flight", .env = "CORTEX_GATEWAY_MAX_IN_FLIGHT", .type = CONFIG_TYPE_INT,
     .def = "10000", .min = "1", .max = "1000000", .unit = "requests",
     .help = "requests proxied at once (more: 503 / 529 overloaded)",
     .target = &settings.max_in_flight},
    {.name = "eject-after", .env = "CORTEX_GATEWAY_EJECT_AFTER", .type = CONFIG_TYPE_INT,
     .def = "3", .min = "1", .max = "1000", .unit = "failures",
     .help = "consecutive failures that take a neuron out of rotation",
     .target = &settings.eject_after},
    {.name = "eject-time", .env = "CORTEX_GATEWAY_EJECT_TIME", .type = CONFIG_TYPE_DURATION,
     .def = "10s", .min = "100ms", .max = "1h", .help = "how long an ejected neuron stays out",
     .target = &settings.eject_time_ms},
    {.name = "snapshot-poll", .env = "CORTEX_GATEWAY_SNAPSHOT_POLL", .type = CONFIG_TYPE_DURATION,
     .def = "5s", .min = "100ms", .max = "1h",
     .help = "--db: catalogue and placements are re-read this often (and on NOTIFY)",
     .target = &settings.snapshot_poll_ms},
    {.name = "hold-timeout", .env = "CORTEX_GATEWAY_HOLD_TIMEOUT", .type = CONFIG_TYPE_DURATION,
     .def = "2m", .min = "100ms", .max = "1h",
     .help = "--db: how long a request waits for its model to load (then 503 / 529)",
     .target = &settings.hold_timeout_ms},
    {.name = "max-holds", .env = "CORTEX_GATEWAY_MAX_HOLDS", .type = CONFIG_TYPE_INT,
     .def = "1000", .min = "1", .max = "1000000", .unit = "requests",
     .help = "--db: requests waiting for models to load, in total",
     .target = &settings.max_holds},
    {.name = "max-holds-model", .env = "CORTEX_GATEWAY_MAX_HOLDS_MODEL", .type = CONFIG_TYPE_INT,
     .def = "100", .min = "1", .max = "1000000", .unit = "requests",
     .help = "--db: requests waiting for one model to load",
     .target = &settings.max_holds_model},
    {.name = "key-cache", .env = "CORTEX_GATEWAY_KEY_CACHE", .type = CONFIG_TYPE_DURATION,
     .def = "5s", .min = "100ms", .max = "10m",
     .help = "--db: an API key check is remembered this long (a revoked key works at most this "
     "long)", .target = &settings.key_cache_ms},
    {.name = "rate-limit-sync", .env = "CORTEX_GATEWAY_RATE_LIMIT_SYNC",
     .type = CONFIG_TYPE_DURATION, .def = "250ms", .min = "10ms", .max = "1m",
     .help = "--db: per-key token charges are sent and usage re-read this often (requests per "
     "minute are leased in slices when needed)", .target = &settings.rate_limit_sync_ms},
    {.name = "accounting-buffer", .env = "CORTEX_GATEWAY_ACCOUNTING_BUFFER",
     .type = CONFIG_TYPE_INT, .def = "100000", .min = "1", .max = "10000000", .unit = "rows",
     .help = "--db: request rows kept while PostgreSQL is away (more are dropped and counted)",
     .target = &settings.accounting_buffer},
    {.name = "accounting-flush", .env = "CORTEX_GATEWAY_ACCOUNTING_FLUSH",
     .type = CONFIG_TYPE_DURATION, .def = "1s", .min = "10ms", .max = "1m",
     .help = "--db: request rows are written in batches this often",
     .target = &settings.accounting_flush_ms},
};
/* clang-format on */

#define GATEWAY_N_SETTINGS (sizeof gateway_table / sizeof gateway_table[0])

/* Splits a comma-separated list into a NULL-terminated array of trimmed, non-empty strings;
 * the caller frees each and the array. *n receives the count. */
static char **gateway_split(const char *text, size_t *n)
{
    size_t cap = 0;
    char **out = NULL;
    *n = 0;
    const char *p = text;
    while (*p) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        const char *s = p;
        size_t l = len;
        while (l > 0 && (*s == ' ' || *s == '\t')) {
            s++;
            l--;
        }
        while (l > 0 && (s[l - 1] == ' ' || s[l - 1] == '\t'))
            l--;
        if (l > 0) {
            out = xgrow(out, &cap, *n + 2, sizeof *out);
            out[(*n)++] = xstrndup(s, l);
            out[*n] = NULL;
        }
        p += len;
        if (*p == ',')
            p++;
    }
    return out;
}

int main(int argc, char **argv)
{
    char err[CONFIG_ERR_SIZE];
    int rc = config_parse(gateway_table, GATEWAY_N_SETTINGS, argc, argv, NULL, err, sizeof err);
    if (rc == CONFIG_PARSE_HELP) {
        char *help = config_help("cortex-gateway",
                                 "The Cortex gateway: one OpenAI- and Anthropic-compatible API "
                                 "for the whole fleet.",
                                 gateway_table, GATEWAY_N_SETTINGS);
        fputs(help, stdout);
        free(help);
        config_free(gateway_table, GATEWAY_N_SETTINGS);
        return 0;
    }
    if (rc < 0) {
        fprintf(stderr, "cortex-gateway: %s\n", err);
        config_free(gateway_table, GATEWAY_N_SETTINGS);
        return 2;
    }
    log_set_component("gateway");
    enum log_level level;
    if (log_level_parse(settings.log_level, &level) < 0) {
        fprintf(stderr, "cortex-gateway: bad log level '%s'\n", settings.log_level);
        config_free(gateway_table, GATEWAY_N_SETTINGS);
        return 2;
    }
    log_set_level(level);

    /* Signals are taken by sigwait() below: block them before any thread starts. */
    sigset_t stop;
    sigemptyset(&stop);
    sigaddset(&stop, SIGINT);
    sigaddset(&stop, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &stop, NULL);
    signal(SIGPIPE, SIG_IGN);

    /* Shared loops: a held stream then costs its two sockets, not also a socketpair. */
    http_client_set_loops((int)settings.upstream_loops);
    size_t n_upstreams;
    char **upstreams = gateway_split(settings.upstream, &n_upstreams);
    struct api_config cfg = {
            .listen = settings.listen,
            .metrics_listen = settings.metrics_listen,
            .upstreams = (const char *const *)upstreams,
            .n_upstreams = n_upstreams,
            .aliases = settings.model_aliases,
            .open = settings.open,
            .max_tokens_cap = settings.max_tokens_cap,
            .max_body_bytes = settings.max_body,
            .max_connections = (unsigned)settings.max_connections,
            .max_connections_per_ip = (unsigned)settings.max_connections_per_ip,
            .header_timeout_s = (unsigned)((settings.header_timeout_ms + 999) / 1000),
            .idle_timeout_s = (unsigned)((settings.idle_timeout_ms + 999) / 1000),
            .threads = (unsigned)settings.threads,
            .upstream_connect_timeout_ms = settings.upstream_connect_timeout_ms,
            .upstream_idle_timeout_ms = settings.upstream_idle_timeout_ms,
            .ping_interval_ms = settings.ping_interval_ms,
            .catalog_refresh_ms = settings.catalog_refresh_ms,
            .max_attempts = (int)settings.retry_attempts,
            .max_in_flight = (unsigned)settings.max_in_flight,
            .eject_after = (int)settings.eject_after,
            .eject_ms = settings.eject_time_ms,
            .db = settings.db,
            .snapshot_poll_ms = settings.snapshot_poll_ms,
            .hold_timeout_ms = settings.hold_timeout_ms,
            .max_holds = (unsigned)settings.max_holds,
            .max_holds_model = (unsigned)settings.max_holds_model,
            .key_cache_ms = settings.key_cache_ms,
            .rate_limit_sync_ms = settings.rate_limit_sync_ms,
            .accounting_max_rows = (size_t)settings.accounting_buffer,
            .accounting_flush_ms = settings.accounting_flush_ms,
    };
    char *errmsg = NULL;
    struct api *api = api_create(&cfg, &errmsg);
    int status = 0;
    if (!api) {
        fprintf(stderr, "cortex-gateway: %s\n", errmsg ? errmsg : "cannot start");
        free(errmsg);
        status = 1;
        goto out;
    }
    LOG_INFO("listening on %s (port %u), metrics on %s (port %u), routing from %s%s",
             settings.listen, api_port(api), settings.metrics_listen, api_metrics_port(api),
             settings.db && settings.db[0] ? "PostgreSQL" : "static upstreams",
             settings.open ? ", open mode (no API keys)" : "");
    int sig = 0;
    sigwait(&stop, &sig);
    LOG_INFO("signal %d: shutting down", sig);
    api_destroy(api);
out:
    for (size_t i = 0; i < n_upstreams; i++)
        free(upstreams[i]);
    free(upstreams);
    config_free(gateway_table, GATEWAY_N_SETTINGS);
    return status;
}
