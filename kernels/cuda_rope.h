/*
 * kernels/cuda_rope.h — rotary position embedding in place on the GPU (CPU twin: cpu_rope()).
 *
 * Contract: for each of n_tok tokens (token t at x + t * tok_stride elements, position pos[t])
 * and each of n_heads heads (head_stride elements apart), the first rot_dim dims rotate by the
 * angle pos * inv_freq[i] (computed in fp32, as HF does), the rest stay as they are (partial
 * rotary). neox pairs dims (i, i + rot_dim/2) (HF rotate-half, qwen3_5); otherwise (2i, 2i + 1)
 * (GGUF llama). x is F32 or BF16; inv_freq is fp32 [rot_dim / 2] (cpu_rope_inv_freq() fills it);
 * pos is int32 [n_tok]. All pointers are device memory; the work is queued on stream.
 */
#ifndef CORTEX_KERNELS_CUDA_ROPE_H
#define CORTEX_KERNELS_CUDA_ROPE_H

#include "dtype.h"

#include <cuda_runtime_api.h>
#include <stdbool.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

struct cuda_rope {
    enum dtype type; /* DTYPE_F32 or DTYPE_BF16 */
    void *x;
    int64_t n_tok, tok_stride;
    int n_heads, head_stride;
    int rot_dim; /* even, <= head_stride */
    const float *inv_freq;
    const int32_t *pos;
    bool neox;
};

/* Queues the rotation; -1 (reason in cuda_last_error()) for bad shapes or a launch error. */
int cuda_rope(const struct cuda_rope *a, cudaStream_t stream) __attribute__((warn_unused_result));

#ifdef __cplusplus
}
#endif

#endif
