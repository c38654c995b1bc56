/*
 * kernels/cuda_embed.h — embedding lookup on the GPU (CPU twin: dtype_dequant_row() of the
 * token's row, as model.c does).
 *
 * Contract: out row t (at out + t * out_stride elements) = table row ids[t] converted to the
 * output type. table is [vocab, dim] of F32, F16 or BF16, rows contiguous; out is F32 or BF16;
 * ids is int32 [n_tok]. An id outside [0, vocab) gives a row of zeros: ids are checked on the
 * host before they reach the GPU, and a zero row keeps a bad id from spreading NaNs. All
 * pointers are device memory; the work is queued on stream.
 */
#ifndef CORTEX_KERNELS_CUDA_EMBED_H
#define CORTEX_KERNELS_CUDA_EMBED_H

#include "dtype.h"

#include <cuda_runtime_api.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

struct cuda_embed {
    enum dtype table_type; /* DTYPE_F32, DTYPE_F16 or DTYPE_BF16 */
    const void *table;
    int64_t vocab, dim;
    const int32_t *ids;
    int64_t n_tok;
    enum dtype out_type; /* DTYPE_F32 or DTYPE_BF16 */
    void *out;
    int64_t out_stride;
};

/* Queues the gather; -1 (reason in cuda_last_error()) for bad shapes or a launch error. */
int cuda_embed(const struct cuda_embed *a, cudaStream_t stream) __attribute__((warn_unused_result));

#ifdef __cplusplus
}
#endif

#endif
