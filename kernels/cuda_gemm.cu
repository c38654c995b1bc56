/*
 * kernels/cuda_gemm.cu — bf16 matrix products through cuBLASLt (see cuda_gemm.h).
 *
 * cuBLASLt is column-major, our tensors row-major: Y[n, rows] = X[n, cols] W^T is, read
 * column-major, Y^T (rows x n, ld y_stride) = W^T (W stored as a cols x rows column-major
 * matrix, ld cols, used transposed) times X^T (cols x n, ld x_stride). So A = W with op T,
 * B = X, C = D = Y, beta = 1 for the residual add.
 *
 * The heuristic query costs tens of microseconds of host time and its answer depends only on
 * the shape, the types and the pointers' alignment, so each context keeps the descriptors and
 * the chosen algorithm per such key (a small table, replaced round-robin when full).
 */
#include "cuda_check.cuh"
#include "cuda_gemm.h"
#include "cuda_util.cuh"

#include <cublasLt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define GEMM_WORKSPACE_BYTES ((size_t)32 << 20)
#define GEMM_CACHE           64

struct gemm_key {
    int64_t rows, cols, n, ldb, ldc;
    int y_bf16, accumulate;
    int align_a, align_b, align_c;
};

struct gemm_plan {
    struct gemm_key key;
    bool used;
    cublasLtMatmulDesc_t desc;
    cublasLtMatrixLayout_t la, lb, lc;
    cublasLtMatmulAlgo_t algo;
};

struct cuda_gemm_ctx {
    cudaStream_t stream;
    cublasLtHandle_t lt;
    void *workspace;
    __nv_bfloat16 *stage; /* F32 activations rounded to bf16 */
    int64_t stage_elems;
    struct gemm_plan plans[GEMM_CACHE];
    int next_victim;
};

/* Records a failed cuBLASLt call (by its line in this file) as the error; returns -1. */
static int gemm_fail_blas(int line, cublasStatus_t s)
{
    char why[96];
    snprintf(why, sizeof why, "cuBLASLt call at cuda_gemm.cu:%d failed: status %d", line, (int)s);
    return cuda_fail_args("cuda_gemm", why);
}

#define BLAS_TRY(expr)                                                                             \
    do {                                                                                           \
        cublasStatus_t blas_try_s_ = (expr);                                                       \
        if (blas_try_s_ != CUBLAS_STATUS_SUCCESS)                                                  \
            return gemm_fail_blas(__LINE__, blas_try_s_);                                          \
    } while (0)

__global__ void gemm_stage_kernel(const float *x, int64_t x_stride, __nv_bfloat16 *out,
                                  int64_t cols, int64_t total)
{
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < total;
         i += (int64_t)gridDim.x * blockDim.x) {
        int64_t r = i / cols, c = i - r * cols;
        out[i] = __float2bfloat16_rn(x[r * x_stride + c]);
    }
}

/* Frees a plan's descriptors (those that were made) and marks the slot unused. */
static void gemm_plan_clear(struct gemm_plan *p)
{
    if (!p->used)
        return;
    if (p->la)
        cublasLtMatrixLayoutDestroy(p->la);
    if (p->lb)
        cublasLtMatrixLayoutDestroy(p->lb);
    if (p->lc)
        cublasLtMatrixLayoutDestroy(p->lc);
    if (p->desc)
        cublasLtMatmulDescDestroy(p->desc);
    memset(p, 0, sizeof *p);
}

extern "C" void cuda_gemm_ctx_destroy(struct cuda_gemm_ctx *ctx)
{
    if (!ctx)
        return;
    cudaStreamSynchronize(ctx->stream);
    for (int i = 0; i < GEMM_CACHE; i++)
        gemm_plan_clear(&ctx->plans[i]);
    if (ctx->lt)
        cublasLtDestroy(ctx->lt);
    cudaFree(ctx->workspace);
    cudaFree(ctx->stage);
    free(ctx);
}

