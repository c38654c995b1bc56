/*
 * neuron/daemon.c — wiring of the neuron's parts and its route table (see daemon.h).
 */
#include "daemon.h"

#include "http_server.h"
#include "log.h"
#include "metrics.h"
#include "models_api.h"
#include "openai_api.h"
#include "registry.h"
#include "report.h"
#include "xalloc.h"

#include <stdio.h>
#include <stdlib.h>

struct daemon {
    const struct neuron_config *cfg;
    struct metrics *metrics;
    struct registry *registry;
    struct openai_api openai;
    struct models_api models;
    http_server_t *server;
    struct report *report; /* NULL without --db */
};

static void daemon_route_models(http_request_t *req, void *ud)
{
    models_api_list(req, &((struct daemon *)ud)->models);
}

static void daemon_route_load(http_request_t *req, void *ud)
{
    models_api_load(req, &((struct daemon *)ud)->models);
}

static void daemon_route_unload(http_request_t *req, void *ud)
{
    models_api_unload(req, &((struct daemon *)ud)->models);
}

static void daemon_route_v1_models(http_request_t *req, void *ud)
{
    models_api_openai_list(req, &((struct daemon *)ud)->models);
}

static void daemon_route_healthz(http_request_t *req, void *ud)
{
    models_api_healthz(req, &((struct daemon *)ud)->models);
}

static void daemon_route_metrics(http_request_t *req, void *ud)
{
    models_api_metrics(req, &((struct daemon *)ud)->models);
}

static void daemon_route_chat(http_request_t *req, void *ud)
{
    openai_api_chat_completions(req, &((struct daemon *)ud)->openai);
}

static void daemon_route_completions(http_request_t *req, void *ud)
{
    openai_api_completions(req, &((struct daemon *)ud)->openai);
}

static void daemon_route_tokenize(http_request_t *req, void *ud)
{
    openai_api_tokenize(req, &((struct daemon *)ud)->openai);
}

static const http_route_t daemon_routes[] = {
        {"GET", "/models", daemon_route_models},
        {"POST", "/models/load", daemon_route_load},
        {"POST", "/models/unload", daemon_route_unload},
        {"GET", "/v1/models", daemon_route_v1_models},
        {"POST", "/v1/chat/completions", daemon_route_chat},
        {"POST", "/v1/completions", daemon_route_completions},
        {"POST", "/tokenize", daemon_route_tokenize},
        {"GET", "/healthz", daemon_route_healthz},
        {"GET", "/metrics", daemon_route_metrics},
};

struct daemon *daemon_create(const struct neuron_config *cfg, char *err, size_t errlen)
{
    struct daemon *d = xcalloc(1, sizeof *d);
    d->cfg = cfg;
    d->metrics = metrics_create();
    struct registry_options ro = {
            .models_dir = cfg->models_dir,
            .threads = (int)cfg->threads,
            .ctx = cfg->ctx,
            .max_batch = (int)cfg->max_batch,
            .queue_depth = (int)cfg->queue_depth,
            .prefill_chunk = cfg->prefill_chunk,
            .memory_budget = (uint64_t)cfg->memory_budget,
    };
    d->registry = registry_create(&ro);
    if (cfg->db) {
        struct report_options rep = {
                .conninfo = cfg->db,
                .node = cfg->name,
                .endpoint = cfg->advertise,
                .heartbeat_ms = cfg->heartbeat_ms,
                .memory_total = (uint64_t)cfg->memory_budget,
        };
        d->report = report_create(&rep, d->registry, err, errlen);
        if (!d->report) {
            daemon_destroy(d);
            return NULL;
        }
        registry_set_observer(d->registry, report_observe, d->report);
    }
    d->openai = (struct openai_api){.registry = d->registry, .metrics = d->metrics};
    d->models = (struct models_api){.registry = d->registry,
                                    .metrics = d->metrics,
                                    .node = cfg->name,
                                    .advertise = cfg->advertise};
    http_server_config_t hc = {
            .listen = cfg->listen,
            .routes = daemon_routes,
            .n_routes = sizeof daemon_routes / sizeof daemon_routes[0],
            .ud = d,
            .max_body_bytes = (size_t)cfg->max_body,
            .threads = (unsigned)cfg->http_threads,
    };
    char *msg = NULL;
    d->server = http_server_create(&hc, &msg);
    if (!d->server) {
        snprintf(err, errlen, "cannot serve HTTP on %s: %s", cfg->listen, msg ? msg : "?");
        free(msg);
        daemon_destroy(d);
        return NULL;
    }
    LOG_INFO("neuron %s listening on %s (port %u), advertised as %s; models in %s; memory budget "
             "%lld bytes",
             cfg->name, cfg->listen, (unsigned)http_server_port(d->server), cfg->advertise,
             cfg->models_dir, (long long)cfg->memory_budget);
    return d;
}

uint16_t daemon_port(const struct daemon *d)
{
    return http_server_port(d->server);
}

void daemon_destroy(struct daemon *d)
{
    if (!d)
        return;
    /* Stop taking requests first: open streams learn they are gone and their generations are
     * cancelled; then the registry ends what is left and frees the models, and the reporter
     * tells the database. */
    http_server_destroy(d->server);
    if (d->registry)
        registry_shutdown(d->registry);
    /* The reporter's last pass reports the unloads; then nothing calls it any more. */
    report_destroy(d->report);
    if (d->registry)
        registry_set_observer(d->registry, NULL, NULL);
    registry_destroy(d->registry);
    metrics_destroy(d->metrics);
    free(d);
}
