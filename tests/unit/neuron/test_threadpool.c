/*
 * tests/unit/neuron/test_threadpool.c — every task of every job runs exactly once, on a valid
 * thread index, and the caller sees all of the workers' writes when threadpool_run() returns.
 */
#include "threadpool.h"

#include <check.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <time.h>

struct count_job {
    atomic_int *hits;
    int *thread_seen;
    int n_threads;
    atomic_int bad_thread;
};

static void count_task(void *ctx, int task, int thread)
{
    struct count_job *job = ctx;
    atomic_fetch_add(&job->hits[task], 1);
    if (thread < 0 || thread >= job->n_threads)
        atomic_store(&job->bad_thread, 1);
    else
        job->thread_seen[task] = thread;
}

static void run_jobs(struct threadpool *tp, int n_jobs, int n_tasks)
{
    atomic_int *hits = calloc((size_t)n_tasks, sizeof(*hits));
    int *seen = calloc((size_t)n_tasks, sizeof(*seen));
    for (int j = 0; j < n_jobs; j++) {
        for (int i = 0; i < n_tasks; i++)
            atomic_store(&hits[i], 0);
        struct count_job job = {
                .hits = hits, .thread_seen = seen, .n_threads = threadpool_size(tp)};
        atomic_init(&job.bad_thread, 0);
        threadpool_run(tp, count_task, &job, n_tasks);
        for (int i = 0; i < n_tasks; i++)
            ck_assert_int_eq(atomic_load(&hits[i]), 1);
        ck_assert_int_eq(atomic_load(&job.bad_thread), 0);
    }
    free(hits);
    free(seen);
}

START_TEST(test_many_small_jobs)
{
    struct threadpool *tp = threadpool_create(3);
    ck_assert_ptr_nonnull(tp);
    ck_assert_int_eq(threadpool_size(tp), 3);
    run_jobs(tp, 2000, 1 + _i);
    run_jobs(tp, 50, 1000);
    threadpool_destroy(tp);
}
END_TEST

START_TEST(test_single_and_null)
{
    ck_assert_int_eq(threadpool_size(NULL), 1);
    run_jobs(NULL, 3, 17);
    struct threadpool *tp = threadpool_create(0);
    ck_assert_int_eq(threadpool_size(tp), 1);
    run_jobs(tp, 3, 17);
    threadpool_destroy(tp);
    threadpool_destroy(NULL);
}
END_TEST

/* A job issued right after creation, and after the workers have gone to sleep. */
START_TEST(test_wake_after_idle)
{
    struct threadpool *tp = threadpool_create(2);
    run_jobs(tp, 1, 64);
    struct timespec ts = {0, 50 * 1000 * 1000}; /* lets the workers stop spinning and sleep */
    nanosleep(&ts, NULL);
    run_jobs(tp, 3, 64);
    threadpool_destroy(tp);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("threadpool");
    TCase *tc = tcase_create("core");
    tcase_add_loop_test(tc, test_many_small_jobs, 0, 4);
    tcase_add_test(tc, test_single_and_null);
    tcase_add_test(tc, test_wake_after_idle);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
