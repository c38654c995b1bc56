/*
 * kernels/cuda_allreduce.h — a one-shot fp32 sum across the GPUs of one process, over peer
 * memory (NVLink), for the small messages of tensor-parallel decode steps (CPU twin: the sum in
 * rank order in tests/kernels/test_cuda_allreduce.c).
 *
 * Contract: cuda_allreduce_create() sets up a group of n_ranks GPUs (devices[r] is rank r) that
 * all live in this process: it enables peer access between every pair and gives each rank, on
 * its own GPU, two staging buffers of max_elems floats, a table of arrival flags and per-block
 * sequence counters. It fails (-1, reason in cuda_last_error()) when a pair of the GPUs cannot
 * reach each other's memory; callers then keep to NCCL.
 *
 * cuda_allreduce_sum() queues rank's part of one all-reduce on stream (a stream of rank's
 * GPU, which must be current): x (n floats of device memory on that GPU) is replaced by the sum
 * over the ranks of their x, added in rank order 0, 1, ... so every rank gets bit-identical
 * values. Every rank must make the same calls with the same n in the same order, each from its
 * own stream (typically one host thread per rank); the kernels of one call wait for each other
 * on the GPUs, so all ranks' calls must be able to run at once. A call is one kernel launch
 * with no host work: it can be captured in a CUDA graph and the graph replayed any number of
 * times (the sequence values live in device memory and the kernel advances them itself; the
 * staging buffers alternate between calls, so a rank that runs ahead never overwrites data a
 * slower peer still reads).
 *
 * Failure: a rank whose peer never arrives would wait forever. cuda_allreduce_abort() (any
 * thread, any time) makes every waiting and future kernel of the group return at once, leaving
 * x undefined; after it the group is unusable (sequence values differ between ranks) and is
 * only destroyed. cuda_allreduce_aborted() tells whether that happened.
 * cuda_allreduce_destroy() frees the group once no kernel of it is pending; accepts NULL.
 */
#ifndef CORTEX_KERNELS_CUDA_ALLREDUCE_H
#define CORTEX_KERNELS_CUDA_ALLREDUCE_H

#include <cuda_runtime_api.h>
#include <stdbool.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define CUDA_ALLREDUCE_MAX_RANKS 8

struct cuda_allreduce;

/* The group over devices[0 .. n_ranks) (2 <= n_ranks <= CUDA_ALLREDUCE_MAX_RANKS, distinct
 * devices) for messages of up to max_elems floats. *out is the caller's, freed with
 * cuda_allreduce_destroy(). Leaves the calling thread's current device unchanged. */
int cuda_allreduce_create(int n_ranks, const int *devices, int64_t max_elems,
                          struct cuda_allreduce **out) __attribute__((warn_unused_result));
void cuda_allreduce_destroy(struct cuda_allreduce *ar);
/* Largest n cuda_allreduce_sum() takes. */
int64_t cuda_allreduce_max_elems(const struct cuda_allreduce *ar);
/* Queues rank's share of x = sum over ranks of x (in place, n floats, 0 <= n <= max_elems);
 * -1 for bad arguments, a launch error or an aborted group. */
int cuda_allreduce_sum(struct cuda_allreduce *ar, int rank, float *x, int64_t n,
                       cudaStream_t stream) __attribute__((warn_unused_result));
/* Releases every waiting kernel of the group and refuses later calls. Thread-safe. */
void cuda_allreduce_abort(struct cuda_allreduce *ar);
bool cuda_allreduce_aborted(const struct cuda_allreduce *ar);

#ifdef __cplusplus
}
#endif

#endif
