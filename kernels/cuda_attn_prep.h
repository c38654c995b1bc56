/*
 * kernels/cuda_attn_prep.h — everything between the q/k/v projections and attention, fused:
 * q and k head norms, RoPE, zero padding of the heads, the query store and the bf16 KV store
 * into a slot pool (CPU twins: cpu_rmsnorm and cpu_rope of neuron/cpu_ops.c, then a cast).
 *
 * Contract: rows rows (tokens). Query head h of row r is head_dim fp32 values at
 * q + r * q_stride + h * q_head_stride (2 * head_dim for qwen3_5's gated projection, whose
 * gate halves are left alone); key and value head h at k + r * k_stride + h * head_dim and
 * v + r * v_stride + h * head_dim. Per head: RMSNorm over head_dim (q_norm / k_norm weights,
 * or none when NULL; zero_centred multiplies by 1 + w), then RoPE on the first rot_dim dims
 * (pairs (i, i + rot_dim/2) when neox, else (2i, 2i + 1)) at position pos[r] with
 * inv_freq[rot_dim / 2]; values are not normed or rotated. Heads are then widened to
 * head_pad >= head_dim with zeros: queries go to q_out + r * q_out_stride + h * head_pad
 * (fp32), keys and values as bf16 to k_cache / v_cache + slot[r] * slot_stride +
 * pos[r] * (n_kv_heads * head_pad) + h * head_pad. pos and slot are [rows] device arrays (a
 * captured graph replays with new positions). A paged cache (block_table non-NULL; see
 * cuda_attention.h) takes position pos[r] from row slot[r] of the block table instead:
 * cache row table[slot[r] * table_stride + pos[r] / block_size] * block_size +
 * pos[r] % block_size, rows n_kv_heads * head_pad apart (slot_stride is ignored). head_pad <= CUDA_ATTN_PREP_MAX_HEAD. All pointers
 * are device memory; the work is queued on stream; nothing is allocated.
 *
 * Why: unfused this was up to eight launches per attention layer (two norms, two RoPEs, three
 * pad copies, the KV store), each moving a few kilobytes at decode.
 */
#ifndef CORTEX_KERNELS_CUDA_ATTN_PREP_H
#define CORTEX_KERNELS_CUDA_ATTN_PREP_H

#include <cuda_runtime_api.h>
#include <stdbool.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define CUDA_ATTN_PREP_MAX_HEAD 256

struct cuda_attn_prep {
    int64_t rows;
    int n_heads, n_kv_heads, head_dim, head_pad;
    const float *q;
    int64_t q_stride, q_head_stride;
    const float *k, *v;
    int64_t k_stride, v_stride;
    const float *q_norm, *k_norm; /* [head_dim] or NULL */
    float eps;
    bool zero_centred;
    int rot_dim; /* even, <= head_dim; 0 rotates nothing */
    bool neox;
    const float *inv_freq; /* [rot_dim / 2] */
    const int32_t *pos;    /* [rows] */
    float *q_out;
    int64_t q_out_stride;
    void *k_cache, *v_cache;    /* bf16 */
    int64_t slot_stride;        /* elements between slots */
    const int32_t *slot;        /* [rows] */
    const int32_t *block_table; /* paged cache, or NULL */
    int64_t table_stride;
    int block_size;
};

/* Queues the work; -1 (reason in cuda_last_error()) for bad shapes or a launch error. */
int cuda_attn_prep(const struct cuda_attn_prep *a, cudaStream_t stream)
        __attribute__((warn_unused_result));

#ifdef __cplusplus
}
#endif

#endif
