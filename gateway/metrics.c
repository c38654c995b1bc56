/*
 * gateway/metrics.c — per-request counters and histograms, Prometheus text format (see
 * metrics.h).
 */
#include "metrics.h"

#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "xalloc.h"

/* Upper bounds (seconds) of the duration and TTFT histogram buckets; +Inf is implicit. */
static const double metrics_bounds[] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1,
                                        2.5,   5,    10,    30,   60,  120,  300};
#define METRICS_N_BOUNDS (sizeof metrics_bounds / sizeof metrics_bounds[0])

/* The name that collects models beyond METRICS_MAX_MODELS. */
#define METRICS_OTHER "_other"

struct metrics_hist {
    uint64_t buckets[METRICS_N_BOUNDS]; /* non-cumulative; summed when written */
    uint64_t count;
    double sum;
};

/* Everything of one model in one dialect. */
struct metrics_series {
    struct {
        int status; /* 0: "other" */
        uint64_t n;
    } statuses[METRICS_MAX_STATUSES];
    size_t n_statuses;
    struct metrics_hist duration, ttft;
};

struct metrics_model {
    char *name;
    struct metrics_series dialect[2]; /* [0] openai, [1] anthropic */
    uint64_t tokens_in, tokens_out;
};

struct metrics {
    pthread_mutex_t mu;
    struct metrics_model *models; /* the first use of a name adds it; [0] is "" */
    size_t n, cap;
};

struct metrics *metrics_create(void)
{
    struct metrics *m = xcalloc(1, sizeof *m);
    pthread_mutex_init(&m->mu, NULL);
    return m;
}

void metrics_destroy(struct metrics *m)
{
    if (!m)
        return;
    for (size_t i = 0; i < m->n; i++)
        free(m->models[i].name);
    free(m->models);
    pthread_mutex_destroy(&m->mu);
    free(m);
}

/* The model's record, added when new (or the shared "_other" when the table is full); under
 * mu. */
static struct metrics_model *metrics_model(struct metrics *m, const char *name)
{
    if (!name)
        name = "";
    for (size_t i = 0; i < m->n; i++) {
        if (strcmp(m->models[i].name, name) == 0)
            return &m->models[i];
    }
    if (m->n >= METRICS_MAX_MODELS - 1) { /* the last slot is for "_other" */
        name = METRICS_OTHER;
        for (size_t i = 0; i < m->n; i++) {
            if (strcmp(m->models[i].name, name) == 0)
                return &m->models[i];
        }
    }
    m->models = xgrow(m->models, &m->cap, m->n + 1, sizeof *m->models);
    struct metrics_model *mm = &m->models[m->n++];
    memset(mm, 0, sizeof *mm);
    mm->name = xstrdup(name);
    return mm;
}

static void metrics_hist_add(struct metrics_hist *h, double v)
{
    for (size_t i = 0; i < METRICS_N_BOUNDS; i++) {
        if (v <= metrics_bounds[i]) {
            h->buckets[i]++;
            break;
        }
    }
    h->count++;
    h->sum += v;
}

void metrics_observe_request(struct metrics *m, const struct metrics_request *r)
{
    pthread_mutex_lock(&m->mu);
    struct metrics_model *mm = metrics_model(m, r->model);
    struct metrics_series *s = &mm->dialect[r->anthropic ? 1 : 0];
    size_t i = 0;
    while (i < s->n_statuses && s->statuses[i].status != r->status)
        i++;
    if (i == s->n_statuses) {
        if (s->n_statuses >= METRICS_MAX_STATUSES - 1) { /* the last slot collects the rest */
            i = METRICS_MAX_STATUSES - 1;
            s->statuses[i].status = 0;
            s->n_statuses = METRICS_MAX_STATUSES;
        } else {
            s->statuses[s->n_statuses++].status = r->status;
        }
    }
    s->statuses[i].n++;
    if (r->proxied) {
        metrics_hist_add(&s->duration, r->duration_s > 0 ? r->duration_s : 0);
        if (r->ttft_s >= 0)
            metrics_hist_add(&s->ttft, r->ttft_s);
        mm->tokens_in += (uint64_t)(r->tokens_in > 0 ? r->tokens_in : 0);
        mm->tokens_out += (uint64_t)(r->tokens_out > 0 ? r->tokens_out : 0);
    }
    pthread_mutex_unlock(&m->mu);
}

uint64_t metrics_requests(struct metrics *m, const char *model, bool anthropic, int status)
{
    uint64_t n = 0;
    pthread_mutex_lock(&m->mu);
    for (size_t i = 0; i < m->n; i++) {
        if (strcmp(m->models[i].name, model ? model : "") != 0)
            continue;
        const struct metrics_series *s = &m->models[i].dialect[anthropic ? 1 : 0];
        for (size_t j = 0; j < s->n_statuses; j++) {
            if (s->statuses[j].status == status)
                n = s->statuses[j].n;
        }
    }
    pthread_mutex_unlock(&m->mu);
    return n;
}

/* ---- text format -------------------------------------------------------------------------- */

