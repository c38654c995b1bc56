/*
 * kernels/cuda_random.h — random tensors made on the GPU, for benchmarks that need tens of GB
 * of weights without a trip through host memory (neuron-bench, bench_matvec).
 *
 * Contract: fills n elements at p (device memory, F32 or BF16) with values uniform in
 * [-scale, scale), a pure function of (seed, index): the same call gives the same tensor on any
 * GPU. Not for tests, which draw their inputs on the host where the CPU twin can see them.
 */
#ifndef CORTEX_KERNELS_CUDA_RANDOM_H
#define CORTEX_KERNELS_CUDA_RANDOM_H

#include "dtype.h"

#include <cuda_runtime_api.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Queues the fill; -1 (reason in cuda_last_error()) for a bad type or a launch error. */
int cuda_random_fill(enum dtype type, void *p, int64_t n, uint64_t seed, float scale,
                     cudaStream_t stream) __attribute__((warn_unused_result));

#ifdef __cplusplus
}
#endif

#endif
