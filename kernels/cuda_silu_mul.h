/*
 * kernels/cuda_silu_mul.h — the gated MLP activation on the GPU (CPU twin: cpu_silu_mul()).
 *
 * Contract: for rows rows of n elements, out = silu(gate) * up in fp32, rounded once on store.
 * Row r of gate and up starts at r * in_stride elements (one fused gate|up projection output is
 * gate = p, up = p + I, in_stride = 2I), row r of out at r * out_stride. Inputs and output are
 * F32 or BF16 (inputs share one type). out may equal gate when the types and strides match. All
 * pointers are device memory; the work is queued on stream.
 */
#ifndef CORTEX_KERNELS_CUDA_SILU_MUL_H
#define CORTEX_KERNELS_CUDA_SILU_MUL_H

#include "dtype.h"

#include <cuda_runtime_api.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

struct cuda_silu_mul {
    enum dtype in_type, out_type; /* DTYPE_F32 or DTYPE_BF16 */
    const void *gate, *up;
    int64_t in_stride;
    void *out;
    int64_t out_stride;
    int64_t rows, n;
};

/* Queues the activation; -1 (reason in cuda_last_error()) for bad shapes or a launch error. */
int cuda_silu_mul(const struct cuda_silu_mul *a, cudaStream_t stream)
        __attribute__((warn_unused_result));

#ifdef __cplusplus
}
#endif

#endif
