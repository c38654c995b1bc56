/*
 * neuron/neuron_config.c — the neuron's settings table and the defaults derived at start-up
 * (see neuron_config.h).
 */
#include "neuron_config.h"

#include "config.h"
#include "xalloc.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define NEURON_CONFIG_MAX 32

/* Writes the settings table for c into table (room for NEURON_CONFIG_MAX entries) and returns
 * its length. A function rather than a static table so the targets point into the caller's
 * struct. */
static size_t neuron_config_table(struct neuron_config *c, struct config_entry *table)
{
    const struct config_entry t[] = {
            {.name = "listen",
             .env = "CORTEX_NEURON_LISTEN",
             .type = CONFIG_TYPE_STRING,
             .def = "0.0.0.0:13131",
             .help = "address and port to serve HTTP on",
             .target = &c->listen},
            {.name = "models-dir",
             .env = "CORTEX_NEURON_MODELS_DIR",
             .type = CONFIG_TYPE_STRING,
             .def = "/var/lib/cortex/models",
             .help = "directory scanned for .gguf files and Hugging Face model directories",
             .target = &c->models_dir},
            {.name = "name",
             .env = "CORTEX_NEURON_NAME",
             .type = CONFIG_TYPE_STRING,
             .help = "node name in the database (default: the host name)",
             .target = &c->name},
            {.name = "advertise",
             .env = "CORTEX_NEURON_ADVERTISE",
             .type = CONFIG_TYPE_STRING,
             .help = "URL the gateways and the scheduler reach this node at (default: "
                     "http://NAME:PORT)",
             .target = &c->advertise},
            {.name = "db",
             .env = "CORTEX_NEURON_DB",
             .type = CONFIG_TYPE_STRING,
             .help = "PostgreSQL connection string (libpq conninfo); unset: no reporting",
             .target = &c->db},
            {.name = "chat-template",
             .env = "CORTEX_NEURON_CHAT_TEMPLATE",
             .type = CONFIG_TYPE_STRING,
             .help = "Jinja chat template file used instead of every model's own (e.g. one that "
                     "knows tools); unset: each model's own",
             .target = &c->chat_template},
            {.name = "log-level",
             .env = "CORTEX_NEURON_LOG_LEVEL",
             .type = CONFIG_TYPE_STRING,
             .def = "info",
             .reloadable = true,
             .help = "lowest level logged: trace, debug, info, warn or error",
             .target = &c->log_level},
            {.name = "threads",
             .env = "CORTEX_NEURON_THREADS",
             .type = CONFIG_TYPE_INT,
             .def = "0",
             .min = "0",
             .max = "1024",
             .unit = "threads",
             .help = "CPU threads of each model's forward pass; 0: all online CPUs",
             .target = &c->threads},
            {.name = "ctx",
             .env = "CORTEX_NEURON_CTX",
             .type = CONFIG_TYPE_INT,
             .def = "8192",
             .min = "0",
             .max = "1048576",
             .unit = "tokens",
             .help = "context length per sequence, capped at the model's own; 0: the model's own",
             .target = &c->ctx},
            {.name = "max-batch",
             .env = "CORTEX_NEURON_MAX_BATCH",
             .type = CONFIG_TYPE_INT,
             .def = "16",
             .min = "1",
             .max = "1024",
             .unit = "sequences",
             .help = "sequences one model decodes together (continuous batching)",
             .target = &c->max_batch},
            {.name = "queue-depth",
             .env = "CORTEX_NEURON_QUEUE_DEPTH",
             .type = CONFIG_TYPE_INT,
             .def = "64",
             .min = "0",
             .max = "100000",
             .unit = "requests",
             .help = "requests waiting per model beyond max-batch before answering 503",
             .target = &c->queue_depth},
            {.name = "prefill-chunk",
             .env = "CORTEX_NEURON_PREFILL_CHUNK",
             .type = CONFIG_TYPE_INT,
             .def = "256",
             .min = "1",
             .max = "1048576",
             .unit = "tokens",
             .help = "prompt tokens a sequence reads per step, so long prompts never stall others",
             .target = &c->prefill_chunk},
            {.name = "prefix-cache-bytes",
             .env = "CORTEX_NEURON_PREFIX_CACHE_BYTES",
             .type = CONFIG_TYPE_SIZE,
             .def = "1GiB",
             .min = "0",
             .help = "memory per model for saved prompt prefixes (shared system prompts, earlier "
                     "turns), beyond its reservation; 0: no prefix caching",
             .target = &c->prefix_cache_bytes},
            {.name = "prefix-interval",
             .env = "CORTEX_NEURON_PREFIX_INTERVAL",
             .type = CONFIG_TYPE_INT,
             .def = "256",
             .min = "1",
             .max = "1048576",
             .unit = "tokens",
             .help = "prompt tokens between saved prefixes (rounded up to a multiple of a GPU's "
                     "KV block); prompt chunks end at its multiples",
             .target = &c->prefix_interval},
            {.name = "memory-budget",
             .env = "CORTEX_NEURON_MEMORY_BUDGET",
             .type = CONFIG_TYPE_SIZE,
             .def = "0",
             .min = "0",
             .help = "memory for weights and caches on the CPU device; 0: 80% of physical memory",
             .target = &c->memory_budget},
            {.name = "heartbeat",
             .env = "CORTEX_NEURON_HEARTBEAT",
             .type = CONFIG_TYPE_DURATION,
             .def = "0s",
             .min = "0s",
             .max = "1h",
             .help = "period of heartbeats into the database (at least 100ms); 0: the database "
                     "setting heartbeat_interval, read at registration and after reconnecting",
             .target = &c->heartbeat_ms},
            {.name = "max-body",
             .env = "CORTEX_NEURON_MAX_BODY",
             .type = CONFIG_TYPE_SIZE,
             .def = "32MiB",
             .min = "1KiB",
             .max = "1GiB",
             .help = "largest request body (larger ones get 413)",
             .target = &c->max_body},
            {.name = "http-threads",
             .env = "CORTEX_NEURON_HTTP_THREADS",
             .type = CONFIG_TYPE_INT,
             .def = "4",
             .min = "1",
             .max = "256",
             .unit = "threads",
             .help = "HTTP threads (they also render and tokenise prompts)",
             .target = &c->http_threads},
            {.name = "ping-interval",
             .env = "CORTEX_NEURON_PING_INTERVAL",
             .type = CONFIG_TYPE_DURATION,
             .def = "5s",
             .min = "50ms",
             .max = "1h",
             .help = "a stream with nothing to send for this long (queued, long prefill) gets a "
                     "': keep-alive' comment, so clients and gateways see it is alive",
             .target = &c->ping_ms},
            {.name = "test-gpus",
             .env = "CORTEX_NEURON_TEST_GPUS",
             .type = CONFIG_TYPE_INT,
             .def = "0",
             .min = "0",
             .max = "64",
             .unit = "GPUs",
             .help = "testing only: offer N made-up GPUs (cuda:0 .. cuda:N-1) sharing the memory "
                     "budget, every forward pass on the CPU, so placement over several GPUs can be "
                     "exercised without any; 0: the host's real devices",
             .target = &c->test_gpus},
    };
    _Static_assert(sizeof t / sizeof t[0] <= NEURON_CONFIG_MAX, "NEURON_CONFIG_MAX too small");
    memcpy(table, t, sizeof t);
    return sizeof t / sizeof t[0];
}

