/*
 * kernels/cuda_matvec.h — matrix-vector products for decode on the GPU: y = W x for a few
 * tokens at once (CPU twin: cpu_matmul()).
 *
 * Contract: W is [rows, cols] row-major with contiguous rows (the checkpoint's nn.Linear
 * layout, [out, in]); only DTYPE_BF16 weights for now. x is batch rows of cols elements,
 * x_stride elements apart; y is batch rows of rows elements, y_stride apart; x and y are F32 or
 * BF16 (independently). Products accumulate in fp32 and round once on store; with accumulate,
 * y += W x (the residual add of out_proj / down_proj, read and written in y's type). batch is
 * 1..CUDA_MATVEC_MAX_BATCH: larger batches belong to cuBLAS. y must not overlap W or x. The
 * fast path (16-byte weight loads that bypass L1, several in flight per thread) needs cols % 8
 * == 0 and 16-byte aligned W, x and x rows; other shapes take a correct but slower path. All
 * pointers are device memory; the work is queued on stream.
 */
#ifndef CORTEX_KERNELS_CUDA_MATVEC_H
#define CORTEX_KERNELS_CUDA_MATVEC_H

#include "dtype.h"

#include <cuda_runtime_api.h>
#include <stdbool.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define CUDA_MATVEC_MAX_BATCH 8

struct cuda_matvec {
    enum dtype w_type; /* DTYPE_BF16 */
    const void *w;
    int64_t rows, cols;
    enum dtype x_type; /* DTYPE_F32 or DTYPE_BF16 */
    const void *x;
    int64_t x_stride;
    enum dtype y_type; /* DTYPE_F32 or DTYPE_BF16 */
    void *y;
    int64_t y_stride;
    int batch;
    bool accumulate;
};

/* Queues y (+)= W x with the kernel configuration chosen for this shape; -1 (reason in
 * cuda_last_error()) for bad shapes or types, or a launch error. */
int cuda_matvec(const struct cuda_matvec *m, cudaStream_t stream)
        __attribute__((warn_unused_result));

/* Benchmark and test hooks: the same product with one fixed configuration of the fast kernel,
 * variant 1..cuda_matvec_variant_count() (0 = the default choice, as cuda_matvec()). Shapes the
 * fast kernel cannot take use the slow path whatever the variant. */
int cuda_matvec_variant(const struct cuda_matvec *m, int variant, cudaStream_t stream)
        __attribute__((warn_unused_result));
int cuda_matvec_variant_count(void);
/* "r2u4" (rows per warp, loads in flight per row); "auto" for 0; NULL when out of range. */
const char *cuda_matvec_variant_name(int variant);

#ifdef __cplusplus
}
#endif

#endif
