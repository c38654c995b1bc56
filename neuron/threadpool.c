/*
 * neuron/threadpool.c — the pthreads pool that splits matrix products by rows (see threadpool.h).
 *
 * Protocol (all fields in struct threadpool). `state` packs a job generation (high 32 bits) and
 * the next unclaimed task (low 32 bits); an odd generation means the caller is writing a job.
 *   caller:  state = (g+1, 0)  ->  write fn, ctx, n_tasks, done = 0  ->  state = (g+2, 0)
 *            -> broadcast under the mutex -> claim tasks like a worker -> wait for done == n_tasks
 *   worker:  read state (gen even), read fn/ctx/n_tasks, claim task t with a CAS of state from
 *            (gen, t) to (gen, t+1); run it; done += 1.
 * A successful CAS proves the job fields read before it belong to that generation (the caller
 * makes the generation odd before touching them, which would have failed the CAS), and a worker
 * that never woke up for a job is never waited for: the caller waits for tasks, not threads. That
 * matters on machines with more busy threads than cores. All accesses are sequentially
 * consistent atomics; the cost is small next to a task.
 * Idle workers spin for a while, then sleep on the condition variable; they re-check state under
 * the mutex before sleeping, and the caller broadcasts under the same mutex after publishing,
 * so no wake-up is lost.
 */
#include "threadpool.h"

#include "xalloc.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define THREADPOOL_PAUSE() _mm_pause()
#else
#define THREADPOOL_PAUSE() ((void)0)
#endif

/* Spin iterations before a waiting thread yields or sleeps: long enough to bridge the gap
 * between consecutive matrix products of one token, short enough to leave shared cores alone. */
#define THREADPOOL_SPIN 20000

#define STATE_GEN(s)    ((uint32_t)((s) >> 32))
#define STATE_TASK(s)   ((uint32_t)(s))
#define STATE(g, t)     (((uint64_t)(g) << 32) | (uint32_t)(t))

struct threadpool {
    int n_threads;
    pthread_t *workers; /* n_threads - 1 */
    pthread_mutex_t lock;
    pthread_cond_t wake;
    bool stop;    /* under lock */
    int sleeping; /* under lock */

    _Atomic uint64_t state;
    _Atomic(threadpool_fn) fn;
    _Atomic(void *) ctx;
    atomic_int n_tasks;
    atomic_int done;
};

struct threadpool_worker_arg {
    struct threadpool *tp;
    int index;
};

/* Claims and runs tasks of the job of generation gen until none is left. */
static void threadpool_work(struct threadpool *tp, uint32_t gen, int thread)
{
    for (;;) {
        uint64_t s = atomic_load(&tp->state);
        if (STATE_GEN(s) != gen)
            return;
        threadpool_fn fn = atomic_load(&tp->fn);
        void *ctx = atomic_load(&tp->ctx);
        int n_tasks = atomic_load(&tp->n_tasks);
        if (STATE_TASK(s) >= (uint32_t)n_tasks)
            return;
        if (!atomic_compare_exchange_weak(&tp->state, &s, s + 1))
            continue;
        fn(ctx, (int)STATE_TASK(s), thread);
        atomic_fetch_add(&tp->done, 1);
    }
}

/* Waits for a published generation other than *gen and stores it there; false when the pool is
 * stopping. Generations wrap around, so none of them is special. */
static bool threadpool_wait_job(struct threadpool *tp, uint32_t *gen)
{
    uint32_t seen = *gen;
    for (int i = 0; i < THREADPOOL_SPIN; i++) {
        *gen = STATE_GEN(atomic_load(&tp->state));
        if (*gen != seen && *gen % 2 == 0)
            return true;
        THREADPOOL_PAUSE();
    }
    pthread_mutex_lock(&tp->lock);
    tp->sleeping++;
    while (!tp->stop) {
        *gen = STATE_GEN(atomic_load(&tp->state));
        if (*gen != seen && *gen % 2 == 0)
            break;
        pthread_cond_wait(&tp->wake, &tp->lock);
    }
    tp->sleeping--;
    bool stop = tp->stop;
    pthread_mutex_unlock(&tp->lock);
    return !stop;
}

static void *threadpool_worker(void *p)
{
    struct threadpool_worker_arg *arg = p;
    struct threadpool *tp = arg->tp;
    int index = arg->index;
    free(arg);

    uint32_t gen = 0; /* the generation at creation; the first job is 2 */
    while (threadpool_wait_job(tp, &gen))
        threadpool_work(tp, gen, index);
    return NULL;
}

struct threadpool *threadpool_create(int n_threads)
{
    if (n_threads < 1)
        n_threads = 1;
    struct threadpool *tp = xcalloc(1, sizeof(*tp));
    tp->n_threads = 1;
    tp->workers = xcalloc((size_t)n_threads, sizeof(pthread_t));
    pthread_mutex_init(&tp->lock, NULL);
    pthread_cond_init(&tp->wake, NULL);
    atomic_init(&tp->state, STATE(0, 0));
    atomic_init(&tp->fn, NULL);
    atomic_init(&tp->ctx, NULL);
    atomic_init(&tp->n_tasks, 0);
    atomic_init(&tp->done, 0);
    for (int i = 1; i < n_threads; i++) {
        struct threadpool_worker_arg *arg = xmalloc(sizeof(*arg));
        arg->tp = tp;
        arg->index = i;
        if (pthread_create(&tp->workers[i - 1], NULL, threadpool_worker, arg) != 0) {
            free(arg);
            threadpool_destroy(tp);
            return NULL;
        }
        tp->n_threads++;
    }
    return tp;
}

void threadpool_destroy(struct threadpool *tp)
{
    if (!tp)
        return;
    pthread_mutex_lock(&tp->lock);
    tp->stop = true;
    pthread_cond_broadcast(&tp->wake);
    pthread_mutex_unlock(&tp->lock);
    for (int i = 0; i < tp->n_threads - 1; i++)
        pthread_join(tp->workers[i], NULL);
    pthread_cond_destroy(&tp->wake);
    pthread_mutex_destroy(&tp->lock);
    free(tp->workers);
    free(tp);
}

int threadpool_size(const struct threadpool *tp)
{
    return tp ? tp->n_threads : 1;
}

void threadpool_run(struct threadpool *tp, threadpool_fn fn, void *ctx, int n_tasks)
{
    if (n_tasks <= 0)
        return;
    if (!tp || tp->n_threads == 1 || n_tasks == 1) {
        for (int i = 0; i < n_tasks; i++)
            fn(ctx, i, 0);
        return;
    }
    uint32_t gen = STATE_GEN(atomic_load(&tp->state));
    atomic_store(&tp->state, STATE(gen + 1, 0));
    atomic_store(&tp->fn, fn);
    atomic_store(&tp->ctx, ctx);
    atomic_store(&tp->n_tasks, n_tasks);
    atomic_store(&tp->done, 0);
    gen += 2;
    atomic_store(&tp->state, STATE(gen, 0));
    pthread_mutex_lock(&tp->lock);
    if (tp->sleeping > 0)
        pthread_cond_broadcast(&tp->wake);
    pthread_mutex_unlock(&tp->lock);

    threadpool_work(tp, gen, 0);

    for (int i = 0; atomic_load(&tp->done) < n_tasks; i++) {
        if (i < THREADPOOL_SPIN)
            THREADPOOL_PAUSE();
        else
            sched_yield();
    }
}
