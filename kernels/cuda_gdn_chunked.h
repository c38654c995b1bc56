/*
 * kernels/cuda_gdn_chunked.h — the Gated DeltaNet delta rule for prefill, in chunks of
 * CUDA_GDN_CHUNK tokens (QWEN35.md "Chunked prefill"; CPU twins: gdn_head_chunked(), and
 * gdn_head_recurrent(), which computes the same values token by token).
 *
 * Contract: the arguments, layouts and results are those of cuda_gdn_recurrent() (same
 * struct: n_seqs sequences of n_tok tokens, q/k/v/g/beta/out strides, optional L2 norm of q
 * and k, q_scale, per-(sequence, value head) fp32 state read and written back), so the engine
 * calls one or the other on the same buffers; the results agree to fp32 rounding (the order
 * of the sums differs). Limits: k_dim <= CUDA_GDN_CHUNKED_MAX_K_DIM (every released Qwen3.5 /
 * Qwen3-Next shape has 128; larger heads take cuda_gdn_recurrent()). No workspace: the work
 * is one kernel, and the only memory it touches is the arguments'. All pointers are device
 * memory; the work is queued on stream.
 *
 * When to use which (bench_gdn, H100 80GB HBM3, 27B shape: 16 key / 48 value heads of 128,
 * one layer): one sequence of 4096 tokens 4.54 ms chunked vs 8.62 ms recurrent, 512 tokens
 * 0.58 vs 0.99 ms; but 8 sequences of 512 tokens 3.46 vs 2.94 ms (the recurrence has 8 times
 * the blocks to hide its per-token latency, and the chunked kernel's fp32 products are the
 * cost). So: chunked for one or a few long prompts, the recurrence for decode and for many
 * short prompts at once.
 */
#ifndef CORTEX_KERNELS_CUDA_GDN_CHUNKED_H
#define CORTEX_KERNELS_CUDA_GDN_CHUNKED_H

#include "cuda_gdn_recurrent.h"

#include <cuda_runtime_api.h>

#ifdef __cplusplus
extern "C" {
#endif

#define CUDA_GDN_CHUNK             64
#define CUDA_GDN_CHUNKED_MAX_K_DIM 128

/* Queues the chunked update; -1 (reason in cuda_last_error()) for bad shapes or a launch
 * error. */
int cuda_gdn_chunked(const struct cuda_gdn_recurrent *a, cudaStream_t stream)
        __attribute__((warn_unused_result));
/* Test and benchmark hook: cuda_gdn_chunked() with variant 1 (each chunk loads its inputs when
 * it starts) or 2 (the next chunk's inputs are loaded into registers while this one computes;
 * k_dim == 128 only, other head sizes take variant 1); 0 is the default choice. */
int cuda_gdn_chunked_variant(const struct cuda_gdn_recurrent *a, int variant, cudaStream_t stream)
        __attribute__((warn_unused_result));

#ifdef __cplusplus
}
#endif

#endif
