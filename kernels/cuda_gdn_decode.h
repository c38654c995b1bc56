/*
 * kernels/cuda_gdn_decode.h — one Gated DeltaNet decode step after the conv, fused into one
 * kernel: gates, L2 norms of q and k, the recurrent update and the gated RMSNorm (QWEN35.md
 * steps 5-9; CPU twin: gdn_gates, gdn_l2norm, gdn_head_recurrent and gdn_gated_norm of
 * neuron/gdn.c, in that order).
 *
 * Contract: n_seqs sequences of one token each; row s holds sequence s. For each value head h
 * (reading key/query head h / (n_v_heads / n_k_heads)):
 *   beta = sigmoid(b[h]); g = neg_a[h] * softplus(a[h] + dt_bias[h])
 *   q <- q * rsqrt(sum(q^2) + 1e-6) * q_scale ; k <- k * rsqrt(sum(k^2) + 1e-6)
 *   S <- exp(g) S ; delta = beta (v - S^T k) ; S <- S + k delta^T ; o = S^T q
 *   y = norm_w * o / sqrt(mean(o^2) + eps) * silu(z)      (over the head's v_dim values)
 * q and k of row s are n_k_heads heads of k_dim floats at q + s * qk_stride, k + s * qk_stride
 * (the conv's output); v, z and y are n_v_heads heads of v_dim at s * v_stride, s * z_stride
 * and s * y_stride; a and b are [n_v_heads] at s * ab_stride. The state of sequence s, head h
 * is S [k_dim][v_dim] fp32 row-major at state + slot * state_stride + h * k_dim * v_dim with
 * slot = slots[s] (or s when slots is NULL); it is read, updated and written back. y is F32 or
 * BF16 (the out projection's input). Limits: k_dim <= CUDA_GDN_DECODE_MAX_DIM and v_dim <=
 * CUDA_GDN_DECODE_MAX_DIM (a block owns a whole head, so the norm needs no second pass); larger
 * heads take the unfused kernels. All pointers are device memory; the work is queued on stream.
 *
 * Why: at batch 1 the four unfused kernels each move a few kilobytes and cost mostly their
 * launch; one kernel per layer removes three launches from each of the 48 GDN layers of the
 * 27B shape. The state traffic (the real cost, 2 x 64 KiB per head) is the same.
 */
#ifndef CORTEX_KERNELS_CUDA_GDN_DECODE_H
#define CORTEX_KERNELS_CUDA_GDN_DECODE_H

#include "dtype.h"

#include <cuda_runtime_api.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define CUDA_GDN_DECODE_MAX_DIM 128

struct cuda_gdn_decode {
    int n_seqs;
    int n_k_heads, n_v_heads, k_dim, v_dim;
    const float *q, *k;
    int64_t qk_stride;
    const float *v;
    int64_t v_stride;
    const float *a, *b; /* gate inputs, [n_v_heads] per row */
    int64_t ab_stride;
    const float *neg_a, *dt_bias; /* [n_v_heads]: -exp(A_log), dt_bias */
    const float *z;
    int64_t z_stride;
    const float *norm_w; /* [v_dim] (plain weight) */
    float eps, q_scale;
    enum dtype y_type; /* DTYPE_F32 or DTYPE_BF16 */
    void *y;
    int64_t y_stride;
    float *state;
    int64_t state_stride;
    const int32_t *slots; /* NULL, or [n_seqs] device array of state slots */
};

/* Queues the step; -1 (reason in cuda_last_error()) for bad shapes or a launch error. */
int cuda_gdn_decode(const struct cuda_gdn_decode *a, cudaStream_t stream)
        __attribute__((warn_unused_result));

#ifdef __cplusplus
}
#endif

#endif