extern "C" struct cuda_gemm_ctx *cuda_gemm_ctx_create(cudaStream_t stream)
{
    struct cuda_gemm_ctx *ctx = (struct cuda_gemm_ctx *)calloc(1, sizeof *ctx);
    if (!ctx) {
        (void)cuda_fail_args("cuda_gemm_ctx_create", "out of host memory");
        return NULL;
    }
    ctx->stream = stream;
    cublasStatus_t s = cublasLtCreate(&ctx->lt);
    if (s != CUBLAS_STATUS_SUCCESS) {
        ctx->lt = NULL;
        (void)gemm_fail_blas(__LINE__, s);
        goto fail;
    }
    {
        cudaError_t e = cudaMalloc(&ctx->workspace, GEMM_WORKSPACE_BYTES);
        if (e != cudaSuccess) {
            ctx->workspace = NULL;
            cuda_check_fail("cudaMalloc(workspace)", e, __FILE__, __LINE__);
            goto fail;
        }
    }
    return ctx;
fail:
    cuda_gemm_ctx_destroy(ctx);
    return NULL;
}

extern "C" int cuda_gemm_ctx_reserve(struct cuda_gemm_ctx *ctx, int64_t elems)
{
    if (!ctx || elems < 0)
        return cuda_fail_args("cuda_gemm_ctx_reserve", "a context and elems >= 0");
    if (elems <= ctx->stage_elems)
        return 0;
    CUDA_TRY(cudaStreamSynchronize(ctx->stream)); /* earlier products may still read it */
    CUDA_TRY(cudaFree(ctx->stage));
    ctx->stage = NULL;
    ctx->stage_elems = 0;
    CUDA_TRY(cudaMalloc((void **)&ctx->stage, (size_t)elems * sizeof(__nv_bfloat16)));
    ctx->stage_elems = elems;
    return 0;
}

/* The largest power of two (up to 256) dividing the address: cuBLASLt picks kernels by it. */
static int gemm_alignment(const void *p, int64_t ld, size_t elem)
{
    uintptr_t v = (uintptr_t)p | (uintptr_t)((size_t)ld * elem) | 256;
    return (int)(v & (~v + 1));
}

/* Fills p (descriptors and the heuristic's algorithm) for key k. On failure p may hold part of
 * what was made: the caller frees it with gemm_plan_clear(). */
static int gemm_plan_make(struct cuda_gemm_ctx *ctx, const struct gemm_key *k, struct gemm_plan *p)
{
    cudaDataType_t yt = k->y_bf16 ? CUDA_R_16BF : CUDA_R_32F;
    cublasOperation_t opt = CUBLAS_OP_T, opn = CUBLAS_OP_N;
    cublasLtMatmulPreference_t pref = NULL;
    cublasLtMatmulHeuristicResult_t res;
    cublasStatus_t st = CUBLAS_STATUS_SUCCESS;
    int found = 0, line = 0, rc = -1;
    size_t ws = GEMM_WORKSPACE_BYTES;
    uint32_t aa = (uint32_t)k->align_a, ab = (uint32_t)k->align_b, ac = (uint32_t)k->align_c;
    memset(p, 0, sizeof *p);
    p->key = *k;
    p->used = true; /* from here gemm_plan_clear() frees what was made */
#define PLAN_TRY(expr)                                                                             \
    do {                                                                                           \
        st = (expr);                                                                               \
        if (st != CUBLAS_STATUS_SUCCESS) {                                                         \
            line = __LINE__;                                                                       \
            goto out;                                                                              \
        }                                                                                          \
    } while (0)
    PLAN_TRY(cublasLtMatmulDescCreate(&p->desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    PLAN_TRY(
            cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_TRANSA, &opt, sizeof opt));
    PLAN_TRY(
            cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_TRANSB, &opn, sizeof opn));
    PLAN_TRY(cublasLtMatrixLayoutCreate(&p->la, CUDA_R_16BF, (uint64_t)k->cols, (uint64_t)k->rows,
                                        k->cols));
    PLAN_TRY(cublasLtMatrixLayoutCreate(&p->lb, CUDA_R_16BF, (uint64_t)k->cols, (uint64_t)k->n,
                                        k->ldb));
    PLAN_TRY(cublasLtMatrixLayoutCreate(&p->lc, yt, (uint64_t)k->rows, (uint64_t)k->n, k->ldc));
    PLAN_TRY(cublasLtMatmulPreferenceCreate(&pref));
    /* hints: were a setter to fail, cuBLASLt's default for it would stand */
    (void)cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws,
                                               sizeof ws);
    (void)cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES,
                                               &aa, sizeof aa);
    (void)cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
                                               &ab, sizeof ab);
    (void)cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES,
                                               &ac, sizeof ac);
    (void)cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES,
                                               &ac, sizeof ac);
    PLAN_TRY(cublasLtMatmulAlgoGetHeuristic(ctx->lt, p->desc, p->la, p->lb, p->lc, p->lc, pref, 1,
                                            &res, &found));
