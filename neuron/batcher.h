/*
 * neuron/batcher.h — continuous batching: one worker thread per loaded model runs every active
 * generation of that model together, step by step.
 *
 * Contract: a batcher owns one worker thread, the only caller of the engine's forward pass
 * (generation_step). Requests arrive as jobs (a tokenised prompt, generation parameters and a
 * sink of callbacks) through batcher_submit(), which never blocks: a job is queued, or refused
 * when the queue is full (BATCHER_FULL: answer 503) or the batcher is stopping. Between two
 * steps the worker admits queued jobs while fewer than max_batch run, creates their
 * generations, and retires finished ones, so sequences join and leave without waiting for each
 * other; a long prompt is read prefill_chunk tokens per step, interleaved with the others'
 * decoding. With prefix_cache_bytes > 0 the worker owns a prefix cache (prefix_cache.h): an
 * admitted job starts from the longest saved prefix of its prompt, and prompts being read are
 * saved every prefix_interval tokens (generate.h, generation_use_prefix_cache).
 *
 * Callbacks run on the worker thread, in this order, for each submitted job:
 *   output()  zero or more times, after a step that produced output for the job;
 *   done()    exactly once, last: the job finished, was cancelled, or failed (error set).
 * The worker frees the job and its generation (so its cache) right after done() returns; the
 * sink must not use the job afterwards. Callbacks must not block for long: every sequence of
 * the model waits for them.
 *
 * Cancellation: batcher_job_cancel() may be called from any thread (typically an HTTP on_gone
 * callback) until done() has returned; the worker ends the job before its next step and calls
 * done() with GEN_FINISH_CANCELLED.
 */
#ifndef CORTEX_NEURON_BATCHER_H
#define CORTEX_NEURON_BATCHER_H

#include "engine.h"
#include "error.h"
#include "generate.h"
#include "prefix_cache.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct batcher_options {
    int max_batch;               /* generations stepped together; >= 1 */
    int queue_depth;             /* jobs waiting beyond max_batch; >= 0 */
    int64_t prefill_chunk;       /* prompt tokens per generation per step; < 1: whole prompts */
    uint64_t prefix_cache_bytes; /* saved prompt prefixes kept at most; 0: no prefix caching */
    int64_t prefix_interval;     /* prompt tokens between saved prefixes (generate.h) */
    const char *model;           /* name for log lines (copied) */
};

/* How a job ended, handed to done(). Borrowed for the duration of the callback. */
struct batcher_result {
    enum gen_finish finish;
    int stop_index; /* the stop string (index in gen_params.stops) that ended it, or -1 */
    struct gen_stats stats;
    double queue_ms;        /* from submit to admission into the batch */
    enum err_code error;    /* ERR_NONE, or why the job failed */
    const char *error_text; /* message for error (NULL when none) */
};

struct batcher_sink {
    /* New output of the job's generation (text, closed tool calls, logprobs); may be NULL. */
    void (*output)(void *ud, const struct gen_output *out);
    /* The job is over; see the contract. Required. */
    void (*done)(void *ud, const struct batcher_result *result);
};

/* Counters for /metrics and heartbeats; a snapshot, read without stopping the worker. */
struct batcher_stats {
    int active;                /* generations in the batch */
    int queued;                /* jobs waiting */
    uint64_t steps;            /* model passes */
    uint64_t step_sequences;   /* sum of batch sizes over steps (mean batch = this / steps) */
    uint64_t prompt_tokens;    /* prompt tokens read */
    uint64_t generated_tokens; /* tokens sampled */
    uint64_t jobs_done;        /* jobs that got done() */
    uint64_t jobs_cancelled;   /* of which cancelled */
    uint64_t cache_bytes;      /* bytes the running generations' caches occupy (after a step) */
    struct prefix_cache_stats prefix; /* the prefix cache (all zero when disabled) */
    struct model_cache_stats kv;      /* the GPU's KV block pool (all zero on the CPU) */
};

enum batcher_submit_result {
    BATCHER_SUBMIT_OK,
    BATCHER_SUBMIT_FULL,    /* the queue is full: try later */
    BATCHER_SUBMIT_STOPPED, /* the batcher is stopping (model being unloaded) */
};

struct batcher;
struct batcher_job;

/* Starts the worker thread for e (borrowed: it must outlive the batcher). The caller frees the
 * batcher with batcher_destroy(). */
struct batcher *batcher_create(struct engine *e, const struct batcher_options *opt);
/* Refuses new jobs, ends every queued and running job (done() with ERR_UNAVAILABLE and the
 * given reason, copied) and joins the worker. Idempotent. */
void batcher_stop(struct batcher *b, const char *reason);
/* batcher_stop() and frees everything; accepts NULL. */
void batcher_destroy(struct batcher *b);
void batcher_get_stats(struct batcher *b, struct batcher_stats *out);

/* A job for prompt[0..n_prompt) (copied). p is copied, but what it points to (stop strings,
 * tools) is borrowed and must stay valid until done() returns. sink is copied; ud is passed to
 * its callbacks. */
struct batcher_job *batcher_job_create(const int32_t *prompt, size_t n_prompt,
                                       const struct gen_params *p, const struct batcher_sink *sink,
                                       void *ud);
/* Frees a job that was never submitted, or was refused; accepts NULL. */
void batcher_job_destroy(struct batcher_job *j);
/* Hands j to b. On BATCHER_SUBMIT_OK the batcher owns j (see the callbacks); otherwise the
 * caller still does. Never blocks. */
enum batcher_submit_result batcher_submit(struct batcher *b, struct batcher_job *j)
        __attribute__((warn_unused_result));
/* Asks for j to end at the next step; any thread; see the contract. */
void batcher_job_cancel(struct batcher_job *j);

#endif
