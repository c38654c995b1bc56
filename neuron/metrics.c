/*
 * neuron/metrics.c — counters and the Prometheus exposition (see metrics.h).
 */
#include "metrics.h"

#include "xalloc.h"

#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The statuses counted one by one; anything else is counted as "other". */
static const int metrics_statuses[] = {200, 400, 404, 409, 413, 500, 503};
#define METRICS_N_STATUS (sizeof metrics_statuses / sizeof metrics_statuses[0] + 1)

static const char *const metrics_endpoint_names[METRICS_ENDPOINT_COUNT] = {
        [METRICS_ENDPOINT_CHAT] = "chat_completions",
        [METRICS_ENDPOINT_COMPLETIONS] = "completions",
        [METRICS_ENDPOINT_TOKENIZE] = "tokenize",
};

static const char *const metrics_finishes[] = {"stop", "length", "tool_calls", "cancelled",
                                               "error"};
#define METRICS_N_FINISH (sizeof metrics_finishes / sizeof metrics_finishes[0])

struct metrics {
    atomic_uint_fast64_t requests[METRICS_ENDPOINT_COUNT][METRICS_N_STATUS];
    atomic_uint_fast64_t prompt_tokens, completion_tokens;
    atomic_uint_fast64_t finished[METRICS_N_FINISH];
    atomic_uint_fast64_t queue_us_sum, first_token_us_sum, generations;
};

struct metrics *metrics_create(void)
{
    struct metrics *m = xcalloc(1, sizeof *m);
    return m;
}

void metrics_destroy(struct metrics *m)
{
    free(m);
}

void metrics_count_request(struct metrics *m, enum metrics_endpoint ep, int status)
{
    if ((unsigned)ep >= METRICS_ENDPOINT_COUNT)
        return;
    size_t i = 0;
    while (i < METRICS_N_STATUS - 1 && metrics_statuses[i] != status)
        i++;
    atomic_fetch_add_explicit(&m->requests[ep][i], 1, memory_order_relaxed);
}

void metrics_count_generation(struct metrics *m, int64_t prompt_tokens, int64_t completion_tokens,
                              const char *finish, double queue_ms, double first_token_ms)
{
    atomic_fetch_add_explicit(&m->prompt_tokens, (uint64_t)(prompt_tokens > 0 ? prompt_tokens : 0),
                              memory_order_relaxed);
    atomic_fetch_add_explicit(&m->completion_tokens,
                              (uint64_t)(completion_tokens > 0 ? completion_tokens : 0),
                              memory_order_relaxed);
    for (size_t i = 0; i < METRICS_N_FINISH; i++) {
        if (finish && strcmp(finish, metrics_finishes[i]) == 0)
            atomic_fetch_add_explicit(&m->finished[i], 1, memory_order_relaxed);
    }
    atomic_fetch_add_explicit(&m->queue_us_sum, (uint64_t)(queue_ms > 0 ? queue_ms * 1000 : 0),
                              memory_order_relaxed);
    atomic_fetch_add_explicit(&m->first_token_us_sum,
                              (uint64_t)(first_token_ms > 0 ? first_token_ms * 1000 : 0),
                              memory_order_relaxed);
    atomic_fetch_add_explicit(&m->generations, 1, memory_order_relaxed);
}

static uint64_t metrics_load(atomic_uint_fast64_t *v)
{
    return atomic_load_explicit(v, memory_order_relaxed);
}

/* Appends a label value with Prometheus escaping (backslash, quote, newline). */
static void metrics_label(struct buf *out, const char *v)
{
    for (; *v; v++) {
        if (*v == '\\' || *v == '"')
            buf_append_char(out, '\\');
        if (*v == '\n') {
            buf_append_str(out, "\\n");
            continue;
        }
        buf_append_char(out, *v);
    }
}

/* A copy of the registry's per-model view, so each metric family is written as one group. */
struct metrics_models {
    struct registry_model_info *v;
    size_t n, cap;
};

static void metrics_collect_model(void *ud, const struct registry_model_info *info)
{
    struct metrics_models *ms = ud;
    ms->v = xgrow(ms->v, &ms->cap, ms->n + 1, sizeof *ms->v);
    struct registry_model_info *c = &ms->v[ms->n++];
    *c = *info;
    c->name = xstrdup(info->name);
    c->path = NULL;
    c->error = NULL;
}

