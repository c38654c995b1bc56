/*
 * scheduler/dispatch.c — the scheduler's requests to neurons, run on worker threads.
 *
 * One mutex guards the job queue, the list of jobs being worked on (for the one-job-per-
 * placement rule) and the result queue; workers wait on a condition variable for jobs, and
 * sleep between attempts on the same condition variable so that dispatch_destroy interrupts
 * them at once. Results are signalled through an eventfd the owner polls.
 */
#include "dispatch.h"

#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "buf.h"
#include "http_client.h"
#include "jsonutil.h"
#include "log.h"
#include "xalloc.h"

struct job {
    struct dispatch_job j; /* endpoint and model point to owned copies */
    char *endpoint, *model;
    struct job *next;
};

struct dispatch {
    struct dispatch_options opt;
    pthread_mutex_t mu;
    pthread_cond_t cond;
    bool stopping;
    struct job *head, *tail; /* queued */
    struct job **running;    /* being worked on, one slot per worker */
    struct dispatch_result *results;
    size_t n_results, cap_results;
    int efd;
    pthread_t *threads;
    int n_threads;
};

struct worker_arg {
    dispatch_t *d;
    int slot;
};

const char *dispatch_kind_name(enum dispatch_kind kind)
{
    switch (kind) {
    case DISPATCH_LOAD:
        return "load";
    case DISPATCH_UNLOAD:
        return "unload";
    case DISPATCH_PROBE:
        return "probe";
    }
    return "unknown";
}

const char *dispatch_outcome_name(enum dispatch_outcome outcome)
{
    switch (outcome) {
    case DISPATCH_ACCEPTED:
        return "accepted";
    case DISPATCH_REFUSED:
        return "refused";
    case DISPATCH_UNREACHABLE:
        return "unreachable";
    case DISPATCH_ABORTED:
        return "aborted";
    }
    return "unknown";
}

static void job_free(struct job *j)
{
    if (j == NULL)
        return;
    free(j->endpoint);
    free(j->model);
    free(j);
}

/* Whether the job conflicts with job j already queued or running (same placement; same node
 * for probes). Called with the mutex held. */
static bool job_conflicts(const struct dispatch_job *a, const struct dispatch_job *b)
{
    if (a->kind == DISPATCH_PROBE || b->kind == DISPATCH_PROBE)
        return a->kind == b->kind && a->node_id == b->node_id;
    return a->placement_id == b->placement_id;
}

static bool dispatch_conflict_locked(dispatch_t *d, const struct dispatch_job *job)
{
    for (struct job *q = d->head; q; q = q->next) {
        if (job_conflicts(&q->j, job))
            return true;
    }
    for (int i = 0; i < d->n_threads; i++) {
        if (d->running[i] != NULL && job_conflicts(&d->running[i]->j, job))
            return true;
    }
    return false;
}

int dispatch_submit(dispatch_t *d, const struct dispatch_job *job)
{
    struct job *j = xcalloc(1, sizeof *j);
    j->j = *job;
    /* A trailing slash on the endpoint would double up in the URL. */
    size_t n = strlen(job->endpoint);
    while (n > 0 && job->endpoint[n - 1] == '/')
        n--;
    j->endpoint = xstrndup(job->endpoint, n);
    j->model = job->model ? xstrdup(job->model) : NULL;
    j->j.endpoint = j->endpoint;
    j->j.model = j->model;
    pthread_mutex_lock(&d->mu);
    if (d->stopping || dispatch_conflict_locked(d, job)) {
        pthread_mutex_unlock(&d->mu);
        job_free(j);
        return -1;
    }
    if (d->tail)
        d->tail->next = j;
    else
        d->head = j;
    d->tail = j;
    pthread_cond_broadcast(&d->cond);
    pthread_mutex_unlock(&d->mu);
    return 0;
}

bool dispatch_pending(dispatch_t *d, int64_t placement_id)
{
    struct dispatch_job probe = {.kind = DISPATCH_LOAD, .placement_id = placement_id};
    pthread_mutex_lock(&d->mu);
    bool pending = dispatch_conflict_locked(d, &probe);
    pthread_mutex_unlock(&d->mu);
    return pending;
}

