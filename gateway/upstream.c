/*
 * gateway/upstream.c — the pool of neurons a gateway proxies to (see upstream.h).
 */
#include "upstream.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http_client.h"
#include "log.h"
#include "timing.h"
#include "xalloc.h"

struct upstream {
    char url[256];
    char **models; /* owned ids */
    size_t n_models;
    int64_t in_flight;
    int failures;           /* consecutive */
    uint64_t ejected_until; /* monotonic ms; 0: not ejected */
    uint64_t errors;        /* failed outcomes so far (metrics) */
    uint64_t ejections;     /* times ejected so far (metrics) */
};

struct upstream_pool {
    pthread_mutex_t mu;
    struct upstream *ups; /* UPSTREAM_MAX slots; [0, n) in use, never removed */
    _Atomic size_t n;     /* grows under mu (upstream_pool_sync); read without it */
    int eject_after;
    int64_t eject_ms;
    size_t rotor; /* where the next tie-break starts */
};

/* Copies url into out without its trailing slashes. */
static void upstream_url_copy(char *out, size_t size, const char *url)
{
    snprintf(out, size, "%s", url);
    size_t len = strlen(out);
    while (len > 0 && out[len - 1] == '/')
        out[--len] = '\0';
}

struct upstream_pool *upstream_pool_create(const char *const *urls, size_t n, int eject_after,
                                           int64_t eject_ms)
{
    if (n > UPSTREAM_MAX)
        return NULL;
    struct upstream_pool *p = xcalloc(1, sizeof *p);
    pthread_mutex_init(&p->mu, NULL);
    p->ups = xcalloc(UPSTREAM_MAX, sizeof *p->ups);
    p->n = n;
    p->eject_after = eject_after > 0 ? eject_after : 3;
    p->eject_ms = eject_ms > 0 ? eject_ms : 10000;
    for (size_t i = 0; i < n; i++)
        upstream_url_copy(p->ups[i].url, sizeof p->ups[i].url, urls[i]);
    return p;
}

static void upstream_models_free(struct upstream *u)
{
    for (size_t i = 0; i < u->n_models; i++)
        free(u->models[i]);
    free(u->models);
    u->models = NULL;
    u->n_models = 0;
}

void upstream_pool_destroy(struct upstream_pool *p)
{
    if (!p)
        return;
    for (size_t i = 0; i < p->n; i++)
        upstream_models_free(&p->ups[i]);
    free(p->ups);
    pthread_mutex_destroy(&p->mu);
    free(p);
}

size_t upstream_pool_size(const struct upstream_pool *p)
{
    return p->n;
}

const char *upstream_pool_url(const struct upstream_pool *p, size_t i)
{
    return i < p->n ? p->ups[i].url : NULL;
}

void upstream_pool_set_models(struct upstream_pool *p, size_t i, const char *const *ids, size_t n)
{
    if (i >= p->n)
        return;
    char **models = n ? xcalloc(n, sizeof *models) : NULL;
    for (size_t k = 0; k < n; k++)
        models[k] = xstrdup(ids[k]);
    pthread_mutex_lock(&p->mu);
    struct upstream *u = &p->ups[i];
    upstream_models_free(u);
    u->models = models;
    u->n_models = n;
    pthread_mutex_unlock(&p->mu);
}

int upstream_pool_sync(struct upstream_pool *p, const char *const *urls, const char *const *models,
                       size_t n)
{
    int rc = 0;
    pthread_mutex_lock(&p->mu);
    size_t have = p->n;
    size_t *count = xcalloc(UPSTREAM_MAX, sizeof *count);
    size_t *slot = xcalloc(n ? n : 1, sizeof *slot);
    for (size_t k = 0; k < n; k++) {
        char url[256];
        upstream_url_copy(url, sizeof url, urls[k]);
        size_t i = 0;
        while (i < have && strcmp(p->ups[i].url, url) != 0)
            i++;
        if (i == have) {
            if (have == UPSTREAM_MAX) {
                slot[k] = SIZE_MAX;
                rc = -1;
                continue;
            }
            memcpy(p->ups[i].url, url, sizeof url);
            have++;
        }
        slot[k] = i;
        count[i]++;
    }
    for (size_t i = 0; i < have; i++) {
        upstream_models_free(&p->ups[i]);
        p->ups[i].models = count[i] ? xcalloc(count[i], sizeof *p->ups[i].models) : NULL;
    }
    for (size_t k = 0; k < n; k++) {
        if (slot[k] == SIZE_MAX)
            continue;
        struct upstream *u = &p->ups[slot[k]];
        u->models[u->n_models++] = xstrdup(models[k]);
    }
    p->n = have;
    pthread_mutex_unlock(&p->mu);
    free(count);
    free(slot);
    return rc;
}

/* Whether u serves model; called with the lock held. */
static bool upstream_serves(const struct upstream *u, const char *model)
{
    for (size_t k = 0; k < u->n_models; k++) {
        if (strcmp(u->models[k], model) == 0)
            return true;
    }
    return false;
}

bool upstream_pool_has_model(const struct upstream_pool *p, const char *model)
{
    struct upstream_pool *mp = (struct upstream_pool *)p; /* the lock is not part of the value */
    bool found = false;
    pthread_mutex_lock(&mp->mu);
    for (size_t i = 0; i < p->n && !found; i++)
        found = upstream_serves(&p->ups[i], model);
    pthread_mutex_unlock(&mp->mu);
    return found;
}

static int upstream_cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

