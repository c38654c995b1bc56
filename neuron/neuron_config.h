/*
 * neuron/neuron_config.h — the neuron daemon's settings: one declarative table (common/config.h)
 * filled from defaults, CORTEX_NEURON_* environment variables and --flags.
 *
 * Contract: neuron_config_parse() fills a struct neuron_config at start-up and derives what the
 * table cannot express (the default node name from the host name, the advertised URL from the
 * listen port, the CPU memory budget from the machine's memory). Nothing else in the neuron
 * reads the environment or argv. The struct is read-only once parsed; neuron_config_free()
 * releases its strings.
 */
#ifndef CORTEX_NEURON_NEURON_CONFIG_H
#define CORTEX_NEURON_NEURON_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct neuron_config {
    char *listen;          /* "host:port" */
    char *models_dir;      /* scanned for .gguf files and HF directories */
    char *name;            /* node name in the database; default: the host name */
    char *advertise;       /* URL gateways and the scheduler use; default http://<name>:<port> */
    char *db;              /* libpq conninfo; NULL or "": no database reporting */
    char *log_level;       /* trace | debug | info | warn | error */
    char *chat_template;   /* Jinja file used instead of every model's template; NULL: theirs */
    int64_t threads;       /* forward-pass threads per model; 0: all online CPUs */
    int64_t ctx;           /* tokens per sequence; 0: the model's own limit */
    int64_t max_batch;     /* sequences decoded together per model */
    int64_t queue_depth;   /* requests waiting per model before 503 */
    int64_t prefill_chunk; /* prompt tokens per sequence per step */
    int64_t prefix_cache_bytes; /* saved prompt prefixes per model; 0: no prefix caching */
    int64_t prefix_interval;    /* prompt tokens between saved prefixes */
    int64_t memory_budget; /* bytes for weights + caches on the CPU; 0: 80% of RAM (resolved) */
    int64_t heartbeat_ms;  /* heartbeat period; 0: the database's heartbeat_interval setting */
    int64_t max_body;      /* largest request body, bytes */
    int64_t http_threads;  /* HTTP polling threads (they also render and tokenise prompts) */
    int64_t ping_ms;       /* a quiet stream gets ": keep-alive" after this long */
    int64_t test_gpus;     /* > 0: that many made-up GPUs, computed on the CPU (tests only) */
};

/* Result of neuron_config_parse() when --help was asked for (the help text is printed). */
#define NEURON_CONFIG_HELP 1

/* Fills cfg from argv and the process environment. Returns 0, NEURON_CONFIG_HELP after printing
 * --help to stdout, or -1 with a message in err (bad value, unknown flag). Release cfg with
 * neuron_config_free() in every case. */
int neuron_config_parse(struct neuron_config *cfg, int argc, char *const *argv, char *err,
                        size_t errlen) __attribute__((warn_unused_result));
void neuron_config_free(struct neuron_config *cfg);

#endif
