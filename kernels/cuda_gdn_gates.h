/*
 * kernels/cuda_gdn_gates.h — the fused gates of Gated DeltaNet layers on the GPU (QWEN35.md
 * step 6; CPU twin: gdn_gates()).
 *
 * Contract: for rows rows (tokens) of n_heads value heads, beta = sigmoid(b) and
 * g = neg_a * softplus(a + dt_bias) (the log of the state decay, <= 0), in fp32 with a stable
 * softplus. a and b are row r at a + r * a_stride and b + r * b_stride (columns of one fused
 * projection output, or separate arrays); neg_a (= -exp(A_log)) and dt_bias are [n_heads]; g
 * and beta are written at r * gb_stride. All pointers are device memory; the work is queued on
 * stream.
 */
#ifndef CORTEX_KERNELS_CUDA_GDN_GATES_H
#define CORTEX_KERNELS_CUDA_GDN_GATES_H

#include <cuda_runtime_api.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

struct cuda_gdn_gates {
    const float *a, *b;
    int64_t a_stride, b_stride;
    const float *neg_a, *dt_bias;
    float *g, *beta;
    int64_t gb_stride;
    int64_t rows;
    int n_heads;
};

/* Queues the gates; -1 (reason in cuda_last_error()) for bad shapes or a launch error. */
int cuda_gdn_gates(const struct cuda_gdn_gates *a, cudaStream_t stream)
        __attribute__((warn_unused_result));

#ifdef __cplusplus
}
#endif

#endif
