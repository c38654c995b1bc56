/*
 * kernels/cuda_matvec_rms.h — decode products with the RMSNorm before them fused in, and
 * optionally the SwiGLU after them: y = W' (x / rms(x)) for a few tokens, where W' is the
 * product's weight with the norm's weight folded into its columns (CPU twin: cpu_rmsnorm
 * without a weight, then cpu_matmul; with swiglu, cpu_silu_mul after).
 *
 * Contract: x is batch rows of cols fp32 values (the residual stream), x_stride apart; for each
 * row, s = 1 / sqrt(mean(x^2) + eps). Plain: products m = 0..n-1 share x, and y_m[b][r] =
 * s_b * sum_c W_m[r][c] x[b][c], fp32, y_stride[m] apart. swiglu (n == 2, equal rows): the
 * gate and up products of an MLP; out[b][r] = silu(s_b (W_0 x_b)[r]) * s_b (W_1 x_b)[r], bf16,
 * out_stride apart, and y is unused. W_m is bf16 [rows_m, cols] row-major; cols % 8 == 0 and
 * W, x and the x rows 16-byte aligned (cuda_matvec_rms_fits() says whether a shape qualifies;
 * the engine falls back to the separate norm and cuda_matvec otherwise). batch
 * 1..CUDA_MATVEC_RMS_MAX_BATCH. All pointers are device memory; the work is queued on stream.
 *
 * Why: at batch 1 every norm and every SwiGLU was a launch of its own between two weight
 * streams (192 of the 27B step's ~610 launches), each costing more in start-up and dependency
 * latency than its few kilobytes of work. Here each warp already reads all of x, so the sum of
 * squares rides along for free, and a warp owns row r of both gate and up, so the SwiGLU is its
 * epilogue. Weight streaming as cuda_matvec's fast kernel: 16-byte loads that bypass L1,
 * several in flight per row.
 */
#ifndef CORTEX_KERNELS_CUDA_MATVEC_RMS_H
#define CORTEX_KERNELS_CUDA_MATVEC_RMS_H

#include <cuda_runtime_api.h>
#include <stdbool.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define CUDA_MATVEC_RMS_MAX_BATCH 4
#define CUDA_MATVEC_RMS_MAX_GROUP 4

struct cuda_matvec_rms {
    int n; /* products, 1..CUDA_MATVEC_RMS_MAX_GROUP (2 with swiglu) */
    const void *w[CUDA_MATVEC_RMS_MAX_GROUP]; /* bf16 [rows[m], cols] */
    int64_t rows[CUDA_MATVEC_RMS_MAX_GROUP];
    float *y[CUDA_MATVEC_RMS_MAX_GROUP];
    int64_t y_stride[CUDA_MATVEC_RMS_MAX_GROUP];
    int64_t cols;
    const float *x;
    int64_t x_stride;
    int batch;
    float eps;
    bool swiglu;
    void *out; /* bf16, swiglu only */
    int64_t out_stride;
};

/* Whether the fused kernel takes cols columns at x_stride (alignment of the pointers aside). */
bool cuda_matvec_rms_fits(int64_t cols, int64_t x_stride, int batch);

/* Queues the products; -1 (reason in cuda_last_error()) for bad shapes or a launch error. */
int cuda_matvec_rms(const struct cuda_matvec_rms *a, cudaStream_t stream)
        __attribute__((warn_unused_result));

#ifdef __cplusplus
}
#endif

#endif
