/*
 * neuron/batcher.c — the per-model worker thread: admission queue, batched steps, retirement
 * (see batcher.h for the contract).
 *
 * Protocol: `mu` guards the queue, `stopping`, `reason` and the stats copy that readers see.
 * The active batch belongs to the worker alone. A job's `cancel` flag is the only field other
 * threads touch after submission (atomic). The worker never holds `mu` while stepping or while
 * calling a sink, so submitters and stats readers never wait for a model pass.
 */
#include "batcher.h"

#include "log.h"
#include "timing.h"
#include "xalloc.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct batcher_job {
    int32_t *prompt;
    size_t n_prompt;
    struct gen_params params;
    struct batcher_sink sink;
    void *ud;
    atomic_bool cancel;
    uint64_t t_submit_ns;
    double queue_ms;
    struct generation *gen; /* set on admission */
    struct batcher_job *next;
};

struct batcher {
    struct engine *e;
    struct batcher_options opt;
    char *model;
    pthread_t worker;
    bool worker_started;

    pthread_mutex_t mu;
    pthread_cond_t cond;
    struct batcher_job *head, *tail; /* the admission queue, FIFO */
    int n_queued;
    bool stopping;
    char *reason;
    struct batcher_stats stats; /* counters; active/queued refreshed under mu */
    struct prefix_cache *pc;    /* the worker's alone; NULL without prefix caching */
};

struct batcher_job *batcher_job_create(const int32_t *prompt, size_t n_prompt,
                                       const struct gen_params *p, const struct batcher_sink *sink,
                                       void *ud)
{
    struct batcher_job *j = xcalloc(1, sizeof *j);
    j->prompt = xmalloc((n_prompt ? n_prompt : 1) * sizeof *j->prompt);
    if (n_prompt)
        memcpy(j->prompt, prompt, n_prompt * sizeof *j->prompt);
    j->n_prompt = n_prompt;
    j->params = *p;
    j->sink = *sink;
    j->ud = ud;
    atomic_init(&j->cancel, false);
    return j;
}

void batcher_job_destroy(struct batcher_job *j)
{
    if (!j)
        return;
    generation_destroy(j->gen);
    free(j->prompt);
    free(j);
}

void batcher_job_cancel(struct batcher_job *j)
{
    atomic_store(&j->cancel, true);
}

/* Calls done() for j and frees it. Runs on the worker without mu. */
static void batcher_finish_job(struct batcher *b, struct batcher_job *j, enum err_code code,
                               const char *text)
{
    struct batcher_result r = {
            .queue_ms = j->queue_ms, .error = code, .error_text = text, .stop_index = -1};
    if (j->gen) {
        if (generation_finish(j->gen) == GEN_FINISH_NONE)
            generation_cancel(j->gen);
        struct gen_output o;
        generation_output(j->gen, &o);
        if (j->sink.output && (o.text_len || o.n_calls || o.n_logprobs))
            j->sink.output(j->ud, &o);
        generation_output_clear(j->gen);
        r.finish = generation_finish(j->gen);
        r.stop_index = generation_stop_index(j->gen);
        generation_stats(j->gen, &r.stats);
    } else {
        r.finish = GEN_FINISH_CANCELLED;
        r.stats.prompt_tokens = (int64_t)j->n_prompt;
    }
    if (code == ERR_NONE && atomic_load(&j->cancel))
        r.finish = GEN_FINISH_CANCELLED;
    /* Counted before done(), so whoever done() wakes sees the job in the stats. */
    pthread_mutex_lock(&b->mu);
    b->stats.jobs_done++;
    if (r.finish == GEN_FINISH_CANCELLED)
        b->stats.jobs_cancelled++;
    pthread_mutex_unlock(&b->mu);
    j->sink.done(j->ud, &r);
    batcher_job_destroy(j);
}

/* Takes the cancelled jobs out of the queue (under mu) onto *out. */
static void batcher_take_cancelled(struct batcher *b, struct batcher_job **out)
{
    struct batcher_job **pp = &b->head, *prev = NULL;
    while (*pp) {
        struct batcher_job *j = *pp;
        if (atomic_load(&j->cancel)) {
            *pp = j->next;
            if (b->tail == j)
                b->tail = prev;
            b->n_queued--;
            j->next = *out;
            *out = j;
        } else {
            prev = j;
            pp = &j->next;
        }
    }
}

