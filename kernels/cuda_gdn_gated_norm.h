/*
 * kernels/cuda_gdn_gated_norm.h — the gated RMSNorm that ends a Gated DeltaNet layer, on the GPU
 * (QWEN35.md step 9; CPU twin: gdn_gated_norm()).
 *
 * Contract: for rows rows (token x value head) of dim floats, y = w * o / sqrt(mean(o^2) + eps)
 * * silu(z), in fp32, rounded once on store (plain w, not zero-centred). Row r reads o + r *
 * o_stride and z + r * z_stride, writes y + r * y_stride; y is F32 or BF16 (the input of
 * out_proj) and may equal o when it is F32 with o's stride. w is fp32 [dim]. All pointers are
 * device memory; the work is queued on stream.
 */
#ifndef CORTEX_KERNELS_CUDA_GDN_GATED_NORM_H
#define CORTEX_KERNELS_CUDA_GDN_GATED_NORM_H

#include "dtype.h"

#include <cuda_runtime_api.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

struct cuda_gdn_gated_norm {
    const float *o;
    int64_t o_stride;
    const float *z;
    int64_t z_stride;
    const float *w;
    enum dtype y_type; /* DTYPE_F32 or DTYPE_BF16 */
    void *y;
    int64_t y_stride;
    int64_t rows;
    int dim;
    float eps;
};

/* Queues the norm; -1 (reason in cuda_last_error()) for bad shapes or a launch error. */
int cuda_gdn_gated_norm(const struct cuda_gdn_gated_norm *a, cudaStream_t stream)
        __attribute__((warn_unused_result));

#ifdef __cplusplus
}
#endif

#endif