bool dispatch_probe_pending(dispatch_t *d, int64_t node_id)
{
    struct dispatch_job probe = {.kind = DISPATCH_PROBE, .node_id = node_id};
    pthread_mutex_lock(&d->mu);
    bool pending = dispatch_conflict_locked(d, &probe);
    pthread_mutex_unlock(&d->mu);
    return pending;
}

int dispatch_fd(const dispatch_t *d)
{
    return d->efd;
}

size_t dispatch_take_results(dispatch_t *d, struct dispatch_result **out)
{
    uint64_t drained;
    if (read(d->efd, &drained, sizeof drained) < 0 && errno != EAGAIN)
        LOG_WARN("dispatch: reading the eventfd: %s", strerror(errno));
    pthread_mutex_lock(&d->mu);
    *out = d->results;
    size_t n = d->n_results;
    d->results = NULL;
    d->n_results = d->cap_results = 0;
    pthread_mutex_unlock(&d->mu);
    return n;
}

void dispatch_results_free(struct dispatch_result *results, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(results[i].model);
        free(results[i].reason);
        for (size_t k = 0; k < results[i].n_probe; k++) {
            free(results[i].probe[k].model);
            free(results[i].probe[k].state);
        }
        free(results[i].probe);
    }
    free(results);
}

/* ---- one job ---------------------------------------------------------------------------- */

/* The neuron's error message from an OpenAI-style error body, else the body's start. */
static char *neuron_message(const http_client_response_t *resp)
{
    if (resp->body == NULL || resp->body_len == 0)
        return xstrdup("(empty answer)");
    json_t *doc = jsonutil_parse(resp->body, resp->body_len, NULL);
    const char *msg = NULL;
    if (doc != NULL) {
        json_t *err = json_object_get(doc, "error");
        json_t *m = err ? json_object_get(err, "message") : json_object_get(doc, "message");
        if (json_is_string(m))
            msg = json_string_value(m);
    }
    struct buf b = BUF_INIT;
    if (msg != NULL)
        buf_append_utf8(&b, msg, strlen(msg) > 300 ? 300 : strlen(msg));
    else
        buf_append_utf8(&b, resp->body, resp->body_len > 200 ? 200 : resp->body_len);
    json_decref(doc);
    return buf_steal(&b, NULL);
}

/* Reads GET /models: every loaded model with its requests in flight. */
static int parse_probe(const http_client_response_t *resp, struct dispatch_result *r)
{
    json_t *doc = jsonutil_parse(resp->body ? resp->body : "", resp->body_len, NULL);
    json_t *loaded = doc ? json_object_get(doc, "loaded") : NULL;
    if (!json_is_array(loaded)) {
        json_decref(doc);
        return -1;
    }
    size_t i;
    json_t *m;
    r->probe = xcalloc(json_array_size(loaded) + 1, sizeof *r->probe);
    json_array_foreach(loaded, i, m)
    {
        const char *name = json_string_value(json_object_get(m, "name"));
        if (name == NULL)
            continue;
        const char *state = json_string_value(json_object_get(m, "state"));
        struct dispatch_probe_entry *e = &r->probe[r->n_probe++];
        e->model = xstrdup(name);
        e->state = xstrdup(state ? state : "unknown");
        e->in_flight = (int)(json_integer_value(json_object_get(m, "active_sequences")) +
                             json_integer_value(json_object_get(m, "queued_requests")));
    }
    json_decref(doc);
    return 0;
}

static bool dispatch_fence_ok(dispatch_t *d)
{
    return d->opt.fence == NULL || d->opt.fence(d->opt.fence_ud);
}

/* Sleeps ms unless the dispatcher stops first; returns false when it stops. */
static bool dispatch_pause(dispatch_t *d, long ms)
{
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += ms / 1000;
    until.tv_nsec += (ms % 1000) * 1000000L;
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&d->mu);
    while (!d->stopping) {
        if (pthread_cond_timedwait(&d->cond, &d->mu, &until) == ETIMEDOUT)
            break;
    }
    bool go_on = !d->stopping;
    pthread_mutex_unlock(&d->mu);
    return go_on;
}

