/*
 * kernels/cuda_elementwise.h — the small glue operations of the GPU forward pass
 * (neuron/cuda_model.c): bias add, the attention output gate with its cast to bf16, the
 * store of new keys and values into a slot pool of KV caches, and the folding of a norm's
 * weight into the columns of the matrices that read its output.
 *
 * Contract: rows of n elements, each row at its own stride (elements); all pointers are device
 * memory and the work is queued on stream; nothing is allocated. Each entry point returns 0, or
 * -1 (reason in cuda_last_error()) for bad arguments or a launch error. CPU twins: the loops in
 * neuron/model.c (model_add_bias, cpu_mul_sigmoid, the KV cache memcpy), which the end-to-end
 * GPU tests (tests/kernels/test_cuda_model.c) compare against through whole forward passes.
 */
#ifndef CORTEX_KERNELS_CUDA_ELEMENTWISE_H
#define CORTEX_KERNELS_CUDA_ELEMENTWISE_H

#include "dtype.h"

#include <cuda_runtime_api.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* y[r][i] += bias[i] for rows rows of n fp32 elements, y_stride apart. */
int cuda_add_bias(float *y, int64_t y_stride, const float *bias, int64_t rows, int64_t n,
                  cudaStream_t stream) __attribute__((warn_unused_result));

/* out[r][i] = x[r][i] * sigmoid(gate[r][i]) (gate NULL: out = x), x and gate fp32, out F32 or
 * BF16: the gated attention output (QWEN35.md), or a plain cast when gate is NULL. */
struct cuda_gate_store {
    const float *x;
    int64_t x_stride;
    const float *gate; /* or NULL */
    int64_t gate_stride;
    enum dtype out_type; /* DTYPE_F32 or DTYPE_BF16 */
    void *out;
    int64_t out_stride;
    int64_t rows, n;
};
int cuda_gate_store(const struct cuda_gate_store *a, cudaStream_t stream)
        __attribute__((warn_unused_result));

/* For each of rows rows: its kv_dim keys and values (fp32, k + r * k_stride, v + r * v_stride)
 * go to cache position pos[r] of slot slot[r], as bf16: k_cache + slot[r] * slot_stride +
 * pos[r] * kv_dim (v_cache likewise). pos and slot are [rows] device arrays, so a captured
 * graph replays with new positions. A paged cache (block_table non-NULL, cuda_attention.h)
 * puts it at row table[slot[r] * table_stride + pos[r] / block_size] * block_size +
 * pos[r] % block_size of kv_dim elements instead (slot_stride ignored). */
struct cuda_kv_store {
    const float *k, *v;
    int64_t k_stride, v_stride;
    void *k_cache, *v_cache; /* bf16 */
    int64_t slot_stride;     /* elements between slots */
    const int32_t *pos, *slot;
    int64_t rows;
    int kv_dim;
    const int32_t *block_table; /* paged cache, or NULL */
    int64_t table_stride;
    int block_size;
};
int cuda_kv_store(const struct cuda_kv_store *a, cudaStream_t stream)
        __attribute__((warn_unused_result));

/* w[r][c] = bf16(w[r][c] * (add + scale[c])) for a bf16 [rows, cols] matrix: an RMSNorm's
 * weight (add 1 for the zero-centred form) folded into the products that read the norm, so
 * that W (x_hat * g) = (W diag(g)) x_hat and the norm itself needs no weight. */
int cuda_scale_cols(void *w, int64_t rows, int64_t cols, const float *scale, float add,
                    cudaStream_t stream) __attribute__((warn_unused_result));

#ifdef __cplusplus
}
#endif

#endif