void metrics_append_family(struct buf *b, const char *name, const char *type, const char *help)
{
    buf_appendf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

void metrics_append_label(struct buf *b, const char *value)
{
    buf_append_char(b, '"');
    for (const char *p = value ? value : ""; *p; p++) {
        if (*p == '\\')
            buf_append_str(b, "\\\\");
        else if (*p == '"')
            buf_append_str(b, "\\\"");
        else if (*p == '\n')
            buf_append_str(b, "\\n");
        else
            buf_append_char(b, *p);
    }
    buf_append_char(b, '"');
}

static const char *const metrics_dialects[2] = {"openai", "anthropic"};

/* Appends `{model="…",dialect="…"` (no closing brace). */
static void metrics_append_series_labels(struct buf *b, const char *name, const char *model,
                                         int dialect)
{
    buf_appendf(b, "%s{model=", name);
    metrics_append_label(b, model);
    buf_appendf(b, ",dialect=\"%s\"", metrics_dialects[dialect]);
}

static void metrics_append_hist(struct buf *b, const char *name, const char *model, int dialect,
                                const struct metrics_hist *h)
{
    char bucket[128], sum[128], count[128];
    snprintf(bucket, sizeof bucket, "%s_bucket", name);
    snprintf(sum, sizeof sum, "%s_sum", name);
    snprintf(count, sizeof count, "%s_count", name);
    uint64_t cumulative = 0;
    for (size_t i = 0; i < METRICS_N_BOUNDS; i++) {
        cumulative += h->buckets[i];
        metrics_append_series_labels(b, bucket, model, dialect);
        buf_appendf(b, ",le=\"%g\"} %llu\n", metrics_bounds[i], (unsigned long long)cumulative);
    }
    metrics_append_series_labels(b, bucket, model, dialect);
    buf_appendf(b, ",le=\"+Inf\"} %llu\n", (unsigned long long)h->count);
    metrics_append_series_labels(b, sum, model, dialect);
    buf_appendf(b, "} %.6f\n", h->sum);
    metrics_append_series_labels(b, count, model, dialect);
    buf_appendf(b, "} %llu\n", (unsigned long long)h->count);
}

void metrics_render(struct metrics *m, struct buf *b)
{
    pthread_mutex_lock(&m->mu);
    metrics_append_family(b, "cortex_gateway_requests_total", "counter",
                          "API requests answered, by served model (\"\" when refused before the "
                          "model was resolved), client dialect and HTTP status.");
    for (size_t i = 0; i < m->n; i++) {
        for (int d = 0; d < 2; d++) {
            const struct metrics_series *s = &m->models[i].dialect[d];
            for (size_t j = 0; j < s->n_statuses; j++) {
                metrics_append_series_labels(b, "cortex_gateway_requests_total", m->models[i].name,
                                             d);
                if (s->statuses[j].status)
                    buf_appendf(b, ",status=\"%d\"} ", s->statuses[j].status);
                else
                    buf_append_str(b, ",status=\"other\"} ");
                buf_appendf(b, "%llu\n", (unsigned long long)s->statuses[j].n);
            }
        }
    }
    static const struct {
        const char *name, *help;
        size_t offset;
    } hists[] = {
            {"cortex_gateway_request_duration_seconds",
             "Time from receiving a proxied request to its end (last byte, error or hang-up).",
             offsetof(struct metrics_series, duration)},
            {"cortex_gateway_ttft_seconds",
             "Time from receiving a proxied request to the first event or answer from the "
             "neuron (cold-start holds included).",
             offsetof(struct metrics_series, ttft)},
    };
    for (size_t h = 0; h < sizeof hists / sizeof hists[0]; h++) {
        metrics_append_family(b, hists[h].name, "histogram", hists[h].help);
        for (size_t i = 0; i < m->n; i++) {
            if (!m->models[i].name[0])
                continue; /* nothing was proxied without a model */
            for (int d = 0; d < 2; d++) {
                const struct metrics_series *s = &m->models[i].dialect[d];
                const struct metrics_hist *hist =
                        (const struct metrics_hist *)((const char *)s + hists[h].offset);
                if (s->duration.count == 0)
                    continue;
                metrics_append_hist(b, hists[h].name, m->models[i].name, d, hist);
            }
        }
    }
    metrics_append_family(b, "cortex_gateway_tokens_in_total", "counter",
                          "Prompt tokens of proxied requests, as the neurons reported them.");
    for (size_t i = 0; i < m->n; i++) {
        if (!m->models[i].name[0])
            continue;
        buf_append_str(b, "cortex_gateway_tokens_in_total{model=");
        metrics_append_label(b, m->models[i].name);
        buf_appendf(b, "} %llu\n", (unsigned long long)m->models[i].tokens_in);
    }
    metrics_append_family(b, "cortex_gateway_tokens_out_total", "counter",
                          "Completion tokens of proxied requests, as the neurons reported them.");
    for (size_t i = 0; i < m->n; i++) {
        if (!m->models[i].name[0])
            continue;
        buf_append_str(b, "cortex_gateway_tokens_out_total{model=");
        metrics_append_label(b, m->models[i].name);
        buf_appendf(b, "} %llu\n", (unsigned long long)m->models[i].tokens_out);
    }
    pthread_mutex_unlock(&m->mu);
}