static void dispatch_run_job(dispatch_t *d, const struct dispatch_job *job,
                             struct dispatch_result *r)
{
    const char *what = job->kind == DISPATCH_LOAD     ? "load"
                       : job->kind == DISPATCH_UNLOAD ? "unload"
                                                      : "GET /models";
    struct buf url = BUF_INIT, body = BUF_INIT;
    buf_appendf(&url, "%s/models%s", job->endpoint,
                job->kind == DISPATCH_LOAD     ? "/load"
                : job->kind == DISPATCH_UNLOAD ? "/unload"
                                               : "");
    if (job->kind != DISPATCH_PROBE) {
        buf_append_str(&body, "{\"model\":");
        buf_append_json_string(&body, job->model, strlen(job->model));
        if (job->kind == DISPATCH_LOAD) {
            buf_append_str(&body, ",\"devices\":[");
            for (size_t i = 0; i < job->n_ordinals; i++)
                buf_appendf(&body, "%s%d", i ? "," : "", job->ordinals[i]);
            buf_append_char(&body, ']');
            /* the neuron reports the placement's transitions into the database only for a
             * load that names it */
            if (job->placement_id > 0)
                buf_appendf(&body, ",\"placement_id\":%" PRId64, job->placement_id);
        }
        buf_append_char(&body, '}');
    }
    static const char *const headers[] = {"Content-Type: application/json", NULL};
    http_client_request_t req = {.method = job->kind == DISPATCH_PROBE ? "GET" : "POST",
                                 .url = buf_cstr(&url),
                                 .headers = headers,
                                 .body = job->kind == DISPATCH_PROBE ? NULL : body.data,
                                 .body_len = job->kind == DISPATCH_PROBE ? 0 : body.len,
                                 .timeout_ms = d->opt.timeout_ms,
                                 .connect_timeout_ms = d->opt.connect_timeout_ms,
                                 .max_body_bytes = 4 << 20};
    int attempts = job->kind == DISPATCH_PROBE ? 1 : d->opt.attempts;
    long backoff = d->opt.backoff_initial_ms;
    char *last = NULL;
    r->outcome = DISPATCH_ABORTED;
    for (int a = 0; a < attempts; a++) {
        if (a > 0) {
            if (!dispatch_pause(d, backoff))
                break;
            backoff = backoff * 2 > d->opt.backoff_max_ms ? d->opt.backoff_max_ms : backoff * 2;
        }
        if (!dispatch_fence_ok(d)) {
            free(last);
            last = xstrdup("not the leader any more: dropped before sending");
            r->outcome = DISPATCH_ABORTED;
            break;
        }
        http_client_response_t resp;
        http_client_result_t rc = http_client_request(&req, &resp);
        r->attempts = a + 1;
        r->status = resp.status;
        free(last);
        if (rc != HTTP_CLIENT_OK) {
            last = xasprintf("%s failed: %s", what, resp.error);
            r->outcome = DISPATCH_UNREACHABLE;
        } else if (resp.status >= 200 && resp.status < 300) {
            last = xasprintf("neuron answered %ld", resp.status);
            r->outcome = DISPATCH_ACCEPTED;
            if (job->kind == DISPATCH_PROBE && parse_probe(&resp, r) < 0) {
                free(last);
                last = xstrdup("GET /models: unexpected answer");
                r->outcome = DISPATCH_UNREACHABLE;
            }
        } else {
            char *msg = neuron_message(&resp);
            last = xasprintf("neuron %s %s (HTTP %ld): %s",
                             resp.status >= 500 || resp.status == 429 ? "failed to" : "refused to",
                             what, resp.status, msg);
            free(msg);
            r->outcome = resp.status >= 500 || resp.status == 429 ? DISPATCH_UNREACHABLE
                                                                  : DISPATCH_REFUSED;
        }
        http_client_response_free(&resp);
        if (r->outcome != DISPATCH_UNREACHABLE)
            break;
    }
    if (r->outcome == DISPATCH_UNREACHABLE && r->attempts > 1) {
        char *with = xasprintf("%s (after %d attempts)", last, r->attempts);
        free(last);
        last = with;
    }
    r->reason = last ? last : xstrdup("shutting down: not sent");
    buf_free(&url);
    buf_free(&body);
}

