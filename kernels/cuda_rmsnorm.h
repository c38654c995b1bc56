/*
 * kernels/cuda_rmsnorm.h — RMSNorm of many rows on the GPU (CPU twin: cpu_rmsnorm()).
 *
 * Contract: for each of rows rows of n elements, y = x / sqrt(mean(x^2) + eps) * g with
 * g = w (plain) or 1 + w (zero_centred, qwen3_5), or 1 when w is NULL; computed in fp32 and
 * rounded once on store. x and y are F32 or BF16 (independently); w is fp32 [n]. Row r starts at
 * x + r * x_stride and y + r * y_stride elements, so heads of a projection output (q_norm over
 * the query half of each head) are rows too. y may equal x when both have the same type and
 * stride. All pointers are device memory; the work is queued on stream.
 */
#ifndef CORTEX_KERNELS_CUDA_RMSNORM_H
#define CORTEX_KERNELS_CUDA_RMSNORM_H

#include "dtype.h"

#include <cuda_runtime_api.h>
#include <stdbool.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

struct cuda_rmsnorm {
    enum dtype x_type, y_type; /* DTYPE_F32 or DTYPE_BF16 */
    const void *x;             /* [rows] x x_stride elements */
    int64_t x_stride;
    void *y; /* [rows] x y_stride elements */
    int64_t y_stride;
    const float *w; /* [n] or NULL */
    int64_t rows;
    int n;
    float eps;
    bool zero_centred;
};

/* Queues the norm; -1 (reason in cuda_last_error()) for bad shapes or types, or a launch error. */
int cuda_rmsnorm(const struct cuda_rmsnorm *a, cudaStream_t stream)
        __attribute__((warn_unused_result));

#ifdef __cplusplus
}
#endif

#endif