enum metrics_model_field {
    METRICS_FIELD_MEMORY,
    METRICS_FIELD_CACHE_BUDGET,
    METRICS_FIELD_CACHE,
    METRICS_FIELD_LOAD_SECONDS,
    METRICS_FIELD_ACTIVE,
    METRICS_FIELD_QUEUED,
    METRICS_FIELD_STEPS,
    METRICS_FIELD_STEP_SEQUENCES,
    METRICS_FIELD_PROMPT_TOKENS,
    METRICS_FIELD_GENERATED,
    METRICS_FIELD_PREFIX_LOOKUPS,
    METRICS_FIELD_PREFIX_HITS,
    METRICS_FIELD_PREFIX_HIT_TOKENS,
    METRICS_FIELD_PREFIX_ENTRIES,
    METRICS_FIELD_PREFIX_BYTES,
    METRICS_FIELD_PREFIX_EVICTIONS,
    METRICS_FIELD_KV_BLOCKS,
    METRICS_FIELD_KV_BLOCKS_FREE,
    METRICS_FIELD_KV_BLOCK_ALLOCS,
    METRICS_FIELD_COUNT,
};

static const struct {
    const char *name, *type, *help;
    bool needs_stats;
    bool gpu_only; /* written only for models with a paged KV block pool */
} metrics_model_families[METRICS_FIELD_COUNT] = {
        [METRICS_FIELD_MEMORY] = {"cortex_neuron_model_memory_bytes", "gauge",
                                  "Memory reserved for the model (weights + cache budget).", false},
        [METRICS_FIELD_CACHE_BUDGET] = {"cortex_neuron_cache_budget_bytes", "gauge",
                                        "The part of the model's reserved memory set aside for "
                                        "sequence caches (max-batch sequences of ctx tokens).",
                                        false},
        [METRICS_FIELD_CACHE] = {"cortex_neuron_cache_bytes", "gauge",
                                 "Bytes the caches of the model's running sequences occupy now.",
                                 true},
        [METRICS_FIELD_LOAD_SECONDS] = {"cortex_neuron_model_load_seconds", "gauge",
                                        "Duration of the model's last load.", false},
        [METRICS_FIELD_ACTIVE] = {"cortex_neuron_active_sequences", "gauge",
                                  "Sequences in the model's batch.", true},
        [METRICS_FIELD_QUEUED] = {"cortex_neuron_queue_depth", "gauge",
                                  "Requests waiting for a batch slot.", true},
        [METRICS_FIELD_STEPS] = {"cortex_neuron_batch_steps_total", "counter", "Model passes.",
                                 true},
        [METRICS_FIELD_STEP_SEQUENCES] = {"cortex_neuron_batch_sequences_total", "counter",
                                          "Sum of batch sizes over passes (mean batch size = "
                                          "this / cortex_neuron_batch_steps_total).",
                                          true},
        [METRICS_FIELD_PROMPT_TOKENS] = {"cortex_neuron_prompt_tokens_read_total", "counter",
                                         "Prompt tokens the model has read.", true},
        [METRICS_FIELD_GENERATED] = {"cortex_neuron_tokens_generated_total", "counter",
                                     "Tokens the model has sampled.", true},
        [METRICS_FIELD_PREFIX_LOOKUPS] = {"cortex_neuron_prefix_cache_lookups_total", "counter",
                                          "Admitted requests that looked for a saved prompt "
                                          "prefix.",
                                          true},
        [METRICS_FIELD_PREFIX_HITS] = {"cortex_neuron_prefix_cache_hits_total", "counter",
                                       "Lookups that found a saved prompt prefix (hit rate = "
                                       "this / lookups).",
                                       true},
        [METRICS_FIELD_PREFIX_HIT_TOKENS] = {"cortex_neuron_prefix_cache_hit_tokens_total",
                                             "counter",
                                             "Prompt tokens restored from saved prefixes instead "
                                             "of being recomputed.",
                                             true},
        [METRICS_FIELD_PREFIX_ENTRIES] = {"cortex_neuron_prefix_cache_entries", "gauge",
                                          "Saved prompt prefixes held.", true},
        [METRICS_FIELD_PREFIX_BYTES] = {"cortex_neuron_prefix_cache_bytes", "gauge",
                                        "Memory the saved prompt prefixes keep alive.", true},
        [METRICS_FIELD_PREFIX_EVICTIONS] = {"cortex_neuron_prefix_cache_evictions_total", "counter",
                                            "Saved prefixes dropped for the byte budget or for "
                                            "KV blocks.",
                                            true},
        [METRICS_FIELD_KV_BLOCKS] = {"cortex_neuron_kv_blocks", "gauge",
                                     "Blocks of the model's paged GPU KV cache.", true, true},
        [METRICS_FIELD_KV_BLOCKS_FREE] = {"cortex_neuron_kv_blocks_free", "gauge",
                                          "Blocks of the paged GPU KV cache on its free list.",
                                          true, true},
        [METRICS_FIELD_KV_BLOCK_ALLOCS] = {"cortex_neuron_kv_block_allocs_total", "counter",
                                           "KV blocks handed out since load (a reused block "
                                           "counts again).",
                                           true, true},
};