#undef PLAN_TRY
    if (found < 1) {
        rc = cuda_fail_args("cuda_gemm", "cuBLASLt has no algorithm for this shape");
        goto out;
    }
    p->algo = res.algo;
    rc = 0;
out:
    if (line)
        rc = gemm_fail_blas(line, st);
    if (pref)
        cublasLtMatmulPreferenceDestroy(pref);
    return rc;
}

static int gemm_plan_find(struct cuda_gemm_ctx *ctx, const struct gemm_key *k,
                          struct gemm_plan **out)
{
    for (int i = 0; i < GEMM_CACHE; i++)
        if (ctx->plans[i].used && memcmp(&ctx->plans[i].key, k, sizeof *k) == 0) {
            *out = &ctx->plans[i];
            return 0;
        }
    struct gemm_plan *p = &ctx->plans[ctx->next_victim];
    ctx->next_victim = (ctx->next_victim + 1) % GEMM_CACHE;
    gemm_plan_clear(p);
    if (gemm_plan_make(ctx, k, p) != 0) {
        gemm_plan_clear(p);
        return -1;
    }
    *out = p;
    return 0;
}

extern "C" int cuda_gemm(struct cuda_gemm_ctx *ctx, const struct cuda_gemm_args *a)
{
    if (!ctx || !a || a->rows < 1 || a->cols < 1 || a->n < 0 ||
        (a->x_type != DTYPE_F32 && a->x_type != DTYPE_BF16) ||
        (a->y_type != DTYPE_F32 && a->y_type != DTYPE_BF16) || a->x_stride < a->cols ||
        a->y_stride < a->rows || !a->w || !a->x || !a->y)
        return cuda_fail_args("cuda_gemm", "bf16 W, f32/bf16 X and Y, x_stride >= cols, "
                                           "y_stride >= rows, n >= 0");
    if (a->n == 0)
        return 0;
    const void *x = a->x;
    int64_t ldb = a->x_stride;
    if (a->x_type == DTYPE_F32) {
        int64_t total = a->n * a->cols;
        if (cuda_gemm_ctx_reserve(ctx, total) != 0)
            return -1;
        unsigned blocks = cuda_blocks(total, 256);
        if (blocks > 4096)
            blocks = 4096;
        gemm_stage_kernel<<<blocks, 256, 0, ctx->stream>>>((const float *)a->x, a->x_stride,
                                                           ctx->stage, a->cols, total);
        CUDA_TRY(cudaGetLastError());
        x = ctx->stage;
        ldb = a->cols;
    }
    size_t ye = a->y_type == DTYPE_F32 ? 4 : 2;
    struct gemm_key k;
    memset(&k, 0, sizeof k); /* the key is compared bytewise */
    k.rows = a->rows;
    k.cols = a->cols;
    k.n = a->n;
    k.ldb = ldb;
    k.ldc = a->y_stride;
    k.y_bf16 = a->y_type == DTYPE_BF16;
    k.accumulate = a->accumulate;
    k.align_a = gemm_alignment(a->w, a->cols, 2);
    k.align_b = gemm_alignment(x, ldb, 2);
    k.align_c = gemm_alignment(a->y, a->y_stride, ye);
    struct gemm_plan *p;
    if (gemm_plan_find(ctx, &k, &p) != 0)
        return -1;
    const float one = 1.0f, beta = a->accumulate ? 1.0f : 0.0f;
    BLAS_TRY(cublasLtMatmul(ctx->lt, p->desc, &one, a->w, p->la, x, p->lb, &beta, a->y, p->lc, a->y,
                            p->lc, &p->algo, ctx->workspace, GEMM_WORKSPACE_BYTES, ctx->stream));
    return 0;
}
