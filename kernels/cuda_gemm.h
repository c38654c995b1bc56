/*
 * kernels/cuda_gemm.h — matrix products for prefill and batched decode through cuBLASLt:
 * Y[n, rows] (+)= X[n, cols] . W[rows, cols]^T in bf16 with fp32 accumulation (CPU twin:
 * cpu_matmul()).
 *
 * Contract: W is bf16, row-major [rows, cols] with contiguous rows (the checkpoint's nn.Linear
 * layout, [out, in]). X is n rows of cols elements, x_stride elements apart, F32 or BF16; an
 * F32 X is first rounded to bf16 into the context's workspace (the tensor cores read bf16), so
 * the result is that of the bf16-rounded activations. Y is n rows of rows elements, y_stride
 * apart, F32 or BF16; with accumulate, Y += X W^T (the residual add, read in Y's type). Every
 * product accumulates in fp32 and rounds once on store. Y must not overlap W or X. All pointers
 * are device memory; the work is queued on the context's stream.
 *
 * A context (cuBLASLt handle, a 32 MiB cuBLASLt workspace, the bf16 staging buffer and a cache
 * of the algorithm chosen by cuBLASLt's heuristic per shape) belongs to one stream and one
 * thread; create one per stream. The first product of a shape asks the heuristic (host work
 * only); later ones reuse its answer, so a product is capturable in a CUDA graph once its shape
 * has been run (or cuda_gemm_ctx_reserve() has sized the staging buffer for F32 X: growing it
 * allocates, which a stream capture forbids).
 *
 * When to use which (bench_gemm on an H100 80GB HBM3, 2026-11-25; every Linear of the 27B
 * qwen3_5 shape, 51.2 GB of bf16, as one CUDA graph): the grouped cuda_matvec() step takes
 * 17.46 / 17.85 / 18.61 / 20.69 / 26.87 ms at n = 1 / 2 / 3 / 4 / 8 tokens, cuda_gemm() with
 * bf16 activations 19.72 / 19.75 / 19.79 / 19.83 / 19.88 ms, and 20.28 ms at n = 32 (flat:
 * the weight stream is the cost). So the matrix-vector kernel up to n = 3, cuBLASLt from 4 on.
 * F32 activations add the rounding pass (about 0.7 ms over the 257 products of a step at small
 * n): feed bf16 where the producer can write it. Prefill (n = 512 / 4096, bf16 in and out):
 * 632 / 699 TFLOP/s for the layer products. cuBLASLt's heuristic choice times the same as
 * cublasGemmEx's default.
 */
#ifndef CORTEX_KERNELS_CUDA_GEMM_H
#define CORTEX_KERNELS_CUDA_GEMM_H

#include "dtype.h"

#include <cuda_runtime_api.h>
#include <stdbool.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Largest token count for which cuda_matvec() beats cuda_gemm() on bf16 weights (H100). */
#define CUDA_GEMM_MATVEC_MAX_N 3

struct cuda_gemm_ctx;

struct cuda_gemm_args {
    const void *w; /* bf16 [rows, cols] */
    int64_t rows, cols;
    enum dtype x_type; /* DTYPE_F32 or DTYPE_BF16 */
    const void *x;
    int64_t x_stride;
    enum dtype y_type; /* DTYPE_F32 or DTYPE_BF16 */
    void *y;
    int64_t y_stride;
    int64_t n; /* tokens, >= 0 (0 does nothing) */
    bool accumulate;
};

/* A context for products queued on stream; NULL (reason in cuda_last_error()) when cuBLASLt or
 * the workspace allocation fails. The caller frees it with cuda_gemm_ctx_destroy(). */
struct cuda_gemm_ctx *cuda_gemm_ctx_create(cudaStream_t stream);
/* Frees the context and its device memory (waits for its stream first); NULL is a no-op. */
void cuda_gemm_ctx_destroy(struct cuda_gemm_ctx *ctx);
/* Makes the bf16 staging buffer hold at least elems activations (n * cols of the largest F32
 * input), so that later products never allocate (needed before a graph capture). -1 when the
 * allocation fails. */
int cuda_gemm_ctx_reserve(struct cuda_gemm_ctx *ctx, int64_t elems)
        __attribute__((warn_unused_result));

/* Queues Y (+)= X W^T; -1 (reason in cuda_last_error()) for bad shapes or types, when cuBLASLt
 * has no algorithm for the shape, or on a launch error. */
int cuda_gemm(struct cuda_gemm_ctx *ctx, const struct cuda_gemm_args *a)
        __attribute__((warn_unused_result));

#ifdef __cplusplus
}
#endif

#endif