static uint64_t metrics_model_value(const struct registry_model_info *info,
                                    enum metrics_model_field f)
{
    switch (f) {
    case METRICS_FIELD_MEMORY:
        return info->memory_bytes;
    case METRICS_FIELD_CACHE_BUDGET:
        return info->cache_budget_bytes;
    case METRICS_FIELD_CACHE:
        return info->stats.cache_bytes;
    case METRICS_FIELD_ACTIVE:
        return (uint64_t)info->stats.active;
    case METRICS_FIELD_QUEUED:
        return (uint64_t)info->stats.queued;
    case METRICS_FIELD_STEPS:
        return info->stats.steps;
    case METRICS_FIELD_STEP_SEQUENCES:
        return info->stats.step_sequences;
    case METRICS_FIELD_PROMPT_TOKENS:
        return info->stats.prompt_tokens;
    case METRICS_FIELD_GENERATED:
        return info->stats.generated_tokens;
    case METRICS_FIELD_PREFIX_LOOKUPS:
        return info->stats.prefix.lookups;
    case METRICS_FIELD_PREFIX_HITS:
        return info->stats.prefix.hits;
    case METRICS_FIELD_PREFIX_HIT_TOKENS:
        return info->stats.prefix.hit_tokens;
    case METRICS_FIELD_PREFIX_ENTRIES:
        return info->stats.prefix.entries;
    case METRICS_FIELD_PREFIX_BYTES:
        return info->stats.prefix.bytes;
    case METRICS_FIELD_PREFIX_EVICTIONS:
        return info->stats.prefix.evictions;
    case METRICS_FIELD_KV_BLOCKS:
        return (uint64_t)info->stats.kv.blocks;
    case METRICS_FIELD_KV_BLOCKS_FREE:
        return (uint64_t)info->stats.kv.blocks_free;
    case METRICS_FIELD_KV_BLOCK_ALLOCS:
        return info->stats.kv.block_allocs;
    case METRICS_FIELD_LOAD_SECONDS:
    case METRICS_FIELD_COUNT:
        break;
    }
    return 0;
}

static void metrics_render_models(struct registry *r, struct buf *out)
{
    struct metrics_models ms = {0};
    registry_foreach(r, metrics_collect_model, &ms);
    for (int f = 0; f < METRICS_FIELD_COUNT; f++) {
        const char *name = metrics_model_families[f].name;
        buf_appendf(out, "# HELP %s %s\n# TYPE %s %s\n", name, metrics_model_families[f].help, name,
                    metrics_model_families[f].type);
        for (size_t i = 0; i < ms.n; i++) {
            const struct registry_model_info *info = &ms.v[i];
            if (metrics_model_families[f].needs_stats && !info->has_stats)
                continue;
            if (metrics_model_families[f].gpu_only && info->stats.kv.blocks == 0)
                continue;
            if (f == METRICS_FIELD_LOAD_SECONDS && info->state == REGISTRY_STATE_LOADING)
                continue;
            buf_appendf(out, "%s{model=\"", name);
            metrics_label(out, info->name);
            if (f == METRICS_FIELD_LOAD_SECONDS)
                buf_appendf(out, "\"} %.3f\n", info->load_ms / 1000.0);
            else
                buf_appendf(out, "\"} %llu\n", (unsigned long long)metrics_model_value(info, f));
        }
    }
    for (size_t i = 0; i < ms.n; i++)
        free((char *)ms.v[i].name);
    free(ms.v);
}