json_t *upstream_pool_models(const struct upstream_pool *p)
{
    struct upstream_pool *mp = (struct upstream_pool *)p;
    pthread_mutex_lock(&mp->mu);
    size_t total = 0;
    for (size_t i = 0; i < p->n; i++)
        total += p->ups[i].n_models;
    const char **all = xcalloc(total ? total : 1, sizeof *all);
    size_t k = 0;
    for (size_t i = 0; i < p->n; i++) {
        for (size_t j = 0; j < p->ups[i].n_models; j++)
            all[k++] = p->ups[i].models[j];
    }
    qsort(all, total, sizeof *all, upstream_cmp_str);
    json_t *out = json_array();
    for (size_t i = 0; i < total; i++) {
        if (i == 0 || strcmp(all[i], all[i - 1]) != 0)
            json_array_append_new(out, json_string(all[i]));
    }
    pthread_mutex_unlock(&mp->mu);
    free(all);
    return out;
}

int upstream_pool_acquire(struct upstream_pool *p, const char *model, uint64_t exclude,
                          struct upstream_lease *out)
{
    uint64_t now = timing_now_ms();
    int best = -1;
    pthread_mutex_lock(&p->mu);
    for (size_t k = 0; k < p->n; k++) {
        size_t i = (p->rotor + k) % p->n;
        struct upstream *u = &p->ups[i];
        if ((exclude >> i) & 1u)
            continue;
        if (u->ejected_until > now || !upstream_serves(u, model))
            continue;
        if (best < 0 || u->in_flight < p->ups[best].in_flight)
            best = (int)i;
    }
    if (best >= 0) {
        struct upstream *u = &p->ups[best];
        u->in_flight++;
        out->index = best;
        out->in_flight = u->in_flight;
        memcpy(out->url, u->url, sizeof out->url);
        p->rotor = (p->rotor + 1) % p->n;
    }
    pthread_mutex_unlock(&p->mu);
    return best >= 0 ? 0 : -1;
}

void upstream_pool_release(struct upstream_pool *p, int index, enum upstream_outcome outcome)
{
    if (index < 0 || (size_t)index >= p->n)
        return;
    bool ejected = false;
    pthread_mutex_lock(&p->mu);
    struct upstream *u = &p->ups[index];
    if (u->in_flight > 0)
        u->in_flight--;
    if (outcome == UPSTREAM_OUTCOME_OK) {
        u->failures = 0;
        u->ejected_until = 0;
    } else if (outcome == UPSTREAM_OUTCOME_FAILED) {
        u->failures++;
        u->errors++;
        if (u->failures >= p->eject_after) {
            u->ejected_until = timing_now_ms() + (uint64_t)p->eject_ms;
            u->ejections++;
            ejected = true;
        }
    }
    int failures = u->failures;
    pthread_mutex_unlock(&p->mu);
    if (ejected)
        LOG_WARN("upstream %s ejected for %lldms after %d consecutive failures", u->url,
                 (long long)p->eject_ms, failures);
}

void upstream_pool_state(struct upstream_pool *p, size_t i, int64_t *in_flight, int *failures,
                         bool *ejected)
{
    if (i >= p->n)
        return;
    uint64_t now = timing_now_ms();
    pthread_mutex_lock(&p->mu);
    if (in_flight)
        *in_flight = p->ups[i].in_flight;
    if (failures)
        *failures = p->ups[i].failures;
    if (ejected)
        *ejected = p->ups[i].ejected_until > now;
    pthread_mutex_unlock(&p->mu);
}

void upstream_pool_counts(struct upstream_pool *p, size_t i, uint64_t *errors, uint64_t *ejections)
{
    *errors = *ejections = 0;
    if (i >= p->n)
        return;
    pthread_mutex_lock(&p->mu);
    *errors = p->ups[i].errors;
    *ejections = p->ups[i].ejections;
    pthread_mutex_unlock(&p->mu);
}

/* The ids of an OpenAI model list body; -1 when it is not one. */
static int upstream_parse_models(const char *body, size_t len, json_t **ids)
{
    json_t *doc = json_loadb(body, len, 0, NULL);
    json_t *data = json_object_get(doc, "data");
    if (!json_is_array(data)) {
        json_decref(doc);
        return -1;
    }
    *ids = json_array();
    size_t i;
    json_t *m;
    json_array_foreach(data, i, m)
    {
        json_t *id = json_object_get(m, "id");
        if (json_is_string(id))
            json_array_append(*ids, id);
    }
    json_decref(doc);
    return 0;
}

size_t upstream_pool_refresh(struct upstream_pool *p, long timeout_ms)
{
    size_t answered = 0;
    for (size_t i = 0; i < p->n; i++) {
        char url[300];
        snprintf(url, sizeof url, "%s/v1/models", p->ups[i].url);
        http_client_request_t req = {
                .url = url, .timeout_ms = timeout_ms, .connect_timeout_ms = timeout_ms};
        http_client_response_t resp;
        http_client_result_t rc = http_client_request(&req, &resp);
        json_t *ids = NULL;
        if (rc == HTTP_CLIENT_OK && resp.status == 200 &&
            upstream_parse_models(resp.body, resp.body_len, &ids) == 0) {
            size_t n = json_array_size(ids);
            const char **names = xcalloc(n ? n : 1, sizeof *names);
            for (size_t k = 0; k < n; k++)
                names[k] = json_string_value(json_array_get(ids, k));
            upstream_pool_set_models(p, i, names, n);
            free(names);
            answered++;
        } else {
            LOG_DEBUG("upstream %s: model list unavailable (%s, status %ld)", p->ups[i].url,
                      rc == HTTP_CLIENT_OK ? "answered" : resp.error, resp.status);
        }
        json_decref(ids);
        http_client_response_free(&resp);
    }
    return answered;
}
