/*
 * kernels/cuda_attention.h — causal grouped-query attention on the GPU (CPU twin:
 * cpu_attention()): decode over a KV cache, split along the context, and tiled prefill.
 *
 * Prefill has two implementations: a flash-attention kernel on the tensor cores (bf16 products,
 * fp32 softmax and accumulators; sm_80+, bf16 cache) and the tiled CUDA-core kernel that serves
 * every other case. cuda_attention_prefill() picks the first where it can.
 *
 * Contract: query head h reads KV head h / (n_heads / n_kv_heads); scores are scaled by scale
 * and softmaxed in fp32; the output is the weighted sum of values, rounded once on store.
 * head_dim is 32, 64, 128 or 256. Queries and outputs are F32 or BF16; the cache is F32 or BF16.
 * A row of q / out holds n_heads heads of head_dim elements (head h at h * head_dim); position p
 * of a cache starts at p * kv_stride elements and holds n_kv_heads heads of head_dim. All
 * pointers are device memory; the work is queued on stream; nothing is allocated.
 *
 * Paged caches: with a block table (block_table non-NULL) k and v are a pool of blocks of
 * block_size positions (block b's position i at row b * block_size + i, rows kv_stride apart)
 * and a sequence's position p lives in block table[p / block_size] of its table row: any
 * blocks, in any order, so sequences share one pool without contiguous reservations.
 */
#ifndef CORTEX_KERNELS_CUDA_ATTENTION_H
#define CORTEX_KERNELS_CUDA_ATTENTION_H

#include "dtype.h"

#include <cuda_runtime_api.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Decode: one query token for each of n_seqs sequences. Sequence s has its query at row s of q,
 * its output at row s of out, and its cache at k + s * seq_stride (v likewise) with lens[s]
 * filled positions (a device array, so a captured graph replays with new lengths; 0 gives a zero
 * output). max_len >= every lens[s] sizes the grid: the context is cut into n_splits pieces
 * (0 = cuda_attention_decode_splits()) whose partial softmax sums a second pass combines, so
 * one long sequence still fills the GPU. work is scratch of cuda_attention_decode_work_bytes()
 * bytes for the same shape and split count. */
struct cuda_attention_decode {
    enum dtype q_type, kv_type, out_type;
    const void *q;
    int64_t q_stride; /* elements between the query rows of consecutive sequences */
    const void *k, *v;
    int64_t kv_stride, seq_stride;
    const int32_t *lens;
    int64_t max_len;
    void *out;
    int64_t out_stride;
    int n_seqs, n_heads, n_kv_heads, head_dim;
    float scale;
    int n_splits;
    void *work;
    const int32_t *slots; /* NULL, or [n_seqs] device array: sequence s's cache starts at
                             k + slots[s] * seq_stride (the engine's slot pool) */
    /* Paged cache (see the contract): NULL, or a device array of rows table_stride apart;
     * sequence s uses row slots[s] (row s without slots), and seq_stride is ignored. The table
     * must cover max_len positions. */
    const int32_t *block_table;
    int64_t table_stride;
    int block_size;
};

/* Splits the context into this many pieces for the shape (>= 1): enough blocks for the GPU of
 * the current device, each piece at least 64 positions. */
int cuda_attention_decode_splits(int n_seqs, int n_heads, int n_kv_heads, int64_t max_len);
/* Scratch bytes the decode call needs for the shape with n_splits pieces (resolve 0 first). */
size_t cuda_attention_decode_work_bytes(int n_seqs, int n_heads, int head_dim, int n_splits);
/* Queues decode attention; -1 (reason in cuda_last_error()) for bad shapes or a launch error. */
int cuda_attention_decode(const struct cuda_attention_decode *a, cudaStream_t stream)
        __attribute__((warn_unused_result));

/* Which prefill kernel runs. AUTO (0, what a zeroed struct asks for) takes the tensor cores
 * when cuda_attention_prefill_tensor_ok() says so; the others force one kernel (tests and
 * benchmarks): TENSOR is refused where it cannot run. */
enum cuda_attention_impl {
    CUDA_ATTENTION_IMPL_AUTO = 0,
    CUDA_ATTENTION_IMPL_TILED,  /* CUDA cores, fp32 throughout; any valid shape and type */
    CUDA_ATTENTION_IMPL_TENSOR, /* tensor cores: bf16 Q (f32 queries are rounded) and P */
};

/* Prefill: n_q query tokens of one sequence at positions pos0 .. pos0 + n_q - 1 (row i of q
 * and out), over a cache already filled for positions 0 .. pos0 + n_q - 1; query i attends to
 * positions 0 .. pos0 + i. */
struct cuda_attention_prefill {
    enum dtype q_type, kv_type, out_type;
    const void *q;
    int64_t q_stride; /* elements between consecutive query rows */
    const void *k, *v;
    int64_t kv_stride;
    void *out;
    int64_t out_stride;
    int64_t n_q, pos0;
    int n_heads, n_kv_heads, head_dim;
    float scale;
    enum cuda_attention_impl impl;
    /* Paged cache (see the contract): NULL, or this sequence's block table (device memory)
     * covering positions 0 .. pos0 + n_q - 1. */
    const int32_t *block_table;
    int block_size;
};

/* 1 when the tensor-core kernel can run the call on the current device: a bf16 cache whose
 * pointers are 16-byte aligned with kv_stride a multiple of 8, head_dim 32/64/128/256, n_q up to
 * 65535 blocks of 64 rows, compute capability 8.0 or newer and enough shared memory per block;
 * else 0. Validates nothing else (cuda_attention_prefill() does). */
int cuda_attention_prefill_tensor_ok(const struct cuda_attention_prefill *a);

/* Queues prefill attention; -1 (reason in cuda_last_error()) for bad shapes or a launch error. */
int cuda_attention_prefill(const struct cuda_attention_prefill *a, cudaStream_t stream)
        __attribute__((warn_unused_result));

#ifdef __cplusplus
}
#endif

#endif
