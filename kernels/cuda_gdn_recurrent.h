/*
 * kernels/cuda_gdn_recurrent.h — the Gated DeltaNet delta rule, token by token, on the GPU
 * (QWEN35.md steps 5, 7 and 8; CPU twin: gdn_l2norm() then gdn_head_recurrent()).
 *
 * Contract: n_seqs sequences of n_tok tokens; row s * n_tok + t holds token t of sequence s.
 * For every value head h (reading key/query head h / (n_v_heads / n_k_heads)) and token:
 *   q <- q * q_scale (after q <- q * rsqrt(sum(q^2) + 1e-6) when l2norm), k likewise (scale 1)
 *   S <- exp(g) S ; delta = beta (v - S^T k) ; S <- S + k delta^T ; o = S^T q
 * q and k of a row are n_k_heads heads of k_dim floats at q + row * qk_stride and
 * k + row * qk_stride; v and out are n_v_heads heads of v_dim at row * v_stride and
 * row * out_stride; g and beta are [n_v_heads] at row * gb_stride. The state of sequence s,
 * value head h is S [k_dim][v_dim] fp32 row-major at state + s * state_stride +
 * h * k_dim * v_dim; it is read, updated and written back. q, k, v, g and beta are not
 * modified. k_dim <= 256. Decode is n_tok = 1 over many sequences; n_tok > 1 is the sequential
 * reference path for prefill. All pointers are device memory; the work is queued on stream.
 */
#ifndef CORTEX_KERNELS_CUDA_GDN_RECURRENT_H
#define CORTEX_KERNELS_CUDA_GDN_RECURRENT_H

#include <cuda_runtime_api.h>
#include <stdbool.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define CUDA_GDN_MAX_K_DIM 256

struct cuda_gdn_recurrent {
    int n_seqs;
    int64_t n_tok;
    int n_k_heads, n_v_heads, k_dim, v_dim;
    const float *q, *k;
    int64_t qk_stride;
    const float *v;
    int64_t v_stride;
    const float *g, *beta;
    int64_t gb_stride;
    float *out;
    int64_t out_stride;
    float *state;
    int64_t state_stride;
    bool l2norm;
    float q_scale;
    const int32_t *slots; /* NULL, or [n_seqs] device array: sequence s keeps its state at
                             state + slots[s] * state_stride (the engine's slot pool) */
};

/* Queues the update; -1 (reason in cuda_last_error()) for bad shapes or a launch error. */
int cuda_gdn_recurrent(const struct cuda_gdn_recurrent *a, cudaStream_t stream)
        __attribute__((warn_unused_result));

#ifdef __cplusplus
}
#endif

#endif