/* Creates the generation of a newly admitted job; false (after done()) when that fails. */
static bool batcher_admit(struct batcher *b, struct batcher_job *j)
{
    char err[512];
    j->queue_ms = (double)(timing_now_ns() - j->t_submit_ns) / 1e6;
    if (generation_create(b->e, j->prompt, j->n_prompt, &j->params, &j->gen, err, sizeof err) !=
        0) {
        batcher_finish_job(b, j, ERR_INVALID_REQUEST, err);
        return false;
    }
    if (generation_use_prefix_cache(j->gen, b->pc, err, sizeof err) < 0)
        LOG_WARN("model %s: saved prefix not restored, reading the whole prompt: %s", b->model,
                 err);
    return true;
}

/* Hands new output to the sink and clears it. */
static void batcher_drain(struct batcher_job *j)
{
    struct gen_output o;
    generation_output(j->gen, &o);
    if (o.text_len || o.n_calls || o.n_logprobs) {
        if (j->sink.output)
            j->sink.output(j->ud, &o);
        generation_output_clear(j->gen);
    }
}

static void *batcher_worker(void *arg)
{
    struct batcher *b = arg;
    int cap = b->opt.max_batch;
    struct batcher_job **active = xcalloc((size_t)cap, sizeof *active);
    struct generation **gens = xcalloc((size_t)cap, sizeof *gens);
    size_t *n_before = xcalloc((size_t)cap, sizeof *n_before); /* tokens before the step */
    bool *reading_prompt = xcalloc((size_t)cap, sizeof *reading_prompt);
    int n_active = 0;
    char err[512];

    pthread_mutex_lock(&b->mu);
    for (;;) {
        while (!b->stopping && n_active == 0 && !b->head)
            pthread_cond_wait(&b->cond, &b->mu);
        struct batcher_job *dropped = NULL, *admitted = NULL, **admitted_tail = &admitted;
        batcher_take_cancelled(b, &dropped);
        bool stopping = b->stopping;
        if (stopping) {
            while (b->head) {
                struct batcher_job *j = b->head;
                b->head = j->next;
                j->next = dropped;
                dropped = j;
            }
            b->tail = NULL;
            b->n_queued = 0;
        }
        int room = cap - n_active;
        while (!stopping && room > 0 && b->head) {
            struct batcher_job *j = b->head;
            b->head = j->next;
            if (!b->head)
                b->tail = NULL;
            b->n_queued--;
            j->next = NULL;
            *admitted_tail = j;
            admitted_tail = &j->next;
            room--;
        }
        /* Count admitted jobs as active before unlocking: their first tokens can reach the
         * client before this step ends, and a submit in between must not see a free slot. */
        if (!stopping)
            b->stats.active = cap - room;
        char *reason = stopping && b->reason ? xstrdup(b->reason) : NULL;
        pthread_mutex_unlock(&b->mu);

        while (dropped) {
            struct batcher_job *j = dropped;
            dropped = j->next;
            if (stopping && !atomic_load(&j->cancel))
                batcher_finish_job(b, j, ERR_UNAVAILABLE, reason);
            else
                batcher_finish_job(b, j, ERR_NONE, NULL);
        }
        while (admitted) {
            struct batcher_job *j = admitted;
            admitted = j->next;
            j->next = NULL;
            if (batcher_admit(b, j))
                active[n_active++] = j;
        }
        if (stopping) {
            for (int i = 0; i < n_active; i++)
                batcher_finish_job(b, active[i], ERR_UNAVAILABLE, reason);
            free(reason);
            break;
        }
        free(reason);

        for (int i = 0; i < n_active; i++)
            if (atomic_load(&active[i]->cancel))
                generation_cancel(active[i]->gen);
        int n_step = 0;
        uint64_t prompt_tokens = 0, generated = 0;
        for (int i = 0; i < n_active; i++) {
            gens[i] = active[i]->gen;
            generation_tokens(gens[i], &n_before[i]);
            reading_prompt[i] = !generation_prompt_done(gens[i]);
            n_step += generation_finish(gens[i]) == GEN_FINISH_NONE;
        }
        enum err_code step_err = ERR_NONE;
        if (n_step > 0 &&
            generation_step(b->e, gens, n_active, b->opt.prefill_chunk, err, sizeof err) != 0) {
            LOG_ERROR("model %s: step of %d sequences failed: %s", b->model, n_step, err);
            step_err = ERR_INTERNAL;
        }
        int kept = 0;
        bool retired = false;
        uint64_t cache_bytes = 0;
        for (int i = 0; i < n_active; i++) {
            struct batcher_job *j = active[i];
            size_t after;
            generation_tokens(gens[i], &after);
            generated += after - n_before[i];
            if (reading_prompt[i] && generation_prompt_done(gens[i])) {
                struct gen_stats gs;
                generation_stats(gens[i], &gs);
                prompt_tokens += (uint64_t)(gs.prompt_tokens - gs.cached_tokens);
            }
            if (generation_finish(j->gen) != GEN_FINISH_NONE) {
                batcher_finish_job(b, j, step_err, step_err ? err : NULL);
                retired = true;
                continue;
            }
            batcher_drain(j);
            cache_bytes += generation_cache_bytes(j->gen);
            active[kept++] = j;
        }
        n_active = kept;
        struct prefix_cache_stats ps = {0};
        if (b->pc) {
            /* a GPU prefix's bytes grow when the sequences sharing its blocks end */
            if (retired)
                prefix_cache_trim(b->pc);
            prefix_cache_stats(b->pc, &ps);
        }
        struct model_cache_stats kv;
        model_cache_stats(b->e->model, &kv);

        pthread_mutex_lock(&b->mu);
        b->stats.prefix = ps;
        b->stats.kv = kv;
        if (n_step > 0) {
            b->stats.steps++;
            b->stats.step_sequences += (uint64_t)n_step;
        }
        b->stats.prompt_tokens += prompt_tokens;
        b->stats.generated_tokens += generated;
        b->stats.active = n_active;
        b->stats.cache_bytes = cache_bytes;
    }
    pthread_mutex_lock(&b->mu);
    b->stats.active = 0;
    b->stats.queued = 0;
    b->stats.cache_bytes = 0;
    pthread_mutex_unlock(&b->mu);
    prefix_cache_destroy(b->pc);
    b->pc = NULL;
    free(active);
    free(gens);
    free(n_before);
    free(reading_prompt);
    return NULL;
}

