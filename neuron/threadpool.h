/*
 * neuron/threadpool.h — a fixed pool of pthreads that runs one parallel job at a time.
 *
 * Contract: threadpool_run() splits a job into n_tasks independent tasks, hands them out to the
 * pool's workers and the calling thread alike (an atomic counter, so fast threads take more), and
 * returns when every task has finished. Workers spin briefly between jobs, because the forward
 * pass issues a few hundred short jobs per token, then sleep on a condition variable so an idle
 * pool costs no CPU. One job at a time: threadpool_run() must not be called concurrently on the
 * same pool, nor from inside a task. A NULL pool runs every task on the caller.
 */
#ifndef CORTEX_NEURON_THREADPOOL_H
#define CORTEX_NEURON_THREADPOOL_H

struct threadpool;

/* One task of a job: task is in [0, n_tasks); thread in [0, threadpool_size()) names the thread
 * running it (0 is the caller), so tasks can use per-thread scratch space. */
typedef void (*threadpool_fn)(void *ctx, int task, int thread);

/* Creates a pool of n_threads threads in total, the caller included (n_threads - 1 workers are
 * started; n_threads < 1 is taken as 1). Returns NULL when a thread cannot be started. The caller
 * frees the pool with threadpool_destroy(). */
struct threadpool *threadpool_create(int n_threads);
/* Stops and joins the workers; accepts NULL. */
void threadpool_destroy(struct threadpool *tp);
/* Threads that run tasks, the caller included; 1 for a NULL pool. */
int threadpool_size(const struct threadpool *tp);
/* Runs fn(ctx, task, thread) for every task in [0, n_tasks) and waits for all of them. */
void threadpool_run(struct threadpool *tp, threadpool_fn fn, void *ctx, int n_tasks);

#endif
