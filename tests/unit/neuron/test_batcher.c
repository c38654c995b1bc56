/*
 * tests/unit/neuron/test_batcher.c — continuous batching on a real model (SmolLM2-135M-Instruct
 * Q4_1 GGUF, path in CORTEX_SMOLLM2_GGUF; exit 77 without it).
 *
 * Checks: greedy jobs submitted together produce exactly the tokens each produces alone; the
 * admission queue refuses work beyond max_batch + queue_depth; a cancelled job ends early with
 * "cancelled" and frees its slot for the queued one; stopping ends running and queued jobs with
 * ERR_UNAVAILABLE and the reason, and refuses later submissions; the stats count the bytes
 * of the running sequence's cache and drop to 0 once nothing runs; with a prefix cache, a job
 * sharing an earlier job's prompt start restores it (cached_tokens), answers exactly as a
 * batcher without the cache does, and the stats count the lookups, the hit and the tokens read.
 * Waits are on condition
 * variables signalled by the callbacks (or, for the stats the worker publishes after its step,
 * polls with a deadline), never on fixed sleeps.
 */
#include "batcher.h"

#include "buf.h"
#include "xalloc.h"

#include <check.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static struct engine *eng;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cond = PTHREAD_COND_INITIALIZER;

struct job {
    struct buf text;
    int outputs;
    bool done;
    struct batcher_result result;
    char error_text[256];
    struct batcher_job *handle;
};

static void job_output(void *ud, const struct gen_output *out)
{
    struct job *j = ud;
    pthread_mutex_lock(&mu);
    buf_append(&j->text, out->text, out->text_len);
    j->outputs++;
    pthread_cond_broadcast(&cond);
    pthread_mutex_unlock(&mu);
}

static void job_done(void *ud, const struct batcher_result *r)
{
    struct job *j = ud;
    pthread_mutex_lock(&mu);
    j->result = *r;
    snprintf(j->error_text, sizeof j->error_text, "%s", r->error_text ? r->error_text : "");
    j->done = true;
    pthread_cond_broadcast(&cond);
    pthread_mutex_unlock(&mu);
}

static const struct batcher_sink sink = {.output = job_output, .done = job_done};

/* Waits (at most 5 minutes) until *flag is true or *count >= want. */
static bool wait_until(const bool *flag, const int *count, int want)
{
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += 300;
    pthread_mutex_lock(&mu);
    while (!(flag ? *flag : *count >= want)) {
        if (pthread_cond_timedwait(&cond, &mu, &deadline) != 0)
            break;
    }
    bool ok = flag ? *flag : *count >= want;
    pthread_mutex_unlock(&mu);
    return ok;
}

static struct batcher_job *job_make(struct job *j, const char *prompt, int64_t max_tokens)
{
    char err[256];
    struct tokenizer_ids ids = {0};
    ck_assert_msg(engine_tokenize(eng, prompt, strlen(prompt), false, &ids, err, sizeof err) == 0,
                  "%s", err);
    struct gen_params p;
    gen_params_init(&p);
    p.sample.temperature = 0;
    p.max_tokens = max_tokens;
    memset(j, 0, sizeof *j);
    j->handle = batcher_job_create(ids.v, ids.n, &p, &sink, j);
    free(ids.v);
    return j->handle;
}

static struct batcher *make(int max_batch, int queue_depth)
{
    struct batcher_options o = {.max_batch = max_batch,
                                .queue_depth = queue_depth,
                                .prefill_chunk = 4,
                                .model = "smollm2"};
    return batcher_create(eng, &o);
}

/* Polls the stats (at most 60 s) until nothing runs and no cache is held: the worker publishes
 * them right after the step in which the last job finished, which is after its done(). */