struct batcher *batcher_create(struct engine *e, const struct batcher_options *opt)
{
    struct batcher *b = xcalloc(1, sizeof *b);
    b->e = e;
    b->opt = *opt;
    if (b->opt.max_batch < 1)
        b->opt.max_batch = 1;
    if (b->opt.queue_depth < 0)
        b->opt.queue_depth = 0;
    b->model = xstrdup(opt->model ? opt->model : "?");
    b->opt.model = b->model;
    pthread_mutex_init(&b->mu, NULL);
    pthread_cond_init(&b->cond, NULL);
    b->pc = generation_prefix_cache_create(e, opt->prefix_cache_bytes, opt->prefix_interval);
    if (pthread_create(&b->worker, NULL, batcher_worker, b) != 0) {
        LOG_ERROR("model %s: cannot start the batch worker thread", b->model);
        abort();
    }
    b->worker_started = true;
    return b;
}

void batcher_stop(struct batcher *b, const char *reason)
{
    pthread_mutex_lock(&b->mu);
    if (!b->stopping) {
        b->stopping = true;
        b->reason = xstrdup(reason ? reason : "the model is being unloaded");
    }
    pthread_cond_broadcast(&b->cond);
    bool join = b->worker_started;
    b->worker_started = false;
    pthread_mutex_unlock(&b->mu);
    if (join)
        pthread_join(b->worker, NULL);
}

void batcher_destroy(struct batcher *b)
{
    if (!b)
        return;
    batcher_stop(b, NULL);
    pthread_mutex_destroy(&b->mu);
    pthread_cond_destroy(&b->cond);
    free(b->reason);
    free(b->model);
    free(b);
}

void batcher_get_stats(struct batcher *b, struct batcher_stats *out)
{
    pthread_mutex_lock(&b->mu);
    *out = b->stats;
    out->queued = b->n_queued;
    pthread_mutex_unlock(&b->mu);
}

enum batcher_submit_result batcher_submit(struct batcher *b, struct batcher_job *j)
{
    enum batcher_submit_result rc = BATCHER_SUBMIT_OK;
    pthread_mutex_lock(&b->mu);
    if (b->stopping) {
        rc = BATCHER_SUBMIT_STOPPED;
        goto out;
    }
    /* Jobs beyond the free batch slots wait; queue_depth bounds how many. */
    int free_slots = b->opt.max_batch - b->stats.active;
    if (free_slots < 0)
        free_slots = 0;
    if (b->n_queued >= b->opt.queue_depth + free_slots) {
        rc = BATCHER_SUBMIT_FULL;
        goto out;
    }
    j->t_submit_ns = timing_now_ns();
    j->next = NULL;
    if (b->tail)
        b->tail->next = j;
    else
        b->head = j;
    b->tail = j;
    b->n_queued++;
    pthread_cond_signal(&b->cond);
out:
    pthread_mutex_unlock(&b->mu);
    return rc;
}
