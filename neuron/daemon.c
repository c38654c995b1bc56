/*
 * neuron/daemon.c — wiring of the neuron's parts and its route table (see daemon.h).
 */
#include "daemon.h"

#include "buf.h"
#include "chat_template.h"
#include "device.h"
#include "http_server.h"
#include "log.h"
#include "metrics.h"
#include "models_api.h"
#include "openai_api.h"
#include "registry.h"
#include "report.h"
#include "xalloc.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct daemon {
    const struct neuron_config *cfg;
    struct device_list devices;
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

/* Reads and compiles the --chat-template file, so a bad one stops the start with its line and
 * column rather than failing every later load. Returns the text (the caller frees) or NULL
 * with a message in err. */
static char *daemon_read_template(const char *path, char *err, size_t errlen)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err, errlen, "--chat-template: cannot open %s: %s", path, strerror(errno));
        return NULL;
    }
    struct buf b = BUF_INIT;
    char chunk[8192];
    size_t got;
    while ((got = fread(chunk, 1, sizeof chunk, f)) > 0)
        buf_append(&b, chunk, got);
    bool failed = ferror(f);
    fclose(f);
    size_t len;
    char *text = buf_steal(&b, &len);
    struct chat_template *ct = NULL;
    struct jinja_error jerr = {0};
    if (failed) {
        snprintf(err, errlen, "--chat-template: cannot read %s", path);
    } else if (strlen(text) != len) {
        snprintf(err, errlen, "--chat-template: %s holds a NUL byte", path);
        failed = true;
    } else if (chat_template_create(text, len, NULL, &ct, &jerr) != 0) {
        snprintf(err, errlen, "--chat-template: %s line %d column %d: %s", path, jerr.line,
                 jerr.column, jerr.message);
        failed = true;
    }
    chat_template_destroy(ct);
    if (failed) {
        free(text);
        return NULL;
    }
    return text;
}

struct daemon *daemon_create(const struct neuron_config *cfg, char *err, size_t errlen)
{
    struct daemon *d = xcalloc(1, sizeof *d);
    char *tmpl = NULL;
    d->cfg = cfg;
    if (cfg->chat_template && !(tmpl = daemon_read_template(cfg->chat_template, err, errlen))) {
        free(d);
        return NULL;
    }
    if (cfg->test_gpus > 0) {
        device_list_init_made_up(&d->devices, (size_t)cfg->test_gpus, (uint64_t)cfg->memory_budget);
        LOG_WARN("--test-gpus %lld: offering made-up GPUs, every model runs on the CPU",
                 (long long)cfg->test_gpus);
    } else {
        device_discover(&d->devices, (uint64_t)cfg->memory_budget);
    }
    d->metrics = metrics_create();
    struct registry_options ro = {
            .models_dir = cfg->models_dir,
            .threads = (int)cfg->threads,
            .ctx = cfg->ctx,
            .max_batch = (int)cfg->max_batch,
            .queue_depth = (int)cfg->queue_depth,
            .prefill_chunk = cfg->prefill_chunk,
            .prefix_cache_bytes = (uint64_t)cfg->prefix_cache_bytes,
            .prefix_interval = cfg->prefix_interval,
            .memory_budget = (uint64_t)cfg->memory_budget,
            .devices = d->devices.v,
            .n_devices = d->devices.n,
            .chat_template = tmpl,
            .compute_on_cpu = cfg->test_gpus > 0,
    };
    d->registry = registry_create(&ro);
    free(tmpl);
    if (cfg->db) {
        struct report_options rep = {
                .conninfo = cfg->db,
                .node = cfg->name,
                .endpoint = cfg->advertise,
                .heartbeat_ms = cfg->heartbeat_ms,
        };
        d->report = report_create(&rep, d->registry, err, errlen);
        if (!d->report) {
            daemon_destroy(d);
            return NULL;
        }
        registry_set_observer(d->registry, report_observe, d->report);
    }
    openai_api_init(&d->openai, d->registry, d->metrics, cfg->ping_ms);
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
    char devices[256] = "";
    bool gpus = false;
    for (size_t i = 0, off = 0; i < d->devices.n && off < sizeof devices; i++) {
        gpus |= d->devices.v[i].kind == DEVICE_KIND_CUDA;
        char label[32];
        device_label(&d->devices.v[i], label, sizeof label);
        int w = snprintf(devices + off, sizeof devices - off, "%s%s (%llu bytes)", i ? ", " : "",
                         label, (unsigned long long)d->devices.v[i].budget);
        off += w > 0 ? (size_t)w : 0;
    }
    LOG_INFO("neuron %s listening on %s (port %u), advertised as %s; models in %s; devices %s; "
             "inference on %s%s%s",
             cfg->name, cfg->listen, (unsigned)http_server_port(d->server), cfg->advertise,
             cfg->models_dir, devices,
             gpus && cfg->test_gpus == 0 ? "the GPU each model is placed on" : "the CPU",
             cfg->chat_template ? "; chat template " : "",
             cfg->chat_template ? cfg->chat_template : "");
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
    openai_api_shutdown(&d->openai); /* no request is left to ping */
    metrics_destroy(d->metrics);
    device_list_free(&d->devices);
    free(d);
}