static void *dispatch_worker(void *arg)
{
    struct worker_arg *wa = arg;
    dispatch_t *d = wa->d;
    int slot = wa->slot;
    free(wa);
    pthread_mutex_lock(&d->mu);
    for (;;) {
        while (!d->stopping && d->head == NULL)
            pthread_cond_wait(&d->cond, &d->mu);
        if (d->stopping)
            break;
        struct job *j = d->head;
        d->head = j->next;
        if (d->head == NULL)
            d->tail = NULL;
        d->running[slot] = j;
        pthread_mutex_unlock(&d->mu);

        struct dispatch_result r = {.kind = j->j.kind,
                                    .placement_id = j->j.placement_id,
                                    .node_id = j->j.node_id,
                                    .model = j->model ? xstrdup(j->model) : NULL,
                                    .best_effort = j->j.best_effort};
        dispatch_run_job(d, &j->j, &r);
        LOG_AT(r.outcome == DISPATCH_ACCEPTED ? LOG_LEVEL_DEBUG : LOG_LEVEL_INFO, NULL,
               "neuron %s of %s at %s: %s (%s)", dispatch_kind_name(r.kind),
               r.model ? r.model : "-", j->endpoint, dispatch_outcome_name(r.outcome), r.reason);

        pthread_mutex_lock(&d->mu);
        d->running[slot] = NULL;
        job_free(j);
        d->results = xgrow(d->results, &d->cap_results, d->n_results + 1, sizeof *d->results);
        d->results[d->n_results++] = r;
        uint64_t one = 1;
        if (write(d->efd, &one, sizeof one) < 0)
            LOG_WARN("dispatch: signalling a result: %s", strerror(errno));
    }
    pthread_mutex_unlock(&d->mu);
    return NULL;
}

dispatch_t *dispatch_create(const struct dispatch_options *opt, char **errmsg)
{
    dispatch_t *d = xcalloc(1, sizeof *d);
    d->opt = opt ? *opt : (struct dispatch_options){0};
    if (d->opt.workers <= 0)
        d->opt.workers = 4;
    if (d->opt.timeout_ms <= 0)
        d->opt.timeout_ms = 5000;
    if (d->opt.connect_timeout_ms <= 0)
        d->opt.connect_timeout_ms = 2000;
    if (d->opt.attempts <= 0)
        d->opt.attempts = 3;
    if (d->opt.backoff_initial_ms <= 0)
        d->opt.backoff_initial_ms = 500;
    if (d->opt.backoff_max_ms < d->opt.backoff_initial_ms)
        d->opt.backoff_max_ms = d->opt.backoff_initial_ms > 5000 ? d->opt.backoff_initial_ms : 5000;
    pthread_mutex_init(&d->mu, NULL);
    pthread_cond_init(&d->cond, NULL);
    d->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (d->efd < 0) {
        *errmsg = xasprintf("eventfd: %s", strerror(errno));
        goto fail;
    }
    http_client_global_init();
    d->running = xcalloc((size_t)d->opt.workers, sizeof *d->running);
    d->threads = xcalloc((size_t)d->opt.workers, sizeof *d->threads);
    for (int i = 0; i < d->opt.workers; i++) {
        struct worker_arg *wa = xcalloc(1, sizeof *wa);
        wa->d = d;
        wa->slot = i;
        int rc = pthread_create(&d->threads[i], NULL, dispatch_worker, wa);
        if (rc != 0) {
            free(wa);
            *errmsg = xasprintf("starting a dispatch worker: %s", strerror(rc));
            goto fail;
        }
        d->n_threads++;
    }
    return d;
fail:
    dispatch_destroy(d);
    return NULL;
}

void dispatch_destroy(dispatch_t *d)
{
    if (d == NULL)
        return;
    pthread_mutex_lock(&d->mu);
    d->stopping = true;
    pthread_cond_broadcast(&d->cond);
    pthread_mutex_unlock(&d->mu);
    for (int i = 0; i < d->n_threads; i++)
        pthread_join(d->threads[i], NULL);
    while (d->head) {
        struct job *j = d->head;
        d->head = j->next;
        job_free(j);
    }
    dispatch_results_free(d->results, d->n_results);
    if (d->efd >= 0)
        close(d->efd);
    pthread_cond_destroy(&d->cond);
    pthread_mutex_destroy(&d->mu);
    free(d->running);
    free(d->threads);
    free(d);
}