static bool wait_stats_idle(struct batcher *b)
{
    for (int i = 0; i < 6000; i++) {
        struct batcher_stats s;
        batcher_get_stats(b, &s);
        if (s.active == 0 && s.queued == 0 && s.cache_bytes == 0)
            return true;
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    return false;
}

START_TEST(test_batched_equals_alone)
{
    static const char *const prompts[] = {"The capital of France is", "One, two, three,",
                                          "Water is made of"};
    struct batcher *b = make(8, 8);
    struct job alone[3], together[6];
    for (int i = 0; i < 3; i++) {
        ck_assert_int_eq(batcher_submit(b, job_make(&alone[i], prompts[i], 6)), BATCHER_SUBMIT_OK);
        ck_assert(wait_until(&alone[i].done, NULL, 0));
        ck_assert_int_eq(alone[i].result.error, ERR_NONE);
        ck_assert_int_gt(alone[i].text.len, 0);
    }
    for (int i = 0; i < 6; i++)
        ck_assert_int_eq(batcher_submit(b, job_make(&together[i], prompts[i % 3], 6)),
                         BATCHER_SUBMIT_OK);
    for (int i = 0; i < 6; i++) {
        ck_assert(wait_until(&together[i].done, NULL, 0));
        ck_assert_str_eq(buf_cstr(&together[i].text), buf_cstr(&alone[i % 3].text));
        ck_assert_int_eq(together[i].result.finish, alone[i % 3].result.finish);
        ck_assert_int_eq(together[i].result.stats.completion_tokens,
                         alone[i % 3].result.stats.completion_tokens);
    }
    ck_assert(wait_stats_idle(b));
    struct batcher_stats s;
    batcher_get_stats(b, &s);
    ck_assert_int_eq(s.jobs_done, 9);
    ck_assert_int_eq(s.active, 0);
    ck_assert_int_eq(s.queued, 0);
    /* the six ran together for part of the time: more sequences than steps */
    ck_assert_uint_gt(s.step_sequences, s.steps);
    batcher_destroy(b);
    for (int i = 0; i < 3; i++)
        buf_free(&alone[i].text);
    for (int i = 0; i < 6; i++)
        buf_free(&together[i].text);
}
END_TEST

START_TEST(test_queue_full_and_cancel)
{
    struct batcher *b = make(1, 1);
    struct job a, q, refused;
    ck_assert_int_eq(batcher_submit(b, job_make(&a, "Count: 1, 2, 3,", 400)), BATCHER_SUBMIT_OK);
    ck_assert(wait_until(NULL, &a.outputs, 2)); /* a is running */
    /* The stats of the step that produced a's first output are out: a's cache is counted. */
    struct batcher_stats st;
    batcher_get_stats(b, &st);
    ck_assert_uint_gt(st.cache_bytes, 0);
    ck_assert_int_eq(st.active, 1);
    ck_assert_int_eq(batcher_submit(b, job_make(&q, "Hello", 3)), BATCHER_SUBMIT_OK);
    struct batcher_job *r = job_make(&refused, "Hello", 3);
    ck_assert_int_eq(batcher_submit(b, r), BATCHER_SUBMIT_FULL);
    batcher_job_destroy(r);
    batcher_job_cancel(a.handle);
    ck_assert(wait_until(&a.done, NULL, 0));
    ck_assert_int_eq(a.result.finish, GEN_FINISH_CANCELLED);
    ck_assert_int_eq(a.result.error, ERR_NONE);
    ck_assert_int_lt(a.result.stats.completion_tokens, 400);
    ck_assert(wait_until(&q.done, NULL, 0));
    ck_assert_int_eq(q.result.finish, GEN_FINISH_LENGTH);
    ck_assert_int_eq(q.result.stats.completion_tokens, 3);
    ck_assert_msg(wait_stats_idle(b), "the finished sequences' caches are still counted");
    batcher_destroy(b);
    buf_free(&a.text);
    buf_free(&q.text);
    buf_free(&refused.text);
}
END_TEST

START_TEST(test_stop_ends_everything)
{
    struct batcher *b = make(1, 4);
    struct job a, q;
    ck_assert_int_eq(batcher_submit(b, job_make(&a, "Count: 1, 2, 3,", 400)), BATCHER_SUBMIT_OK);
    ck_assert(wait_until(NULL, &a.outputs, 1));
    ck_assert_int_eq(batcher_submit(b, job_make(&q, "Hello", 3)), BATCHER_SUBMIT_OK);
    batcher_stop(b, "maintenance");
    ck_assert(a.done && q.done); /* stop returns after every done() */
    ck_assert_int_eq(a.result.error, ERR_UNAVAILABLE);
    ck_assert_int_eq(q.result.error, ERR_UNAVAILABLE);
    ck_assert_str_eq(a.error_text, "maintenance");
    ck_assert_str_eq(q.error_text, "maintenance");
    struct job late;
    struct batcher_job *l = job_make(&late, "Hello", 3);
    ck_assert_int_eq(batcher_submit(b, l), BATCHER_SUBMIT_STOPPED);
    batcher_job_destroy(l);
    batcher_destroy(b);
    buf_free(&a.text);
    buf_free(&q.text);
}
END_TEST

/* Runs one greedy job on b to completion; *out is its result. */
static void run_one(struct batcher *b, struct job *j, const char *prompt)
{
    ck_assert_int_eq(batcher_submit(b, job_make(j, prompt, 6)), BATCHER_SUBMIT_OK);
    ck_assert(wait_until(&j->done, NULL, 0));
    ck_assert_int_eq(j->result.error, ERR_NONE);
}

START_TEST(test_prefix_cache)
{
    static const char shared[] = "The following is a list of the largest cities of Europe, "
                                 "ordered by population, with their countries:";
    struct batcher_options o = {.max_batch = 4,
                                .queue_depth = 4,
                                .prefill_chunk = 4,
                                .prefix_cache_bytes = 64u << 20,
                                .prefix_interval = 8,
                                .model = "smollm2"};
    struct batcher *b = batcher_create(eng, &o);
    struct batcher *plain = make(4, 4);
    char p1[256], p2[256];
    snprintf(p1, sizeof p1, "%s one", shared);
    snprintf(p2, sizeof p2, "%s two", shared);
    struct job first, second, cold;
    run_one(b, &first, p1);
    ck_assert_int_eq(first.result.stats.cached_tokens, 0);
    run_one(b, &second, p2);
    run_one(plain, &cold, p2);
    int64_t hit = second.result.stats.cached_tokens;
    ck_assert_int_gt(hit, 0);
    ck_assert_int_eq(hit % 8, 0);
    ck_assert_int_lt(hit, second.result.stats.prompt_tokens);
    ck_assert_int_eq(cold.result.stats.cached_tokens, 0);
    ck_assert_str_eq(buf_cstr(&second.text), buf_cstr(&cold.text));
    ck_assert(wait_stats_idle(b));
    struct batcher_stats s;
    batcher_get_stats(b, &s);
    ck_assert_uint_eq(s.prefix.lookups, 2);
    ck_assert_uint_eq(s.prefix.hits, 1);
    ck_assert_uint_eq(s.prefix.hit_tokens, (uint64_t)hit);
    ck_assert_uint_gt(s.prefix.entries, 0);
    ck_assert_uint_gt(s.prefix.bytes, 0);
    ck_assert_uint_eq(s.prompt_tokens, (uint64_t)(first.result.stats.prompt_tokens +
                                                  second.result.stats.prompt_tokens - hit));
    ck_assert_int_eq(s.kv.blocks, 0); /* the CPU has no block pool */
    batcher_get_stats(plain, &s);
    ck_assert_uint_eq(s.prefix.lookups, 0);
    buf_free(&first.text);
    buf_free(&second.text);
    buf_free(&cold.text);
    batcher_destroy(b);
    batcher_destroy(plain);
}
END_TEST

int main(void)
{
    const char *path = getenv("CORTEX_SMOLLM2_GGUF");
    if (!path || !*path) {
        printf("CORTEX_SMOLLM2_GGUF not set: skipped\n");
        return 77;
    }
    char err[512];
    struct engine_options opt = {.threads = 2, .max_context = 512};
    if (engine_open(path, &opt, &eng, err, sizeof err) != 0) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    Suite *s = suite_create("batcher");
    TCase *tc = tcase_create("batcher");
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc, test_batched_equals_alone);
    tcase_add_test(tc, test_queue_full_and_cancel);
    tcase_add_test(tc, test_stop_ends_everything);
    tcase_add_test(tc, test_prefix_cache);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_set_fork_status(sr, CK_NOFORK);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    engine_close(eng);
    return failed ? 1 : 0;
}