/* Memory budget, reservations and (GPUs) free memory per device. */
static void metrics_render_devices(struct registry *r, struct buf *out)
{
    size_t n = registry_device_count(r);
    struct registry_device_usage *use = xcalloc(n ? n : 1, sizeof *use);
    n = registry_get_devices(r, use, n);
    static const char *const names[] = {"cortex_neuron_memory_budget_bytes",
                                        "cortex_neuron_memory_used_bytes",
                                        "cortex_neuron_memory_free_bytes"};
    static const char *const helps[] = {
            "Memory models may reserve on the device (CPU: the budget; GPU: free at start).",
            "Memory reserved by the models placed on the device.",
            "Memory still free for models on the device (GPU: also at most what the driver "
            "reports free)."};
    for (size_t f = 0; f < 3; f++) {
        buf_appendf(out, "# HELP %s %s\n# TYPE %s gauge\n", names[f], helps[f], names[f]);
        for (size_t i = 0; i < n; i++) {
            char label[32];
            device_label(use[i].device, label, sizeof label);
            uint64_t v = f == 0 ? use[i].device->budget : f == 1 ? use[i].used : use[i].free;
            buf_appendf(out, "%s{device=\"%s\"} %llu\n", names[f], label, (unsigned long long)v);
        }
    }
    free(use);
}

void metrics_render(struct metrics *m, struct registry *r, struct buf *out)
{
    buf_append_str(out, "# HELP cortex_neuron_requests_total API requests answered, by endpoint "
                        "and HTTP status.\n# TYPE cortex_neuron_requests_total counter\n");
    for (int ep = 0; ep < METRICS_ENDPOINT_COUNT; ep++) {
        for (size_t i = 0; i < METRICS_N_STATUS; i++) {
            char status[16];
            if (i < METRICS_N_STATUS - 1)
                snprintf(status, sizeof status, "%d", metrics_statuses[i]);
            else
                snprintf(status, sizeof status, "other");
            buf_appendf(out, "cortex_neuron_requests_total{endpoint=\"%s\",status=\"%s\"} %llu\n",
                        metrics_endpoint_names[ep], status,
                        (unsigned long long)metrics_load(&m->requests[ep][i]));
        }
    }
    buf_appendf(out,
                "# HELP cortex_neuron_prompt_tokens_total Prompt tokens of finished "
                "generations.\n# TYPE cortex_neuron_prompt_tokens_total counter\n"
                "cortex_neuron_prompt_tokens_total %llu\n"
                "# HELP cortex_neuron_completion_tokens_total Tokens generated by finished "
                "generations.\n# TYPE cortex_neuron_completion_tokens_total counter\n"
                "cortex_neuron_completion_tokens_total %llu\n",
                (unsigned long long)metrics_load(&m->prompt_tokens),
                (unsigned long long)metrics_load(&m->completion_tokens));
    buf_append_str(out, "# HELP cortex_neuron_generations_total Finished generations, by "
                        "finish reason.\n# TYPE cortex_neuron_generations_total counter\n");
    for (size_t i = 0; i < METRICS_N_FINISH; i++)
        buf_appendf(out, "cortex_neuron_generations_total{finish=\"%s\"} %llu\n",
                    metrics_finishes[i], (unsigned long long)metrics_load(&m->finished[i]));
    buf_appendf(out,
                "# HELP cortex_neuron_queue_seconds_sum Time generations waited for a batch "
                "slot.\n# TYPE cortex_neuron_queue_seconds_sum counter\n"
                "cortex_neuron_queue_seconds_sum %.6f\n"
                "# HELP cortex_neuron_first_token_seconds_sum Prompt reading time until the "
                "first token.\n# TYPE cortex_neuron_first_token_seconds_sum counter\n"
                "cortex_neuron_first_token_seconds_sum %.6f\n",
                (double)metrics_load(&m->queue_us_sum) / 1e6,
                (double)metrics_load(&m->first_token_us_sum) / 1e6);

    metrics_render_devices(r, out);
    struct registry_totals t;
    registry_get_totals(r, &t);
    buf_appendf(out,
                "# HELP cortex_neuron_models Models listed, by state.\n"
                "# TYPE cortex_neuron_models gauge\n"
                "cortex_neuron_models{state=\"loading\"} %d\n"
                "cortex_neuron_models{state=\"ready\"} %d\n"
                "cortex_neuron_models{state=\"failed\"} %d\n",
                t.models_loading, t.models_ready, t.models_failed);
    metrics_render_models(r, out);
}