static const char neuron_config_summary[] =
        "The Cortex neuron: serves the models of one host over HTTP (OpenAI dialect), loads and "
        "unloads them on request and reports into PostgreSQL.";

/* 80% of physical memory: the default CPU budget, leaving room for the OS and page cache. */
static int64_t neuron_config_default_budget(void)
{
    long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
    if (pages <= 0 || page <= 0)
        return (int64_t)8 << 30;
    return (int64_t)((double)pages * (double)page * 0.8);
}

/* Port of a "host:port" listen address, or "13131" when it has none. */
static const char *neuron_config_port(const char *listen)
{
    const char *colon = strrchr(listen, ':');
    return colon && colon[1] ? colon + 1 : "13131";
}

int neuron_config_parse(struct neuron_config *cfg, int argc, char *const *argv, char *err,
                        size_t errlen)
{
    memset(cfg, 0, sizeof *cfg);
    struct config_entry table[NEURON_CONFIG_MAX];
    size_t n = neuron_config_table(cfg, table);
    int rc = config_parse(table, n, argc, argv, NULL, err, errlen);
    if (rc == CONFIG_PARSE_HELP) {
        char *help = config_help("neuron", neuron_config_summary, table, n);
        fputs(help, stdout);
        free(help);
        return NEURON_CONFIG_HELP;
    }
    if (rc != 0)
        return -1;
    if (!cfg->name || !cfg->name[0]) {
        char host[256] = "neuron";
        if (gethostname(host, sizeof host - 1) != 0)
            snprintf(host, sizeof host, "neuron");
        free(cfg->name);
        cfg->name = xstrdup(host);
    }
    if (!cfg->advertise || !cfg->advertise[0]) {
        free(cfg->advertise);
        cfg->advertise = xasprintf("http://%s:%s", cfg->name, neuron_config_port(cfg->listen));
    }
    if (cfg->memory_budget == 0)
        cfg->memory_budget = neuron_config_default_budget();
    if (cfg->db && !cfg->db[0]) {
        free(cfg->db);
        cfg->db = NULL;
    }
    if (cfg->chat_template && !cfg->chat_template[0]) {
        free(cfg->chat_template);
        cfg->chat_template = NULL;
    }
    if (cfg->heartbeat_ms > 0 && cfg->heartbeat_ms < 100) {
        snprintf(err, errlen,
                 "--heartbeat must be 0 (the database's heartbeat_interval) or at least 100ms; "
                 "got %lld ms",
                 (long long)cfg->heartbeat_ms);
        return -1;
    }
    return 0;
}

void neuron_config_free(struct neuron_config *cfg)
{
    if (!cfg)
        return;
    struct config_entry table[NEURON_CONFIG_MAX];
    size_t n = neuron_config_table(cfg, table);
    config_free(table, n);
}
