/*
 * kernels/cuda_matvec.h — matrix-vector products for decode on the GPU: y = W x for a few
 * tokens at once (CPU twin: cpu_matmul()).
 *
 * Contract: W is [rows, cols] row-major with contiguous rows (the checkpoint's nn.Linear
 * layout, [out, in]), of type w_type: DTYPE_BF16, or one of the GGUF types the CPU backend
 * reads (DTYPE_F16, Q8_0, Q4_0, Q4_1, Q4_K, Q5_K, Q6_K), each row a run of blocks exactly as
 * GGUF stores them, so cols must be a multiple of the type's block (32 or 256 elements;
 * dtype_row_bytes() gives a row's size). Quantised weights are dequantised in registers as
 * dtype_dequant_row() does and take their own kernels (kernels/cuda_matvec_quant.cu: blocks
 * staged through shared memory, two rows per warp; the variant argument of
 * cuda_matvec_tuned() does not apply), 18-58% of the copy bandwidth at batch 1 on an H200
 * (kernels/README.md). x is batch rows of cols elements,
 * x_stride elements apart; y is batch rows of rows elements, y_stride apart; x and y are F32 or
 * BF16 (independently). Products accumulate in fp32 and round once on store; with accumulate,
 * y += W x (the residual add of out_proj / down_proj, read and written in y's type). batch is
 * 1..CUDA_MATVEC_MAX_BATCH: larger batches belong to cuBLAS. y must not overlap W or x. The
 * fast path (16-byte weight loads that bypass L1, several in flight per thread) needs cols % 8
 * == 0 and 16-byte aligned W, x and x rows; other shapes take a correct but slower path. All
 * pointers are device memory; the work is queued on stream.
 *
 * Launch overlap (sm_90 and newer, on unless cuda_set_overlap(0) or CORTEX_CUDA_OVERLAP=0;
 * kernels/cuda_launch.cuh): programmatic dependent launch. A product's first blocks start while
 * the kernel before it still runs, ask for their rows of W in L2 (cuda_prefetch_bytes() in all)
 * and issue their first weight loads (weights never depend on that kernel); x is read and y
 * touched only after the wait for it, so the product stays ordered after its predecessor, in
 * CUDA graphs too. Between back-to-back products alone it measured no faster; in the decode
 * step, where products follow small attention, GDN and all-reduce kernels, it is worth 2.5-5%
 * (docs/BENCHMARKS.md). Grouping the products that share an input pays too: 257 launches
 * instead of 497 for the 27B model's Linear set made it 7% faster. CORTEX_MATVEC_VARIANT=name
 * (benchmarks) forces one configuration of the fast kernel for cuda_matvec() and
 * cuda_matvec_group().
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
    enum dtype w_type; /* DTYPE_BF16, F16, Q8_0, Q4_0, Q4_1, Q4_K, Q5_K or Q6_K */
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

#define CUDA_MATVEC_MAX_GROUP 8

/* Queues y (+)= W x with the kernel configuration chosen for this shape; -1 (reason in
 * cuda_last_error()) for bad shapes or types, or a launch error. */
int cuda_matvec(const struct cuda_matvec *m, cudaStream_t stream)
        __attribute__((warn_unused_result));

/* Queues n (1..CUDA_MATVEC_MAX_GROUP) products that read the same activations (q/k/v,
 * gate/up, a GDN layer's qkv/z/b/a) as one launch: m[i] share x, x_type, x_stride, cols, batch
 * and w_type; w, rows, y, y_type, y_stride and accumulate are each product's own. One launch
 * instead of n saves n - 1 start-ups and tails. -1 as cuda_matvec(). */
int cuda_matvec_group(const struct cuda_matvec *m, int n, cudaStream_t stream)
        __attribute__((warn_unused_result));

/* Benchmark and test hooks: cuda_matvec_group() with one fixed configuration of the fast
 * kernel, variant 1..cuda_matvec_variant_count() (0 = the default choice), and with the launch
 * overlap on or off. Shapes the fast kernel cannot take use the slow path whatever the
 * variant. */
int cuda_matvec_tuned(const struct cuda_matvec *m, int n, int variant, bool overlap,
                      cudaStream_t stream) __attribute__((warn_unused_result));
int cuda_matvec_variant_count(void);
/* "r2u4" (FMA kernel: rows per warp, loads in flight per row), "t16u4" (tensor-core kernel);
 * "auto" for 0; NULL when out of range. */
const char *cuda_matvec_variant_name(int variant);

#ifdef __cplusplus
}
#endif

#endif
